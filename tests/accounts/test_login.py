"""Web sign-in lockout: repeated failures for one username or from one address refuse
sign-in, even with the right password, until they age out; every worker sees the same
count because it is kept in the database."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, LoginFailure, Role
from tests import factories

PASSWORD = "a-long-enough-password"
LOGIN = "/accounts/login/"


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.FLYWHEEL_LOGIN_MAX_FAILURES = 5
    settings.FLYWHEEL_LOGIN_MAX_FAILURES_PER_IP = 30
    settings.FLYWHEEL_LOGIN_LOCKOUT_SECONDS = 900


def sign_in(username, password, client=None, **extra):
    client = client or Client()
    return client, client.post(LOGIN, {"username": username, "password": password, "next": "/label/"}, **extra)


def test_failures_lock_the_username_even_for_the_right_password(project):
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    for _ in range(5):
        assert sign_in("ann", "wrong")[1].status_code == 200

    client, refused = sign_in("ann", PASSWORD)

    assert refused.status_code == 429
    assert 800 < int(refused["Retry-After"]) <= 900
    assert "Too many failed sign-ins. Wait 15 minutes" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    assert client.get("/label/").status_code == 302  # still signed out
    # The username is locked from any address; the attempts during the lock are not counted.
    assert sign_in("ANN", PASSWORD, REMOTE_ADDR="10.9.9.9")[1].status_code == 429
    assert LoginFailure.objects.count() == 5
    locked = AuditEvent.objects.get(action="account.login_locked")
    assert locked.target == "ann" and locked.details["ip"] == "127.0.0.1" and locked.actor is None


def test_the_lock_ends_by_itself_when_the_failures_age_out(project):
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    for _ in range(5):
        sign_in("ann", "wrong")
    assert sign_in("ann", PASSWORD)[1].status_code == 429
    LoginFailure.objects.update(created_at=timezone.now() - timedelta(seconds=901))

    client, response = sign_in("ann", PASSWORD)

    assert response.status_code == 302 and response["Location"] == "/label/"
    assert client.get("/label/").status_code in (200, 302) and "_auth_user_id" in client.session


def test_a_success_forgives_earlier_typos(project):
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    for _ in range(4):
        sign_in("ann", "wrong")
    assert sign_in("ann", PASSWORD)[1].status_code == 302
    for _ in range(4):
        sign_in("ann", "wrong")
    assert sign_in("ann", PASSWORD)[1].status_code == 302
    assert not AuditEvent.objects.filter(action="account.login_locked").exists()


def test_one_address_trying_many_usernames_is_locked_out(project, settings):
    settings.FLYWHEEL_LOGIN_MAX_FAILURES_PER_IP = 3
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    for name in ("root", "admin", "ops"):
        sign_in(name, "guess", REMOTE_ADDR="203.0.113.7")

    assert sign_in("ann", PASSWORD, REMOTE_ADDR="203.0.113.7")[1].status_code == 429
    assert sign_in("ann", PASSWORD, REMOTE_ADDR="198.51.100.1")[1].status_code == 302


def test_behind_a_proxy_the_address_the_proxy_saw_counts(project, settings):
    settings.BEHIND_TLS_PROXY = True
    settings.FLYWHEEL_LOGIN_MAX_FAILURES_PER_IP = 2
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    for spoofed in ("1.1.1.1", "2.2.2.2"):
        # The client's own X-Forwarded-For entries are ignored; the proxy's (last) one counts.
        sign_in(f"guess-{spoofed}", "x", HTTP_X_FORWARDED_FOR=f"{spoofed}, 203.0.113.7", REMOTE_ADDR="10.0.0.2")
    assert sign_in("ann", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.7", REMOTE_ADDR="10.0.0.2")[1].status_code == 429
    assert sign_in("ann", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.8", REMOTE_ADDR="10.0.0.2")[1].status_code == 302


def test_the_admin_sign_in_is_the_same_page(db):
    response = Client().get("/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/admin/"


def test_app_service_accounts_may_not_sign_in_to_the_pages(project):
    factories.user_with_role(Role.APP, project, username="checkout", password=PASSWORD)
    client, response = sign_in("checkout", PASSWORD)
    assert response.status_code == 200 and "_auth_user_id" not in client.session


def test_no_limit_when_turned_off(project, settings):
    settings.FLYWHEEL_LOGIN_MAX_FAILURES = 0
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    for _ in range(8):
        sign_in("ann", "wrong")
    assert sign_in("ann", PASSWORD)[1].status_code == 302
