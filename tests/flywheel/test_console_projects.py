"""The console's project pages through Django's test client: creating a project in the
form (features with types and ranges; refusals under their field, nothing stored) and
editing its policies, each field with its meaning and default, refused with the API's words."""

from html import unescape

import pytest
from django.test import Client

from accounts.models import AuditEvent, Membership, Role
from flywheel.models import Project
from tests import factories


@pytest.fixture
def ops(project):
    user, _ = factories.user_with_role(Role.OPS, project, username="console-ops")
    client = Client()
    client.force_login(user)
    return user, client


def _field_errors(html: str, name: str) -> list[str]:
    marker = f'data-testid="error-{name}">'
    return [unescape(part.split("</span>")[0]) for part in html.split(marker)[1:]]


def test_a_project_is_created_from_the_form_and_its_maker_is_a_member(ops):
    user, client = ops
    response = client.post("/ops/projects/new/", {
        "slug": "scans", "name": "Scans", "labels": "benign, malignant", "slices": "site",
        "features": "size numeric 0 40\nsite categorical\n",
    })
    assert response.status_code == 302 and response["Location"] == "/ops/scans/settings/"
    project = Project.objects.get(slug="scans")
    assert project.labels == ["benign", "malignant"] and project.slices == ["site"]
    assert project.features == [{"name": "size", "type": "numeric", "min": 0.0, "max": 40.0},
                                {"name": "site", "type": "categorical"}]
    assert Membership.objects.filter(user=user, project=project).exists()
    assert AuditEvent.objects.filter(action="project.create", actor=user, target="scans").exists()


@pytest.mark.parametrize("form, field, message", [
    ({"slug": "no spaces"}, "slug",
     "Enter a valid \"slug\" consisting of letters, numbers, underscores or hyphens."),
    ({"labels": ""}, "labels", "Ensure this field has at least 1 elements."),
    ({"labels": "a, a"}, "labels", "Labels must be unique."),
    ({"features": "size numeric 40 0"}, "features", "line 1, max: Must be greater than min (40)."),
    ({"features": "size numeric 0"}, "features", "line 1, max: A range needs both min and max; min alone is given."),
    ({"features": "size text"}, "features", "line 1, type: \"text\" is not a valid choice."),
    ({"slug": "digits"}, "slug", "A project with this slug already exists."),
])
def test_a_bad_value_is_refused_next_to_its_field_and_nothing_is_stored(ops, form, field, message):
    user, client = ops
    data = {"slug": "scans", "name": "Scans", "labels": "benign, malignant", "features": "", "slices": "", **form}
    response = client.post("/ops/projects/new/", data)
    assert response.status_code == 400
    assert _field_errors(response.content.decode(), field) == [message]
    assert Project.objects.count() == 1 and not AuditEvent.objects.filter(action="project.create", actor=user).exists()


def test_the_settings_show_each_fields_meaning_default_and_value(project, ops):
    _, client = ops
    html = client.get("/ops/digits/settings/").content.decode()
    for section in ("routing", "labeling", "feedback", "drift", "retraining", "retention"):
        assert f'data-testid="form-{section}"' in html
    assert "Share of predictions routed at random, whatever their confidence." in html
    assert "Default: <code>0.05</code>" in html  # labeling.gold_rate, retraining.significance_level...
    assert 'name="drift.webhook_secret" type="password"' in html


def test_a_policy_is_saved_and_a_bad_value_refused_with_the_apis_words(project, ops):
    user, client = ops
    refused = client.post("/ops/digits/settings/", {"section": "routing", "routing.threshold": "1.5",
                                                     "routing.audit_rate": "0.2"})
    assert refused.status_code == 400
    html = refused.content.decode()
    assert _field_errors(html, "routing.threshold") == ["Ensure this value is less than or equal to 1.0."]
    assert 'value="1.5"' in html  # what was typed stays
    project.refresh_from_db()
    assert project.routing["audit_rate"] != 0.2  # nothing stored from the failed form
    api = factories.api_client(factories.user_with_role(Role.OPS, project)[1])
    body = api.patch("/api/v1/projects/digits/", {"routing": {"threshold": 1.5}}, format="json").json()
    assert body["error"]["fields"]["routing.threshold"] == ["Ensure this value is less than or equal to 1.0."]

    saved = client.post("/ops/digits/settings/", {"section": "routing", "routing.threshold": "0.4",
                                                   "routing.audit_rate": "0.2", "routing.demote_stale": "false"})
    assert saved.status_code == 302
    project.refresh_from_db()
    assert (project.routing["threshold"], project.routing["audit_rate"], project.routing["demote_stale"]) == (
        0.4, 0.2, False)
    assert AuditEvent.objects.get(action="project.update", actor=user).details == {"fields": ["routing"]}


def test_the_retention_policy_is_set_from_the_settings_page(project, ops):
    _, client = ops
    refused = client.post("/ops/digits/settings/", {"section": "retention", "retention.raw_days": "0"})
    assert refused.status_code == 400
    assert _field_errors(refused.content.decode(), "retention.raw_days") == [
        "Ensure this value is greater than or equal to 1."]
    saved = client.post("/ops/digits/settings/", {"section": "retention", "retention.raw_days": "30",
                                                   "retention.archive": "true"})
    assert saved.status_code == 302
    project.refresh_from_db()
    assert project.retention == {"raw_days": 30, "archive": True}


def test_labels_cannot_be_removed_and_a_short_webhook_secret_is_refused(project, ops):
    _, client = ops
    removed = client.post("/ops/digits/settings/", {"section": "general", "name": "Digits",
                                                    "labels": "0, 1", "slices": ""})
    assert removed.status_code == 400
    assert _field_errors(removed.content.decode(), "labels")[0].startswith("Labels cannot be removed: 2, 3")
    short = client.post("/ops/digits/settings/", {"section": "drift", "drift.webhook_secret": "short"})
    assert _field_errors(short.content.decode(), "drift.webhook_secret") == ["At least 16 characters."]
    kept = client.post("/ops/digits/settings/", {"section": "drift", "drift.webhook_secret": "",
                                                 "drift.psi_threshold": "0.2"})
    assert kept.status_code == 302
    project.refresh_from_db()
    assert project.drift["psi_threshold"] == 0.2


def test_annotators_are_refused(project):
    user, _ = factories.user_with_role(Role.ANNOTATOR, project)
    client = Client()
    client.force_login(user)
    assert client.get("/ops/projects/new/").status_code == 403
    assert client.get("/ops/digits/settings/").status_code == 403
