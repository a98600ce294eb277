"""The console's People page in real Chromium against the service (gunicorn): ops add an
account and change a role (a bad username refused under its field, nothing stored); an
admin issues an app's key, sees it once (gone when the page is opened again) and revokes
one behind its confirmation; ops see no keys and are refused the key forms; an annotator
gets the 403 page. Screenshots at 1280 and 420 px go to test-artifacts/."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts import services
from accounts.models import ApiToken, AuditEvent, Membership, Role
from tests import factories
from tests.browser import browser_page, log_in, screenshot
from tests.live import LiveService

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-password-1"
PEOPLE = "/ops/digits/people/"


def _fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_ops_add_a_member_and_change_a_role_but_see_no_keys():
    project = factories.project(slug="digits")
    factories.user_with_role(Role.OPS, project, username="olga", password=PASSWORD)
    factories.user_with_role(Role.ADMIN, username="ada")
    with LiveService() as service, browser_page(width=1280) as page:
        log_in(page, service.url, "olga", PASSWORD, next_path=PEOPLE)
        assert page.inner_text(".tabs a.active") == "People"

        # A username the API refuses: its words under the field, the value kept, nothing stored.
        page.fill("#id_username", "two words")
        page.click("text=Add to")
        error = page.wait_for_selector("[data-testid='error-username']")
        assert error.inner_text() == "Letters, digits and @ . + - _ only (no spaces)."
        assert page.input_value("#id_username") == "two words"
        screenshot(page, "console-people-refused-1280")

        page.fill("#id_username", "sam")
        page.select_option("#id_role", "annotator")
        page.click("text=Add to")
        page.wait_for_selector("text=sam is a new member of")
        assert page.is_visible("tr[data-member='sam']")

        # Change sam's role on the row.
        page.select_option("tr[data-member='sam'] select[name='role']", "reviewer")
        page.click("tr[data-member='sam'] button:has-text('Change')")
        page.wait_for_selector("text=sam is now reviewer.")
        assert page.input_value("tr[data-member='sam'] select[name='role']") == "reviewer"

        # Keys are the admins' (as GET /api/v1/accounts/tokens/): ops see none and no key form.
        assert page.query_selector("[data-key]") is None and page.query_selector("#issue-key") is None
        screenshot(page, "console-people-ops-1280")

        # Remove sam behind a confirmation that says what changes; Cancel keeps sam.
        page.click("tr[data-member='sam'] button:has-text('Remove…')")
        dialog = page.inner_text("dialog[open]")
        assert "sam can no longer open Digits" in dialog and "The account stays, with its role (reviewer)" in dialog
        screenshot(page, "console-people-remove-confirm-1280")
        page.click("dialog[open] button:has-text('Cancel')")
        assert page.is_visible("tr[data-member='sam']")
        page.click("tr[data-member='sam'] button:has-text('Remove…')")
        page.click("dialog[open] button:has-text('Remove')")
        page.wait_for_selector("text=sam is no longer a member of Digits.")
        assert page.query_selector("tr[data-member='sam']") is None
        # No Remove on one's own row: ops would lock themselves out.
        assert page.query_selector("tr[data-member='olga'] button:has-text('Remove…')") is None

    assert not Membership.objects.filter(user__username="two words").exists()
    # sam is off the project; the account and its new role stay.
    assert not Membership.objects.filter(project=project, user__username="sam").exists()
    sam = get_user_model().objects.get(username="sam")
    assert sam.account.role == Role.REVIEWER and not ApiToken.objects.filter(user=sam).exists()
    actions = list(AuditEvent.objects.filter(actor__username="olga").order_by("id").values_list("action", flat=True))
    assert actions == ["account.create", "account.membership_add", "account.role_change",
                       "account.membership_remove"]


def test_an_admin_issues_a_key_shown_once_and_revokes_one():
    project = factories.project(slug="digits")
    admin, _ = factories.user_with_role(Role.ADMIN, username="ada", password=PASSWORD)
    services.membership_add(user=admin, project=project)
    app, _ = factories.user_with_role(Role.APP, project, username="checkout")
    services.token_issue(user=app, name="old-deploy", expires_at=timezone.now() + timedelta(days=3))
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    with LiveService() as service, browser_page(width=1280) as page:
        log_in(page, service.url, "ada", PASSWORD, next_path=PEOPLE)
        row = "tr[data-member='checkout']"
        assert "expires within 7 days" in page.inner_text(f"{row} [data-key='old-deploy']")
        assert page.is_visible(f"{row} [data-key='default']")

        # A past expiry: refused under the field, no key made.
        page.select_option("#id_key_username", "checkout")
        page.fill("#id_name", "deploy-2026-12")
        page.fill("#id_expires_at", "2001-01-01T00:00")
        page.click("text=Issue key…")
        page.click("dialog[open] button:has-text('Issue')")
        assert page.inner_text("[data-testid='error-expires_at']") == "It is in the past."
        assert page.query_selector(f"{row} [data-key='deploy-2026-12']") is None

        # The confirmation, then the key, shown on this answer only.
        page.fill("#id_expires_at", "")
        page.check("input[name='scopes'][value='ingest']")
        page.click("text=Issue key…")
        assert "shown once" in page.inner_text("dialog[open]")
        page.click("dialog[open] button:has-text('Cancel')")
        page.click("text=Issue key…")
        page.click("dialog[open] button:has-text('Issue')")
        secret = page.inner_text("[data-testid='issued-secret']")
        new_key = f"{row} [data-key='deploy-2026-12']"
        prefix = page.inner_text(f"{new_key} code").rstrip("…")
        assert secret.startswith(prefix) and len(secret) > len(prefix)
        assert page.inner_text(f"{new_key} .pill") == "ingest"
        screenshot(page, "console-people-issued-1280")
        # The key shown is a working key, and only as wide as its scope (asked of the service,
        # so its last-use write happens there).
        refused = page.request.get(f"{service.url}/api/v1/projects/digits/predictions/1/",
                                   headers={"Authorization": f"Token {secret}"})
        assert refused.status == 403 and refused.json()["error"]["code"] == "scope"

        # Opened again, the page has the key's prefix but never the key.
        page.goto(f"{service.url}{PEOPLE}")
        assert secret not in page.content()
        assert page.query_selector("[data-testid='issued-secret']") is None
        assert page.inner_text(f"{new_key} code") == f"{prefix}…"

        # Revoke the old key behind its confirmation; the new one keeps working.
        page.click(f"{row} [data-key='old-deploy'] button:has-text('Revoke…')")
        assert "the account's other keys keep working" in page.inner_text("dialog[open]")
        screenshot(page, "console-people-revoke-confirm-1280")
        page.click("dialog[open] button:has-text('Revoke')")
        page.wait_for_selector("text=Key 'old-deploy'")
        assert page.query_selector(f"{row} [data-key='old-deploy']") is None
        screenshot(page, "console-people-1280")
        page.set_viewport_size({"width": 420, "height": 844})
        screenshot(page, "console-people-420")
        assert _fits(page)

    # The failed form and the cancelled confirmation made nothing: two keys, the new one scoped.
    assert sorted(ApiToken.objects.filter(user=app).values_list("name", "scopes")) == [
        ("default", ""), ("deploy-2026-12", "ingest")]
    actions = list(AuditEvent.objects.filter(actor__username="ada").order_by("id").values_list("action", flat=True))
    assert actions == ["token.create", "token.revoke"]
    # The key is nowhere in the audit log.
    assert not AuditEvent.objects.filter(details__icontains=secret).exists()


def test_an_annotator_gets_the_403_page():
    project = factories.project(slug="digits")
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    with LiveService() as service, browser_page(width=420, height=844) as page:
        log_in(page, service.url, "ann", PASSWORD, next_path="/label/")
        response = page.goto(f"{service.url}{PEOPLE}")
        assert response.status == 403
        assert page.inner_text("[data-testid='error-page'] h1") == "This page is not for your role"
