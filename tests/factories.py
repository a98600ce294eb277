"""Test data: users with roles, projects, prediction payloads."""

import itertools

from rest_framework.test import APIClient

from accounts.services import account_upsert
from flywheel.projects import project_create

_counter = itertools.count()


def user_with_role(role: str, *projects, password: str | None = None, username: str | None = None):
    username = username or f"{role}-{next(_counter)}"
    user, token = account_upsert(username=username, role=role, projects=projects, password=password)
    return user, token


def api_client(token: str | None = None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def project(slug: str = "digits", **overrides):
    defaults = dict(
        name=slug.title(), labels=[str(i) for i in range(10)],
        features=[{"name": "f0", "type": "numeric"}, {"name": "f1", "type": "numeric"},
                  {"name": "color", "type": "categorical"}],
        routing_policy={"uncertainty": "least_confidence", "threshold": 0.3, "audit_rate": 0.0,
                        "daily_budget": 1000, "annotations_per_task": 1},
    )
    defaults.update(overrides)
    return project_create(slug=slug, **defaults)


def prediction(i: int = 0, **overrides) -> dict:
    body = {
        "id": f"p-{i}", "model_version": "v1", "label": str(i % 10), "confidence": 0.9,
        "features": {"f0": float(i), "f1": 1.5, "color": "red"},
    }
    body.update(overrides)
    return body
