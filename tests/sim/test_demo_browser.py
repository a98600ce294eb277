"""The newcomer's first hour, in headless Chromium: the demo's annotator labels a digit
with the keyboard, and its ops user sees the dashboard's charts drawn. Screenshots are
kept in test-artifacts/."""

import pytest

from labeling.models import Annotation
from sim.demo import demo_setup
from tests.browser import browser_page, log_in, screenshot
from tests.live import LiveService

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo(settings, tmp_path):
    settings.BASE_DIR = tmp_path  # the demo's credentials file goes here, not into the checkout's var/
    result = demo_setup(traffic=240)
    return {name: password for name, _, password, _ in result.credentials}


def test_the_demo_annotator_labels_a_digit_with_the_keyboard_and_ops_sees_the_charts(demo, settings):
    with LiveService(FLYWHEEL_STORAGE_ROOT=settings.FLYWHEEL_STORAGE_ROOT) as service:
        with browser_page() as page:
            log_in(page, service.url, "annotator", demo["annotator"], next_path="/label/")
            page.wait_for_url(f"{service.url}/label/digits/")
            page.wait_for_selector("#stage[data-task]:not([data-task='']) #task-image")
            page.wait_for_function("document.querySelector('#task-image').naturalWidth > 0")
            task = int(page.get_attribute("#stage", "data-task"))
            screenshot(page, "demo-label")
            # The workspace shows the next task at once and saves the label behind it: wait
            # for the save itself, or the browser may close before it is sent.
            with page.expect_response(lambda r: r.url.endswith(f"/tasks/{task}/annotations/")) as saved:
                page.keyboard.press("4")
            assert saved.value.status == 201, saved.value.text()
            page.wait_for_function(f"document.querySelector('#stage').dataset.task !== '{task}'")

        with browser_page() as page:
            log_in(page, service.url, "ops", demo["ops"], next_path="/ops/digits/")
            page.wait_for_selector("#chart-over-time")
            # Every canvas on the page holds a drawn Chart.js chart with data in it.
            drawn = page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
                const chart = Chart.getChart(c);
                return [c.id, !!chart && chart.data.datasets.some(d => d.data.length > 0)];
            })""")
            assert len(drawn) >= 5 and all(ok for _, ok in drawn), drawn
            names = {name for name, _ in drawn}
            assert {"chart-over-time", "chart-labels", "chart-confidence", "chart-panel-accuracy",
                    "chart-panel-queue_depth", "chart-panel-labels_per_day", "chart-panel-feedback"} <= names, names
            text = page.inner_text("main")
            assert "Estimated accuracy per model version" in text and "run-1" in text
            screenshot(page, "demo-ops")

    annotation = Annotation.objects.get(task_id=task, user__username="annotator")
    assert annotation.label == "4" and annotation.task.prediction.external_id.startswith("demo-")
