"""Service endpoints, the OpenAPI schema, and the deployment files (compose, .env.example)."""

import os
import re
import subprocess
import sys
import time

import pytest
import yaml
from django.conf import settings
from django.test import override_settings

from tests.factories import prediction
from tests.live import ROOT  # noqa: E402


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_dependency(client, tmp_path):
    with override_settings(FLYWHEEL_STORAGE_ROOT=tmp_path):
        response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert set(response.json()["checks"]) == {"database", "broker", "storage"}


@pytest.mark.django_db
def test_readyz_is_503_when_the_broker_is_unreachable(client, tmp_path):
    with override_settings(CELERY_TASK_ALWAYS_EAGER=False, FLYWHEEL_STORAGE_ROOT=tmp_path,
                           CELERY_BROKER_URL="redis://127.0.0.1:1/0"):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("unavailable")
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_is_ready_with_the_real_broker(client, tmp_path):
    with override_settings(CELERY_TASK_ALWAYS_EAGER=False, FLYWHEEL_STORAGE_ROOT=tmp_path):
        response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["checks"]["broker"] == "ok"


def test_metrics_count_ingestion(app_client, project, client):
    app_client.post("/api/v1/projects/digits/predictions/",
                    {"predictions": [prediction(i, confidence=0.2) for i in range(7)]}, format="json")
    body = client.get("/metrics").content.decode()
    created = re.search(r'flywheel_predictions_ingested_total\{outcome="created",project="digits"\} (\S+)', body)
    assert created and float(created.group(1)) >= 7
    assert 'flywheel_predictions_routed_total{project="digits",reason="low_confidence"}' in body
    assert 'flywheel_ingest_request_seconds_bucket{kind="batch",le="0.1"}' in body


@override_settings(METRICS_TOKEN="s3cret")
def test_metrics_can_require_a_token(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


@pytest.mark.django_db
def test_schema_describes_every_api_path(client):
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    import json

    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    for expected in ("/api/v1/projects/", "/api/v1/projects/{slug}/", "/api/v1/projects/{slug}/predictions/",
                     "/api/v1/projects/{slug}/predictions/{prediction_id}/"):
        assert expected in paths
    ingest = schema["paths"]["/api/v1/projects/{slug}/predictions/"]["post"]
    assert "201" in ingest["responses"]


def test_api_docs_page_uses_no_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html and "cdn.jsdelivr" not in html and "unpkg.com" not in html


def test_unknown_api_path_gets_the_json_error_body(client):
    response = client.get("/api/v1/nothing-here/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# --- Deployment files -----------------------------------------------------------------------

SETTINGS_SOURCE = (ROOT / "config" / "settings.py").read_text()
ENV_READS = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z0-9_]+)"', SETTINGS_SOURCE))


def test_every_setting_is_documented_in_env_example():
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.M))
    assert ENV_READS, "the settings read nothing from the environment?"
    assert ENV_READS <= documented, f"missing from .env.example: {sorted(ENV_READS - documented)}"


def test_every_variable_is_explained_in_the_operations_guide():
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in ENV_READS if f"`{name}`" not in guide]
    assert not missing, f"docs/operations.md does not explain: {sorted(missing)}"


def test_compose_defines_every_service_the_settings_expect():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker", "beat", "postgres", "redis", "minio"} <= set(services)
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["CELERY_TASK_ALWAYS_EAGER"] == "false"
        assert env["FLYWHEEL_STORAGE_BACKEND"] == "s3"
        # Every host the app is pointed at is a service of this file, with matching credentials.
        db = re.match(r"postgres://(\w+):(\w+)@(\w+):5432/(\w+)", env["DATABASE_URL"])
        assert db and db.group(3) in services
        pg_env = services[db.group(3)]["environment"]
        assert (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"]) == (
            db.group(1), db.group(2), db.group(4))
        broker = re.match(r"redis://(\w+):6379/\d+", env["CELERY_BROKER_URL"])
        assert broker and broker.group(1) in services
        s3 = re.match(r"http://(\w+):9000", env["S3_ENDPOINT_URL"])
        assert s3 and s3.group(1) in services
        minio_env = services[s3.group(1)]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
        unknown = set(env) - ENV_READS - {"PROMETHEUS_MULTIPROC_DIR"}
        assert not unknown, f"compose sets variables the settings never read: {unknown}"
    assert "gunicorn" in services["web"]["command"]
    assert "worker" in services["worker"]["command"] and "beat" in services["beat"]["command"]


@pytest.mark.parametrize("service", ["worker", "beat"])
def test_compose_restarts_a_celery_service_that_exits_and_checks_one_that_runs(service, tmp_path):
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]
    assert spec["restart"] in ("always", "unless-stopped")
    alive_file = spec["environment"]["FLYWHEEL_LIVENESS_FILE"]
    command = spec["healthcheck"]["test"]
    assert command[0] == "CMD" and alive_file in command
    max_age = float(command[command.index("--max-age") + 1])
    # Stale only after several missed touches, not after one late timer.
    assert max_age >= 3 * settings.FLYWHEEL_LIVENESS_SECONDS

    # The same command, on a file of this test's own, in this checkout.
    local = [sys.executable if arg == "python" else str(tmp_path / "alive") if arg == alive_file else arg
             for arg in command[1:]]

    def check() -> int:
        return subprocess.run(local, cwd=ROOT, capture_output=True).returncode

    assert check() == 1  # never touched: the process has not started its work
    (tmp_path / "alive").touch()
    assert check() == 0
    stale = time.time() - max_age - 1
    os.utime(tmp_path / "alive", (stale, stale))
    assert check() == 1


def test_compose_starts_the_app_only_after_migrations_are_applied():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    migrate = services["migrate"]
    assert "manage.py migrate" in migrate["command"] and "flywheel_admin" in migrate["command"]
    assert migrate["restart"] in ("no", "on-failure")  # a one-shot: never started again once it succeeded
    assert {"FLYWHEEL_ADMIN_USERNAME", "FLYWHEEL_ADMIN_PASSWORD"} <= set(migrate["environment"])
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert "migrate" not in services[name]["command"]  # one place applies them, once
