"""The console's datasets page (/ops/<slug>/datasets/) through Django's test client: the
versions as the API lists them, a new version from the form (a bad note refused next to
the field, nothing stored), and the diff of two versions with its refusals per field."""

import json
from html import unescape

import pytest
from django.db import transaction
from django.test import Client

from accounts.models import AuditEvent, Role
from flywheel.datasets import services as datasets
from flywheel.models import DatasetVersion
from labeling.models import Label
from tests import factories
from tests.flywheel.training.training_data import digits_project, log_and_label


def make_versions():
    """v1 from 60 labeled digits; then 5 relabeled and 10 more labeled: v2; v3 failed."""
    project = digits_project()
    ids = log_and_label(project, start=0, count=60)
    first = datasets.dataset_version_create(project=project)
    datasets.dataset_version_build(version_id=first.pk)
    for label in Label.objects.filter(prediction_id__in=ids[:5], is_current=True):
        label.label = str((int(label.label) + 1) % 10)
        label.save()
    log_and_label(project, start=60, count=10)
    second = datasets.dataset_version_create(project=project)
    datasets.dataset_version_build(version_id=second.pk)
    with transaction.atomic():  # failed before its build could start (eager Celery runs it on commit)
        failed = datasets.dataset_version_create(project=project)
        datasets.dataset_version_fail(version_id=failed.pk, reason="the store was down")
    return project


@pytest.fixture
def two_versions(db):
    return make_versions()


@pytest.fixture
def ops(two_versions):
    user, _ = factories.user_with_role(Role.OPS, two_versions, username="console-ops")
    client = Client()
    client.force_login(user)
    return user, client


def _embedded(html: str, name: str):
    return json.loads(html.split(f'id="{name}" type="application/json">')[1].split("</script>")[0])


def test_the_versions_are_the_apis_answer(ops, django_assert_max_num_queries):
    _, client = ops
    with django_assert_max_num_queries(12):
        html = client.get("/ops/digits/datasets/").content.decode()
    versions = _embedded(html, "versions-initial")
    assert versions == client.get("/api/v1/projects/digits/datasets/").json()
    assert [(v["version"], v["status"]) for v in versions] == [(3, "failed"), (2, "ready"), (1, "ready")]
    assert _embedded(html, "datasets-config") == {"versions": "/api/v1/projects/digits/datasets/"}


def test_the_diff_of_two_versions_with_examples(ops):
    _, client = ops
    response = client.get("/ops/digits/datasets/", {"a": "1", "b": "2", "examples": "3"})
    html = response.content.decode()
    assert response.status_code == 200
    counts = {kind: int(html.split(f'data-testid="diff-{kind}">')[1].split("<")[0])
              for kind in ("added", "removed", "relabeled")}
    assert counts == {"added": 10, "removed": 0, "relabeled": 5}
    assert html.count("<td>relabeled</td>") == 3 and html.count("<td>added</td>") == 3


@pytest.mark.parametrize("query, field, message", [
    ({"a": "x", "b": "2"}, "a", "A valid integer is required."),
    ({"a": "1", "b": "9"}, "b", "Project 'digits' has no dataset version 9."),
    ({"a": "3", "b": "2"}, "a", "Dataset version 3 is failed, not ready."),
    ({"a": "1", "b": "2", "examples": "500"}, "examples", "Ensure this value is less than or equal to 100."),
])
def test_a_bad_diff_is_refused_next_to_its_field(ops, query, field, message):
    _, client = ops
    response = client.get("/ops/digits/datasets/", query)
    html = response.content.decode()
    assert response.status_code == 400
    assert unescape(html.split(f'data-testid="error-{field}">')[1].split("</span>")[0]) == message
    assert 'data-testid="diff"' not in html


def test_a_new_version_from_the_form_and_a_refused_note(ops, django_capture_on_commit_callbacks):
    user, client = ops
    refused = client.post("/ops/digits/datasets/", {"note": "x" * 501})
    assert refused.status_code == 400
    assert "Ensure this field has no more than 500 characters." in refused.content.decode()
    assert DatasetVersion.objects.count() == 3
    with django_capture_on_commit_callbacks(execute=True):
        made = client.post("/ops/digits/datasets/", {"note": "after the relabeling sprint"})
    assert made.status_code == 302
    version = DatasetVersion.objects.get(number=4)
    assert (version.note, version.status) == ("after the relabeling sprint", "ready")
    assert AuditEvent.objects.filter(action="dataset.create", actor=user).exists()


def test_annotators_are_refused(two_versions):
    user, _ = factories.user_with_role(Role.ANNOTATOR, two_versions)
    client = Client()
    client.force_login(user)
    assert client.get("/ops/digits/datasets/").status_code == 403
    assert client.post("/ops/digits/datasets/", {}).status_code == 403
