"""The ASGI ingestion gateway: same answers as the DRF view, group commit, fall-through."""

import httpx
import pytest
from django.core.asgi import get_asgi_application
from django.db import OperationalError
from django.test import override_settings

from accounts.models import Role
from flywheel.ingest.gateway import IngestGateway
from flywheel.models import IngestBatch, Prediction, Project
from labeling.models import Task
from tests import factories
from tests.asgi import in_test_thread, send_all
from tests.factories import prediction

URL = "/api/v1/projects/digits/predictions/"


@pytest.fixture
def gateway(db):
    return IngestGateway(get_asgi_application(), run_sync=in_test_thread)


def post(gateway, body, token, path=URL, **headers):
    return send_all(gateway, [("POST", path, body, {"Authorization": f"Token {token}", **headers})])[0]


def test_gateway_stores_and_routes_like_the_api(gateway, project, app_token):
    response = post(gateway, prediction(1, confidence=0.41), app_token)
    assert response.status_code == 201
    body = response.json()
    assert body["created"] == 1 and body["results"][0]["reason"] == "low_confidence"
    assert Task.objects.get(pk=body["results"][0]["task_id"]).prediction.external_id == "p-1"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_gateway_and_drf_view_give_the_same_answers(gateway, project, app_token, app_client):
    annotator = factories.user_with_role(Role.ANNOTATOR, project)[1]
    cases = [
        (prediction(1, confidence=2), app_token, URL),
        ({"predictions": [prediction(1), prediction(2, label="x")]}, app_token, URL),
        (prediction(1), "not-a-token", URL),
        (prediction(1), annotator, URL),
        (prediction(1), app_token, "/api/v1/projects/nope/predictions/"),
        (b"{not json", app_token, URL),
        (b"NaN", app_token, URL),
    ]
    for body, token, path in cases:
        via_gateway = post(gateway, body, token, path)
        client = factories.api_client(token)
        raw = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
        via_view = client.generic("POST", path, raw, content_type="application/json")
        assert via_gateway.status_code == via_view.status_code, (body, via_gateway.json(), via_view.json())
        assert via_gateway.json()["error"]["code"] == via_view.json()["error"]["code"]
        assert via_gateway.json()["error"].get("fields") == via_view.json()["error"].get("fields")
    assert Prediction.objects.count() == 0


def test_gateway_refuses_oversized_bodies_and_batches(gateway, project, app_token):
    with override_settings(FLYWHEEL_MAX_BODY_BYTES=1_000):
        response = post(gateway, {"predictions": [prediction(i) for i in range(50)]}, app_token)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    response = post(gateway, {"predictions": [prediction(i) for i in range(10_001)]}, app_token)
    assert response.status_code == 413 and response.json()["error"]["code"] == "batch_too_large"
    assert Prediction.objects.count() == 0


def test_concurrent_small_requests_are_written_together(gateway, project, app_token):
    auth = {"Authorization": f"Token {app_token}"}
    requests = [("POST", URL, prediction(i, confidence=0.3 if i % 10 == 0 else 0.99), auth) for i in range(40)]
    requests += [("POST", URL, prediction(5), auth), ("POST", URL, prediction(10, confidence=0.3), auth)]
    responses = send_all(gateway, requests)
    assert [r.status_code for r in responses] == [201] * 42
    bodies = [r.json() for r in responses]
    assert [b["results"][0]["id"] for b in bodies] == [f"p-{i}" for i in range(40)] + ["p-5", "p-10"]
    assert sum(b["created"] for b in bodies) == 40 and sum(b["duplicates"] for b in bodies) == 2
    assert bodies[-1]["results"][0]["task_id"] == bodies[10]["results"][0]["task_id"]
    assert Prediction.objects.count() == 40 and Task.objects.count() == 4
    # Far fewer transactions than requests: they were grouped.
    assert IngestBatch.objects.count() < 10


def test_a_database_failure_fails_every_request_of_its_group_with_503(db, project, app_token):
    async def database_down(fn, *args, **kwargs):
        if fn.__name__ == "predictions_ingest":
            raise OperationalError("connection to server was lost")
        return await in_test_thread(fn, *args, **kwargs)

    gateway = IngestGateway(get_asgi_application(), run_sync=database_down)
    auth = {"Authorization": f"Token {app_token}"}
    responses = send_all(gateway, [("POST", URL, prediction(i), auth) for i in range(5)])
    assert {r.status_code for r in responses} == {503}
    assert all(r.headers["retry-after"] == "1" for r in responses)
    # The next request finds the writer ready again.
    healthy = IngestGateway(get_asgi_application(), run_sync=in_test_thread)
    assert post(healthy, prediction(9), app_token).status_code == 201


def test_schema_inference_goes_alone_and_bad_values_fail_only_their_request(gateway, db):
    factories.project(slug="fresh", features=[])
    token = factories.user_with_role(Role.APP, Project.objects.get(slug="fresh"))[1]
    path = "/api/v1/projects/fresh/predictions/"
    auth = {"Authorization": f"Token {token}"}
    first = post(gateway, prediction(1, features={"size": 1.0}), token, path)
    assert first.status_code == 201
    responses = send_all(gateway, [("POST", path, prediction(2, features={"size": 2.0}), auth),
                                   ("POST", path, prediction(3, features={"size": "big"}), auth)])
    assert [r.status_code for r in responses] == [201, 400]


def test_other_requests_fall_through_to_django(gateway, project, app_token):
    health = send_all(gateway, [("GET", "/healthz", b"", {})])[0]
    assert health.status_code == 200
    anonymous = send_all(gateway, [("POST", URL, prediction(1), {})])[0]
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"


def test_a_host_outside_allowed_hosts_is_refused(gateway, project, app_token):
    response = post(gateway, prediction(1), app_token, Host="evil.example.com")
    assert response.status_code == 400 and Prediction.objects.count() == 0
