"""No API key is readable from the database: not after it is made, not after the upgrade
that converted the keys made before hashing, which keep working across it."""

import secrets
import subprocess

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import ApiToken, Role
from accounts.services import token_issue
from accounts.signals import clear_access_caches
from tests import factories

BEFORE_HASHING = ("accounts", "0002_login_failures_audit_index")
pytestmark = pytest.mark.django_db(transaction=True)  # pg_dump sees committed rows only


def database_dump() -> str:
    """The whole database as pg_dump writes it: every table, every row."""
    settings = connection.settings_dict
    command = ["pg_dump", "--no-owner", "--host", settings["HOST"] or "127.0.0.1", "--port",
               str(settings["PORT"] or 5432), "--username", settings["USER"], settings["NAME"]]
    env = {"PGPASSWORD": settings["PASSWORD"] or "", "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=120).stdout


def _leaf_targets(executor):
    return executor.loader.graph.leaf_nodes()


def test_no_key_is_in_the_database_dump_after_keys_are_made():
    project = factories.project()
    user, first = factories.user_with_role(Role.APP, project)
    named = token_issue(user=user, name="deploy", scopes=["ingest"]).secret
    api = factories.api_client(factories.user_with_role(Role.ADMIN)[1])
    replaced = api.post("/api/v1/accounts/tokens/", {"username": user.username}, format="json").json()["token"]
    assert factories.api_client(replaced).get("/api/v1/projects/").status_code == 200

    dump = database_dump()

    assert "accounts_apitoken" in dump and ApiToken.objects.get(name="deploy").prefix in dump
    for key in (first, named, replaced):
        assert key not in dump and key[len("fw_"):] not in dump


def test_keys_made_before_hashing_keep_working_after_the_upgrade_and_leave_no_trace():
    project = factories.project()
    app, _ = factories.user_with_role(Role.APP, project, username="checkout")
    annotator, _ = factories.user_with_role(Role.ANNOTATOR, project, username="sam")
    executor = MigrationExecutor(connection)
    leaves = _leaf_targets(executor)
    old_keys = {app.pk: secrets.token_hex(20), annotator.pk: secrets.token_hex(20)}  # DRF's format
    try:
        executor.migrate([BEFORE_HASHING])
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('accounts_apitoken')")
            assert cursor.fetchone()[0] is None  # really the schema from before
            for user_id, key in old_keys.items():
                cursor.execute("INSERT INTO authtoken_token (key, user_id, created) "
                               "VALUES (%s, %s, '2026-01-02T03:04:05Z')", [key, user_id])
        assert old_keys[app.pk] in database_dump()
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(_leaf_targets(executor))
    clear_access_caches()

    converted = {t.user_id: t for t in ApiToken.objects.all()}
    assert set(converted) == set(old_keys)
    assert all(t.name == "default" and t.created_at.year == 2026 and t.created_at.month == 1
               for t in converted.values())
    app_client = factories.api_client(old_keys[app.pk])
    response = app_client.post(f"/api/v1/projects/{project.slug}/predictions/", factories.prediction(1),
                               format="json")
    assert response.status_code == 201, response.content
    assert factories.api_client(old_keys[annotator.pk]).get("/api/v1/projects/").status_code == 200
    assert factories.api_client("0" * 40).get("/api/v1/projects/").status_code == 401
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
    dump = database_dump()
    assert all(key not in dump for key in old_keys.values())
    assert sorted(leaves) == sorted(_leaf_targets(MigrationExecutor(connection)))
