"""CSRF on every web form, and on the API calls the labeling workspace makes with its
session: a POST without the token is refused (403), with it accepted. The forms are found
by walking the pages, so a new form on one of them is checked too."""

import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Role
from flywheel.models import Project
from tests import factories
from tests.labeling.test_queue import annotate, claim, log, uncertain

PASSWORD = "a-long-enough-password"


class _Forms(HTMLParser):
    """The POST forms of a page: their action and the values of their named inputs."""

    def __init__(self):
        super().__init__()
        self.forms, self._current = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and (attrs.get("method") or "get").lower() == "post":
            self._current = {"action": attrs.get("action") or "", "fields": {}}
        elif self._current is not None and tag in ("input", "button") and attrs.get("name"):
            self._current["fields"].setdefault(attrs["name"], attrs.get("value") or "")

    def handle_endtag(self, tag):
        if tag == "form" and self._current is not None:
            self.forms.append(self._current)
            self._current = None


def post_forms(html: str) -> list[dict]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


@pytest.fixture
def people(app_client, project, other_project):
    """A user per role with a password, one task in review so the review page has its forms, and a
    second project so the admin gets the project lists."""
    users = {role: factories.user_with_role(role, project, username=f"c-{role}", password=PASSWORD)[0]
             for role in (Role.ANNOTATOR, Role.REVIEWER, Role.OPS, Role.ADMIN)}
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "annotations_per_task": 2})
    log(app_client, uncertain(3))
    for label in ("1", "2"):  # the two disagree: the task waits for review
        annotator = factories.api_client(factories.user_with_role(Role.ANNOTATOR, project)[1])
        annotate(annotator, claim(annotator)["id"], label)
    return users


# Every page that has (or may grow) a form, and who opens it.
PAGES = [
    ("/accounts/login/", None),
    ("/label/", Role.ADMIN),
    ("/label/digits/", Role.ANNOTATOR),
    ("/review/", Role.ADMIN),
    ("/review/digits/", Role.REVIEWER),
    ("/ops/digits/", Role.OPS),
    ("/label/groups/", Role.ADMIN),
    ("/label/groups/digits/", Role.ANNOTATOR),
    ("/ops/projects/new/", Role.OPS),
    ("/ops/digits/training/", Role.OPS),
    ("/ops/digits/datasets/", Role.OPS),
    ("/ops/digits/drift/", Role.OPS),
    ("/ops/digits/settings/", Role.OPS),
    ("/ops/digits/quality/", Role.OPS),
    ("/ops/digits/people/", Role.ADMIN),
]


def _fill(form: dict, page: str) -> dict:
    fields = dict(form["fields"])
    if "password" in fields:
        fields.update(username="c-annotator", password=PASSWORD)
    return fields


@pytest.mark.parametrize(("page", "role"), PAGES)
def test_every_form_needs_the_csrf_token(people, page, role):
    def opened():
        client = Client(enforce_csrf_checks=True)
        if role:
            client.force_login(people[role])
        response = client.get(page)
        assert response.status_code == 200, page
        return client, post_forms(response.content.decode())

    client, forms = opened()
    assert forms, f"{page} shows no form"
    if page == "/review/digits/":
        assert any("task" in form["fields"] for form in forms), "the review page shows no review form"
    for form in forms:
        assert form["fields"].get("csrfmiddlewaretoken"), f"a form on {page} has no CSRF token: {form}"
        action = form["action"] or page
        fields = _fill(form, page)
        without = {k: v for k, v in fields.items() if k != "csrfmiddlewaretoken"}

        refused = client.post(action, without)
        assert refused.status_code == 403 and b"CSRF" in refused.content, (page, action)

        client, forms_again = opened()  # a fresh session: the accepted POST may sign out
        # The same form on the page as it is now (an earlier accepted POST may have revoked
        # the key a form was for, or added a row before it).
        same = [f for f in forms_again if f["action"] == form["action"] and f["fields"].keys() == form["fields"].keys()]
        if not same:
            continue
        accepted = client.post(action, _fill(same[0], page))
        # Past the CSRF check: done (200, 302), or the form shown again with what its empty
        # fields lack (400), never the CSRF refusal.
        assert accepted.status_code in (200, 302, 400) and b"CSRF" not in accepted.content, (
            page, action, accepted.status_code)


def test_the_pages_with_forms_are_all_walked():
    """Every page route is listed in PAGES or has no form (the table is checked in test_access)."""
    from tests.config.test_access import ENDPOINTS

    walked = {re.sub(r"digits", "{slug}", p) for p, _ in PAGES}
    pages = {e.path for e in ENDPOINTS if e.kind in ("page", "public") and e.method == "GET"}
    # No form: redirects, the admin (Django's own, CSRF-protected by the same middleware),
    # another project's page (a 404 for members), and the service endpoints.
    without_forms = {"/", "/ops/", "/admin/", "/admin/login/", "/healthz", "/readyz", "/metrics", "/api/v1/schema/",
                     "/api/docs/"} | {page for page in pages if "{other}" in page}
    assert pages - without_forms <= walked, sorted(pages - without_forms - walked)


def test_workspace_api_calls_with_the_session_need_the_csrf_header(people, project):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(people[Role.ANNOTATOR])
    client.get("/label/digits/")  # sets the csrftoken cookie, as for the page's script
    header = {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}

    def both(path, body=None, ok=(200, 201)):
        refused = client.post(path, body, format="json")
        assert refused.status_code == 403, path
        assert refused.json()["error"]["code"] == "forbidden" and "CSRF" in refused.json()["error"]["message"]
        accepted = client.post(path, body, format="json", **header)
        assert accepted.status_code in ok, (path, accepted.content)
        return accepted

    task = both("/api/v1/projects/digits/tasks/next/").json()["task"]
    both(f"/api/v1/tasks/{task['id']}/heartbeat/")
    both(f"/api/v1/tasks/{task['id']}/annotations/", {"label": "3"})
    both(f"/api/v1/tasks/{task['id']}/undo/")
    both(f"/api/v1/tasks/{task['id']}/skip/")
    other = both("/api/v1/projects/digits/tasks/next/").json()["task"]
    both(f"/api/v1/tasks/{other['id']}/release/")
    # Reads need no token.
    assert client.get("/api/v1/projects/digits/annotators/me/").status_code == 200


def test_token_authenticated_api_calls_need_no_csrf_token(project):
    _, token = factories.user_with_role(Role.APP, project)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post("/api/v1/projects/digits/predictions/", factories.prediction(9), format="json")
    assert response.status_code == 201
