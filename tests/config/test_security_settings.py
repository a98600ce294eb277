"""Production settings: with DEBUG off (and nothing else said) the session and CSRF cookies
are Secure and SameSite=Lax, the session cookie is HttpOnly, HSTS is on for HTTPS, and the
proxy header is trusted only when BEHIND_TLS_PROXY says so. .env.example lists every
variable the settings read."""

import json
import os
import re
import subprocess
import sys

import pytest
from django.test import Client

from accounts.models import Role
from tests import factories
from tests.live import ROOT  # noqa: E402

NAMES = ["SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_HTTPONLY",
         "SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SAMESITE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
         "SECURE_PROXY_SSL_HEADER", "SECURE_CONTENT_TYPE_NOSNIFF", "X_FRAME_OPTIONS", "DEBUG"]


def settings_under(**environment) -> dict:
    """config.settings as a fresh process reads it from this environment alone (no .env)."""
    script = (
        "import json, environ\n"
        "environ.Env.read_env = staticmethod(lambda *a, **k: None)\n"
        "import django.conf.global_settings as g\n"
        "from config import settings as s\n"
        f"print(json.dumps({{n: getattr(s, n, getattr(g, n, None)) for n in {NAMES!r}}}))\n"
    )
    env = {"PATH": os.environ["PATH"], "SECRET_KEY": "x" * 50, "LOG_LEVEL": "WARNING", **environment}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_production_defaults_are_secure():
    production = settings_under()  # DEBUG defaults to false
    assert production["DEBUG"] is False
    assert production["SESSION_COOKIE_SECURE"] is True and production["CSRF_COOKIE_SECURE"] is True
    assert production["SESSION_COOKIE_HTTPONLY"] is True
    # The workspace's script reads the CSRF cookie to send it back in X-CSRFToken.
    assert production["CSRF_COOKIE_HTTPONLY"] is False
    assert production["SESSION_COOKIE_SAMESITE"] == "Lax" and production["CSRF_COOKIE_SAMESITE"] == "Lax"
    assert production["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert production["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert production["SECURE_PROXY_SSL_HEADER"] is None  # X-Forwarded-Proto is not trusted by default
    assert production["SECURE_CONTENT_TYPE_NOSNIFF"] is True and production["X_FRAME_OPTIONS"] == "DENY"


def test_developer_and_proxy_settings():
    developer = settings_under(DEBUG="true")
    assert developer["SESSION_COOKIE_SECURE"] is False and developer["SECURE_HSTS_SECONDS"] == 0
    proxied = settings_under(BEHIND_TLS_PROXY="true", SECURE_HSTS_SECONDS="600")
    assert proxied["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert proxied["SECURE_HSTS_SECONDS"] == 600


@pytest.fixture
def production(settings):
    """This process's settings as production has them (checked above)."""
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 365 * 24 * 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def test_cookies_a_sign_in_sets_in_production(project, production):
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password="a-long-enough-password")
    client = Client()
    page = client.get("/accounts/login/", secure=True)
    csrf = page.cookies["csrftoken"]
    assert csrf["secure"] and csrf["samesite"] == "Lax" and not csrf["httponly"]
    assert page["Strict-Transport-Security"] == "max-age=31536000"

    response = client.post("/accounts/login/", {"username": "ann", "password": "a-long-enough-password"},
                           secure=True)

    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"
    # Plain HTTP gets no HSTS; behind the proxy the forwarded scheme decides.
    assert "Strict-Transport-Security" not in client.get("/healthz")
    assert "Strict-Transport-Security" in client.get("/healthz", HTTP_X_FORWARDED_PROTO="https")


def test_env_example_lists_every_variable_the_settings_read():
    source = (ROOT / "config" / "settings.py").read_text()
    read = set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z0-9_]+)\"", source))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert {"SECURE_COOKIES", "SECURE_HSTS_SECONDS", "FLYWHEEL_LOGIN_MAX_FAILURES"} <= read
    assert not read - documented, sorted(read - documented)
