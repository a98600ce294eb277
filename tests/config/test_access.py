"""Who may do what: every route (API endpoints, web pages, service endpoints) x every role
-> the expected status, from one table.

A route that is not in ENDPOINTS fails `test_every_route_is_in_the_table`, so none can be
left out of the matrix. API rows are called with the role's token; page rows with a session
for people and with the token for apps (pages know only sessions, so an app is a stranger
there); public rows the same way as pages, and answer everyone alike."""

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import ApiToken, Role
from accounts.services import token_issue
from flywheel.models import Project
from monitoring import services as monitoring_services
from sim.demo import digit_png
from tests import factories

ROLES = ["anonymous", "annotator", "reviewer", "ops", "admin", "app", "app_other_project"]
EVERYONE = {"annotator", "reviewer", "ops", "admin", "app", "app_other_project"}
PEOPLE = {"annotator", "reviewer", "ops", "admin"}


class Endpoint:
    """One row. `allowed`: base roles that may (app_other_project counts as app). `ok`: the
    allowed roles' status, or a dict of it per role where it differs (a page that redirects
    a member of one project straight to it). `kind`: api, page or public (see above).
    `member_scoped`: app_other_project gets 404 (API). `other_project`: the path names a
    project only the admin sees, so other allowed people get 404 (pages). `denied`: the
    status of a signed-in role that may not (pages: 403, the Django admin: 302)."""

    def __init__(self, method, path, allowed=(), *, ok=200, body=None, member_scoped=True, setup=None, kind="api",
                 other_project=False, denied=403):
        self.method, self.path, self.allowed, self.ok = method, path, set(allowed), ok
        self.body, self.member_scoped, self.setup, self.kind = body, member_scoped, setup, kind
        self.other_project, self.denied = other_project, denied

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
    Endpoint("POST", "/api/v1/projects/{slug}/shadow-predictions/", {"app", "admin"}, ok=201, setup="prediction",
             body={"prediction_id": "p-0", "model_version": "rc-1", "label": "1", "confidence": 0.7}),
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
    Endpoint("GET", "/api/v1/tasks/{task}/similar/", ANNOTATORS, setup="task"),
    # Groups: {group} is an open group of one task, which nobody holds (setup="group").
    Endpoint("POST", "/api/v1/projects/{slug}/groups/build/", {"reviewer", "ops", "admin"}),
    Endpoint("GET", "/api/v1/projects/{slug}/groups/", ANNOTATORS),
    Endpoint("POST", "/api/v1/projects/{slug}/groups/next/", ANNOTATORS, ok=204),
    Endpoint("POST", "/api/v1/groups/{group}/heartbeat/", ANNOTATORS, ok=409, setup="group"),
    Endpoint("POST", "/api/v1/groups/{group}/release/", ANNOTATORS, setup="group"),
    Endpoint("POST", "/api/v1/groups/{group}/annotations/", ANNOTATORS, ok=409, setup="group", body={"label": "1"}),
    Endpoint("POST", "/api/v1/groups/{group}/split/", ANNOTATORS, ok=409, setup="group"),
    Endpoint("POST", "/api/v1/groups/{group}/merge/", ANNOTATORS, ok=400, setup="group", body={"with": 999999}),
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
    Endpoint("GET", "/api/v1/projects/{slug}/models/{name}/shadow/", {"ops", "admin"}, setup="training"),
    # run-1 has no artifact here (409 no_artifact), and is not in shadow (409 not_in_shadow).
    Endpoint("POST", "/api/v1/projects/{slug}/models/{name}/shadow/", {"ops", "admin"}, ok=409, setup="training",
             body={}),
    Endpoint("DELETE", "/api/v1/projects/{slug}/models/{name}/shadow/", {"ops", "admin"}, ok=409,
             setup="training", body={}),
    Endpoint("POST", "/api/v1/projects/{slug}/models/rollback/", {"ops", "admin"}, ok=409, body={}),
    # run-1 was not trained here in this setup: it has no artifact to hand out.
    Endpoint("GET", "/api/v1/projects/{slug}/models/{name}/artifact/", {"app", "ops", "admin"}, ok=404,
             setup="training"),
    # Tokens: every user may revoke their own ({me}); only admins anyone's, list them or issue them.
    Endpoint("GET", "/api/v1/accounts/tokens/", {"admin"}, member_scoped=False),
    Endpoint("POST", "/api/v1/accounts/tokens/", {"admin"}, ok=201, member_scoped=False,
             body={"username": "m-bystander"}),
    Endpoint("DELETE", "/api/v1/accounts/tokens/{me}/", EVERYONE, ok=204, member_scoped=False),
    Endpoint("DELETE", "/api/v1/accounts/tokens/{bystander}/", {"admin"}, ok=204, member_scoped=False),
    # One key by id: anyone their own; someone else's is as unknown to them as a missing one.
    Endpoint("DELETE", "/api/v1/accounts/tokens/id/{my_key}/", EVERYONE, ok=204, member_scoped=False),
    Endpoint("DELETE", "/api/v1/accounts/tokens/id/{bystander_key}/", EVERYONE, member_scoped=False,
             ok={role: 204 if role == "admin" else 404 for role in EVERYONE}),
    Endpoint("GET", "/api/v1/projects/{slug}/audit/", {"ops", "admin"}),
    Endpoint("GET", "/api/v1/projects/{slug}/members/", {"ops", "admin"}),
    Endpoint("POST", "/api/v1/projects/{slug}/members/", {"ops", "admin"}, ok=201,
             body={"username": "m-newcomer", "role": "annotator"}),
    Endpoint("PATCH", "/api/v1/projects/{slug}/members/{bystander}/", {"ops", "admin"},
             body={"role": "reviewer"}),
    Endpoint("DELETE", "/api/v1/projects/{slug}/members/{bystander}/", {"ops", "admin"}, ok=204),
    Endpoint("GET", "/api/v1/audit/", {"admin"}, member_scoped=False),
    # --- Web pages (session). Members of one project are sent straight to it (302); the
    # admin sees both projects and gets the list. ---
    Endpoint("GET", "/", kind="public", ok=302),
    Endpoint("GET", "/label/", PEOPLE, kind="page", ok={"annotator": 302, "reviewer": 302, "ops": 302}),
    Endpoint("GET", "/label/{slug}/", PEOPLE, kind="page"),
    Endpoint("GET", "/label/{other}/", PEOPLE, kind="page", other_project=True),
    Endpoint("GET", "/label/groups/", PEOPLE, kind="page", ok={"annotator": 302, "reviewer": 302, "ops": 302}),
    Endpoint("GET", "/label/groups/{slug}/", PEOPLE, kind="page"),
    Endpoint("GET", "/label/groups/{other}/", PEOPLE, kind="page", other_project=True),
    Endpoint("GET", "/review/", {"reviewer", "ops", "admin"}, kind="page", ok={"reviewer": 302, "ops": 302}),
    Endpoint("GET", "/review/{slug}/", {"reviewer", "ops", "admin"}, kind="page"),
    Endpoint("GET", "/review/{other}/", {"reviewer", "ops", "admin"}, kind="page", other_project=True),
    # A review the page cannot apply still ends in the redirect back to the list (with a message).
    Endpoint("POST", "/review/{slug}/", {"reviewer", "ops", "admin"}, kind="page", ok=302,
             body={"task": "999999", "verdict": "accept"}),
    Endpoint("GET", "/ops/", {"ops", "admin"}, kind="page", ok=302),
    Endpoint("GET", "/ops/{slug}/", {"ops", "admin"}, kind="page"),
    Endpoint("GET", "/ops/{other}/", {"ops", "admin"}, kind="page", other_project=True),
    # The console's training page: a bad dataset version is refused (400) with nothing stored;
    # promote and rollback end in the redirect back to the page (with a message).
    Endpoint("GET", "/ops/{slug}/training/", {"ops", "admin"}, kind="page"),
    Endpoint("GET", "/ops/{other}/training/", {"ops", "admin"}, kind="page", other_project=True),
    Endpoint("POST", "/ops/{slug}/training/", {"ops", "admin"}, kind="page", ok=400, body={"dataset_version": "x"}),
    Endpoint("POST", "/ops/{slug}/models/{name}/promote/", {"ops", "admin"}, kind="page", ok=302, setup="training",
             body={}),
    Endpoint("POST", "/ops/{slug}/models/rollback/", {"ops", "admin"}, kind="page", ok=302, body={}),
    Endpoint("GET", "/ops/{slug}/datasets/", {"ops", "admin"}, kind="page"),
    Endpoint("GET", "/ops/{other}/datasets/", {"ops", "admin"}, kind="page", other_project=True),
    Endpoint("POST", "/ops/{slug}/datasets/", {"ops", "admin"}, kind="page", ok=400, body={"note": "x" * 501}),
    Endpoint("GET", "/ops/projects/new/", {"ops", "admin"}, kind="page"),
    Endpoint("POST", "/ops/projects/new/", {"ops", "admin"}, kind="page", ok=400, body={"slug": "bad slug"}),
    Endpoint("GET", "/ops/{slug}/settings/", {"ops", "admin"}, kind="page"),
    Endpoint("GET", "/ops/{other}/settings/", {"ops", "admin"}, kind="page", other_project=True),
    Endpoint("POST", "/ops/{slug}/settings/", {"ops", "admin"}, kind="page", ok=400,
             body={"section": "routing", "routing.threshold": "2"}),
    Endpoint("GET", "/ops/{slug}/drift/", {"ops", "admin"}, kind="page"),
    Endpoint("GET", "/ops/{other}/drift/", {"ops", "admin"}, kind="page", other_project=True),
    Endpoint("POST", "/ops/{slug}/drift/", {"ops", "admin"}, kind="page", ok=400,
             body={"form": "reference", "kind": "dataset_version", "dataset_version": "0"}),
    Endpoint("GET", "/ops/{slug}/quality/", {"ops", "admin"}, kind="page"),
    Endpoint("GET", "/ops/{other}/quality/", {"ops", "admin"}, kind="page", other_project=True),
    # People: members and roles for ops and admins; API keys for admins only, as in the API.
    Endpoint("GET", "/ops/{slug}/people/", {"ops", "admin"}, kind="page"),
    Endpoint("GET", "/ops/{other}/people/", {"ops", "admin"}, kind="page", other_project=True),
    Endpoint("POST", "/ops/{slug}/people/", {"ops", "admin"}, kind="page", ok=400,
             body={"form": "member", "username": "bad name", "role": "annotator"}),
    Endpoint("POST", "/ops/{slug}/people/", {"ops", "admin"}, kind="page", ok=302,
             body={"form": "remove", "username": "m-bystander"}),
    Endpoint("POST", "/ops/{slug}/people/", {"admin"}, kind="page", ok=400,
             body={"form": "key", "username": "m-bystander", "expires_at": "2000-01-01T00:00"}),
    Endpoint("POST", "/ops/{slug}/people/", {"admin"}, kind="page", ok=302,
             body={"form": "revoke", "token": "999999"}),
    Endpoint("GET", "/accounts/login/", kind="public"),
    Endpoint("POST", "/accounts/login/", kind="public", body={"username": "m-nobody", "password": "wrong"}),
    Endpoint("POST", "/accounts/logout/", kind="public", ok=302),
    # The Django admin sends anyone who is not staff (every role but admin) to sign in.
    Endpoint("GET", "/admin/", {"admin"}, kind="page", denied=302),
    Endpoint("GET", "/admin/login/", kind="public", ok=302),
    # --- Service endpoints: public by design (load balancers, Prometheus, API clients);
    # /metrics takes a bearer token when METRICS_TOKEN is set (tests/test_service.py). ---
    Endpoint("GET", "/healthz", kind="public"),
    Endpoint("GET", "/readyz", kind="public"),
    Endpoint("GET", "/metrics", kind="public"),
    Endpoint("GET", "/api/v1/schema/", kind="public"),
    Endpoint("GET", "/api/docs/", kind="public"),
]

# Routes deliberately not in the table, with the reason.
NOT_IN_TABLE = {
    # The Django admin's own views, each behind admin_view (staff only: the admin role); its
    # entry page and its sign-in stand for them above.
    r"^admin/.+": "Django admin views behind admin_view(); /admin/ and /admin/login/ are in the table",
}


def _routes(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def _normalize(route: str) -> str:
    return re.sub(r"<[^>]+>|\{[^}]+\}|p-0|(?<=/)\d+(?=/)", "X", route.removeprefix("/"))


def test_every_route_is_in_the_table():
    table = {_normalize(e.path) for e in ENDPOINTS}
    routed = {_normalize(route) for route in _routes()}
    missing = {route for route in routed - table if not any(re.match(rx, route) for rx in NOT_IN_TABLE)}
    assert not missing, f"Routes missing from the access matrix: {sorted(missing)}"
    # The table names no route that does not exist (a typo would test a 404).
    assert not table - routed, sorted(table - routed)


def expected_status(endpoint: Endpoint, role: str) -> int:
    base_role = "app" if role == "app_other_project" else role
    ok = endpoint.ok.get(role, 200) if isinstance(endpoint.ok, dict) else endpoint.ok
    if endpoint.kind == "public":
        return ok
    if endpoint.kind == "page":
        if role == "anonymous" or base_role == "app":
            return 302  # to sign in
        if base_role not in endpoint.allowed:
            return endpoint.denied
        if endpoint.other_project and role != "admin":
            return 404
        return ok
    if role == "anonymous":
        return 401
    if base_role not in endpoint.allowed:
        return 403
    if role == "app_other_project" and endpoint.member_scoped:
        return 404
    return ok


@pytest.fixture
def accounts(db):
    """Role -> (user, token). Usernames are fixed so that rows can name them."""
    project = factories.project(slug="digits")
    other = factories.project(slug="elsewhere")
    out = {"anonymous": (None, None)}
    for role in ("annotator", "reviewer", "ops", "admin", "app"):
        out[role] = factories.user_with_role(role, project, username=f"m-{role}")
    out["app_other_project"] = factories.user_with_role(Role.APP, other, username="m-app-elsewhere")
    factories.user_with_role(Role.ANNOTATOR, project, username="m-bystander")
    return out


def _client(endpoint: Endpoint, role: str, accounts):
    user, token = accounts[role]
    if endpoint.kind == "api":
        return factories.api_client(token)
    client = Client()
    if token and role.startswith("app"):
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {token}"
    elif user is not None:
        client.force_login(user)
    return client


def _call(endpoint: Endpoint, role: str, accounts, client):
    """Set up what the row needs and make its request as `role` with `client`."""
    task = None
    if endpoint.setup in ("prediction", "task", "group"):
        image = digit_png(np.zeros(64))
        response = factories.api_client(accounts["app"][1]).post(
            "/api/v1/projects/digits/predictions/",
            factories.prediction(0, confidence=0.3, input={"image": image}), format="json",
        )
        task = response.json()["results"][0]["task_id"]
    elif endpoint.setup == "datasets":
        _datasets()
    me = accounts[role][0]
    context = {"slug": "digits", "other": "elsewhere", "task": task, "name": "run-1", "bystander": "m-bystander",
               "me": me.username if me else "m-nobody",
               "my_key": ApiToken.objects.filter(user=me).values_list("pk", flat=True).first() if me else 999999,
               "bystander_key": ApiToken.objects.get(user__username="m-bystander").pk}
    if endpoint.setup == "training":
        context["run"] = _training_run()
    if endpoint.setup == "group":
        context["group"] = _group(task)
    if endpoint.setup == "drift_report":
        context["report"] = monitoring_services.drift_check_run(project=Project.objects.get(slug="digits")).pk
    path = endpoint.path.format(**context)
    if endpoint.kind == "api":
        return client.generic(endpoint.method, path, _json(endpoint.body), content_type="application/json")
    return client.generic(endpoint.method, path, _form(endpoint.body),
                          content_type="application/x-www-form-urlencoded")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=repr)
@pytest.mark.parametrize("role", ROLES)
def test_access_matrix(accounts, endpoint, role):
    response = _call(endpoint, role, accounts, _client(endpoint, role, accounts))
    expected = expected_status(endpoint, role)
    assert response.status_code == expected, response.content[:300]
    if endpoint.kind == "api" and response.status_code >= 400:
        assert response.json()["error"]["code"]
    if endpoint.kind == "page" and expected == 302 and (role == "anonymous" or role.startswith("app")):
        assert response["Location"].startswith(("/accounts/login/?next=", "/admin/login/?next="))


# What a key with the ingest scope may do besides GETs of a read key: log predictions and feedback.
INGEST_ROUTES = {("POST", "/api/v1/projects/{slug}/predictions/"), ("POST", "/api/v1/projects/{slug}/feedback/"),
                 ("POST", "/api/v1/projects/{slug}/shadow-predictions/")}


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.kind == "api"], ids=repr)
@pytest.mark.parametrize("scope", ["read", "ingest"])
def test_a_scoped_key_does_only_what_its_scope_allows(accounts, endpoint, scope):
    """The admin may do everything, so whatever its scoped key is refused, the scope refused."""
    admin = accounts["admin"][0]
    ApiToken.objects.filter(user=admin).delete()  # {my_key} is then the scoped key
    key = token_issue(user=admin, name=f"only-{scope}", scopes=[scope]).secret

    response = _call(endpoint, "admin", accounts, factories.api_client(key))

    allowed = endpoint.method == "GET" if scope == "read" else (endpoint.method, endpoint.path) in INGEST_ROUTES
    if allowed:
        assert response.status_code == expected_status(endpoint, "admin"), response.content[:300]
    else:
        assert response.status_code == 403, response.content[:300]
        assert response.json()["error"]["code"] == "scope"


def _form(body):
    from urllib.parse import urlencode

    return urlencode(body) if body is not None else ""


def _datasets():
    from flywheel.datasets import services as datasets
    from flywheel.models import Project

    project = Project.objects.get(slug="digits")
    ready = datasets.dataset_version_create(project=project)
    datasets.dataset_version_build(version_id=ready.pk)
    failed = datasets.dataset_version_create(project=project)
    datasets.dataset_version_fail(version_id=failed.pk, reason="for the matrix")


def _json(body):
    import json

    return json.dumps(body) if body is not None else ""


def _group(task_id: int) -> int:
    from labeling.models import Group, Task

    group = Group.objects.create(project=Project.objects.get(slug="digits"), representation="features",
                                 suggested_label="0", priority=1.0)
    Task.objects.filter(pk=task_id).update(group=group)
    return group.pk


def _training_run() -> int:
    from flywheel.models import ModelSource, ModelVersion, TrainingRun

    project = Project.objects.get(slug="digits")
    ModelVersion.objects.create(project=project, name="run-1", source=ModelSource.TRAINED)
    run = TrainingRun.objects.create(project=project, number=1, status="running", stage="waiting", trigger="manual",
                                     trainer="external")
    return run.pk
