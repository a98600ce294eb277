"""The audit log: promotions, rollbacks, label changes and role changes are written with
who, which project, what and the before/after; ops read their project's, admins all of it."""

from accounts.models import AuditEvent, Role
from accounts.services import account_upsert
from flywheel.models import ModelVersion, Prediction
from tests import factories
from tests.labeling.test_queue import annotate, annotator, claim, log, uncertain

AUDIT = "/api/v1/projects/digits/audit/"


def _events(client, **params):
    response = client.get(AUDIT, params)
    assert response.status_code == 200, response.content
    return response.json()


def test_promotion_and_rollback_are_audited_with_who_and_what(project, ops_client):
    for name in ("v1", "v2"):
        ModelVersion.objects.create(project=project, name=name)
    assert ops_client.post("/api/v1/projects/digits/models/v1/promote/", {}, format="json").status_code == 200
    assert ops_client.post("/api/v1/projects/digits/models/v2/promote/", {"reason": "better on eu"},
                           format="json").status_code == 200
    assert ops_client.post("/api/v1/projects/digits/models/rollback/", {}, format="json").status_code == 200

    events = _events(ops_client, action="model.")["results"]

    assert [(e["action"], e["target"]) for e in events] == [
        ("model.rollback", "v1"), ("model.promote", "v2"), ("model.promote", "v1")]
    rollback, promote = events[0], events[1]
    assert rollback["details"]["from"] == "v2" and rollback["actor"].startswith("ops")
    assert promote["details"]["previous"] == "v1" and promote["details"]["reason"] == "better on eu"
    assert all(e["project"] == "digits" for e in events)


def test_label_changes_by_review_undo_and_gold_are_audited(app_client, ops_client, project):
    log(app_client, uncertain(3))
    annotator_user, annotator_client = annotator(project)
    reviewer_user, reviewer_token = factories.user_with_role(Role.REVIEWER, project)
    reviewer = factories.api_client(reviewer_token)

    # p-0: annotated 1, the reviewer overrides it with 2.
    first = claim(annotator_client)
    assert annotate(annotator_client, first["id"], "1").status_code == 201
    assert reviewer.post(f"/api/v1/tasks/{first['id']}/review/", {"verdict": "accept", "label": "2"},
                         format="json").status_code == 200
    # p-1: annotated 3, then undone by the annotator.
    second = claim(annotator_client)
    assert annotate(annotator_client, second["id"], "3").status_code == 201
    assert annotator_client.post(f"/api/v1/tasks/{second['id']}/undo/").status_code == 200
    # p-2: ops set a gold answer, then change it.
    for label in ("4", "5"):
        assert ops_client.post("/api/v1/projects/digits/gold/", {"prediction_id": "p-2", "label": label},
                               format="json").status_code == 201

    by_action = {}
    for event in AuditEvent.objects.filter(project=project).order_by("id"):
        by_action.setdefault(event.action, []).append(event)
    p0 = str(Prediction.objects.get(external_id="p-0").pk)
    review = by_action["label.review"][0]
    assert (review.actor, review.target) == (reviewer_user, p0)
    assert review.details == {"task": first["id"], "verdict": "accept", "from": "1", "to": "2", "reason": ""}
    change = next(e for e in by_action["label.change"] if e.target == p0)
    assert change.actor == reviewer_user and (change.details["from"], change.details["to"]) == ("1", "2")
    undo = by_action["label.undo"][0]
    assert undo.actor == annotator_user and undo.details["from"] == "3" and undo.details["to"] is None
    gold = by_action["gold.set"]
    assert [(g.details["from"], g.details["label"]) for g in gold] == [(None, "4"), ("4", "5")]
    assert all(g.actor.account.role == Role.OPS for g in gold)


def test_a_rejection_withdraws_the_label_and_is_audited(app_client, project):
    log(app_client, uncertain(1))
    _, annotator_client = annotator(project)
    _, reviewer_token = factories.user_with_role(Role.REVIEWER, project)
    task = claim(annotator_client)
    annotate(annotator_client, task["id"], "7")
    factories.api_client(reviewer_token).post(f"/api/v1/tasks/{task['id']}/review/", {"verdict": "reject"},
                                              format="json")
    assert AuditEvent.objects.get(action="label.review").details["verdict"] == "reject"
    assert AuditEvent.objects.get(action="label.withdraw").details["label"] == "7"


def test_role_and_membership_changes_are_audited(project, other_project):
    admin, _ = factories.user_with_role(Role.ADMIN)
    account_upsert(username="sam", role=Role.ANNOTATOR, projects=[project], actor=admin)
    account_upsert(username="sam", role=Role.REVIEWER, projects=[project, other_project], actor=admin)

    change = AuditEvent.objects.get(action="account.role_change")
    assert change.actor == admin and change.target == "sam"
    assert change.details == {"from": "annotator", "to": "reviewer"}
    added = AuditEvent.objects.filter(action="account.membership_add", target="sam").order_by("id")
    assert [e.project.slug for e in added] == ["digits", "other"]


def test_project_audit_is_scoped_filtered_and_paginated(project, other_project, ops_client,
                                                        django_assert_max_num_queries):
    for name in ("a", "b", "c"):
        ModelVersion.objects.create(project=project, name=name)
        ops_client.post(f"/api/v1/projects/digits/models/{name}/promote/", {}, format="json")
    ModelVersion.objects.create(project=other_project, name="z")
    factories.user_with_role(Role.OPS, other_project)

    page = _events(ops_client, action="model.promote", limit=2, offset=1)
    assert page["count"] == 3 and [e["target"] for e in page["results"]] == ["b", "a"]
    with django_assert_max_num_queries(6):
        everything = _events(ops_client, limit=500)
    assert {e["project"] for e in everything["results"]} == {"digits"}
    bad = ops_client.get(AUDIT, {"limit": 0})
    assert bad.status_code == 400 and "limit" in bad.json()["error"]["fields"]
    assert ops_client.get("/api/v1/projects/other/audit/").status_code == 404


def test_admin_audit_has_every_project_and_account_events(project, other_project):
    _, admin_token = factories.user_with_role(Role.ADMIN)
    factories.user_with_role(Role.OPS, other_project, username="olga")
    admin = factories.api_client(admin_token)

    everything = admin.get("/api/v1/audit/", {"limit": 500}).json()
    assert {"account.create", "project.create"} <= {e["action"] for e in everything["results"]}
    assert any(e["project"] is None and e["target"] == "olga" for e in everything["results"])
    other = admin.get("/api/v1/audit/", {"project": "other"}).json()["results"]
    assert other and {e["project"] for e in other} == {"other"}
