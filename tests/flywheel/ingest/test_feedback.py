"""Implicit feedback from end users (docs/api.md: Feedback) and what it does to labels and tasks."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Role
from flywheel.models import Feedback, Prediction
from labeling import services as labeling_services
from labeling.models import Label, RuledOutLabel, Task
from tests import factories

PREDICTIONS = "/api/v1/projects/digits/predictions/"
FEEDBACK = "/api/v1/projects/digits/feedback/"
PROBABILITIES = {"1": 0.8, "7": 0.15, "9": 0.05}


@pytest.fixture
def logged(app_client, project):
    """A confident prediction p-1 (label 1, runner-up 7) that nobody routed."""
    item = factories.prediction(1, label="1", confidence=None, probabilities=PROBABILITIES)
    item.pop("confidence")
    assert app_client.post(PREDICTIONS, item, format="json").json()["results"][0]["routed"] is False
    return app_client


def send(client, body):
    return client.post(FEEDBACK, body, format="json")


def current(prediction="p-1"):
    return Label.objects.filter(prediction__external_id=prediction, is_current=True).first()


def test_a_single_confirm_is_stored_but_resolves_nothing(logged):
    response = send(logged, {"prediction_id": "p-1", "kind": "confirm", "user": "u1"})
    assert response.status_code == 201
    assert response.json() == {"created": 1, "duplicates": 0, "resolved": 0, "routed": {}}
    assert Feedback.objects.get().kind == "confirm" and current() is None and not Task.objects.exists()


def test_enough_distinct_users_agreeing_resolve_the_label_as_weak_feedback(logged):
    send(logged, {"feedback": [{"prediction_id": "p-1", "kind": "confirm", "user": "u1"},
                               {"prediction_id": "p-1", "kind": "confirm", "user": "u1"}]})
    assert current() is None  # one user twice is one voice
    body = send(logged, {"feedback": [{"prediction_id": "p-1", "kind": "confirm", "user": "u2"},
                                      {"prediction_id": "p-1", "kind": "confirm", "user": "u3"}]}).json()
    assert body["resolved"] == 1
    label = current()
    assert (label.label, label.source, label.weight) == ("1", "feedback", 0.5)
    detail = logged.get(PREDICTIONS + "p-1/").json()
    assert [f["kind"] for f in detail["feedback"]] == ["confirm"] * 4
    assert detail["resolved_label"]["source"] == "feedback"


def test_a_correction_to_the_runner_up_is_trusted_alone(logged):
    body = send(logged, {"prediction_id": "p-1", "kind": "correct", "label": "7", "user": "u1"}).json()
    assert body["resolved"] == 1 and current().label == "7" and not Task.objects.exists()


@pytest.mark.parametrize("skip_resolved", [True, False])
def test_feedback_that_resolves_a_label_takes_its_uncertainty_task_off_the_queue(app_client, project, skip_resolved):
    project.routing = {**project.routing, "threshold": 0.3, "audit_rate": 0.0, "skip_resolved": skip_resolved}
    project.save()
    unsure = {"1": 0.5, "7": 0.4, "9": 0.1}
    for i in (1, 2):
        item = factories.prediction(i, label="1", confidence=None, probabilities=unsure)
        item.pop("confidence")
        assert app_client.post(PREDICTIONS, item, format="json").json()["results"][0]["routed"] is True
    body = send(app_client, {"prediction_id": "p-1", "kind": "correct", "label": "7", "user": "u1"}).json()
    assert body["resolved"] == 1 and current().label == "7"
    statuses = dict(Task.objects.values_list("prediction__external_id", "status"))
    assert statuses == {"p-1": "canceled" if skip_resolved else "open", "p-2": "open"}


def test_feedback_that_resolves_a_label_leaves_its_audit_task_alone(app_client, project):
    project.routing = {**project.routing, "threshold": 1.0, "audit_rate": 1.0}
    project.save()
    item = factories.prediction(1, label="1", confidence=None, probabilities=PROBABILITIES)
    item.pop("confidence")
    assert app_client.post(PREDICTIONS, item, format="json").json()["results"][0]["reason"] == "audit"
    assert send(app_client, {"prediction_id": "p-1", "kind": "correct", "label": "7", "user": "u1"}).json()["resolved"]
    assert Task.objects.get().status == "open"


def test_an_untrusted_correction_goes_to_the_queue(logged):
    body = send(logged, {"prediction_id": "p-1", "kind": "correct", "label": "4", "user": "u1"}).json()
    assert body["routed"] == {"feedback_conflict": 1} and current() is None
    task = Task.objects.get()
    assert task.reason == "feedback_conflict" and task.status == "open"


def test_a_correction_against_an_annotator_label_is_a_conflict(logged, project):
    prediction = Prediction.objects.get(external_id="p-1")
    labeling_services.label_resolve(project_id=project.pk, prediction_id=prediction.pk, label="1",
                                    source="annotation")
    body = send(logged, {"prediction_id": "p-1", "kind": "correct", "label": "7", "user": "u1"}).json()
    assert body["routed"] == {"feedback_conflict": 1} and body["resolved"] == 0
    assert current().label == "1" and current().source == "annotation"  # people's label stands until reviewed


def test_users_correcting_to_different_labels_conflict(logged, project):
    project.feedback = {"min_users": 3, "accept_runner_up": False, "queue_corrections": False}
    project.save()  # saving (not a queryset update) clears the workers' cached copy
    send(logged, {"prediction_id": "p-1", "kind": "correct", "label": "4", "user": "u1"})
    assert not Task.objects.exists()  # this policy does not queue a lone correction
    body = send(logged, {"prediction_id": "p-1", "kind": "correct", "label": "9", "user": "u2"}).json()
    assert body["routed"] == {"feedback_conflict": 1}
    assert Task.objects.get().reason == "feedback_conflict"


def test_a_reject_rules_the_label_out_and_routes_an_unlabeled_prediction(logged, project):
    body = send(logged, {"prediction_id": "p-1", "kind": "reject", "user": "u1"}).json()
    assert body["routed"] == {"feedback_reject": 1}
    assert list(RuledOutLabel.objects.values_list("label", flat=True)) == ["1"]
    assert logged.get(PREDICTIONS + "p-1/").json()["ruled_out_labels"] == ["1"]
    # An annotator cannot choose the ruled-out label for it.
    user, token = factories.user_with_role(Role.ANNOTATOR, project)
    annotator = factories.api_client(token)
    task = annotator.post("/api/v1/projects/digits/tasks/next/").json()["task"]
    assert task["reason"] == "feedback_reject" and task["prediction"]["ruled_out_labels"] == ["1"]
    refused = annotator.post(f"/api/v1/tasks/{task['id']}/annotations/", {"label": "1"}, format="json")
    assert refused.status_code == 400 and "Ruled out" in refused.json()["error"]["fields"]["label"][0]
    assert annotator.post(f"/api/v1/tasks/{task['id']}/annotations/", {"label": "7"},
                          format="json").status_code == 201
    # Confirms of a rejected label no longer count towards it.
    project.refresh_from_db()
    project.feedback = {"min_users": 1}
    project.save()
    send(logged, {"prediction_id": "p-1", "kind": "confirm", "user": "u9"})
    assert current().label == "7"


def test_a_reject_of_a_prediction_already_in_the_queue_adds_no_task(app_client, project):
    app_client.post(PREDICTIONS, factories.prediction(2, confidence=0.3), format="json")
    send(app_client, {"prediction_id": "p-2", "kind": "reject"})
    assert Task.objects.count() == 1 and Task.objects.get().reason == "low_confidence"


def test_retried_feedback_changes_nothing(logged):
    item = {"id": "fb-1", "prediction_id": "p-1", "kind": "correct", "label": "7", "user": "u1"}
    assert send(logged, item).json()["created"] == 1
    again = send(logged, {"feedback": [item, {**item, "id": "fb-2", "user": "u2"}]}).json()
    assert again["created"] == 1 and again["duplicates"] == 1
    assert Feedback.objects.count() == 2 and Label.objects.count() == 1


def test_unknown_prediction_is_404_alone_and_a_field_error_in_a_batch(logged):
    alone = send(logged, {"prediction_id": "nope", "kind": "confirm"})
    assert alone.status_code == 404 and alone.json()["error"]["code"] == "prediction_not_found"
    batch = send(logged, {"feedback": [{"prediction_id": "p-1", "kind": "confirm"},
                                       {"prediction_id": "nope", "kind": "confirm"}]})
    assert batch.status_code == 400 and list(batch.json()["error"]["fields"]) == ["feedback[1].prediction_id"]
    assert not Feedback.objects.exists()


@pytest.mark.parametrize(("body", "field"), [
    ({"prediction_id": "p-1", "kind": "love"}, "kind"),
    ({"prediction_id": "p-1", "kind": "correct"}, "label"),
    ({"prediction_id": "p-1", "kind": "correct", "label": "cat"}, "label"),
    ({"prediction_id": "p-1", "kind": "confirm", "label": "1"}, "label"),
    ({"kind": "confirm"}, "prediction_id"),
    ({"prediction_id": "p-1", "kind": "confirm", "user": 7}, "user"),
    ({"prediction_id": "p-1", "kind": "confirm", "created_at": "soon"}, "created_at"),
    ({"prediction_id": "p-1", "kind": "confirm", "extra": 1}, "extra"),
    ({"feedback": [{"prediction_id": "p-1", "kind": "x"}]}, "feedback[0].kind"),
    ({"feedback": []}, "feedback"),
])
def test_bad_feedback_names_the_field(logged, body, field):
    response = send(logged, body)
    assert response.status_code == 400 and field in response.json()["error"]["fields"]
    assert not Feedback.objects.exists()


def test_feedback_batch_query_count_does_not_grow(app_client, project):
    items = [factories.prediction(i, confidence=0.95) for i in range(60)]
    app_client.post(PREDICTIONS, {"predictions": items}, format="json")

    def queries(ids, kind):
        body = {"feedback": [{"prediction_id": f"p-{i}", "kind": kind, "user": f"u{i}"} for i in ids]}
        with CaptureQueriesContext(connection) as ctx:
            assert send(app_client, body).status_code == 201
        return len(ctx.captured_queries)

    assert queries(range(0, 5), "reject") == queries(range(5, 55), "reject")
