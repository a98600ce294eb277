"""The console's drift page (/ops/<slug>/drift/) through Django's test client: run a check
now, set the reference to a dataset version or a window (refusals under their field, in
the API's words, nothing stored), see alerts and the reference's history."""

from html import unescape

import pytest
from django.test import Client

from accounts.models import AuditEvent, Role
from monitoring import selectors
from monitoring.models import DriftReport, Reference
from tests import factories
from tests.flywheel.test_console_datasets import make_versions


@pytest.fixture
def ops(db):
    project = make_versions()  # digits, dataset versions 1 and 2 ready, 3 failed
    user, _ = factories.user_with_role(Role.OPS, project, username="console-ops")
    client = Client()
    client.force_login(user)
    return project, user, client


def _field_errors(html: str, name: str) -> list[str]:
    return [unescape(part.split("</span>")[0]) for part in html.split(f'data-testid="error-{name}">')[1:]]


def test_the_reference_is_set_to_a_dataset_version(ops):
    project, user, client = ops
    assert "No reference set" in client.get("/ops/digits/drift/").content.decode()
    response = client.post("/ops/digits/drift/", {"form": "reference", "kind": "dataset_version",
                                                   "dataset_version": "2", "note": "after the relabeling"})
    assert response.status_code == 302
    current = selectors.reference_current(project=project)
    assert (current.kind, current.dataset_version) == ("dataset_version", 2)
    assert AuditEvent.objects.get(action="drift.reference_set", actor=user)
    html = client.get("/ops/digits/drift/").content.decode()
    assert "Drift is now measured against dataset version 2." in html
    reference_now = html.split('data-testid="reference-now" data-live="reference-now">')[1].split("</p>")[0]
    assert "dataset version 2" in reference_now


@pytest.mark.parametrize("form, field, message", [
    ({"kind": "dataset_version", "dataset_version": "9"}, "dataset_version",
     "Project 'digits' has no dataset version 9."),
    ({"kind": "dataset_version", "dataset_version": "3"}, "dataset_version", "Dataset version 3 is failed."),
    ({"kind": "dataset_version", "dataset_version": "x"}, "dataset_version", "A valid integer is required."),
    ({"kind": "window", "start": "2026-12-02T10:00", "end": "2026-12-02T08:00"}, "ref-end", "Must be after start."),
])
def test_a_bad_reference_is_refused_under_its_field_and_nothing_changes(ops, form, field, message):
    project, _, client = ops
    response = client.post("/ops/digits/drift/", {"form": "reference", **form})
    assert response.status_code == 400
    assert _field_errors(response.content.decode(), field) == [message]
    assert not Reference.objects.filter(project=project).exists()


def test_a_check_runs_now_and_a_bad_window_is_refused(ops):
    project, user, client = ops
    refused = client.post("/ops/digits/drift/", {"form": "check", "start": "yesterday"})
    assert refused.status_code == 400 and _field_errors(refused.content.decode(), "check-start")[0].startswith(
        "Datetime has wrong format.")
    assert not DriftReport.objects.exists()
    response = client.post("/ops/digits/drift/", {"form": "check"}, follow=True)
    report = DriftReport.objects.get(project=project)
    assert report.trigger == "on_demand"
    html = response.content.decode()
    assert f"Check #{report.pk}:" in html and 'data-testid="reports"' in html


def test_annotators_are_refused_and_strangers_get_a_404(ops):
    project, _, _ = ops
    user, _ = factories.user_with_role(Role.ANNOTATOR, project)
    client = Client()
    client.force_login(user)
    assert client.get("/ops/digits/drift/").status_code == 403
    assert client.post("/ops/digits/drift/", {"form": "check"}).status_code == 403
