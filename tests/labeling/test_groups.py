"""Group labeling through the API against PostgreSQL: building groups, claiming them under a
lease, fixing them (split, merge, members out), labeling them once, the checks that measure
group labels, and similar tasks (docs/api.md: Groups)."""

import random
import threading
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Role
from flywheel.models import Prediction, Project
from flywheel.tasks import groups_build_task
from labeling import group_services, services
from labeling.models import Annotation, Group, Label, Lease, RuledOutLabel, Task
from labeling.tasks import leases_sweep
from tests import factories
from tests.factories import prediction

BUILD = "/api/v1/projects/digits/groups/build/"
NEXT = "/api/v1/projects/digits/groups/next/"
LIST = "/api/v1/projects/digits/groups/"
CENTRES = {"3": [1.0, 0.0, 0.0, 0.0], "7": [0.0, 1.0, 0.0, 0.0], "5": [0.0, 0.0, 1.0, 0.0]}


def embedded(i, truth, *, noise=0.05, label=None, **kw):
    rng = np.random.default_rng(i)
    vector = (np.asarray(CENTRES[truth]) + rng.normal(0, noise, 4)).round(4).tolist()
    return prediction(i, label=label or truth, confidence=0.3, embedding=vector, **kw)


def log(app_client, items):
    response = app_client.post("/api/v1/projects/digits/predictions/", {"predictions": items}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["results"]


def two_clusters(app_client, per=6, target_size=6, *, disagreeing=False, model_says=None):
    """p-0..p-5 look like a 3, p-100..p-105 like a 7, and the model says so (with
    `disagreeing`, it called p-100 a 1; with `model_says`, it called every one that);
    groups aim at `target_size` members."""
    project = Project.objects.get(slug="digits")
    grouping = {**project.labeling.get("grouping", {}), "target_size": target_size}
    Project.objects.filter(pk=project.pk).update(labeling={**project.labeling, "grouping": grouping})
    log(app_client, [embedded(i, "3", label=model_says) for i in range(per)]
        + [embedded(100 + i, "7", label=model_says or ("1" if disagreeing and i == 0 else None))
           for i in range(per)])


def person(project, role=Role.ANNOTATOR):
    user, token = factories.user_with_role(role, project)
    return user, factories.api_client(token)


def build(project):
    _, client = person(project, Role.REVIEWER)
    response = client.post(BUILD)
    assert response.status_code == 200, response.content
    return response.json()


def claim(client):
    response = client.post(NEXT)
    assert response.status_code in (200, 204), response.content
    return response.json()["group"] if response.status_code == 200 else None


def members_of(group_id):
    return set(Task.objects.filter(group_id=group_id).values_list("id", flat=True))


def task_of(external_id):
    return Task.objects.get(prediction__external_id=external_id, reason__in=["low_confidence", "audit"])


# --- Building ------------------------------------------------------------------------------------


def test_build_groups_open_tasks_by_their_embedding(app_client, project):
    two_clusters(app_client)
    assert build(project) == {"groups": 2, "grouped_tasks": 12, "ungrouped_tasks": 0}
    groups = list(Group.objects.order_by("suggested_label"))
    by_prediction = [sorted(Task.objects.filter(group=g).values_list("prediction__external_id", flat=True))
                     for g in groups]
    assert by_prediction == [[f"p-{i}" for i in range(6)], sorted(f"p-{100 + i}" for i in range(6))]
    # The suggestion is the members' model label; the list shows size and suggestion.
    assert [g.suggested_label for g in groups] == ["3", "7"]
    _, reader = person(project)
    listed = reader.get(LIST + "?status=open").json()
    assert listed["count"] == 2 and {(r["size"], r["suggested_label"]) for r in listed["results"]} == {
        (6, "3"), (6, "7")}
    assert reader.get(LIST + "?status=done").json()["count"] == 0
    assert reader.get(LIST + "?status=nope").status_code == 400


def test_a_member_the_model_labels_unlike_its_cluster_is_left_out_of_the_group(app_client, project):
    # p-100 looks like the other 7s but the model called it a 1: the one a person would most
    # likely have to take out, so it is labeled on its own instead.
    two_clusters(app_client, disagreeing=True)
    assert build(project) == {"groups": 2, "grouped_tasks": 11, "ungrouped_tasks": 1}
    assert Task.objects.get(prediction__external_id="p-100").group_id is None
    assert sorted(Group.objects.values_list("suggested_label", flat=True)) == ["3", "7"]


def test_audit_gold_and_check_tasks_are_never_grouped(app_client, project):
    two_clusters(app_client)
    audit = Prediction.objects.get(external_id="p-1")
    Task.objects.filter(prediction=audit).update(reason="audit")
    gold = Prediction.objects.get(external_id="p-2")
    services.gold_answer_set(project=project, prediction=gold, label="3")
    Task.objects.filter(prediction__external_id="p-3").update(reason="group_check")
    result = build(project)
    grouped = set(Task.objects.filter(group__isnull=False).values_list("prediction__external_id", flat=True))
    assert not grouped & {"p-1", "p-2", "p-3"}
    assert result["grouped_tasks"] + result["ungrouped_tasks"] == 9  # 12 minus audit, gold, check


def test_without_embeddings_tasks_are_grouped_by_scaled_features(app_client, project):
    # f0 spans 0..1000, f1 0..1: unscaled, f0 alone would decide; scaled, both count.
    Project.objects.filter(pk=project.pk).update(features=[
        {"name": "f0", "type": "numeric", "min": 0, "max": 1000}, {"name": "f1", "type": "numeric", "min": 0, "max": 1},
        {"name": "color", "type": "categorical"}], labeling={"grouping": {"target_size": 5}})
    items = [prediction(i, confidence=0.3, label="3", features={"f0": 100 + i, "f1": 0.1, "color": "red"})
             for i in range(5)]
    items += [prediction(10 + i, confidence=0.3, label="7", features={"f0": 105 + i, "f1": 0.9, "color": "blue"})
              for i in range(5)]
    log(app_client, items)
    assert build(project)["groups"] == 2
    for group in Group.objects.all():
        assert group.representation == "features"
        assert len(set(Task.objects.filter(group=group).values_list("prediction__label", flat=True))) == 1


def test_rebuilding_leaves_leased_groups_alone_and_a_task_in_one_group(app_client, project):
    two_clusters(app_client)
    build(project)
    _, client = person(project)
    held = claim(client)
    held_members = members_of(held["id"])
    log(app_client, [embedded(200 + i, "5") for i in range(4)])
    result = build(project)
    assert result["groups"] == 2  # the unheld one again, and the new 5s
    assert Group.objects.get(pk=held["id"]).status == "leased" and members_of(held["id"]) == held_members
    grouped = Task.objects.filter(group__isnull=False).values_list("id", flat=True)
    assert len(grouped) == len(set(grouped)) == 16


def test_group_policy_is_checked_and_merged(db, project):
    _, ops = person(project, Role.OPS)
    url = "/api/v1/projects/digits/"
    bad = ops.patch(url, {"labeling": {"grouping": {"enabeld": True}}}, format="json")
    assert bad.status_code == 400 and "enabeld" in str(bad.json()["error"]["fields"])
    assert "enabled" in str(bad.json()["error"]["fields"])
    bad = ops.patch(url, {"labeling": {"grouping": {"min_size": 10, "max_size": 5}}}, format="json")
    assert bad.status_code == 400 and "max_size" in str(bad.json()["error"]["fields"])
    assert ops.patch(url, {"labeling": {"grouping": {"max_size": 30}}}, format="json").status_code == 200
    assert ops.patch(url, {"labeling": {"grouping": {"enabled": True}}}, format="json").status_code == 200
    grouping = ops.get(url).json()["labeling"]["grouping"]
    assert grouping["enabled"] is True and grouping["max_size"] == 30 and grouping["min_size"] == 3
    assert ops.get(url).json()["labeling"]["group_check_rate"] == 0.1


def test_the_beat_builds_enabled_projects_and_a_second_run_changes_nothing(app_client, project):
    two_clusters(app_client)
    assert groups_build_task() == 0 and Group.objects.count() == 0  # grouping off by default
    Project.objects.filter(pk=project.pk).update(labeling={"grouping": {"enabled": True, "target_size": 6}})
    assert groups_build_task() == 1
    before = sorted(Group.objects.values_list("id", "priority"))
    assert groups_build_task() == 0
    assert sorted(Group.objects.values_list("id", "priority")) == before


# --- Claiming -----------------------------------------------------------------------------------


def test_claim_holds_a_group_and_its_tasks_under_a_lease(app_client, project):
    two_clusters(app_client)
    build(project)
    user, client = person(project)
    group = claim(client)
    assert group["size"] == 6 and group["suggested_label"] in {"3", "7"}
    expires = timezone.datetime.fromisoformat(group["lease_expires_at"])
    assert timedelta(minutes=9) < expires - timezone.now() <= timedelta(minutes=10)
    distances = [m["distance"] for m in group["members"]]
    assert distances == sorted(distances, reverse=True)  # least typical first
    assert {m["prediction"]["id"] for m in group["members"]} and "atypical" in group["members"][0]
    ids = {m["task_id"] for m in group["members"]}
    assert set(Task.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"leased"}
    assert Lease.objects.filter(task_id__in=ids, user=user).count() == 6
    # Someone else gets the other group; nobody is served a held member as a single task.
    _, other = person(project)
    second = claim(other)
    assert second["id"] != group["id"] and not ids & {m["task_id"] for m in second["members"]}
    assert other.post("/api/v1/projects/digits/tasks/next/").status_code == 204
    assert claim(other) is None


def test_claiming_drops_members_taken_meanwhile_and_dissolves_a_group_left_too_small(app_client, project):
    two_clusters(app_client, per=3, target_size=3)
    build(project)
    user, client = person(project)
    # Two of one group's three members go to single-task annotators first.
    first = Group.objects.order_by("-priority", "id").first()
    taken = list(Task.objects.filter(group=first).order_by("id")[:2])
    Task.objects.filter(pk__in=[t.pk for t in taken]).update(status="leased")
    group = claim(client)
    assert group["id"] != first.pk and not Group.objects.filter(pk=first.pk).exists()
    assert Task.objects.filter(group_id=first.pk).count() == 0


def _twenty_clusters_of_five(project):
    app = factories.api_client(factories.user_with_role(Role.APP, project)[1])
    rng = np.random.default_rng(0)
    items = []
    for c in range(20):
        centre = np.zeros(24)
        centre[c] = 1.0
        for i in range(5):
            vector = (centre + rng.normal(0, 0.02, 24)).round(4).tolist()
            items.append(prediction(c * 10 + i, label=str(c % 10), confidence=0.3, embedding=vector))
    log(app, items)
    Project.objects.filter(pk=project.pk).update(labeling={"gold_rate": 0.0, "grouping": {"target_size": 5}})
    project.refresh_from_db()
    group_services.groups_build(project=project)


def _race(project, workers: int, single_workers: int = 0):
    """`workers` annotators at once, the first `single_workers` of them taking single tasks,
    the others groups, until nothing is left; returns the groups held and any errors."""
    users = [factories.user_with_role(Role.ANNOTATOR, project)[0] for _ in range(workers)]
    barrier = threading.Barrier(workers)
    held, errors, lock = [], [], threading.Lock()

    def by_group(user):
        while (group := group_services.group_claim(project=project, user=user)) is not None:
            ids = list(Task.objects.filter(group=group).values_list("id", flat=True))
            with lock:
                held.append((group.pk, ids))
            group_services.group_annotate(group_id=group.pk, user=user, label="3", exclude=[])

    def by_task(user):
        while (task := services.task_claim(project=project, user=user)) is not None:
            services.annotation_submit(task_id=task.pk, user=user, label="3")

    def work(index, user):
        try:
            barrier.wait()
            (by_task if index < single_workers else by_group)(user)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the caller's assertion
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, u)) for i, u in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return held, errors


def test_sixteen_annotators_claiming_groups_at_once_never_share_a_group_or_task(transactional_db):
    project = factories.project()
    _twenty_clusters_of_five(project)
    held, errors = _race(project, 16)
    assert not errors, errors
    groups = Counter(g for g, _ in held)
    tasks = Counter(t for _, ids in held for t in ids)
    assert len(groups) == 20 and max(groups.values()) == 1 and max(tasks.values()) == 1
    assert Annotation.objects.count() == Annotation.objects.values("task").distinct().count() == 100
    assert Label.objects.filter(is_current=True, source="group").count() == 100


def test_group_and_single_task_annotators_at_once_never_label_a_task_twice(transactional_db):
    project = factories.project()
    _twenty_clusters_of_five(project)
    held, errors = _race(project, 16, single_workers=8)
    assert not errors, errors
    tasks = Counter(t for _, ids in held for t in ids)
    assert not tasks or max(tasks.values()) == 1
    # Every routed task labeled exactly once, by a group or alone, and none left in the queue
    # (group checks drawn meanwhile are new tasks of their own, labeled or waiting).
    routed = Annotation.objects.exclude(task__reason="group_check")
    assert routed.count() == routed.values("task").distinct().count() == 100
    assert Label.objects.filter(is_current=True).count() == 100
    assert not Task.objects.filter(status__in=["open", "leased"]).exclude(reason="group_check").exists()
    assert not Task.objects.filter(group__status__in=["open", "leased"]).exists()


# --- Labeling -----------------------------------------------------------------------------------


def test_labeling_a_group_labels_each_member_and_returns_the_excluded(app_client, project):
    # Every group-labeled member is checked: the returned member still comes first.
    Project.objects.filter(pk=project.pk).update(labeling={**project.labeling, "group_check_rate": 1.0})
    two_clusters(app_client)
    build(project)
    user, client = person(project)
    group = claim(client)
    misfit = group["members"][0]["task_id"]
    response = client.post(f"/api/v1/groups/{group['id']}/annotations/",
                           {"label": "7", "exclude": [misfit], "lead_time_s": 10.0}, format="json")
    assert response.status_code == 201, response.content
    assert response.json() == {"labeled": 5, "returned": 1}
    labeled = [m["task_id"] for m in group["members"][1:]]
    labels = Label.objects.filter(task_id__in=labeled, is_current=True)
    assert labels.count() == 5 and {(x.label, x.source, x.resolved_by_id) for x in labels} == {("7", "group", user.pk)}
    annotations = Annotation.objects.filter(task_id__in=labeled)
    assert annotations.count() == 5 and set(annotations.values_list("group_id", flat=True)) == {group["id"]}
    assert sum(annotations.values_list("lead_time_s", flat=True)) == pytest.approx(10.0)
    assert set(Task.objects.filter(pk__in=labeled).values_list("status", flat=True)) == {"done"}
    returned = Task.objects.get(pk=misfit)
    assert (returned.status, returned.group_id, returned.grouping_excluded) == ("open", None, True)
    assert not Lease.objects.filter(task=returned).exists()
    done = Group.objects.get(pk=group["id"])
    assert (done.status, done.label, done.labeled_count) == ("done", "7", 5)
    # Back in the queue as a single task ahead of everything else (the model most likely got
    # it wrong), the five checks included, and never grouped again.
    assert Task.objects.filter(reason="group_check", status="open").count() == 5
    _, other = person(project)
    claim(other)  # the other group
    single = other.post("/api/v1/projects/digits/tasks/next/").json()["task"]
    assert single["id"] == misfit
    build(project)
    assert Task.objects.get(pk=misfit).group_id is None


@pytest.mark.parametrize(("body", "field"), [
    ({"label": "cat"}, "label"),
    ({"label": "3", "exclude": [999999]}, "exclude"),
    ({"label": "3", "exclude": ["x"]}, "exclude[0]"),
    ({"exclude": []}, "label"),
    ({"label": "3", "lead_time_s": -1}, "lead_time_s"),
    ({"label": "3", "ruled_out": True}, "label"),
])
def test_bad_group_annotations_store_nothing(app_client, project, body, field):
    two_clusters(app_client)
    build(project)
    _, client = person(project)
    group = claim(client)
    if body.pop("ruled_out", False):
        RuledOutLabel.objects.create(prediction=Task.objects.get(pk=group["members"][2]["task_id"]).prediction,
                                     label="3")
    response = client.post(f"/api/v1/groups/{group['id']}/annotations/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert Annotation.objects.count() == 0 and Label.objects.count() == 0
    assert Group.objects.get(pk=group["id"]).status == "leased"
    assert Lease.objects.count() == 6 and Task.objects.filter(reason="group_check").count() == 0


def test_a_lost_group_lease_is_409_and_the_sweep_returns_the_group(app_client, project):
    two_clusters(app_client)
    build(project)
    user, client = person(project)
    group = claim(client)
    assert client.post(f"/api/v1/groups/{group['id']}/heartbeat/").status_code == 200
    past = timezone.now() - timedelta(seconds=1)
    Group.objects.filter(pk=group["id"]).update(lease_expires_at=past)
    Lease.objects.filter(user=user).update(expires_at=past)
    assert leases_sweep() >= 1
    assert leases_sweep() == 0  # the second run finds nothing left to do
    assert Group.objects.get(pk=group["id"]).status == "open" and Lease.objects.count() == 0
    ids = members_of(group["id"])
    assert set(Task.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"open"}
    response = client.post(f"/api/v1/groups/{group['id']}/annotations/", {"label": "3"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "lease_lost"
    assert client.post(f"/api/v1/groups/{group['id']}/heartbeat/").status_code == 409
    assert Annotation.objects.count() == 0


def test_release_gives_the_group_back(app_client, project):
    two_clusters(app_client)
    build(project)
    _, client = person(project)
    group = claim(client)
    response = client.post(f"/api/v1/groups/{group['id']}/release/")
    assert response.json() == {"group": {"id": group["id"], "status": "open"}}
    assert Lease.objects.count() == 0 and set(Task.objects.values_list("status", flat=True)) == {"open"}


def test_with_overlap_a_group_label_is_one_annotators_annotation(app_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "annotations_per_task": 2})
    two_clusters(app_client)
    build(project)
    _, first = person(project)
    group = claim(first)
    assert first.post(f"/api/v1/groups/{group['id']}/annotations/", {"label": "3"}, format="json").json() == {
        "labeled": 6, "returned": 0}
    ids = [m["task_id"] for m in group["members"]]
    assert set(Task.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"open"}
    assert Label.objects.count() == 0
    # A second annotator's single annotation settles each by consensus.
    _, second = person(project)
    while (task := second.post("/api/v1/projects/digits/tasks/next/").json()["task"])["id"] not in ids:
        pass  # a task of the other group, also open to single claims
    second.post(f"/api/v1/tasks/{task['id']}/annotations/", {"label": "3"}, format="json")
    assert Label.objects.get(task_id=task["id"]).source == "consensus"


# --- Fixing groups -------------------------------------------------------------------------------


def test_split_and_merge_keep_every_member_in_exactly_one_group(app_client, project):
    # The model called every one a 3, so both digits stay in one group of 12.
    two_clusters(app_client, target_size=12, model_says="3")
    assert build(project)["groups"] == 1
    user, client = person(project)
    group = claim(client)
    everyone = members_of(group["id"])
    response = client.post(f"/api/v1/groups/{group['id']}/split/")
    assert response.status_code == 201, response.content
    a, b = response.json()["groups"]
    assert a["size"] == b["size"] == 6
    assert {frozenset(Task.objects.filter(group_id=g["id"]).values_list("prediction__external_id", flat=True))
            for g in (a, b)} == {frozenset(f"p-{i}" for i in range(6)), frozenset(f"p-{100 + i}" for i in range(6))}
    assert members_of(a["id"]) | members_of(b["id"]) == everyone and not members_of(a["id"]) & members_of(b["id"])
    assert Group.objects.get(pk=b["id"]).leased_by_id == user.pk
    merged = client.post(f"/api/v1/groups/{a['id']}/merge/", {"with": b["id"]}, format="json")
    assert merged.status_code == 200, merged.content
    assert merged.json()["group"]["size"] == 12 and members_of(a["id"]) == everyone
    assert not Group.objects.filter(pk=b["id"]).exists()
    # Somebody else's group cannot be merged or split.
    _, other = person(project)
    assert other.post(f"/api/v1/groups/{a['id']}/split/").status_code == 409
    assert client.post(f"/api/v1/groups/{a['id']}/merge/", {"with": a["id"]}, format="json").status_code == 400
    assert client.post(f"/api/v1/groups/{a['id']}/merge/", {}, format="json").status_code == 400


def test_merging_an_open_group_into_a_held_one_leases_its_members(app_client, project):
    two_clusters(app_client)
    build(project)
    user, client = person(project)
    held = claim(client)
    open_group = Group.objects.exclude(pk=held["id"]).get()
    response = client.post(f"/api/v1/groups/{held['id']}/merge/", {"with": open_group.pk}, format="json")
    assert response.json()["group"]["size"] == 12
    assert Lease.objects.filter(user=user).count() == 12
    assert set(Task.objects.values_list("status", flat=True)) == {"leased"}


# --- Similar tasks and checks ---------------------------------------------------------------------


def test_similar_lists_the_nearest_open_tasks(app_client, project):
    two_clusters(app_client)
    _, client = person(project)
    task = task_of("p-0")
    response = client.get(f"/api/v1/tasks/{task.pk}/similar/?k=5")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["prediction"]["id"] for r in results] and len(results) == 5
    assert {r["prediction"]["id"] for r in results} == {f"p-{i}" for i in range(1, 6)}
    distances = [r["distance"] for r in results]
    assert distances == sorted(distances)
    assert client.get(f"/api/v1/tasks/{task.pk}/similar/?k=0").status_code == 400


def test_group_labels_are_checked_individually_and_scored(app_client, project):
    Project.objects.filter(pk=project.pk).update(labeling={"group_check_rate": 1.0, "gold_rate": 0.0,
                                                           "grouping": {"target_size": 6}})
    two_clusters(app_client)
    build(project)
    labeler, client = person(project)
    group = claim(client)
    client.post(f"/api/v1/groups/{group['id']}/annotations/", {"label": "3", "lead_time_s": 12.0}, format="json")
    checks = Task.objects.filter(reason="group_check")
    assert checks.count() == 6 and set(checks.values_list("not_for_id", flat=True)) == {labeler.pk}
    # Ahead of every uncertainty-routed task (priorities up to 1): a busy queue never starves them.
    assert all(priority > 1.0 for priority in checks.values_list("priority", flat=True))
    # Never served to the group's own labeler.
    assert client.post("/api/v1/projects/digits/tasks/next/").json()["task"]["reason"] != "group_check"
    _, checker = person(project)
    checked = 0
    while checked < 6:
        task = checker.post("/api/v1/projects/digits/tasks/next/").json()["task"]
        if task["reason"] != "group_check":
            checker.post(f"/api/v1/tasks/{task['id']}/skip/")
            continue
        truth = "3" if checked < 4 else "8"
        checked += 1
        checker.post(f"/api/v1/tasks/{task['id']}/annotations/", {"label": truth, "lead_time_s": 3.0}, format="json")
    _, ops = person(project, Role.OPS)
    stats = ops.get("/api/v1/projects/digits/stats/").json()["group_labels"]
    assert (stats["accuracy"]["n"], stats["accuracy"]["correct"]) == (6, 4)
    assert stats["accuracy"]["low"] < 4 / 6 < stats["accuracy"]["high"]
    assert stats["by_annotator"][0]["annotator"] == labeler.username
    assert stats["items_per_minute"]["group"] == pytest.approx(6 / (12 / 60))


def test_group_list_query_count_does_not_grow(app_client, project, django_assert_max_num_queries):
    rng = random.Random(0)
    items = [embedded(i, rng.choice(["3", "7", "5"])) for i in range(60)]
    log(app_client, items)
    Project.objects.filter(pk=project.pk).update(labeling={"grouping": {"target_size": 5, "min_size": 2}})
    assert build(project)["groups"] >= 6
    _, client = person(project)
    client.get(LIST)  # the token and membership are cached from here on
    with CaptureQueriesContext(connection) as few:
        client.get(LIST + "?limit=2")
    with CaptureQueriesContext(connection) as many:
        client.get(LIST + "?limit=100")
    assert len(many) == len(few)
    group = claim(client)
    with django_assert_max_num_queries(12):
        client.post(f"/api/v1/groups/{group['id']}/heartbeat/")


def test_claiming_a_larger_group_costs_no_more_queries(app_client, project):
    def claim_queries(per):
        Task.objects.all().delete()
        Group.objects.all().delete()
        Prediction.objects.all().delete()
        two_clusters(app_client, per=per, target_size=per)
        build(project)
        _, client = person(project)
        client.get(LIST)  # the token and membership are cached from here on
        with CaptureQueriesContext(connection) as ctx:
            group = claim(client)
        assert group["size"] == per
        return len(ctx)

    assert claim_queries(12) <= claim_queries(4)


def test_labeling_a_larger_group_costs_no_more_queries(app_client, project):
    def label_queries(per):
        Task.objects.all().delete()
        Group.objects.all().delete()
        Label.objects.all().delete()
        Prediction.objects.all().delete()
        two_clusters(app_client, per=per, target_size=per)
        project.refresh_from_db()
        # Every member checked: the same statements whatever the draw.
        Project.objects.filter(pk=project.pk).update(labeling={**project.labeling, "group_check_rate": 1.0})
        build(project)
        _, client = person(project)
        group = claim(client)
        with CaptureQueriesContext(connection) as ctx:
            response = client.post(f"/api/v1/groups/{group['id']}/annotations/",
                                   {"label": "3", "exclude": [group["members"][0]["task_id"]]}, format="json")
        assert response.json() == {"labeled": per - 1, "returned": 1}
        return len(ctx)

    assert label_queries(12) <= label_queries(4)


def test_end_user_feedback_against_a_group_label_goes_to_a_person(app_client, project):
    # No random group checks: a member drawn for one already has a person's task queued, so
    # the feedback would add none (the next test).
    Project.objects.filter(pk=project.pk).update(labeling={**project.labeling, "group_check_rate": 0.0})
    two_clusters(app_client)
    build(project)
    _, client = person(project)
    group = claim(client)
    client.post(f"/api/v1/groups/{group['id']}/annotations/", {"label": "7"}, format="json")
    member = group["members"][0]["prediction"]["id"]
    response = app_client.post("/api/v1/projects/digits/feedback/", {"feedback": [
        {"prediction_id": member, "kind": "correct", "label": "3", "user": "u1"}]}, format="json")
    assert response.status_code == 201 and response.json()["routed"] == {"feedback_conflict": 1}


def test_feedback_against_a_group_label_of_a_member_already_checked_adds_no_second_task(app_client, project):
    Project.objects.filter(pk=project.pk).update(labeling={**project.labeling, "group_check_rate": 1.0})
    two_clusters(app_client)
    build(project)
    _, client = person(project)
    group = claim(client)
    client.post(f"/api/v1/groups/{group['id']}/annotations/", {"label": "7"}, format="json")
    member = group["members"][0]["prediction"]["id"]
    response = app_client.post("/api/v1/projects/digits/feedback/", {"feedback": [
        {"prediction_id": member, "kind": "correct", "label": "3", "user": "u1"}]}, format="json")
    assert response.status_code == 201 and response.json()["routed"] == {}
    open_tasks = Task.objects.filter(prediction__external_id=member, status="open")
    assert list(open_tasks.values_list("reason", flat=True)) == ["group_check"]
