"""The annotation queue through the API: claims, leases, annotations, skips, reviews, undo,
gold tasks and label resolution (docs/api.md: Annotation queue)."""

import base64
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from accounts.models import AuditEvent, Role
from flywheel.models import ModelVersion, Project
from flywheel.training import registry
from labeling import services
from labeling.models import Annotation, Label, Lease, Task
from labeling.tasks import leases_sweep
from tests import factories
from tests.factories import prediction

NEXT = "/api/v1/projects/digits/tasks/next/"


def log(app_client, items):
    response = app_client.post("/api/v1/projects/digits/predictions/", {"predictions": items}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["results"]


def uncertain(n, start=0, **kw):
    """Predictions that route, most uncertain first (p-start is the top of the queue)."""
    return [prediction(start + i, confidence=round(0.2 + i * 0.001, 4), **kw) for i in range(n)]


def annotator(project, name=None):
    user, token = factories.user_with_role(Role.ANNOTATOR, project, username=name)
    return user, factories.api_client(token)


def claim(client):
    response = client.post(NEXT)
    assert response.status_code in (200, 204), response.content
    return response.json()["task"] if response.status_code == 200 else None


def annotate(client, task_id, label, **kw):
    return client.post(f"/api/v1/tasks/{task_id}/annotations/", {"label": label, **kw}, format="json")


@pytest.fixture
def overlap(project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "annotations_per_task": 3})
    return project


def test_next_claims_the_most_uncertain_task_under_a_lease(app_client, project):
    log(app_client, uncertain(3))
    _, client = annotator(project)
    task = claim(client)
    assert task["prediction"]["id"] == "p-0" and task["reason"] == "low_confidence"
    assert task["prediction"]["label"] == "0" and task["prediction"]["features"]["color"] == "red"
    expires = timezone.datetime.fromisoformat(task["lease_expires_at"])
    assert timedelta(minutes=9) < expires - timezone.now() <= timedelta(minutes=10)
    assert Task.objects.get(pk=task["id"]).status == "leased"
    # A second annotator gets the next one, not the same.
    _, other = annotator(project)
    assert claim(other)["prediction"]["id"] == "p-1"


@pytest.mark.parametrize("demote_stale", [True, False])
def test_a_new_champion_is_served_its_own_uncertain_predictions_before_stale_ones(app_client, project, demote_stale):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "demote_stale": demote_stale})
    # v1 was unsure of p-0..p-2; v2, which learned from labels since, routes p-10 less unsure.
    log(app_client, uncertain(3) + [prediction(5, confidence=0.9)])
    log(app_client, [prediction(10, model_version="v2", confidence=0.6), prediction(11, model_version="v2")])
    _, holder = annotator(project)
    assert claim(holder)["prediction"]["id"] == "p-0"  # held across the promotion: keeps its lease
    project.refresh_from_db()
    registry.model_promote(project=project, model_version=ModelVersion.objects.get(project=project, name="v2"))
    _, client = annotator(project)
    served = [claim(client)["prediction"]["id"] for _ in range(3)]
    assert served == (["p-10", "p-1", "p-2"] if demote_stale else ["p-1", "p-2", "p-10"])
    assert claim(client) is None
    assert Task.objects.get(prediction__external_id="p-0").status == "leased"


def test_nothing_to_do_is_204(project):
    _, client = annotator(project)
    assert client.post(NEXT).status_code == 204


def test_annotation_resolves_the_label_and_completes_the_task(app_client, project):
    log(app_client, uncertain(1))
    user, client = annotator(project)
    task = claim(client)
    response = annotate(client, task["id"], "7", lead_time_s=3.5)
    assert response.status_code == 201
    assert response.json()["task"]["status"] == "done"
    assert response.json()["resolved_label"]["label"] == "7"
    label = Label.objects.get(prediction__external_id="p-0", is_current=True)
    assert (label.label, label.source, label.resolved_by) == ("7", "annotation", user)
    annotation = Annotation.objects.get()
    assert annotation.lead_time_s == 3.5 and annotation.accepted_suggestion is False
    detail = app_client.get("/api/v1/projects/digits/predictions/p-0/").json()
    assert detail["resolved_label"]["label"] == "7" and detail["task"]["status"] == "done"


def test_annotating_without_the_lease_is_409(app_client, project):
    log(app_client, uncertain(1))
    _, holder = annotator(project)
    _, intruder = annotator(project)
    task = claim(holder)
    response = annotate(intruder, task["id"], "1")
    assert response.status_code == 409 and response.json()["error"]["code"] == "lease_lost"


def test_an_expired_lease_is_lost_and_swept_back_to_the_queue(app_client, project):
    log(app_client, uncertain(1))
    _, first = annotator(project)
    task = claim(first)
    Lease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert annotate(first, task["id"], "1").status_code == 409  # lost even before the sweep
    assert leases_sweep.delay().get() == 1
    assert Task.objects.get(pk=task["id"]).status == "open"
    assert leases_sweep.delay().get() == 0  # a second run finds nothing to do
    _, second = annotator(project)
    assert claim(second)["id"] == task["id"]
    assert annotate(first, task["id"], "1").status_code == 409


def test_heartbeat_extends_the_lease(app_client, project):
    log(app_client, uncertain(1))
    _, client = annotator(project)
    task = claim(client)
    Lease.objects.update(expires_at=timezone.now() + timedelta(seconds=5))
    response = client.post(f"/api/v1/tasks/{task['id']}/heartbeat/")
    assert response.status_code == 200
    assert Lease.objects.get().expires_at > timezone.now() + timedelta(minutes=9)
    assert services.leases_sweep(now=timezone.now() + timedelta(minutes=5)) == 0
    _, other = annotator(project)
    assert other.post(f"/api/v1/tasks/{task['id']}/heartbeat/").status_code == 409


def test_skip_returns_the_task_to_others_but_not_to_the_skipper(app_client, project):
    log(app_client, uncertain(2))
    _, skipper = annotator(project)
    first = claim(skipper)
    assert skipper.post(f"/api/v1/tasks/{first['id']}/skip/").status_code == 200
    assert claim(skipper)["prediction"]["id"] == "p-1"
    _, other = annotator(project)
    assert claim(other)["id"] == first["id"]
    assert skipper.post(f"/api/v1/tasks/{first['id']}/skip/").status_code == 409


def test_release_hands_a_task_back_without_a_skip(app_client, project):
    log(app_client, uncertain(1))
    _, client = annotator(project)
    task = claim(client)
    assert client.post(f"/api/v1/tasks/{task['id']}/release/").status_code == 200
    assert claim(client)["id"] == task["id"]


def test_label_outside_the_label_set_is_400_and_keeps_the_lease(app_client, project):
    log(app_client, uncertain(1))
    _, client = annotator(project)
    task = claim(client)
    response = annotate(client, task["id"], "cat")
    assert response.status_code == 400 and "label" in response.json()["error"]["fields"]
    assert annotate(client, task["id"], "3", lead_time_s=-1).status_code == 400
    assert annotate(client, task["id"], "3").status_code == 201


def test_overlap_gives_each_task_to_distinct_annotators_and_resolves_by_majority(app_client, overlap):
    log(app_client, uncertain(2))
    people = [annotator(overlap) for _ in range(4)]
    first = [claim(client) for _, client in people[:3]]
    assert {t["id"] for t in first} == {first[0]["id"]}  # three annotators share the top task
    assert claim(people[0][1])["id"] != first[0]["id"]  # never the same one twice
    assert claim(people[3][1])["prediction"]["id"] == "p-1"  # the top task is full
    for (_, client), label in zip(people[:3], ["4", "4", "9"], strict=True):
        annotate(client, first[0]["id"], label)
    label = Label.objects.get(task_id=first[0]["id"])
    assert (label.label, label.source) == ("4", "consensus")
    assert Task.objects.get(pk=first[0]["id"]).status == "done"


def test_a_tie_goes_to_review_and_the_reviewer_decides(app_client, overlap):
    Project.objects.filter(pk=overlap.pk).update(routing={**overlap.routing, "annotations_per_task": 2})
    log(app_client, uncertain(1))
    people = [annotator(overlap) for _ in range(2)]
    task = claim(people[0][1])
    claim(people[1][1])
    annotate(people[0][1], task["id"], "1")
    annotate(people[1][1], task["id"], "7")
    assert Task.objects.get(pk=task["id"]).status == "review"
    assert not Label.objects.exists()
    reviewer = factories.api_client(factories.user_with_role(Role.REVIEWER, overlap)[1])
    tie = reviewer.post(f"/api/v1/tasks/{task['id']}/review/", {"verdict": "accept"}, format="json")
    assert tie.status_code == 400 and "label" in tie.json()["error"]["fields"]
    ok = reviewer.post(f"/api/v1/tasks/{task['id']}/review/", {"verdict": "accept", "label": "7"}, format="json")
    assert ok.status_code == 200 and ok.json()["task"]["status"] == "done"
    assert Label.objects.get(is_current=True).source == "review"


def test_reviewer_rejection_puts_the_task_back_for_a_new_round(app_client, project):
    log(app_client, uncertain(1))
    first_user, first = annotator(project)
    task = claim(first)
    annotate(first, task["id"], "2")
    reviewer = factories.api_client(factories.user_with_role(Role.REVIEWER, project)[1])
    response = reviewer.post(f"/api/v1/tasks/{task['id']}/review/", {"verdict": "reject"}, format="json")
    assert response.json()["task"] == {"id": task["id"], "status": "open", "round": 2}
    assert not Label.objects.filter(is_current=True).exists()
    assert AuditEvent.objects.filter(action="label.withdraw").count() == 1
    # The same annotator may take the new round; their first-round answer no longer counts.
    again = claim(first)
    assert again["id"] == task["id"] and again["round"] == 2
    annotate(first, task["id"], "3")
    assert Label.objects.get(is_current=True).label == "3"
    annotator_only = first.post(f"/api/v1/tasks/{task['id']}/review/", {"verdict": "reject"}, format="json")
    assert annotator_only.status_code == 403


def test_review_of_an_open_task_is_409(app_client, project):
    log(app_client, uncertain(1))
    task_id = Task.objects.get().pk
    reviewer = factories.api_client(factories.user_with_role(Role.REVIEWER, project)[1])
    response = reviewer.post(f"/api/v1/tasks/{task_id}/review/", {"verdict": "accept"}, format="json")
    assert response.status_code == 409


def test_undo_takes_back_the_last_label_while_the_task_is_still_yours(app_client, project):
    log(app_client, uncertain(2))
    user, client = annotator(project)
    task = claim(client)
    annotate(client, task["id"], "5")
    response = client.post(f"/api/v1/tasks/{task['id']}/undo/")
    assert response.status_code == 200 and response.json()["task"]["id"] == task["id"]
    assert response.json()["task"]["lease_expires_at"]
    assert not Label.objects.exists() and not Annotation.objects.exists()
    assert Task.objects.get(pk=task["id"]).status == "leased"
    annotate(client, task["id"], "6")
    assert Label.objects.get(is_current=True).label == "6"
    # Once a reviewer has looked at it, it is no longer the annotator's to undo.
    reviewer = factories.api_client(factories.user_with_role(Role.REVIEWER, project)[1])
    reviewer.post(f"/api/v1/tasks/{task['id']}/review/", {"verdict": "accept"}, format="json")
    assert client.post(f"/api/v1/tasks/{task['id']}/undo/").status_code == 409
    _, stranger = annotator(project)
    assert stranger.post(f"/api/v1/tasks/{task['id']}/undo/").json()["error"]["code"] == "nothing_to_undo"


def test_undo_restores_a_label_the_annotation_had_replaced(app_client, project):
    log(app_client, uncertain(1))
    p = Task.objects.get().prediction
    services.label_resolve(project_id=project.pk, prediction_id=p.pk, label="9", source="feedback")
    _, client = annotator(project)
    task = claim(client)
    annotate(client, task["id"], "4")
    assert Label.objects.get(is_current=True).label == "4"
    client.post(f"/api/v1/tasks/{task['id']}/undo/")
    assert Label.objects.get(is_current=True).label == "9"


def test_gold_tasks_are_mixed_in_and_measure_each_annotator(app_client, ops_client, project):
    log(app_client, uncertain(5))
    for i in range(2):
        response = ops_client.post("/api/v1/projects/digits/gold/", {"prediction_id": f"p-{i}", "label": str(i)},
                                   format="json")
        assert response.status_code == 201
    # Gold answers are resolved labels and leave the queue.
    assert Label.objects.filter(source="gold", is_current=True).count() == 2
    assert Task.objects.filter(status="canceled").count() == 2
    Project.objects.filter(pk=project.pk).update(labeling={"gold_rate": 1.0, "min_agreement": 0.6})
    project.refresh_from_db()
    _, client = annotator(project)
    served = [claim(client) for _ in range(2)]
    assert {t["reason"] for t in served} == {"gold"}
    assert {t["prediction"]["id"] for t in served} == {"p-0", "p-1"}
    by_prediction = {t["prediction"]["id"]: t["id"] for t in served}
    annotate(client, by_prediction["p-0"], "0")  # right
    annotate(client, by_prediction["p-1"], "7")  # wrong
    # Each gold answer is served to an annotator once; then the queue continues.
    assert claim(client)["reason"] == "low_confidence"
    me = client.get("/api/v1/projects/digits/annotators/me/").json()
    assert me["gold"] == {"answered": 2, "correct": 1, "accuracy": 0.5}
    # Gold annotations do not change the gold label.
    assert Label.objects.get(prediction__external_id="p-1", is_current=True).label == "1"
    _, other = annotator(project)
    assert claim(other)["reason"] == "gold"  # other annotators get their own gold tasks


def test_gold_on_an_unknown_prediction_or_label_is_refused(ops_client, project):
    assert ops_client.post("/api/v1/projects/digits/gold/", {"prediction_id": "nope", "label": "1"},
                           format="json").status_code == 404


def test_task_list_filters_and_query_count(app_client, ops_client, project, django_assert_max_num_queries):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "audit_rate": 0.2})
    log(app_client, uncertain(60))
    with django_assert_max_num_queries(8):
        page = ops_client.get("/api/v1/projects/digits/tasks/?status=open&limit=50").json()
    assert page["count"] == 60 and len(page["results"]) == 50
    assert page["results"][0]["priority"] >= page["results"][-1]["priority"]
    audit = ops_client.get("/api/v1/projects/digits/tasks/?reason=audit").json()
    assert audit["count"] == Task.objects.filter(reason="audit").count() > 0
    assert ops_client.get("/api/v1/projects/digits/tasks/?status=bogus").status_code == 400


def test_task_image_is_decoded_and_enlarged_without_blurring(app_client, project):
    pixels = Image.new("L", (8, 8), color=255)
    pixels.putpixel((3, 4), 0)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    log(app_client, uncertain(1, input={"image": base64.b64encode(buffer.getvalue()).decode()}))
    _, client = annotator(project)
    task = claim(client)
    assert task["prediction"]["image_url"] == f"/api/v1/tasks/{task['id']}/image/"
    response = client.get(task["prediction"]["image_url"])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    shown = Image.open(io.BytesIO(response.content)).convert("L")
    assert shown.size == (256, 256)
    # Whole-pixel enlargement: the one dark pixel is a sharp 32x32 square, nothing in between.
    assert set(shown.get_flattened_data()) == {0, 255}
    assert shown.getpixel((3 * 32, 4 * 32)) == 0 and shown.getpixel((3 * 32 + 31, 4 * 32 + 31)) == 0
    assert shown.getpixel((3 * 32 - 1, 4 * 32)) == 255


def test_task_without_an_image_has_no_image(app_client, project):
    log(app_client, uncertain(1, input={"text": "hello"}))
    _, client = annotator(project)
    task = claim(client)
    assert task["prediction"]["image_url"] is None and task["prediction"]["text"] == "hello"
    assert client.get(f"/api/v1/tasks/{task['id']}/image/").status_code == 404


def test_tasks_of_another_project_are_404(app_client, project, other_project):
    log(app_client, uncertain(1))
    task_id = Task.objects.get().pk
    outsider = factories.api_client(factories.user_with_role(Role.ANNOTATOR, other_project)[1])
    for path in ("heartbeat", "annotations", "skip", "release", "undo"):
        assert outsider.post(f"/api/v1/tasks/{task_id}/{path}/", {"label": "1"}, format="json").status_code == 404
    assert outsider.get(f"/api/v1/tasks/{task_id}/image/").status_code == 404
    assert outsider.post("/api/v1/projects/digits/tasks/next/").status_code == 404


def test_claim_query_count_is_small(app_client, project):
    log(app_client, uncertain(20))
    _, client = annotator(project)
    claim(client)
    with CaptureQueriesContext(connection) as ctx:
        claim(client)
    assert len(ctx.captured_queries) <= 12


def test_an_annotation_on_a_task_taken_off_the_queue_while_held_is_refused(app_client, project):
    log(app_client, uncertain(1))
    _, client = annotator(project)
    task = claim(client)
    Task.objects.filter(pk=task["id"]).update(status="canceled")
    response = annotate(client, task["id"], "3")
    assert response.status_code == 409 and response.json()["error"]["code"] == "lease_lost"
    assert not Annotation.objects.exists() and not Label.objects.exists()
