"""Projects API and the flywheel_user command."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts import tokens
from accounts.models import Account, ApiToken, AuditEvent, Membership
from flywheel.models import Project
from tests import factories

BODY = {
    "slug": "digits", "name": "Digits", "labels": ["0", "1", "2"],
    "features": [{"name": "f0", "type": "numeric"}, {"name": "color", "type": "categorical"}],
    "routing": {"uncertainty": "least_confidence", "threshold": 0.3, "audit_rate": 0.02,
                "daily_budget": 1000, "annotations_per_task": 1},
    "retraining": {"min_new_labels": 500, "on_drift": True, "schedule": "weekly"},
}


@pytest.fixture
def ops(db):
    user, token = factories.user_with_role("ops")
    return user, factories.api_client(token)


def test_ops_creates_a_project_and_becomes_its_member(ops):
    user, client = ops
    response = client.post("/api/v1/projects/", BODY, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["slug"] == "digits" and body["labels"] == ["0", "1", "2"]
    assert body["routing"]["threshold"] == 0.3 and body["retraining"]["schedule"] == "weekly"
    assert Membership.objects.filter(user=user, project__slug="digits").exists()
    assert [p["slug"] for p in client.get("/api/v1/projects/").json()] == ["digits"]
    assert AuditEvent.objects.filter(action="project.create").count() == 1


def test_routing_defaults_fill_what_the_request_leaves_out(ops):
    _, client = ops
    body = client.post("/api/v1/projects/", {"slug": "p", "name": "P", "labels": ["a", "b"]}, format="json").json()
    assert body["routing"] == {"uncertainty": "least_confidence", "threshold": 0.3, "audit_rate": 0.02,
                               "daily_budget": 1000, "annotations_per_task": 1, "demote_stale": True,
                               "skip_resolved": True, "disagreement_rate": 1.0}
    assert body["features"] == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slug": "Not A Slug"}, "slug"),
        ({"labels": []}, "labels"),
        ({"labels": ["a", "a"]}, "labels"),
        ({"labels": "abc"}, "labels"),
        ({"features": [{"name": "x", "type": "fuzzy"}]}, "features[0].type"),
        ({"features": [{"name": "bad name", "type": "numeric"}]}, "features[0].name"),
        ({"features": [{"name": "x", "type": "numeric"}, {"name": "x", "type": "numeric"}]}, "features"),
        ({"routing": {"threshold": 2}}, "routing.threshold"),
        ({"routing": {"uncertainty": "vibes"}}, "routing.uncertainty"),
        ({"routing": {"annotations_per_task": 0}}, "routing.annotations_per_task"),
        ({"retraining": {"schedule": "sometimes"}}, "retraining.schedule"),
        ({"features": [{"name": "x", "type": "numeric", "min": 16, "max": 0}]}, "features[0].max"),
        ({"features": [{"name": "x", "type": "numeric", "min": 3, "max": 3}]}, "features[0].max"),
        ({"features": [{"name": "x", "type": "numeric", "min": 0}]}, "features[0].max"),
        ({"features": [{"name": "x", "type": "numeric", "max": 16}]}, "features[0].min"),
        ({"features": [{"name": "x", "type": "numeric", "min": "low", "max": 16}]}, "features[0].min"),
        ({"features": [{"name": "x", "type": "numeric", "min": 0, "max": "1e400"}]}, "features[0].max"),
        ({"features": [{"name": "c", "type": "categorical", "min": 0, "max": 1}]}, "features[0].min"),
        ({"name": None}, "name"),
    ],
)
def test_invalid_project_is_refused_with_the_field(ops, changes, field):
    _, client = ops
    body = {**BODY, **changes}
    response = client.post("/api/v1/projects/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"], response.json()
    assert not Project.objects.exists()


def test_duplicate_slug_is_409(ops):
    _, client = ops
    client.post("/api/v1/projects/", BODY, format="json")
    response = client.post("/api/v1/projects/", BODY, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "project_exists"


def test_patch_merges_policies_and_only_grows_labels_and_features(ops):
    _, client = ops
    client.post("/api/v1/projects/", BODY, format="json")
    url = "/api/v1/projects/digits/"
    body = client.patch(url, {"routing": {"threshold": 0.5}, "labels": ["0", "1", "2", "3"]}, format="json").json()
    assert body["routing"]["threshold"] == 0.5 and body["routing"]["audit_rate"] == 0.02
    assert body["labels"] == ["0", "1", "2", "3"]
    removed = client.patch(url, {"labels": ["0", "1"]}, format="json")
    assert removed.status_code == 400 and "labels" in removed.json()["error"]["fields"]
    retyped = client.patch(url, {"features": [{"name": "f0", "type": "categorical"}]}, format="json")
    assert retyped.status_code == 400 and "features" in retyped.json()["error"]["fields"]
    assert Project.objects.get(slug="digits").labels == ["0", "1", "2", "3"]


def test_a_numeric_feature_declares_its_range_and_may_gain_one_later(ops):
    _, client = ops
    body = {**BODY, "features": [{"name": "px0", "type": "numeric", "min": 0, "max": 16},
                                 {"name": "f1", "type": "numeric"}, {"name": "color", "type": "categorical"}]}
    created = client.post("/api/v1/projects/", body, format="json").json()
    # A feature without a range reads as before: no min or max keys.
    assert created["features"] == [{"name": "px0", "type": "numeric", "min": 0.0, "max": 16.0},
                                   {"name": "f1", "type": "numeric"}, {"name": "color", "type": "categorical"}]
    ranged = [*created["features"][:1], {"name": "f1", "type": "numeric", "min": -1, "max": 1},
              created["features"][2]]
    updated = client.patch("/api/v1/projects/digits/", {"features": ranged}, format="json")
    assert updated.status_code == 200, updated.json()
    assert Project.objects.get(slug="digits").features[1] == {"name": "f1", "type": "numeric", "min": -1.0, "max": 1.0}
    refused = client.patch("/api/v1/projects/digits/", {"features": [
        *ranged[:1], {"name": "f1", "type": "numeric", "min": 2, "max": 1}, ranged[2]]}, format="json")
    assert refused.status_code == 400 and "features[1].max" in refused.json()["error"]["fields"]
    assert Project.objects.get(slug="digits").features[1]["min"] == -1.0


def test_a_project_you_are_not_member_of_is_invisible(ops, db):
    factories.project(slug="secret")
    _, client = ops
    assert client.get("/api/v1/projects/").json() == []
    assert client.get("/api/v1/projects/secret/").status_code == 404


def test_flywheel_user_prints_its_key_once_and_is_idempotent(db):
    factories.project(slug="digits")
    out1, out2, err2 = StringIO(), StringIO(), StringIO()
    call_command("flywheel_user", "checkout-app", "--role", "app", "--project", "digits", stdout=out1)
    call_command("flywheel_user", "checkout-app", "--role", "app", "--project", "digits", stdout=out2, stderr=err2)
    lines = out1.getvalue().splitlines()
    # The key is shown when it is made; the second run has none to show (it is not kept).
    assert len(lines) == 1 and out2.getvalue() == "" and "--rotate-token" in err2.getvalue()
    token = ApiToken.objects.get(digest=tokens.key_digest(lines[0]))
    assert token.user.username == "checkout-app" and token.user.account.role == "app"
    assert Membership.objects.filter(user=token.user).count() == 1
    client = factories.api_client(lines[0])
    response = client.post("/api/v1/projects/digits/predictions/", factories.prediction(1), format="json")
    assert response.status_code == 201


def test_flywheel_user_changes_role_and_audits_it(db):
    call_command("flywheel_user", "sam", "--role", "annotator", stdout=StringIO())
    call_command("flywheel_user", "sam", "--role", "reviewer", stdout=StringIO())
    assert Account.objects.get(user__username="sam").role == "reviewer"
    event = AuditEvent.objects.get(action="account.role_change")
    assert event.details == {"from": "annotator", "to": "reviewer"} and event.target == "sam"


def test_flywheel_user_rotate_token_revokes_the_old_one(db):
    old = StringIO()
    call_command("flywheel_user", "app1", "--role", "app", stdout=old)
    new = StringIO()
    call_command("flywheel_user", "app1", "--role", "app", "--rotate-token", stdout=new)
    assert old.getvalue() != new.getvalue()
    response = factories.api_client(old.getvalue().strip()).get("/api/v1/projects/")
    assert response.status_code == 401


def test_flywheel_user_refuses_unknown_project(db):
    with pytest.raises(CommandError, match="No project 'ghost'"):
        call_command("flywheel_user", "x", "--role", "app", "--project", "ghost", stdout=StringIO())


@pytest.mark.parametrize("policy, key, reason", [
    ("routing", "thresold", "Unknown key; did you mean 'threshold'?"),
    ("labeling", "gold_rat", "Unknown key; did you mean 'gold_rate'?"),
    ("feedback", "min_user", "Unknown key; did you mean 'min_users'?"),
    ("drift", "psi_treshold", "Unknown key; did you mean 'psi_threshold'?"),
    ("retraining", "min_improvment", "Unknown key; did you mean 'min_improvement'?"),
    ("retraining", "colour", "Unknown key."),
    ("retention", "raw_dayz", "Unknown key; did you mean 'raw_days'?"),
])
def test_a_policy_key_nobody_knows_is_refused_with_the_key_probably_meant(ops, policy, key, reason):
    _, client = ops
    body = {**BODY, policy: {**BODY.get(policy, {}), key: 0.3}}
    response = client.post("/api/v1/projects/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {f"{policy}.{key}": [reason]}
    assert not Project.objects.exists()

    assert client.post("/api/v1/projects/", BODY, format="json").status_code == 201
    before = Project.objects.values(policy).get()
    response = client.patch("/api/v1/projects/digits/", {policy: {key: 0.3}}, format="json")
    assert response.status_code == 400 and f"{policy}.{key}" in response.json()["error"]["fields"]
    assert Project.objects.values(policy).get() == before


def test_every_key_a_project_shows_can_be_sent_back(ops):
    """Ops may GET a project, change a value and PATCH every policy back whole."""
    _, client = ops
    shown = client.post("/api/v1/projects/", BODY, format="json").json()
    changes = {name: shown[name] for name in ("routing", "labeling", "feedback", "drift", "retention")}
    changes["retraining"] = {k: v for k, v in shown["retraining"].items() if k != "external_secret"}
    response = client.patch("/api/v1/projects/digits/", changes, format="json")
    assert response.status_code == 200, response.json()
