"""The annotator workspace in a real browser: log in, label with the keyboard only."""

import numpy as np
import pytest

from accounts.models import Role
from flywheel.models import Project
from labeling.models import Annotation, Label, Task
from sim.demo import digit_png, load_digits_split
from tests import factories
from tests.browser import browser_page, log_in, screenshot
from tests.live import LiveService

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _digit_tasks(n: int):
    project = factories.project(features=[], labeling={"gold_rate": 0.0})
    app = factories.api_client(factories.user_with_role(Role.APP, project)[1])
    data, target = load_digits_split()
    items = [{
        "id": f"digit-{i}", "model_version": "v1", "label": str(int(target[i])), "confidence": 0.5 - i * 0.01,
        "input": {"image": digit_png(np.asarray(data[i]))},
    } for i in range(n)]
    assert app.post("/api/v1/projects/digits/predictions/", {"predictions": items}, format="json").status_code == 201
    return project


def _shown_task(page) -> int:
    page.wait_for_selector("#stage[data-task]:not([data-task='']) #task-image")
    return int(page.get_attribute("#stage", "data-task"))


def _next_task(page, previous: int) -> int:
    page.wait_for_function(f"document.querySelector('#stage').dataset.task !== '{previous}'")
    return _shown_task(page)


def test_an_annotator_labels_three_digits_with_the_keyboard():
    project = _digit_tasks(6)
    user, _ = factories.user_with_role(Role.ANNOTATOR, project, username="ann", password="a-long-password-1")
    with LiveService() as service, browser_page() as page:
        log_in(page, service.url, "ann", "a-long-password-1", next_path="/label/")
        page.wait_for_url(f"{service.url}/label/digits/")
        first = _shown_task(page)
        # The 8x8 digit is shown enlarged and sharp.
        page.wait_for_function("document.querySelector('#task-image').naturalWidth > 0")
        size = page.eval_on_selector("#task-image", "img => [img.naturalWidth, img.naturalHeight]")
        assert size == [256, 256]
        suggested = page.inner_text("#suggested-label")
        page.keyboard.press("3")                      # a digit key picks that label
        second = _next_task(page, first)
        second_suggestion = page.inner_text("#suggested-label")
        page.keyboard.press("Enter")                  # Enter accepts the model's suggestion
        third = _next_task(page, second)
        page.keyboard.press("7")
        fourth = _next_task(page, third)
        page.wait_for_function("document.querySelector('#task-image').naturalWidth > 0")
        screenshot(page, "label-workspace")
        page.keyboard.press("u")                      # undo the last label: its task comes back
        page.wait_for_function(f"document.querySelector('#stage').dataset.task === '{third}'")
        page.keyboard.press("9")
        _next_task(page, third)
        # The counter is refreshed from the server after each saved label. (The database is
        # read after the browser closes: Playwright's event loop runs on this thread.)
        page.wait_for_function("document.querySelector('#done-today').innerText === '3'")
        with page.expect_response(lambda r: r.url.endswith("/skip/") and r.status == 200):
            page.keyboard.press("s")                  # skip: the task goes to others

    labels = dict(Annotation.objects.filter(user=user).values_list("task_id", "label"))
    assert labels == {first: "3", second: second_suggestion, third: "9"}
    assert suggested  # the suggestion was shown
    resolved = dict(Label.objects.filter(is_current=True).values_list("task_id", "label"))
    assert resolved == labels
    assert fourth not in labels
    assert Task.objects.get(pk=first).status == "done"
    assert Task.objects.filter(skips__user=user).count() == 1


def test_a_message_about_one_task_is_cleared_when_the_next_task_shows():
    _digit_tasks(4)
    factories.user_with_role(Role.ANNOTATOR, Project.objects.get(slug="digits"), username="ann",
                             password="a-long-password-1")
    with LiveService() as service, browser_page(width=420) as page:
        log_in(page, service.url, "ann", "a-long-password-1", next_path="/label/")
        page.wait_for_url(f"{service.url}/label/digits/")
        first = _shown_task(page)
        page.keyboard.press("3")
        second = _next_task(page, first)
        with page.expect_response(lambda r: r.url.endswith("/undo/")):
            page.keyboard.press("u")
        page.wait_for_function(f"document.querySelector('#stage').dataset.task === '{first}'")
        assert page.inner_text("#toast") == f"Task {first} is back: label it again."
        assert "show" in page.get_attribute("#toast", "class")
        # At 420 px the header stays on its bar: nothing spills sideways.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "label-workspace-420")
        page.keyboard.press("4")
        _next_task(page, first)
        # The message was about the task just labeled: it is gone with it, at once.
        assert "show" not in (page.get_attribute("#toast", "class") or "")
    assert second


def test_a_reviewer_decides_with_the_keyboard_and_the_reason_is_kept():
    from labeling import services
    from labeling.models import Review

    project = factories.project(labeling={"gold_rate": 0.0},
                                routing_policy={"threshold": 0.3, "audit_rate": 0.0, "annotations_per_task": 2})
    app = factories.api_client(factories.user_with_role(Role.APP, project)[1])
    for i in range(2):
        app.post("/api/v1/projects/digits/predictions/", factories.prediction(i, confidence=0.2), format="json")
    for votes in (("3", "8"), ("1", "7")):
        for label in votes:
            user, _ = factories.user_with_role(Role.ANNOTATOR, project)
            task = services.task_claim(project=project, user=user)
            services.annotation_submit(task_id=task.pk, user=user, label=label)
    first, second = Task.objects.filter(status="review").order_by("id")
    factories.user_with_role(Role.REVIEWER, project, username="rev", password="a-long-password-1")
    with LiveService() as service, browser_page(width=1280) as page:
        log_in(page, service.url, "rev", "a-long-password-1", next_path="/review/digits/")
        page.wait_for_selector(f"#review-{first.pk}.current")
        page.keyboard.press("8")                      # the label key picks the label to keep
        assert page.input_value(f"#review-{first.pk} select[name='label']") == "8"
        with page.expect_navigation():
            page.keyboard.press("Enter")              # Enter accepts it
        page.wait_for_selector(f"#review-{second.pk}.current")
        screenshot(page, "review-keyboard")
        page.keyboard.press("r")                      # R: the reason, then Enter rejects
        page.keyboard.type("both missed the crossed seven")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.wait_for_selector("text=Nothing waits for review")
    reviews = {r.task_id: (r.verdict, r.reason) for r in Review.objects.all()}
    assert reviews == {first.pk: ("accept", ""), second.pk: ("reject", "both missed the crossed seven")}
    assert Task.objects.get(pk=second.pk).status == "open"  # back in the queue for a new round
    assert Label.objects.get(prediction_id=first.prediction_id, is_current=True).label == "8"
