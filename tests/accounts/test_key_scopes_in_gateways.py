"""Both ASGI gateways honour a key's scope and expiry exactly as the DRF views do: the same
statuses and codes for the same key, from the one function that decides."""

from datetime import timedelta

import pytest
from django.core.asgi import get_asgi_application
from django.utils import timezone

from accounts.models import Role
from accounts.services import token_issue
from flywheel.ingest.gateway import IngestGateway
from labeling.gateway import AnnotatorGateway
from tests import factories
from tests.asgi import in_test_thread, send_all

PREDICTIONS = "/api/v1/projects/digits/predictions/"
CLAIM = "/api/v1/projects/digits/tasks/next/"


@pytest.fixture
def ingest_gateway(db):
    return IngestGateway(get_asgi_application(), run_sync=in_test_thread)


@pytest.fixture
def annotator_gateway(db):
    return AnnotatorGateway(get_asgi_application(), run_sync=in_test_thread)


def _through_gateway(gateway, path, key, body):
    response = send_all(gateway, [("POST", path, body, {"Authorization": f"Token {key}"})])[0]
    return response.status_code, response.json()["error"]["code"] if response.status_code >= 400 else None


def _through_view(path, key, body):
    response = factories.api_client(key).post(path, body, format="json")
    return response.status_code, response.json()["error"]["code"] if response.status_code >= 400 else None


@pytest.mark.parametrize("scopes, expected", [
    ([], (201, None)),
    (["ingest"], (201, None)),
    (["read"], (403, "scope")),
    (["read", "ingest"], (201, None)),
])
def test_ingestion_gateway_and_view_decide_scopes_alike(ingest_gateway, project, scopes, expected):
    user, _ = factories.user_with_role(Role.APP, project)
    key = token_issue(user=user, name="scoped", scopes=scopes).secret

    assert _through_gateway(ingest_gateway, PREDICTIONS, key, factories.prediction(1)) == expected
    assert _through_view(PREDICTIONS, key, factories.prediction(2)) == expected


@pytest.mark.parametrize("scopes, expected", [
    ([], (204, None)),
    (["ingest"], (403, "scope")),
    (["read"], (403, "scope")),
])
def test_annotator_gateway_and_view_decide_scopes_alike(annotator_gateway, project, scopes, expected):
    user, _ = factories.user_with_role(Role.ANNOTATOR, project)
    key = token_issue(user=user, name="scoped", scopes=scopes).secret

    assert _through_gateway(annotator_gateway, CLAIM, key, b"") == expected
    assert _through_view(CLAIM, key, None) == expected


def test_the_gateways_refuse_an_expired_key_even_from_their_cache(ingest_gateway, annotator_gateway, project,
                                                                  monkeypatch):
    app, _ = factories.user_with_role(Role.APP, project)
    annotator, _ = factories.user_with_role(Role.ANNOTATOR, project)
    soon = timezone.now() + timedelta(hours=1)
    app_key = token_issue(user=app, name="short", expires_at=soon).secret
    annotator_key = token_issue(user=annotator, name="short", expires_at=soon).secret
    # Both answered once: their users (and the ingestion gateway's project) are now cached.
    assert _through_gateway(ingest_gateway, PREDICTIONS, app_key, factories.prediction(1)) == (201, None)
    assert _through_gateway(annotator_gateway, CLAIM, annotator_key, b"") == (204, None)

    later = soon + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)

    assert _through_gateway(ingest_gateway, PREDICTIONS, app_key, factories.prediction(2)) == (401, "token_expired")
    assert _through_gateway(annotator_gateway, CLAIM, annotator_key, b"") == (401, "token_expired")
    assert _through_view(PREDICTIONS, app_key, factories.prediction(3)) == (401, "token_expired")
