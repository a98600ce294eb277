"""The service as deployed: gunicorn, uvicorn workers, the ingestion gateway, a pool."""

import json
import urllib.error
import urllib.request

import pytest

from accounts.models import Role
from flywheel.models import Prediction
from labeling.models import Task
from tests import factories
from tests.live import LiveService


def call(url, body=None, token=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.mark.django_db(transaction=True)
def test_the_deployed_service_ingests_through_the_gateway_and_serves_django():
    project = factories.project()
    token = factories.user_with_role(Role.APP, project)[1]
    ops_token = factories.user_with_role(Role.OPS, project)[1]
    with LiveService(workers=2) as service:
        url = f"{service.url}/api/v1/projects/digits/predictions/"
        status, body = call(url, {"predictions": [factories.prediction(i, confidence=0.3) for i in range(20)]}, token)
        assert status == 201 and body["created"] == 20
        status, body = call(url, factories.prediction(3), token)
        assert status == 201 and body["duplicates"] == 1 and body["results"][0]["routed"] is True
        status, body = call(url, factories.prediction(99, confidence=7), token)
        assert status == 400 and "confidence" in body["error"]["fields"]
        status, body = call(f"{service.url}/api/v1/projects/digits/", token=ops_token)
        assert status == 200 and body["slug"] == "digits"
        status, body = call(f"{service.url}/readyz")
        assert status == 200
    assert Prediction.objects.count() == 20 and Task.objects.count() == 20
