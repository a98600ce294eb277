"""API keys kept as a prefix and a digest: several per account, named, expiring, scoped,
their last use written without a write per request, and every change in the audit log."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import selectors, services, token_use, tokens
from accounts.models import ApiToken, AuditEvent, Role
from accounts.signals import clear_access_caches
from tests import factories

TOKENS = "/api/v1/accounts/tokens/"


@pytest.fixture
def admin(db):
    return factories.api_client(factories.user_with_role(Role.ADMIN)[1])


def _add(admin, username, **fields):
    response = admin.post(TOKENS, {"username": username, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_key_is_stored_as_prefix_and_digest_and_shown_once(admin, project):
    factories.user_with_role(Role.APP, project, username="checkout")

    made = _add(admin, "checkout", name="deploy-2026-12", scopes=["ingest"])

    key = made["token"]
    assert key.startswith(tokens.KEY_MARKER) and made["prefix"] == key[:tokens.PREFIX_LENGTH]
    assert made["name"] == "deploy-2026-12" and made["scopes"] == ["ingest"] and made["expires_at"] is None
    stored = ApiToken.objects.get(pk=made["id"])
    assert stored.digest == tokens.key_digest(key) and key not in (stored.prefix, stored.digest)
    listed = admin.get(TOKENS, {"username": "checkout"}).json()
    assert {t["name"] for t in listed} == {"default", "deploy-2026-12"}
    assert all("token" not in t and key not in str(t) for t in listed)
    assert set(listed[0]) == {"id", "username", "role", "name", "prefix", "scopes", "created_at", "last_used_at",
                              "expires_at"}


def test_two_keys_of_one_account_both_work_and_revoking_one_leaves_the_other(admin, project):
    user, first = factories.user_with_role(Role.APP, project, username="checkout")
    second = _add(admin, "checkout", name="next")

    # Rotation: the new key is deployed while the old one still works...
    for key in (first, second["token"]):
        assert factories.api_client(key).get("/api/v1/projects/").status_code == 200
    old_id = ApiToken.objects.get(user=user, name="default").pk
    assert admin.delete(f"{TOKENS}id/{old_id}/").status_code == 204

    # ...and only then is the old one revoked; the new one never stopped working.
    assert factories.api_client(first).get("/api/v1/projects/").status_code == 401
    assert factories.api_client(second["token"]).get("/api/v1/projects/").status_code == 200
    revoked = AuditEvent.objects.get(action="token.revoke")
    assert revoked.target == "checkout" and revoked.details["token_id"] == old_id
    assert AuditEvent.objects.filter(action="token.create", details__name="next").count() == 1

    # The account-wide revoke still takes all of them.
    assert admin.delete(f"{TOKENS}checkout/").status_code == 204
    assert factories.api_client(second["token"]).get("/api/v1/projects/").status_code == 401
    assert not ApiToken.objects.filter(user=user).exists()


def test_a_user_revokes_their_own_key_by_id_but_not_someone_elses(admin, project):
    user, key = factories.user_with_role(Role.ANNOTATOR, project)
    _, other_key = factories.user_with_role(Role.ANNOTATOR, project)
    own = ApiToken.objects.get(user=user)
    other = ApiToken.objects.exclude(user=user).get(user__username__startswith="annotator")
    client = factories.api_client(key)

    refused = client.delete(f"{TOKENS}id/{other.pk}/")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "token_not_found"
    assert factories.api_client(other_key).get("/api/v1/projects/").status_code == 200
    assert client.delete(f"{TOKENS}id/{own.pk}/").status_code == 204
    assert client.get("/api/v1/projects/").status_code == 401
    assert admin.delete(f"{TOKENS}id/{own.pk}/").status_code == 404


def test_replacing_the_default_key_keeps_the_named_ones(admin, project):
    _, first = factories.user_with_role(Role.APP, project, username="checkout")
    named = _add(admin, "checkout", name="batch-job")

    replaced = _add(admin, "checkout")

    assert replaced["name"] == "default" and replaced["token"] != first
    assert factories.api_client(first).get("/api/v1/projects/").status_code == 401
    assert factories.api_client(named["token"]).get("/api/v1/projects/").status_code == 200
    assert AuditEvent.objects.filter(action="token.rotate", target="checkout").count() == 1


@pytest.mark.parametrize("fields, field", [
    ({"name": "batch-job"}, "name"),  # taken by the first call below
    ({"name": "has space"}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "next tuesday"}, "expires_at"),
    ({"scopes": ["write"]}, "scopes[0]"),
    ({"scopes": "ingest"}, "scopes"),
])
def test_bad_key_requests_are_400_naming_the_field_and_store_nothing(admin, project, fields, field):
    user, _ = factories.user_with_role(Role.APP, project, username="checkout")
    _add(admin, "checkout", name="batch-job")
    before = set(ApiToken.objects.values_list("pk", flat=True))

    response = admin.post(TOKENS, {"username": "checkout", **fields}, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert set(ApiToken.objects.values_list("pk", flat=True)) == before


def test_the_key_list_costs_the_same_queries_for_any_number_of_keys(admin, project, django_assert_max_num_queries):
    for i in range(12):
        user, _ = factories.user_with_role(Role.APP, project)
        services.token_issue(user=user, name=f"extra-{i}", scopes=["read"])
    with django_assert_max_num_queries(1):
        listed = admin.get(TOKENS)
    assert listed.status_code == 200 and len(listed.json()) == 12 * 2 + 1


# --- Expiry ---------------------------------------------------------------------------------------


def test_an_expired_key_is_401_token_expired_and_its_expiry_is_audited_once(admin, project, monkeypatch):
    factories.user_with_role(Role.APP, project, username="checkout")
    made = _add(admin, "checkout", name="short", expires_at=(timezone.now() + timedelta(days=3)).isoformat())
    client = factories.api_client(made["token"])
    assert client.get("/api/v1/projects/").status_code == 200
    assert [t.name for t in selectors.tokens_expiring(within=timedelta(days=7))] == ["short"]
    assert not selectors.tokens_expiring(within=timedelta(days=2)).exists()

    later = timezone.now() + timedelta(days=4)
    monkeypatch.setattr(timezone, "now", lambda: later)
    clear_access_caches()
    response = client.get("/api/v1/projects/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"
    assert response.headers["WWW-Authenticate"] == "Token"
    assert services.tokens_expired_record() == 1
    assert services.tokens_expired_record() == 0  # a second run is a no-op
    event = AuditEvent.objects.get(action="token.expire")
    assert event.target == "checkout" and event.details["name"] == "short"


def test_an_expired_key_is_refused_even_while_cached(admin, project, monkeypatch):
    factories.user_with_role(Role.APP, project, username="checkout")
    made = _add(admin, "checkout", name="short", expires_at=(timezone.now() + timedelta(hours=1)).isoformat())
    client = factories.api_client(made["token"])
    assert client.get("/api/v1/projects/").status_code == 200  # now in the access cache

    later = timezone.now() + timedelta(hours=2)
    monkeypatch.setattr(timezone, "now", lambda: later)

    assert client.get("/api/v1/projects/").json()["error"]["code"] == "token_expired"


def test_the_expiry_task_records_each_expired_key_once(project):
    user, _ = factories.user_with_role(Role.APP, project)
    services.token_issue(user=user, name="soon", expires_at=timezone.now() + timedelta(seconds=30))
    from accounts.tasks import tokens_expired_record

    assert tokens_expired_record.delay().get() == 0
    ApiToken.objects.filter(name="soon").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert tokens_expired_record.delay().get() == 1
    assert tokens_expired_record.delay().get() == 0
    assert AuditEvent.objects.filter(action="token.expire").count() == 1


# --- Last used ------------------------------------------------------------------------------------


def test_last_use_is_written_off_the_request_and_at_most_once_a_minute(project):
    user, key = factories.user_with_role(Role.APP, project, username="checkout")
    token = ApiToken.objects.get(user=user)
    token_use.pending()  # uses noted by earlier tests are not this test's
    client = factories.api_client(key)

    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert client.get("/api/v1/projects/").status_code == 200
    assert not [q for q in queries.captured_queries if "UPDATE" in q["sql"] and "accounts_apitoken" in q["sql"]]
    token.refresh_from_db()
    assert token.last_used_at is None

    assert token_use.flush() == [token.pk]
    token.refresh_from_db()
    first_written = token.last_used_at
    assert first_written is not None and timezone.now() - first_written < timedelta(seconds=30)
    first = AuditEvent.objects.get(action="token.first_use")
    assert first.actor == user and first.details["token_id"] == token.pk

    # Used again within the minute: nothing more is written, and the first use is not repeated.
    assert client.get("/api/v1/projects/").status_code == 200
    assert token_use.flush() == []
    token.refresh_from_db()
    assert token.last_used_at == first_written
    assert AuditEvent.objects.filter(action="token.first_use").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_last_use_is_written_by_the_background_writer_when_due(monkeypatch):
    project = factories.project()
    user, key = factories.user_with_role(Role.APP, project)
    monkeypatch.setattr(token_use, "_next_write", 0.0)

    assert factories.api_client(key).get("/api/v1/projects/").status_code == 200
    token_use._writer.submit(lambda: None).result(timeout=10)  # the write handed over has finished

    assert ApiToken.objects.get(user=user).last_used_at is not None
    assert AuditEvent.objects.filter(action="token.first_use", target=user.username).exists()


def test_the_django_admin_lists_keys_without_their_digest_and_cannot_make_plain_ones(client, project):
    admin_user, _ = factories.user_with_role(Role.ADMIN, password="correct-horse-battery")
    user, key = factories.user_with_role(Role.APP, project, username="checkout")
    token = ApiToken.objects.get(user=user)
    assert client.login(username=admin_user.username, password="correct-horse-battery")

    listing = client.get("/admin/accounts/apitoken/").content.decode()
    detail = client.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()

    assert "checkout" in listing and token.prefix in listing
    for html in (listing, detail):
        assert token.digest not in html and key not in html
    assert client.get("/admin/accounts/apitoken/add/").status_code == 403
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 404
