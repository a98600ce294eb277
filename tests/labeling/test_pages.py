"""The /label/ and /review/ pages: who may open them and what the reviewer's forms do."""

import json

import pytest
from django.test import Client

from accounts.models import Role
from flywheel.models import Project
from labeling import services
from labeling.models import Label, Task
from labeling.views import label_keys
from tests import factories


def logged_in(role, *projects):
    user, _ = factories.user_with_role(role, *projects)
    client = Client()
    client.force_login(user)
    return user, client


def test_label_keys():
    assert label_keys(["0", "1", "9"]) == [("0", "0"), ("1", "1"), ("9", "9")]
    assert label_keys(["cat", "dog"]) == [("cat", "1"), ("dog", "2")]
    assert label_keys(["s", "t"]) == [("s", "1"), ("t", "2")]  # S and U are skip and undo
    many = label_keys([f"l{i}" for i in range(40)])
    assert many[9][1] == "0" and many[10][1] == "a" and "s" not in [k for _, k in many] and many[-1][1] is None


def test_pages_need_a_login(db):
    for path in ("/", "/label/", "/review/", "/label/digits/", "/review/digits/"):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_roles_are_sent_to_their_page(project):
    assert logged_in(Role.ANNOTATOR, project)[1].get("/")["Location"] == "/label/"
    assert logged_in(Role.REVIEWER, project)[1].get("/")["Location"] == "/review/"
    assert logged_in(Role.OPS, project)[1].get("/")["Location"] == "/ops/"


def test_annotator_workspace(project, other_project):
    _, client = logged_in(Role.ANNOTATOR, project)
    assert client.get("/label/")["Location"] == "/label/digits/"
    page = client.get("/label/digits/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-label="7"' in html and "Enter</kbd> accept suggestion" in html
    config = json.loads(html.split('id="workspace-config" type="application/json">')[1].split("</script>")[0])
    assert config["keys"]["7"] == "7" and config["next"] == "/api/v1/projects/digits/tasks/next/"
    assert "csrftoken" in page.cookies
    assert client.get("/label/other/").status_code == 404


def test_apps_may_not_open_the_workspaces(project):
    _, client = logged_in(Role.APP, project)
    assert client.get("/label/").status_code == 403
    assert client.get("/review/").status_code == 403
    _, annotator = logged_in(Role.ANNOTATOR, project)
    assert annotator.get("/review/digits/").status_code == 403


@pytest.fixture
def disputed(app_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "annotations_per_task": 2})
    project.refresh_from_db()
    app_client.post("/api/v1/projects/digits/predictions/", factories.prediction(1, confidence=0.2), format="json")
    votes = {}
    for label in ("3", "8"):
        user, _ = factories.user_with_role(Role.ANNOTATOR, project)
        task = services.task_claim(project=project, user=user)
        services.annotation_submit(task_id=task.pk, user=user, label=label)
        votes[user.username] = label
    return Task.objects.get(), votes


def test_review_page_shows_the_annotations_side_by_side_and_accepts(project, disputed):
    task, votes = disputed
    _, client = logged_in(Role.REVIEWER, project)
    html = client.get("/review/digits/").content.decode()
    assert f'id="review-{task.pk}"' in html
    for username, label in votes.items():
        assert username in html and f"<b>{label}</b>" in html
    response = client.post("/review/digits/", {"task": task.pk, "verdict": "accept", "label": "8"}, follow=True)
    assert "accepted" in response.content.decode()
    assert Label.objects.get(is_current=True).label == "8"
    assert "Nothing waits for review" in client.get("/review/digits/").content.decode()


def test_review_page_reject_and_bad_input(project, disputed):
    task, _ = disputed
    _, client = logged_in(Role.REVIEWER, project)
    client.post("/review/digits/", {"task": task.pk, "verdict": "reject"})
    task.refresh_from_db()
    assert (task.status, task.round) == ("open", 2)
    bad = client.post("/review/digits/", {"task": "x", "verdict": "maybe"}, follow=True)
    assert "not understood" in bad.content.decode()
    late = client.post("/review/digits/", {"task": task.pk, "verdict": "accept"}, follow=True)
    assert "only tasks in review or done" in late.content.decode()


def test_review_form_needs_the_csrf_token(project, disputed):
    task, _ = disputed
    user, _ = factories.user_with_role(Role.REVIEWER, project)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post("/review/digits/", {"task": task.pk, "verdict": "reject"}).status_code == 403


def test_review_page_stores_the_reason_of_a_reject(project, disputed):
    from labeling.models import Review

    task, _ = disputed
    _, client = logged_in(Role.REVIEWER, project)
    html = client.get("/review/digits/").content.decode()
    assert 'name="reason"' in html and "<kbd>R</kbd> reject with a reason" in html
    # The page's form also sends the label its dropdown shows; a reject keeps none.
    client.post("/review/digits/", {"task": task.pk, "verdict": "reject", "label": "3",
                                    "reason": "the 3 has a closed top"})
    review = Review.objects.get(task=task)
    assert (review.verdict, review.reason, review.label) == ("reject", "the 3 has a closed top", "")
    too_long = client.post("/review/digits/", {"task": task.pk, "verdict": "reject", "reason": "x" * 501}, follow=True)
    assert "not understood" in too_long.content.decode() and Review.objects.count() == 1


def test_people_see_only_the_areas_their_role_opens(project):
    links = {}
    for role in (Role.ANNOTATOR, Role.REVIEWER, Role.OPS):
        _, client = logged_in(role, project)
        html = client.get("/label/" if role == Role.ANNOTATOR else "/review/" if role == Role.REVIEWER else "/ops/",
                          follow=True).content.decode()
        nav = html.split('<nav class="nav"')[1].split("</nav>")[0]
        links[role] = [area for area in ("Label", "Review", "Ops") if f">{area}</a>" in nav]
    assert links[Role.ANNOTATOR] == ["Label"]
    assert links[Role.REVIEWER] == ["Label", "Review"]
    assert links[Role.OPS] == ["Label", "Review", "Ops"]


def test_a_refused_page_has_the_sites_look_and_logs_no_traceback(project, caplog):
    _, client = logged_in(Role.ANNOTATOR, project)
    with caplog.at_level("WARNING", logger="django.request"):
        response = client.get("/ops/")
    html = response.content.decode()
    assert response.status_code == 403 and 'data-testid="error-page"' in html and 'class="topbar"' in html
    assert ">Label</a>" in html and ">Ops</a>" not in html
    # The filter the settings attach to django.request drops the traceback of a 4xx.
    from common.logging import ClientErrorsWithoutTraceback
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records and all(ClientErrorsWithoutTraceback().filter(r) and r.exc_info is None for r in records)
    missing = client.get("/label/nope/")
    assert missing.status_code == 404 and 'data-testid="error-page"' in missing.content.decode()
