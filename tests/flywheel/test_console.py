"""The console's training page (/ops/<slug>/training/) through Django's test client: the
form refuses what the API refuses, next to the field and with nothing stored; promote and
rollback write the API's audit events. The browser test is test_console_browser.py."""

import json
from html import unescape as html_unescape

import pytest
from django.test import Client

from accounts.models import AuditEvent, Role
from flywheel.models import ModelAlias, ModelSource, ModelVersion, TrainingRun
from flywheel.training import registry
from tests import factories


@pytest.fixture
def ops(project):
    user, _ = factories.user_with_role(Role.OPS, project, username="console-ops")
    client = Client()
    client.force_login(user)
    return user, client


def _versions(project, *names):
    return [ModelVersion.objects.create(project=project, name=name, source=ModelSource.EXTERNAL) for name in names]


def test_the_page_draws_runs_from_the_apis_serializer_and_polls_the_api(project, ops):
    _, client = ops
    TrainingRun.objects.create(project=project, number=1, status="running", stage="train", trigger="manual",
                               trainer="sklearn", progress=0.4)
    page = client.get("/ops/digits/training/")
    html = page.content.decode()
    assert page.status_code == 200 and 'data-testid="start-run"' in html
    runs = json.loads(html.split('id="runs-initial" type="application/json">')[1].split("</script>")[0])
    assert runs == client.get("/api/v1/projects/digits/training-runs/").json()
    config = json.loads(html.split('id="training-config" type="application/json">')[1].split("</script>")[0])
    assert config["runs"] == "/api/v1/projects/digits/training-runs/"


@pytest.mark.parametrize("value, message", [
    ("x", "A valid integer is required."),
    ("0", "Ensure this value is greater than or equal to 1."),
    ("7", "Project 'digits' has no dataset version 7."),
])
def test_a_bad_dataset_version_is_refused_next_to_the_field_and_nothing_is_stored(project, ops, value, message):
    _, client = ops
    response = client.post("/ops/digits/training/", {"dataset_version": value})
    html = response.content.decode()
    assert response.status_code == 400
    field_error = html.split('data-testid="error-dataset_version">')[1].split("</span>")[0]
    assert html_unescape(field_error) == message
    assert f'value="{value}"' in html  # what was typed stays in the box
    assert not TrainingRun.objects.exists() and not AuditEvent.objects.filter(action="training.request").exists()
    # The API refuses the same value with the same words.
    api = factories.api_client(factories.user_with_role(Role.OPS, project)[1])
    refused = api.post("/api/v1/projects/digits/training-runs/", {"dataset_version": value}, format="json").json()
    assert message in json.dumps(refused)


def test_starting_a_run_records_who_asked(project, ops, django_capture_on_commit_callbacks):
    user, client = ops
    project.retraining = {**project.retraining, "trainer": "external"}  # the run waits; nothing trains here
    project.save()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/ops/digits/training/", {"dataset_version": ""})
    assert response.status_code == 302 and response["Location"] == "/ops/digits/training/"
    run = TrainingRun.objects.get()
    assert run.trigger == "manual" and run.created_by == user
    assert AuditEvent.objects.get(action="training.request").actor == user
    assert "Training run #1 is running." in client.get("/ops/digits/training/").content.decode()


def test_promote_and_rollback_say_what_changes_and_write_the_audit_log(project, ops):
    user, client = ops
    first, second = _versions(project, "v1", "v2")
    registry.model_promote(project=project, model_version=first)
    html = client.get("/ops/digits/training/").content.decode()
    assert "Promote v2 to champion?" in html and "The champion becomes v2 (it is v1 now)." in html
    assert "Roll back" not in html  # nothing to roll back to yet
    client.post("/ops/digits/models/v2/promote/", {"reason": "v2 reads the new scanner"})
    assert ModelAlias.objects.get(project=project, alias="champion").model_version == second
    event = AuditEvent.objects.get(action="model.promote", actor=user)
    assert event.details["reason"] == "v2 reads the new scanner"
    html = client.get("/ops/digits/training/").content.decode()
    rollback = html.split('data-testid="rollback-change">')[1].split("</ul>")[0]
    assert "Roll back from v2 to v1?" in html and "The champion becomes v1 (it is v2 now)." in rollback
    response = client.post("/ops/digits/models/rollback/", {"reason": "v2 misreads sevens"}, follow=True)
    assert "Rolled back: v1 is the champion again (was v2)." in response.content.decode()
    assert ModelAlias.objects.get(project=project, alias="champion").model_version == first
    assert AuditEvent.objects.get(action="model.rollback").details == {"from": "v2", "reason": "v2 misreads sevens"}


def test_refused_actions_come_back_as_messages_and_change_nothing(project, ops):
    _, client = ops
    (first,) = _versions(project, "v1")
    registry.model_promote(project=project, model_version=first)
    again = client.post("/ops/digits/models/v1/promote/", {}, follow=True).content.decode()
    assert "&#x27;v1&#x27; is already the champion." in again
    nothing = client.post("/ops/digits/models/rollback/", {}, follow=True).content.decode()
    assert "There is no earlier champion to roll back to." in nothing
    long_reason = client.post("/ops/digits/models/rollback/", {"reason": "x" * 1001}, follow=True).content.decode()
    assert "reason: Ensure this field has no more than 1000 characters." in long_reason
    missing = client.post("/ops/digits/models/nope/promote/", {}, follow=True).content.decode()
    assert "No model version &#x27;nope&#x27; in project &#x27;digits&#x27;." in missing
    assert list(AuditEvent.objects.filter(action__startswith="model.").values_list("action", flat=True)) == [
        "model.promote"]


def test_annotators_get_the_styled_403_and_strangers_a_404(project, other_project):
    user, _ = factories.user_with_role(Role.ANNOTATOR, project)
    client = Client()
    client.force_login(user)
    refused = client.get("/ops/digits/training/")
    assert refused.status_code == 403 and 'data-testid="error-page"' in refused.content.decode()
    assert client.post("/ops/digits/models/rollback/").status_code == 403
    ops_user, _ = factories.user_with_role(Role.OPS, project)
    client.force_login(ops_user)
    assert client.get("/ops/other/training/").status_code == 404


def test_the_training_page_costs_the_same_queries_with_more_models(project, ops, django_assert_max_num_queries):
    _, client = ops
    for count in (2, 12):
        versions = _versions(project, *(f"m{count}-{i}" for i in range(count)))
        for version in versions:
            registry.model_promote(project=project, model_version=version)
        with django_assert_max_num_queries(20):
            assert client.get("/ops/digits/training/").status_code == 200
