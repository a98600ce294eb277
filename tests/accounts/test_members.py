"""A project's people: members and their roles through the API and the console's People page,
with API keys issued (shown once) and revoked there by admins only, as in the tokens API."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts import services, tokens
from accounts.models import ApiToken, AuditEvent, Membership, Role
from tests import factories

MEMBERS = "/api/v1/projects/{slug}/members/"


@pytest.fixture
def ops(project):
    return factories.user_with_role(Role.OPS, project, username="olga")


@pytest.fixture
def admin(project):
    return factories.user_with_role(Role.ADMIN, username="ada")


def _page_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_ops_add_a_new_account_without_a_key_and_the_audit_log_says_so(project, ops):
    api = factories.api_client(ops[1])

    response = api.post(MEMBERS.format(slug=project.slug), {"username": "checkout", "role": "app"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["username"] == "checkout" and response.json()["role"] == "app"
    assert Membership.objects.filter(project=project, user__username="checkout").exists()
    # Ops may not hold an app's key: an admin issues it.
    assert not ApiToken.objects.filter(user__username="checkout").exists()
    actions = list(AuditEvent.objects.filter(target="checkout").order_by("id").values_list("action", "actor_name"))
    assert actions == [("account.create", "olga"), ("account.membership_add", "olga")]
    listed = api.get(MEMBERS.format(slug=project.slug)).json()
    assert [(m["username"], m["role"]) for m in listed] == [("checkout", "app"), ("olga", "ops")]


def test_adding_an_existing_account_adds_the_membership_and_its_new_role(project, ops):
    other = factories.project(slug="elsewhere")
    factories.user_with_role(Role.ANNOTATOR, other, username="sam")

    response = factories.api_client(ops[1]).post(MEMBERS.format(slug=project.slug),
                                                 {"username": "sam", "role": "reviewer"}, format="json")

    assert response.status_code == 201
    assert set(Membership.objects.filter(user__username="sam").values_list("project__slug", flat=True)) == {
        project.slug, "elsewhere"}
    event = AuditEvent.objects.get(action="account.role_change", target="sam")
    assert event.details == {"from": "annotator", "to": "reviewer"} and event.actor_name == "olga"


@pytest.mark.parametrize("body, field", [
    ({"username": "two words", "role": "annotator"}, "username"),
    ({"username": "sam", "role": "admin"}, "role"),
    ({"username": "sam", "role": "boss"}, "role"),
    ({"role": "annotator"}, "username"),
])
def test_a_bad_member_is_refused_naming_the_field_and_nothing_is_stored(project, ops, body, field):
    response = factories.api_client(ops[1]).post(MEMBERS.format(slug=project.slug), body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    if body.get("username") == "two words":
        assert response.json()["error"]["fields"]["username"] == ["Letters, digits and @ . + - _ only (no spaces)."]
    assert not Membership.objects.exclude(user__username="olga").exists()
    assert not AuditEvent.objects.filter(action__startswith="account.", actor__username="olga").exists()


def test_ops_may_not_change_an_admins_role_but_an_admin_may(project, ops, admin):
    services.membership_add(user=admin[0], project=project)
    url = MEMBERS.format(slug=project.slug) + "ada/"

    refused = factories.api_client(ops[1]).patch(url, {"role": "annotator"}, format="json")
    also_refused = factories.api_client(ops[1]).post(MEMBERS.format(slug=project.slug),
                                                     {"username": "ada", "role": "annotator"}, format="json")

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert also_refused.status_code == 403
    admin[0].account.refresh_from_db()
    assert admin[0].account.role == Role.ADMIN
    done = factories.api_client(admin[1]).patch(MEMBERS.format(slug=project.slug) + "olga/", {"role": "reviewer"},
                                                format="json")
    assert done.status_code == 200 and done.json()["role"] == "reviewer"


def test_changing_the_role_of_someone_who_is_not_a_member_is_a_404(project, ops):
    factories.user_with_role(Role.ANNOTATOR, factories.project(slug="elsewhere"), username="sam")

    response = factories.api_client(ops[1]).patch(MEMBERS.format(slug=project.slug) + "sam/", {"role": "ops"},
                                                  format="json")

    assert response.status_code == 404 and response.json()["error"]["code"] == "user_not_found"
    assert not AuditEvent.objects.filter(action="account.role_change").exists()


def test_listing_members_takes_the_same_queries_however_many(project, ops, django_assert_max_num_queries):
    api = factories.api_client(ops[1])
    for i in range(3):
        factories.user_with_role(Role.ANNOTATOR, project, username=f"few-{i}")
    with django_assert_max_num_queries(12) as few:
        assert len(api.get(MEMBERS.format(slug=project.slug)).json()) == 4
    for i in range(20):
        factories.user_with_role(Role.ANNOTATOR, project, username=f"many-{i}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(api.get(MEMBERS.format(slug=project.slug)).json()) == 24


def test_the_people_page_lists_keys_for_admins_and_not_for_ops(project, ops, admin):
    app, _ = factories.user_with_role(Role.APP, project, username="checkout")
    services.token_issue(user=app, name="soon", expires_at=timezone.now() + timedelta(days=2))
    url = f"/ops/{project.slug}/people/"

    as_admin = _page_client(admin[0]).get(url).content.decode()
    as_ops = _page_client(ops[0]).get(url).content.decode()

    assert 'data-key="soon"' in as_admin and "expires within 7 days" in as_admin
    assert 'data-member="checkout"' in as_ops and 'data-key="' not in as_ops and "Issue an API key" not in as_ops


def test_a_key_issued_on_the_page_is_shown_on_that_answer_only(project, admin):
    factories.user_with_role(Role.APP, project, username="checkout")
    client = _page_client(admin[0])
    url = f"/ops/{project.slug}/people/"

    response = client.post(url, {"form": "key", "username": "checkout", "name": "deploy-2", "scopes": ["ingest"]})

    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    secret = re.search(r'data-testid="issued-secret">([^<]+)<', response.content.decode())[1]
    key = ApiToken.objects.get(user__username="checkout", name="deploy-2")
    assert key.scope_list == ["ingest"] and secret.startswith(key.prefix)
    assert secret not in client.get(url).content.decode()
    event = AuditEvent.objects.get(action="token.create", details__name="deploy-2")
    assert event.actor_name == "ada" and secret not in str(event.details)
    assert tokens.digest_matches(secret, key.digest)  # the key shown is the key stored


@pytest.mark.parametrize("fields, field", [
    ({"expires_at": "2000-01-01T00:00"}, "expires_at"),
    ({"name": "no spaces"}, "name"),
    ({"scopes": ["write"]}, "scopes"),
    ({"username": "stranger"}, "username"),
])
def test_a_bad_key_form_is_refused_under_its_field_and_nothing_is_stored(project, admin, fields, field):
    factories.user_with_role(Role.APP, project, username="checkout")
    factories.user_with_role(Role.APP, factories.project(slug="elsewhere"), username="stranger")
    before = set(ApiToken.objects.values_list("pk", flat=True))

    response = _page_client(admin[0]).post(f"/ops/{project.slug}/people/",
                                           {"form": "key", "username": "checkout", "name": "deploy", **fields})

    assert response.status_code == 400
    assert f'data-testid="error-{"key-username" if field == "username" else field}"' in response.content.decode()
    assert set(ApiToken.objects.values_list("pk", flat=True)) == before


def test_a_key_of_another_projects_account_cannot_be_revoked_from_this_page(project, admin):
    stranger, _ = factories.user_with_role(Role.APP, factories.project(slug="elsewhere"), username="stranger")
    key = ApiToken.objects.get(user=stranger)

    response = _page_client(admin[0]).post(f"/ops/{project.slug}/people/", {"form": "revoke", "token": key.pk},
                                           follow=True)

    assert "No such API key among this project" in response.content.decode()
    assert ApiToken.objects.filter(pk=key.pk).exists()


def test_ops_cannot_issue_or_revoke_keys_from_the_page(project, ops):
    app, _ = factories.user_with_role(Role.APP, project, username="checkout")
    key = ApiToken.objects.get(user=app)
    client = _page_client(ops[0])

    issued = client.post(f"/ops/{project.slug}/people/", {"form": "key", "username": "checkout", "name": "x"})
    revoked = client.post(f"/ops/{project.slug}/people/", {"form": "revoke", "token": key.pk})

    assert issued.status_code == 403 and revoked.status_code == 403
    assert list(ApiToken.objects.filter(user=app)) == [key]


def test_ops_changing_an_admins_role_on_the_page_is_refused_on_the_row(project, ops, admin):
    services.membership_add(user=admin[0], project=project)

    response = _page_client(ops[0]).post(f"/ops/{project.slug}/people/",
                                         {"form": "role", "username": "ada", "role": "annotator"})

    assert response.status_code == 400
    page = response.content.decode()
    row = page[page.index('data-member="ada"'):page.index("</tr>", page.index('data-member="ada"'))]
    assert "Only admins may change the role of &#x27;ada&#x27;, an admin." in row
    admin[0].account.refresh_from_db()
    assert admin[0].account.role == Role.ADMIN
    assert not AuditEvent.objects.filter(action="account.role_change").exists()


def test_ops_remove_a_member_who_then_cannot_open_the_project(project, ops):
    other = factories.project(slug="elsewhere")
    sam, sam_key = factories.user_with_role(Role.ANNOTATOR, project, username="sam")
    services.membership_add(user=sam, project=other)
    assert factories.api_client(sam_key).get(f"/api/v1/projects/{project.slug}/").status_code == 200

    response = factories.api_client(ops[1]).delete(MEMBERS.format(slug=project.slug) + "sam/")

    assert response.status_code == 204
    assert list(Membership.objects.filter(user=sam).values_list("project__slug", flat=True)) == ["elsewhere"]
    # The account, its role and its key stay; this project is gone for it at once.
    sam.account.refresh_from_db()
    assert sam.account.role == Role.ANNOTATOR and ApiToken.objects.filter(user=sam).exists()
    assert factories.api_client(sam_key).get(f"/api/v1/projects/{project.slug}/").status_code == 404
    assert factories.api_client(sam_key).get("/api/v1/projects/elsewhere/").status_code == 200
    event = AuditEvent.objects.get(action="account.membership_remove")
    assert (event.actor_name, event.target, event.project_id, event.details) == (
        "olga", "sam", project.pk, {"role": "annotator"})


@pytest.mark.parametrize("who, status, code", [
    ("olga", 409, "cannot_remove_self"),  # ops would lose the project and could not undo it
    ("ada", 403, "forbidden"),  # an admin is an admin's to remove
    ("stranger", 404, "user_not_found"),  # a member of another project only
    ("nobody", 404, "user_not_found"),
])
def test_a_removal_the_rules_refuse_changes_nothing(project, ops, admin, who, status, code):
    services.membership_add(user=admin[0], project=project)
    factories.user_with_role(Role.ANNOTATOR, factories.project(slug="elsewhere"), username="stranger")
    before = set(Membership.objects.values_list("pk", flat=True))

    response = factories.api_client(ops[1]).delete(MEMBERS.format(slug=project.slug) + f"{who}/")

    assert response.status_code == status and response.json()["error"]["code"] == code
    assert set(Membership.objects.values_list("pk", flat=True)) == before
    assert not AuditEvent.objects.filter(action="account.membership_remove").exists()


def test_an_admin_removes_an_admin_but_not_themselves(project, admin):
    services.membership_add(user=admin[0], project=project)
    other_admin, _ = factories.user_with_role(Role.ADMIN, username="alan")
    services.membership_add(user=other_admin, project=project)
    api = factories.api_client(admin[1])

    assert api.delete(MEMBERS.format(slug=project.slug) + "ada/").status_code == 409
    assert api.delete(MEMBERS.format(slug=project.slug) + "alan/").status_code == 204
    assert list(Membership.objects.filter(project=project).values_list("user__username", flat=True)) == ["ada"]


def test_removing_on_the_page_shows_a_refusal_on_the_row_and_stores_nothing(project, ops, admin):
    services.membership_add(user=admin[0], project=project)
    client = _page_client(ops[0])
    url = f"/ops/{project.slug}/people/"

    page = client.get(url).content.decode()
    # Ops are offered no Remove for themselves or an admin: the rules would refuse it.
    row = page[page.index('data-member="ada"'):page.index("</tr>", page.index('data-member="ada"'))]
    own = page[page.index('data-member="olga"'):page.index("</tr>", page.index('data-member="olga"'))]
    assert "Remove…" not in row and "Remove…" not in own
    refused = client.post(url, {"form": "remove", "username": "ada"})

    assert refused.status_code == 400
    page = refused.content.decode()
    row = page[page.index('data-member="ada"'):page.index("</tr>", page.index('data-member="ada"'))]
    assert "Only admins may remove &#x27;ada&#x27;, an admin." in row
    assert Membership.objects.filter(project=project, user=admin[0]).exists()
    assert not AuditEvent.objects.filter(action="account.membership_remove").exists()
