"""The console's training page in real Chromium, against the service (gunicorn) and a real
Celery worker: ops refuse a bad value in the form, start a run and watch it move through
its stages without reloading, read the gate, promote by hand and roll back through the
confirmation. Screenshots at 1280 and 420 px go to test-artifacts/."""

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings

from accounts.models import AuditEvent, Role
from flywheel.models import DatasetVersion, ModelAlias, TrainingRun
from tests import factories
from tests.browser import browser_page, log_in, screenshot
from tests.flywheel.test_console_datasets import make_versions
from tests.flywheel.test_console_quality import make_audited
from tests.flywheel.training.training_data import digits_project, log_and_label
from tests.live import LiveService
from tests.worker import BROKER, CeleryProcess

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SLOW = {"FLYWHEEL_TRAINERS": "slow=tests.trainers.SlowTrainer"}
PASSWORD = "a-long-password-1"


def _run_card(page, number: int, status: str) -> None:
    page.wait_for_selector(f"#runs [data-run='{number}'][data-status='{status}']", timeout=120_000)


@override_settings(FLYWHEEL_TRAINERS={**settings.FLYWHEEL_TRAINERS, "slow": "tests.trainers.SlowTrainer"})
def test_ops_train_watch_promote_and_roll_back_from_the_page():
    project = digits_project(retraining={"trainer": "slow"})
    log_and_label(project, start=0, count=400)
    factories.user_with_role(Role.OPS, project, username="ops", password=PASSWORD)
    with CeleryProcess(**SLOW) as worker, \
            LiveService(CELERY_TASK_ALWAYS_EAGER="false", CELERY_TASK_DEFAULT_QUEUE=worker.queue,
                        CELERY_BROKER_URL=BROKER, FLYWHEEL_STORAGE_ROOT=settings.FLYWHEEL_STORAGE_ROOT,
                        **SLOW) as service, \
            browser_page(width=1280) as page:
        log_in(page, service.url, "ops", PASSWORD, next_path="/ops/digits/training/")

        # A dataset version that does not exist: the API's words under the field, no run.
        page.fill("#id_dataset_version", "9")
        page.click("text=Start training")
        error = page.wait_for_selector("[data-testid='error-dataset_version']")
        assert error.inner_text() == "Project 'digits' has no dataset version 9."
        assert page.input_value("#id_dataset_version") == "9"
        screenshot(page, "console-training-refused-1280")

        page.fill("#id_dataset_version", "")
        page.click("text=Start training")
        page.wait_for_selector("text=Training run #1 is running.")
        # From here on the page must not reload: this mark would be lost.
        page.evaluate("window.stillTheSamePage = true")
        # The slow trainer pauses in the train stage: the page shows it there, dataset done.
        page.wait_for_selector("#runs [data-run='1'] .stage-step[data-stage='train']:has-text('…')", timeout=60_000)
        assert "done" in page.get_attribute("#runs [data-run='1'] .stage-step[data-stage='dataset']", "class")
        screenshot(page, "console-training-running-1280")
        _run_card(page, 1, "succeeded")
        assert page.evaluate("window.stillTheSamePage") is True
        gate = page.inner_text("#runs [data-run='1'] [data-testid='gate']")
        assert gate == "Gate passed: the candidate was promoted."
        assert "no champion to compare with" in page.inner_text("#runs [data-run='1'] .reasons")
        # The models section was refreshed in place: run-1 is the champion.
        page.wait_for_selector("#registry tr[data-model='run-1'] .pill:has-text('champion')")

        # A second run on the same dataset version: no better than the champion, refused.
        page.fill("#id_dataset_version", "1")
        page.click("text=Start training")
        page.wait_for_selector("text=Training run #2 is running.")
        page.evaluate("window.stillTheSamePage = true")
        _run_card(page, 2, "succeeded")
        assert page.evaluate("window.stillTheSamePage") is True
        assert page.inner_text("#runs [data-run='2'] [data-testid='gate']") == "Gate refused: the champion stays."
        assert "does not beat the champion" in page.inner_text("#runs [data-run='2'] .reasons")
        screenshot(page, "console-training-gate-1280")

        # Promote run-2 by hand: the confirmation says what changes; Cancel changes nothing.
        page.click("#registry tr[data-model='run-2'] button:has-text('Promote…')")
        dialog = page.wait_for_selector("dialog[open]")
        assert "The champion becomes run-2 (it is run-1 now)." in dialog.inner_text()
        assert "dataset version 1" in dialog.inner_text()
        page.click("dialog[open] button:has-text('Cancel')")
        page.click("#registry tr[data-model='run-2'] button:has-text('Promote…')")
        page.fill("dialog[open] input[name='reason']", "checking the new build by hand")
        page.click("dialog[open] button:has-text('Promote')")
        page.wait_for_selector("text=run-2 is the champion (was run-1).")

        # Roll back through its confirmation.
        page.click("button:has-text('Roll back to run-1…')")
        dialog = page.wait_for_selector("dialog[open]")
        assert "Roll back from run-2 to run-1?" in dialog.inner_text()
        assert "The champion becomes run-1 (it is run-2 now)." in dialog.inner_text()
        screenshot(page, "console-training-rollback-confirm-1280")
        page.click("dialog[open] button:has-text('Roll back')")
        page.wait_for_selector("text=Rolled back: run-1 is the champion again (was run-2).")
        assert page.inner_text("[data-testid='champion']") == "run-1"
        screenshot(page, "console-training-1280")
        page.set_viewport_size({"width": 420, "height": 844})
        screenshot(page, "console-training-420")
        # Nothing spills sideways on a phone.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    assert TrainingRun.objects.count() == 2 and TrainingRun.objects.get(number=2).dataset_version.number == 1
    assert ModelAlias.objects.get(project=project, alias="champion").model_version.name == "run-1"
    actions = list(AuditEvent.objects.filter(actor__username="ops").order_by("id").values_list("action", flat=True))
    # The same events as the API's calls (each change of champion also moves the drift reference).
    assert actions == ["training.request", "training.request", "model.promote", "drift.reference_set",
                       "model.rollback", "drift.reference_set"]


def test_an_annotator_sees_only_label_and_gets_the_styled_403():
    project = factories.project(slug="digits")
    factories.user_with_role(Role.ANNOTATOR, project, username="ann", password=PASSWORD)
    with LiveService() as service:
        for width in (1280, 420):
            with browser_page(width=width, height=844) as page:
                log_in(page, service.url, "ann", PASSWORD, next_path="/label/")
                links = page.eval_on_selector_all(".topbar nav a", "links => links.map(a => a.innerText)")
                assert links == ["Label"]
                # The header stays on its bar: nothing pokes out sideways on a narrow screen.
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
                screenshot(page, f"label-annotator-{width}")
                response = page.goto(f"{service.url}/ops/digits/training/")
                assert response.status == 403
                assert page.inner_text("[data-testid='error-page'] h1") == "This page is not for your role"
                assert page.is_visible(".topbar")
                screenshot(page, f"error-403-{width}")


def test_ops_compare_two_dataset_versions_download_and_retry_a_failed_one():
    project = make_versions()
    factories.user_with_role(Role.OPS, project, username="ops", password=PASSWORD)
    with LiveService(FLYWHEEL_STORAGE_ROOT=settings.FLYWHEEL_STORAGE_ROOT) as service, \
            browser_page(width=1280) as page:
        log_in(page, service.url, "ops", PASSWORD, next_path="/ops/digits/datasets/")
        page.wait_for_selector("#versions tr[data-version='3'][data-status='failed']")
        assert "the store was down" in page.inner_text("#versions tr[data-version='3']")

        # A version that is not ready: refused under its field, no diff shown.
        page.fill("#id_a", "3")
        page.fill("#id_b", "2")
        page.click("[data-testid=diff-form] button")
        assert page.inner_text("[data-testid='error-a']") == "Dataset version 3 is failed, not ready."
        assert not page.is_visible("[data-testid='diff']")

        page.fill("#id_a", "1")
        page.click("[data-testid=diff-form] button")
        page.wait_for_selector("[data-testid='diff']")
        assert page.inner_text("[data-testid='diff-added']") == "10"
        assert page.inner_text("[data-testid='diff-relabeled']") == "5"
        screenshot(page, "console-datasets-diff-1280")

        # The download links are the API's exports, with the session's cookie.
        with page.expect_download() as download:
            page.click("#versions tr[data-version='2'] a:has-text('CSV')")
        assert download.value.suggested_filename == "digits-v2.csv"
        lines = open(download.value.path()).read().splitlines()
        assert len(lines) == 1 + 70  # the header and every row

        # The JSONL export beside it.
        assert page.get_attribute("#versions tr[data-version='2'] a:has-text('JSONL')", "href").endswith(
            "/api/v1/projects/digits/datasets/2/export/jsonl/")

        # Retry the failed version from its row: it is built again and becomes ready.
        page.click("#versions tr[data-version='3'] button:has-text('Retry')")
        page.wait_for_selector("#versions tr[data-version='3'][data-status='ready']", timeout=60_000)
        assert page.is_visible("#versions tr[data-version='3'] a:has-text('JSONL')")

        # Build a new version from the form: it appears and becomes ready without a reload.
        page.evaluate("window.stillTheSamePage = true")
        page.fill("#id_note", "after the relabeling")
        page.click("[data-testid=new-version] button[type=submit]")
        page.wait_for_selector("#versions tr[data-version='4'][data-status='ready']", timeout=60_000)
        assert "after the relabeling" in page.inner_text("#versions tr[data-version='4']")
        screenshot(page, "console-datasets-1280")
        page.set_viewport_size({"width": 420, "height": 844})
        screenshot(page, "console-datasets-420")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert AuditEvent.objects.filter(action="dataset.retry", actor__username="ops").count() == 1
    built = DatasetVersion.objects.get(project=project, number=4)
    assert (built.status, built.note) == ("ready", "after the relabeling")
    assert AuditEvent.objects.filter(action="dataset.create", actor__username="ops", target="v4").exists()


def test_ops_create_a_project_and_set_its_policies_in_the_forms():
    from flywheel.models import Project

    home = factories.project(slug="digits")
    factories.user_with_role(Role.OPS, home, username="ops", password=PASSWORD)
    with LiveService() as service, browser_page(width=1280) as page:
        log_in(page, service.url, "ops", PASSWORD, next_path="/ops/digits/")
        page.click(".tabs a:has-text('New project')")
        page.fill("#id_slug", "scans")
        page.fill("#id_name", "Scans")
        page.fill("#id_labels", "benign, malignant")
        page.fill("#id_features", "size numeric 40 0\nsite categorical")
        page.fill("#id_slices", "site")
        page.click("text=Create the project")
        assert page.inner_text("[data-testid='error-features']") == "line 1, max: Must be greater than min (40)."
        assert page.input_value("#id_slug") == "scans"  # what was typed stays
        screenshot(page, "console-project-new-refused-1280")
        page.fill("#id_features", "size numeric 0 40\nsite categorical")
        page.click("text=Create the project")
        page.wait_for_url(f"{service.url}/ops/scans/settings/")
        page.wait_for_selector("text=Project Scans is made.")

        # A policy value out of range: the API's words under the field; then a good one.
        page.fill("[id='id_routing.audit_rate']", "1.5")
        page.click("text=Save routing")
        assert page.inner_text("[data-testid='error-routing.audit_rate']") == \
            "Ensure this value is less than or equal to 1.0."
        screenshot(page, "console-settings-refused-1280")
        page.fill("[id='id_routing.audit_rate']", "0.1")
        page.select_option("[id='id_routing.demote_stale']", "false")
        page.click("text=Save routing")
        page.wait_for_selector("text=Routing saved.")
        assert page.input_value("[id='id_routing.audit_rate']") == "0.1"

        # Every other policy form saves on its own, the same way.
        for section, field, value in [("labeling", "gold_rate", "0.05"), ("feedback", "min_users", "3"),
                                      ("drift", "window_hours", "12"), ("retraining", "min_new_labels", "200")]:
            page.fill(f"[id='id_{section}.{field}']", value)
            page.click(f"[data-testid='form-{section}'] button:has-text('Save {section}')")
            page.wait_for_selector(f"text={section.capitalize()} saved.")
            assert page.input_value(f"[id='id_{section}.{field}']") == value
        screenshot(page, "console-settings-1280")
        page.set_viewport_size({"width": 420, "height": 844})
        screenshot(page, "console-settings-420")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.goto(f"{service.url}/ops/projects/new/")
        screenshot(page, "console-project-new-420")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.set_viewport_size({"width": 1280, "height": 860})
        screenshot(page, "console-project-new-1280")
    # The refused form stored nothing: one project made, by one event.
    assert Project.objects.count() == 2
    project = Project.objects.get(slug="scans")
    assert project.features[0] == {"name": "size", "type": "numeric", "min": 0.0, "max": 40.0}
    assert (project.routing["audit_rate"], project.routing["demote_stale"]) == (0.1, False)
    assert (project.labeling["gold_rate"], project.feedback["min_users"], project.drift["window_hours"],
            project.retraining["min_new_labels"]) == (0.05, 3, 12, 200)
    events = AuditEvent.objects.filter(actor__username="ops", project=project).order_by("id")
    assert [e.action for e in events] == ["project.create"] + ["project.update"] * 5


def _series_shown(page) -> list[str]:
    return page.evaluate("""() => {
        const chart = Chart.getChart("chart-over-time");
        return chart.data.datasets.filter((d, i) => chart.isDatasetVisible(i) && d.label !== "drift line")
            .map((d) => d.label);
    }""")


def test_ops_set_the_drift_reference_run_checks_and_watch_them_arrive(monkeypatch):
    from datetime import UTC, datetime, timedelta

    from monitoring import selectors as monitoring_selectors
    from monitoring import services as monitoring_services
    from monitoring.models import CheckTrigger, DriftReport

    project = make_versions()
    ops, _ = factories.user_with_role(Role.OPS, project, username="ops", password=PASSWORD)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # A scheduled check is run from here while Playwright's loop runs in this thread; the
    # service does its own database work in its own process.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with LiveService(FLYWHEEL_STORAGE_ROOT=settings.FLYWHEEL_STORAGE_ROOT) as service, \
            browser_page(width=1280) as page:
        log_in(page, service.url, "ops", PASSWORD, next_path="/ops/digits/drift/")
        assert "No reference set" in page.inner_text("[data-testid='reference-now']")
        page.check("input[name='kind'][value='dataset_version']")
        page.fill("#ref-version", "3")  # the failed one
        page.click("[data-testid=reference-form] button[type=submit]")
        assert page.inner_text("[data-testid='error-dataset_version']") == "Dataset version 3 is failed."
        screenshot(page, "console-drift-refused-1280")
        page.fill("#ref-version", "2")
        page.click("[data-testid=reference-form] button[type=submit]")
        page.wait_for_selector("text=Drift is now measured against dataset version 2.")
        assert "dataset version 2" in page.inner_text("[data-testid='reference-now']")

        # A window that ends before it starts: refused under the field, the reference stays.
        page.check("input[name='kind'][value='window']")
        page.fill("#ref-start", f"{hour + timedelta(hours=1):%Y-%m-%dT%H:%M}")
        page.fill("#ref-end", f"{hour - timedelta(hours=1):%Y-%m-%dT%H:%M}")
        page.click("[data-testid=reference-form] button[type=submit]")
        assert page.inner_text("[data-testid='error-ref-end']") == "Must be after start."
        page.fill("#ref-start", f"{hour - timedelta(hours=1):%Y-%m-%dT%H:%M}")
        page.fill("#ref-end", f"{hour + timedelta(hours=1):%Y-%m-%dT%H:%M}")
        page.fill("#ref-note", "the digits as logged today")
        page.click("[data-testid=reference-form] button[type=submit]")
        page.wait_for_selector("text=Drift is now measured against the window")
        assert "the digits as logged today" in page.inner_text("[data-testid='reference-history']")

        page.click("text=Run the check")
        page.wait_for_selector("text=Check #")
        page.wait_for_selector("[data-testid='reports'] tbody tr")
        screenshot(page, "console-drift-1280")
        page.set_viewport_size({"width": 420, "height": 844})
        screenshot(page, "console-drift-420")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

        # A scheduled check lands while the page is open: it shows up by itself, without a
        # reload, at the page's next refresh (the page's clock is moved on, not waited for).
        page.set_viewport_size({"width": 1280, "height": 860})
        page.clock.install()
        page.reload()
        page.evaluate("window.stillTheSamePage = true")
        scheduled = monitoring_services.drift_check_run(project=project, trigger=CheckTrigger.SCHEDULED)
        # Playwright runs this block in a greenlet of its own, so the connection the check
        # opened here is not the one pytest-django closes at teardown: close it now.
        connections.close_all()
        assert page.query_selector(f"[data-testid='reports'] td:text-is('{scheduled.pk}')") is None
        page.clock.fast_forward(31_000)
        page.wait_for_selector(f"[data-testid='reports'] td:text-is('{scheduled.pk}')")
        assert page.evaluate("window.stillTheSamePage") is True

        # The dashboard's drift-over-time legend: the top fields of the 67 (64 pixels, the
        # label, the confidence, the joint drift), the rest a search away.
        page.goto(f"{service.url}/ops/digits/")
        page.wait_for_function("() => window.Chart && Chart.getChart('chart-over-time')")
        shown = _series_shown(page)
        assert len(shown) == 8
        assert page.inner_text("[data-testid='series-shown']") == "8 of 67 fields shown"
        legend = page.evaluate("Chart.getChart('chart-over-time').legend.legendItems.map((i) => i.text)")
        assert legend == [*shown, "drift line"]
        hidden = next(name for name in (f"px{i}" for i in range(64)) if name not in shown)
        page.fill("#series-search", hidden)
        page.press("#series-search", "Enter")
        assert set(_series_shown(page)) == {*shown, hidden}
        assert page.inner_text("[data-testid='series-shown']") == "9 of 67 fields shown"
        # The dashboard loads itself again every 5 minutes, keeping the field picked.
        page.evaluate("window.stillTheSamePage = true")
        page.clock.fast_forward(301_000)
        page.wait_for_function("() => window.stillTheSamePage === undefined && window.Chart"
                               " && Chart.getChart('chart-over-time')")
        assert set(_series_shown(page)) == {*shown, hidden}
        page.fill("#series-search", "no such field")
        page.press("#series-search", "Enter")
        assert "No field named like" in page.inner_text("[data-testid='series-shown']")
        page.click("#series-top")
        assert set(_series_shown(page)) == set(shown)
        screenshot(page, "console-dashboard-1280")
        page.set_viewport_size({"width": 420, "height": 844})
        # Chart.js redraws each chart at the new width a frame or two later: nothing may spill
        # sideways once it has.
        page.wait_for_function("document.documentElement.scrollWidth <= window.innerWidth")
        page.clock.run_for(100)  # the frames the resize waits on, on the page's own clock
        screenshot(page, "console-dashboard-420")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    current = monitoring_selectors.reference_current(project=project)
    assert (current.kind, current.note) == ("window", "the digits as logged today")
    events = AuditEvent.objects.filter(action="drift.reference_set", actor__username="ops").order_by("id")
    assert [e.details.get("kind") for e in events] == ["dataset_version", "window"]
    # A check run from the page has no audit event in the API either: its report names who asked.
    asked = DriftReport.objects.get(requested_by=ops)
    assert asked.trigger == CheckTrigger.ON_DEMAND and asked.pk != scheduled.pk


def test_the_quality_page_draws_the_reliability_diagram():
    project = make_audited()
    factories.user_with_role(Role.OPS, project, username="ops", password=PASSWORD)
    with LiveService() as service:
        for width in (1280, 420):
            with browser_page(width=width, height=844) as page:
                log_in(page, service.url, "ops", PASSWORD, next_path="/ops/digits/quality/")
                box = page.locator("svg rect.bar").bounding_box()
                assert box["height"] > 50  # the 0.9-1.0 bin's accuracy, drawn
                assert page.inner_text("[data-testid='ece']") == "ECE 0.233"
                # Accuracy over time: today's audit estimate is drawn (6 labels: too few to
                # calibrate the label-free line on, which is left out).
                assert page.locator("[data-testid='accuracy-series'] g.audit circle").count() == 1
                assert page.locator("[data-testid='accuracy-series'] polyline.label-free").count() == 0
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
                screenshot(page, f"console-quality-{width}")
