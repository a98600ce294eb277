"""The ASGI annotator gateway: the same answers as the DRF views `TaskNextApi` and
`AnnotationCreateApi`, the same queue, and everything it does not own left to Django."""

import httpx
import pytest
from django.core.asgi import get_asgi_application
from django.db import OperationalError
from django.test import override_settings
from structlog.testing import capture_logs

from accounts.models import Role
from labeling.gateway import AnnotatorGateway
from labeling.models import Annotation, Label, Lease, Task
from tests import factories
from tests.asgi import in_test_thread, send_all
from tests.labeling.test_queue import NEXT, log, uncertain


@pytest.fixture
def gateway(db):
    return AnnotatorGateway(get_asgi_application(), run_sync=in_test_thread)


def claim(gateway, token, path=NEXT, **headers):
    return send_all(gateway, [("POST", path, b"", {"Authorization": f"Token {token}", **headers})])[0]


def annotator_token(project):
    return factories.user_with_role(Role.ANNOTATOR, project)[1]


def test_the_gateway_claims_the_queue_in_order_under_leases(gateway, app_client, project):
    log(app_client, uncertain(3))
    first, second = annotator_token(project), annotator_token(project)
    response = claim(gateway, first)
    assert response.status_code == 200 and response.headers["x-content-type-options"] == "nosniff"
    task = response.json()["task"]
    assert task["prediction"]["id"] == "p-0" and task["lease_expires_at"] is not None
    assert Task.objects.get(pk=task["id"]).status == "leased"
    assert claim(gateway, second).json()["task"]["prediction"]["id"] == "p-1"
    # Concurrent claims through the gateway never share a task.
    third, fourth = annotator_token(project), annotator_token(project)
    responses = send_all(gateway, [("POST", NEXT, b"", {"Authorization": f"Token {t}"}) for t in (third, fourth)])
    assert sorted(r.status_code for r in responses) == [200, 204]
    assert Lease.objects.count() == 3


def test_the_gateway_and_the_drf_view_give_the_same_answers(gateway, app_client, app_token, project):
    log(app_client, uncertain(2))
    annotator = annotator_token(project)
    outsider = factories.user_with_role(Role.ANNOTATOR)[1]
    refusals = [
        ("not-a-token", NEXT),
        (app_token, NEXT),  # an app may log predictions, not claim tasks
        (outsider, NEXT),  # not a member: the project is not visible
        (annotator, "/api/v1/projects/nope/tasks/next/"),
    ]
    for token, path in refusals:
        via_gateway, via_view = claim(gateway, token, path), factories.api_client(token).post(path)
        assert via_gateway.status_code == via_view.status_code, (token, path, via_gateway.content)
        assert via_gateway.json() == via_view.json()
        assert via_gateway.headers.get("www-authenticate") == via_view.headers.get("WWW-Authenticate")
    assert Lease.objects.count() == 0
    # A reviewer may label too; each claims one of the two tasks, shown the same way.
    reviewer = factories.user_with_role(Role.REVIEWER, project)[1]
    via_gateway, via_view = claim(gateway, reviewer), factories.api_client(annotator).post(NEXT)
    assert via_gateway.status_code == via_view.status_code == 200
    ours, theirs = via_gateway.json()["task"], via_view.json()["task"]
    assert (ours["prediction"]["id"], theirs["prediction"]["id"]) == ("p-0", "p-1")
    assert ours.keys() == theirs.keys() and ours["prediction"].keys() == theirs["prediction"].keys()
    assert {k: ours[k] for k in ("reason", "status", "round", "annotations_required")} == \
           {k: theirs[k] for k in ("reason", "status", "round", "annotations_required")}
    # Nothing left: both say so with an empty 204.
    empty_gateway, empty_view = claim(gateway, annotator), factories.api_client(reviewer).post(NEXT)
    assert empty_gateway.status_code == empty_view.status_code == 204 and empty_gateway.content == b""


def annotate(gateway, token, task_id, body):
    path = f"/api/v1/tasks/{task_id}/annotations/"
    return send_all(gateway, [("POST", path, body, {"Authorization": f"Token {token}"})])[0]


def test_the_gateway_annotates_and_resolves_the_label(gateway, app_client, project):
    log(app_client, uncertain(1))
    token = annotator_token(project)
    task = claim(gateway, token).json()["task"]
    response = annotate(gateway, token, task["id"], {"label": "3", "lead_time_s": 2.5})
    assert response.status_code == 201
    body = response.json()
    assert body["task"] == {"id": task["id"], "status": "done"}
    assert body["resolved_label"]["label"] == "3" and body["resolved_label"]["source"] == "annotation"
    annotation = Annotation.objects.get(task_id=task["id"])
    assert (annotation.label, annotation.lead_time_s) == ("3", 2.5)
    assert Label.objects.get(prediction__external_id="p-0", is_current=True).label == "3"
    # The lease went with the annotation: a second one is refused as the view refuses it.
    again = annotate(gateway, token, task["id"], {"label": "4"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "lease_lost"


def test_annotation_refusals_match_the_drf_view(gateway, app_client, app_token, project):
    log(app_client, uncertain(1))
    token = annotator_token(project)
    task_id = claim(gateway, token).json()["task"]["id"]
    outsider = factories.user_with_role(Role.ANNOTATOR)[1]
    cases = [
        (token, task_id, {"label": "not-a-label"}),
        (token, task_id, {}),
        (token, task_id, b""),
        (token, task_id, b"{not json"),
        (token, task_id, {"label": "1", "lead_time_s": -1}),
        (token, task_id, {"label": "bad\x00"}),
        (token, 999_999, {"label": "1"}),
        (token, 10**30, {"label": "1"}),  # past PostgreSQL's bigint: still a 404, not a 500
        (outsider, task_id, b"{not json"),  # a task it cannot see: 404, whatever the body
        (app_token, task_id, {"label": "1"}),
        ("not-a-token", task_id, {"label": "1"}),
    ]
    for who, task, body in cases:
        via_gateway = annotate(gateway, who, task, body)
        raw = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
        via_view = factories.api_client(who).generic("POST", f"/api/v1/tasks/{task}/annotations/", raw,
                                                     content_type="application/json")
        assert via_gateway.status_code == via_view.status_code, (body, via_gateway.json(), via_view.json())
        assert via_gateway.json() == via_view.json()
    assert not Annotation.objects.exists()
    assert Lease.objects.filter(task_id=task_id).count() == 1  # nothing refused took the lease


def test_a_body_over_the_limit_is_refused_before_any_claim(gateway, app_client, project):
    log(app_client, uncertain(1))
    with override_settings(FLYWHEEL_MAX_BODY_BYTES=100):
        auth = {"Authorization": f"Token {annotator_token(project)}"}
        response = send_all(gateway, [("POST", NEXT, b"x" * 500, auth)])[0]
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    assert Lease.objects.count() == 0


def test_a_database_outage_is_a_503_to_retry(db, app_client, project):
    async def database_down(fn, *args, **kwargs):
        raise OperationalError("connection to server was lost")

    gateway = AnnotatorGateway(get_asgi_application(), run_sync=database_down)
    response = claim(gateway, annotator_token(project))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


def test_an_unexpected_error_is_a_logged_500_with_the_error_body(db, app_client, project):
    async def broken(fn, *args, **kwargs):
        raise KeyError("a bug")

    gateway = AnnotatorGateway(get_asgi_application(), run_sync=broken)
    with capture_logs() as logs:
        response = claim(gateway, annotator_token(project))
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal"
    assert [(e["event"], e["path"]) for e in logs if e["log_level"] == "error"] == [("gateway.failed", NEXT)]


def test_a_host_outside_allowed_hosts_is_refused(gateway, app_client, project):
    log(app_client, uncertain(1))
    response = claim(gateway, annotator_token(project), Host="evil.example.com")
    assert response.status_code == 400 and Lease.objects.count() == 0


def test_session_logins_and_other_routes_fall_through_to_django(gateway, app_client, project):
    log(app_client, uncertain(1))
    token = annotator_token(project)
    # No token: Django answers (the web workspace claims with its session and CSRF token).
    anonymous = send_all(gateway, [("POST", NEXT, b"", {})])[0]
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"
    # GET is not a claim: the DRF view says which methods it takes.
    assert send_all(gateway, [("GET", NEXT, b"", {"Authorization": f"Token {token}"})])[0].status_code == 405
    listing = send_all(gateway, [("GET", "/api/v1/projects/digits/tasks/", b"", {"Authorization": f"Token {token}"})])
    assert listing[0].status_code == 200 and listing[0].json()["count"] == 1
    assert Lease.objects.count() == 0
