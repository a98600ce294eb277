"""Who may do what: every API endpoint x every role -> the expected status, from one table.

A new endpoint that is not in ENDPOINTS fails `test_every_api_endpoint_is_in_the_table`, so
none can be left out of the matrix."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import Role
from flywheel.demo import digit_png
from flywheel.models import Project
from monitoring import services as monitoring_services
from tests import factories

ROLES = ["anonymous", "annotator", "reviewer", "ops", "admin", "app", "app_other_project"]
EVERYONE = {"annotator", "reviewer", "ops", "admin", "app", "app_other_project"}


class Endpoint:
    def __init__(self, method, path, allowed, *, ok=200, body=None, member_scoped=True, setup=None):
        self.method, self.path, self.allowed, self.ok = method, path, set(allowed), ok
        self.body, self.member_scoped, self.setup = body, member_scoped, setup

    def __repr__(self):
        return f"{self.method} {self.path}"


def _prediction(**kw):
    return factories.prediction(1, **kw)


ANNOTATORS = {"annotator", "reviewer", "ops", "admin"}


def _last_day():
    now = datetime.now(UTC)
    return {"start": (now - timedelta(days=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}


# `{slug}` is the project every role but app_other_project belongs to.
ENDPOINTS = [
    Endpoint("GET", "/api/v1/projects/", EVERYONE, member_scoped=False),
    Endpoint("POST", "/api/v1/projects/", {"ops", "admin"}, ok=201, member_scoped=False,
             body={"slug": "fresh", "name": "Fresh", "labels": ["a", "b"]}),
    Endpoint("GET", "/api/v1/projects/{slug}/", EVERYONE),
    Endpoint("PATCH", "/api/v1/projects/{slug}/", {"ops", "admin"}, body={"name": "Renamed"}),
    Endpoint("POST", "/api/v1/projects/{slug}/predictions/", {"app", "admin"}, ok=201, body=_prediction()),
    Endpoint("GET", "/api/v1/projects/{slug}/predictions/p-0/", {"app", "ops", "admin"},
             setup="prediction"),
    Endpoint("GET", "/api/v1/projects/{slug}/stats/", {"ops", "admin"}),
    Endpoint("POST", "/api/v1/projects/{slug}/feedback/", {"app", "admin"}, ok=201, setup="prediction",
             body={"prediction_id": "p-0", "kind": "confirm"}),
    Endpoint("POST", "/api/v1/projects/{slug}/tasks/next/", ANNOTATORS, ok=204),
    Endpoint("GET", "/api/v1/projects/{slug}/tasks/", ANNOTATORS),
    Endpoint("GET", "/api/v1/projects/{slug}/annotators/me/", ANNOTATORS),
    Endpoint("GET", "/api/v1/projects/{slug}/gold/", {"ops", "admin"}),
    Endpoint("POST", "/api/v1/projects/{slug}/gold/", {"ops", "admin"}, ok=201, setup="task",
             body={"prediction_id": "p-0", "label": "1"}),
    # Task endpoints: an allowed member who holds no lease learns that (409); others never get that far.
    Endpoint("POST", "/api/v1/tasks/{task}/heartbeat/", ANNOTATORS, ok=409, setup="task"),
    Endpoint("POST", "/api/v1/tasks/{task}/annotations/", ANNOTATORS, ok=409, setup="task", body={"label": "1"}),
    Endpoint("POST", "/api/v1/tasks/{task}/skip/", ANNOTATORS, ok=409, setup="task"),
    Endpoint("POST", "/api/v1/tasks/{task}/release/", ANNOTATORS, ok=200, setup="task"),
    Endpoint("POST", "/api/v1/tasks/{task}/undo/", ANNOTATORS, ok=409, setup="task"),
    Endpoint("POST", "/api/v1/tasks/{task}/review/", {"reviewer", "ops", "admin"}, ok=409, setup="task",
             body={"verdict": "accept"}),
    Endpoint("GET", "/api/v1/tasks/{task}/image/", ANNOTATORS, setup="task"),
    # Datasets: version 1 is ready, version 2 failed (setup="datasets").
    Endpoint("GET", "/api/v1/projects/{slug}/datasets/", {"ops", "admin"}),
    Endpoint("POST", "/api/v1/projects/{slug}/datasets/", {"ops", "admin"}, ok=202, body={"note": "matrix"}),
    Endpoint("GET", "/api/v1/projects/{slug}/datasets/1/", {"ops", "admin"}, setup="datasets"),
    Endpoint("POST", "/api/v1/projects/{slug}/datasets/2/retry/", {"ops", "admin"}, ok=202, setup="datasets"),
    Endpoint("GET", "/api/v1/projects/{slug}/datasets/1/diff/1/", {"ops", "admin"}, setup="datasets"),
    Endpoint("GET", "/api/v1/projects/{slug}/datasets/1/export/jsonl/", {"ops", "admin"}, setup="datasets"),
    Endpoint("GET", "/api/v1/projects/{slug}/datasets/1/export/csv/", {"ops", "admin"}, setup="datasets"),
    Endpoint("GET", "/api/v1/projects/{slug}/drift/reports/", {"ops", "admin"}),
    Endpoint("GET", "/api/v1/projects/{slug}/drift/reports/{report}/", {"ops", "admin"}, setup="drift_report"),
    Endpoint("POST", "/api/v1/projects/{slug}/drift/checks/", {"ops", "admin"}, ok=201, body={}),
    Endpoint("GET", "/api/v1/projects/{slug}/drift/reference/", {"ops", "admin"}),
    Endpoint("PUT", "/api/v1/projects/{slug}/drift/reference/", {"ops", "admin"}, body=_last_day(),
             setup="prediction"),
    Endpoint("GET", "/api/v1/projects/{slug}/drift/alerts/", {"ops", "admin"}),
    # Training and the registry: one run (id {run}, waiting for an external trainer) and versions v1, run-1.
    Endpoint("GET", "/api/v1/projects/{slug}/training-runs/", {"ops", "admin"}),
    Endpoint("POST", "/api/v1/projects/{slug}/training-runs/", {"ops", "admin"}, ok=202, body={}, setup="training"),
    Endpoint("GET", "/api/v1/projects/{slug}/training-runs/{run}/", {"ops", "admin"}, setup="training"),
    Endpoint("POST", "/api/v1/training-runs/{run}/complete/", {"ops", "admin", "app"}, ok=400, setup="training",
             body={"model_version": "ext"}),
    Endpoint("GET", "/api/v1/projects/{slug}/models/", {"ops", "admin"}),
    Endpoint("GET", "/api/v1/projects/{slug}/models/promotions/", {"ops", "admin"}),
    Endpoint("POST", "/api/v1/projects/{slug}/models/{name}/promote/", {"ops", "admin"}, setup="training", body={}),
    Endpoint("POST", "/api/v1/projects/{slug}/models/rollback/", {"ops", "admin"}, ok=409, body={}),
    # run-1 was not trained here in this setup: it has no artifact to hand out.
    Endpoint("GET", "/api/v1/projects/{slug}/models/{name}/artifact/", {"app", "ops", "admin"}, ok=404,
             setup="training"),
]


def _api_patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _api_patterns(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            route = prefix + str(entry.pattern)
            if route.startswith("api/v1/") and "schema" not in route:
                yield "/" + route


def _normalize(route: str) -> str:
    import re

    return re.sub(r"<[^>]+>|\{[^}]+\}|p-0|(?<=/)\d+(?=/)", "X", route)


def test_every_api_endpoint_is_in_the_table():
    table = {_normalize(e.path) for e in ENDPOINTS}
    routed = {_normalize(route) for route in _api_patterns()}
    missing = routed - table
    assert not missing, f"Endpoints missing from the access matrix: {sorted(missing)}"


def expected_status(endpoint: Endpoint, role: str) -> int:
    if role == "anonymous":
        return 401
    base_role = "app" if role == "app_other_project" else role
    if base_role not in endpoint.allowed:
        return 403
    if role == "app_other_project" and endpoint.member_scoped:
        return 404
    return endpoint.ok


@pytest.fixture
def tokens(db):
    project = factories.project(slug="digits")
    other = factories.project(slug="elsewhere")
    out = {"anonymous": None}
    for role in ("annotator", "reviewer", "ops", "admin", "app"):
        out[role] = factories.user_with_role(role, project)[1]
    out["app_other_project"] = factories.user_with_role(Role.APP, other)[1]
    return out


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=repr)
@pytest.mark.parametrize("role", ROLES)
def test_access_matrix(tokens, endpoint, role):
    task = None
    if endpoint.setup in ("prediction", "task"):
        image = digit_png(np.zeros(64))
        response = factories.api_client(tokens["app"]).post(
            "/api/v1/projects/digits/predictions/",
            factories.prediction(0, confidence=0.3, input={"image": image}), format="json",
        )
        task = response.json()["results"][0]["task_id"]
    elif endpoint.setup == "datasets":
        _datasets()
    context = {"slug": "digits", "task": task, "name": "run-1"}
    if endpoint.setup == "training":
        context["run"] = _training_run()
    if endpoint.setup == "drift_report":
        context["report"] = monitoring_services.drift_check_run(project=Project.objects.get(slug="digits")).pk
    client = factories.api_client(tokens[role])
    path = endpoint.path.format(**context)
    response = client.generic(endpoint.method, path, _json(endpoint.body), content_type="application/json")
    assert response.status_code == expected_status(endpoint, role), response.content[:300]
    if response.status_code >= 400:
        assert response.json()["error"]["code"]


def _datasets():
    from flywheel import datasets
    from flywheel.models import Project

    project = Project.objects.get(slug="digits")
    ready = datasets.dataset_version_create(project=project)
    datasets.dataset_version_build(version_id=ready.pk)
    failed = datasets.dataset_version_create(project=project)
    datasets.dataset_version_fail(version_id=failed.pk, reason="for the matrix")


def _json(body):
    import json

    return json.dumps(body) if body is not None else ""


def _training_run() -> int:
    from flywheel.models import ModelSource, ModelVersion, TrainingRun

    project = Project.objects.get(slug="digits")
    ModelVersion.objects.create(project=project, name="run-1", source=ModelSource.TRAINED)
    run = TrainingRun.objects.create(project=project, number=1, status="running", stage="waiting", trigger="manual",
                                     trainer="external")
    return run.pk
