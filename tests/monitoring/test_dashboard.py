"""The ops dashboard (/ops/): who may see it, what it shows, and that its charts render in
a real browser (headless Chromium), with a screenshot kept in test-artifacts/."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import override_settings

from accounts.models import Role
from flywheel.ingest import profiling
from labeling.models import Label, Task
from monitoring import hooks, services
from tests import factories
from tests.live import ROOT  # noqa: E402
from tests.monitoring.conftest import post_traffic, traffic

ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "correct-horse-battery-staple"


def login(client, role, *projects):
    user, _ = factories.user_with_role(role, *projects, password=PASSWORD)
    assert client.login(username=user.username, password=PASSWORD)
    return user


def populate(app_client, project, *, now=None):
    """A day of traffic with f1 drifting from mid-day, hourly checks, a queue and labels."""
    now = now or datetime.now(UTC)
    reference_start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    post_traffic(app_client, traffic(2000, seed=1, start=reference_start, hours=5, prefix="ref"))
    services.reference_set_window(project=project, start=reference_start, end=reference_start + timedelta(hours=5))
    for step in range(8):
        start = now - timedelta(hours=24 - 3 * step)
        shift = 0.0 if step < 4 else 0.4 * (step - 3)
        post_traffic(app_client, traffic(300, seed=10 + step, start=start, hours=2.9, prefix=f"h{step}",
                                         f1_shift=shift))
        profiling.profiles_update(force_grids=True)
        services.drift_check_run(project=project, now=start + timedelta(hours=3), sync=False)
    uncertain = [{**p, "confidence": 0.5} for p in traffic(40, seed=30, start=now - timedelta(hours=1), hours=0.5,
                                                            prefix="unsure")]
    post_traffic(app_client, uncertain)
    Task.objects.filter(pk__in=list(Task.objects.values_list("pk", flat=True)[:8])).update(status="review")
    for days_ago, task in enumerate(Task.objects.order_by("id")[:20]):
        label = Label.objects.create(project=project, prediction_id=task.prediction_id, label="1", source="annotation")
        Label.objects.filter(pk=label.pk).update(created_at=now - timedelta(days=days_ago % 9))
    profiling.profiles_update(force_grids=True)


def test_the_dashboard_needs_a_login(client, project):
    response = client.get("/ops/digits/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=/ops/digits/")


@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.REVIEWER, Role.APP])
def test_only_ops_and_admins_see_it(client, project, role):
    login(client, role, project)
    assert client.get("/ops/digits/").status_code == 403
    assert client.get("/ops/").status_code == 403


def test_another_projects_dashboard_is_not_found(client, project, other_project):
    login(client, Role.OPS, project)
    assert client.get("/ops/other/").status_code == 404
    assert client.get("/ops/").url == "/ops/digits/"


def test_a_member_of_no_project_is_told_how_to_get_one(client, db):
    login(client, Role.OPS)
    response = client.get("/ops/")
    assert response.status_code == 200 and b"not a member of any project" in response.content


def test_a_fresh_project_shows_empty_states_not_errors(client, project):
    login(client, Role.OPS, project)
    response = client.get("/ops/digits/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "No checks in the last 7 days" in html and "No predictions in the last 24 hours" in html
    assert "The queue is empty" in html


def test_the_dashboard_shows_drift_the_queue_and_labels(client, app_client, project, django_assert_max_num_queries):
    populate(app_client, project)
    login(client, Role.OPS, project)
    with django_assert_max_num_queries(30):
        response = client.get("/ops/digits/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'src="/static/monitoring/vendor/chartjs/chart.umd.min.js"' in html and "cdn" not in html.lower()
    data = json.loads(html.split('id="ops-data" type="application/json">')[1].split("</script>")[0])
    assert [f["name"] for f in data["drifted"]["fields"]] == ["f1"]
    assert len(data["over_time"]["times"]) == 8
    f1 = next(s for s in data["over_time"]["series"] if s["name"] == "f1")
    assert f1["drifted"][-1] and not f1["drifted"][0]
    # Each point is the field's effect size over the threshold its own check applied, and the drift
    # line is 1: a drifted point lies on or above it, a stable one below, whatever the field.
    assert data["over_time"]["threshold"] == 1.0
    for series in data["over_time"]["series"]:
        for ratio, effect, threshold, drifted in zip(series["values"], series["effect"], series["thresholds"],
                                                  series["drifted"], strict=True):
            if ratio is not None:
                assert ratio == pytest.approx(effect / threshold)
                if drifted:
                    assert ratio >= 1.0
    assert data["predictions"]["labels"]["reference"] and len(data["predictions"]["confidence"]["labels"]) == 20
    panels = {p["key"]: p for p in data["panels"]}
    queue = panels["queue_depth"]["chart"]
    assert queue["labels"] == ["Low confidence"]
    assert {d["label"]: d["data"] for d in queue["datasets"]} == {"open": [32], "review": [8]}
    assert sum(panels["labels_per_day"]["chart"]["datasets"][0]["data"]) == 20
    assert 'data-field="f1"' in html and "Wasserstein / sd" in html


def test_a_stable_fields_badge_says_why_in_words():
    """The badge read 'notsignificant': the template cut the underscores out of the code."""
    from django.template import Context, Template

    template = Template('{% load ops_format %}{% for reason in reasons %}[{{ reason|words|default:"stable" }}]'
                        '{% endfor %}')
    rendered = template.render(Context({"reasons": ["not_significant", "below_threshold", "too_few", ""]}))
    assert rendered == "[not significant][below threshold][too few][stable]"
    source = (Path(__file__).resolve().parents[2] / "monitoring/templates/monitoring/ops.html").read_text()
    assert 'field.reason|words' in source and 'cut:"_"' not in source


def test_the_static_chart_library_and_stylesheet_are_served(client):
    for path in ("/static/monitoring/vendor/chartjs/chart.umd.min.js", "/static/flywheel.css",
                 "/static/monitoring/ops.js"):
        response = client.get(path)
        assert response.status_code == 200, path
    license_file = ROOT / "monitoring/static/monitoring/vendor/chartjs/LICENSE.md"
    assert "MIT" in license_file.read_text()


def test_the_login_page_renders(client, db):
    response = client.get("/accounts/login/?next=/ops/")
    assert response.status_code == 200
    assert b'name="username"' in response.content and b"/static/flywheel.css" in response.content


# --- In a browser --------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# For each chart canvas: is a Chart.js chart attached, and did it paint anything?
_CHARTS_DRAWN = """() => [...document.querySelectorAll('canvas')].map((canvas) => {
    const chart = Chart.getChart(canvas);
    const context = canvas.getContext('2d');
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4 * 7) if (pixels[i] > 0) painted++;
    return {id: canvas.id, chart: !!chart, type: chart && chart.config.type,
            datasets: chart ? chart.data.datasets.length : 0, painted, width: canvas.width};
})"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@override_settings(SESSION_COOKIE_SECURE=False, CSRF_COOKIE_SECURE=False)
def test_the_dashboard_charts_render_in_chromium(live_server, app_client, project, monkeypatch):
    from playwright.sync_api import sync_playwright

    populate(app_client, project)
    factories.project(slug="fraud", name="Card fraud")
    # Panels later issues add plug in like these: an estimate with its interval, a table.
    monkeypatch.setitem(hooks._panels, "accuracy", hooks.Panel(
        key="accuracy", title="Estimated accuracy", kind="interval", order=30, help="From the audit sample.",
        data=lambda project: {"total": 2, "chart": {"labels": ["v1", "v2"], "estimate": [0.81, 0.88],
                                                     "low": [0.74, 0.84], "high": [0.87, 0.92]}}))
    monkeypatch.setitem(hooks._panels, "runs", hooks.Panel(
        key="runs", title="Training runs", kind="table", order=40,
        data=lambda project: {"total": 1, "columns": ["run", "gate"], "rows": [["#3", "passed, promoted"]]}))
    user, _ = factories.user_with_role(Role.OPS, project, password=PASSWORD, username="olivia")
    ARTIFACTS.mkdir(exist_ok=True)
    # Playwright's sync API runs an event loop in this thread; the server's own thread does
    # the database work, and the test only touches it again after the browser is closed.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
        page.goto(f"{live_server.url}/ops/")
        assert "/accounts/login/" in page.url
        page.screenshot(path=str(ARTIFACTS / "login.png"))
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/ops/digits/")
        page.wait_for_function("() => window.Chart && Object.keys(Chart.instances).length"
                               " === document.querySelectorAll('canvas').length")
        charts = page.evaluate(_CHARTS_DRAWN)
        page.screenshot(path=str(ARTIFACTS / "ops-dashboard.png"), full_page=True)
        status = page.inner_text("[data-testid=drift-status]")
        runs = page.inner_text("[data-panel=runs]")
        browser.close()
    assert not errors, errors
    by_id = {c["id"]: c for c in charts}
    assert {"chart-over-time", "chart-field-0", "chart-labels", "chart-confidence", "chart-panel-queue_depth",
            "chart-panel-labels_per_day", "chart-panel-accuracy"} <= set(by_id)
    for chart in charts:
        assert chart["chart"] and chart["datasets"] >= 1 and chart["width"] > 200, chart
        assert chart["painted"] > 200, f"{chart['id']} drew nothing"
    assert by_id["chart-over-time"]["type"] == "line" and by_id["chart-field-0"]["datasets"] == 2
    assert "Drift" in status and "1 of 5 fields drifted" in status
    assert "passed, promoted" in runs
    assert (ARTIFACTS / "ops-dashboard.png").stat().st_size > 20_000


def test_the_dashboard_shows_accuracy_calibration_and_feedback(client, app_client, project):
    project.routing = {**project.routing, "audit_rate": 1.0, "threshold": 1.0}
    project.save()
    items = [factories.prediction(i, confidence=0.9, model_version="v1" if i < 20 else "v2") for i in range(30)]
    app_client.post("/api/v1/projects/digits/predictions/", {"predictions": items}, format="json")
    for task in Task.objects.select_related("prediction"):
        right = int(task.prediction.external_id[2:]) % 4 != 0  # v1 and v2 are right 3 times in 4
        Label.objects.create(project=project, prediction=task.prediction, source="annotation",
                             label=task.prediction.label if right else "9")
    app_client.post("/api/v1/projects/digits/feedback/", {"feedback": [
        {"prediction_id": "p-1", "kind": "reject"}, {"prediction_id": "p-2", "kind": "correct", "label": "4"}]},
        format="json")
    login(client, Role.OPS, project)
    html = client.get("/ops/digits/").content.decode()
    data = json.loads(html.split('id="ops-data" type="application/json">')[1].split("</script>")[0])
    panels = {p["key"]: p for p in data["panels"]}
    accuracy = panels["accuracy"]["chart"]
    assert accuracy["labels"] == ["v1", "v2"] and accuracy["estimate"] == [0.75, 0.7]
    assert all(low < est < high for low, est, high in zip(accuracy["low"], accuracy["estimate"], accuracy["high"],
                                                           strict=True))
    assert panels["audit"]["kind"] == "table"  # drawn on the server
    assert "Audit sample and calibration" in html and "75.0% (" in html and "70.0% (" in html
    feedback = {d["label"]: d["data"] for d in panels["feedback"]["chart"]["datasets"]}
    assert feedback == {"v1 corrected (%)": [5.0], "v1 rejected (%)": [5.0]}


def test_the_dashboard_shows_the_label_free_estimate_beside_the_audit(client, app_client, project):
    project.routing = {**project.routing, "audit_rate": 1.0, "threshold": 1.0}
    project.save()
    items = [factories.prediction(i, confidence=0.6 + 0.005 * i) for i in range(60)]
    app_client.post("/api/v1/projects/digits/predictions/", {"predictions": items}, format="json")
    for task in Task.objects.select_related("prediction"):
        right = int(task.prediction.external_id[2:]) % 4 != 0
        Label.objects.create(project=project, prediction=task.prediction, source="annotation",
                             label=task.prediction.label if right else "9")
    login(client, Role.OPS, project)
    html = client.get("/ops/digits/").content.decode()
    audit = html.split('data-panel="audit"')[1].split("</section>")[0]
    assert "last day without labels (95%)" in audit
    # The audit's 75.0% and the label-free estimate calibrated on it, which agree.
    assert audit.count("75.0% (") == 2 and "disagrees" not in audit


def test_the_dashboard_lists_the_members_keys_that_expire_within_a_week(client, project, other_project):
    from accounts.services import token_issue

    app, _ = factories.user_with_role(Role.APP, project, username="checkout")
    stranger, _ = factories.user_with_role(Role.APP, other_project, username="elsewhere-app")
    now = datetime.now(UTC)
    token_issue(user=app, name="soon", expires_at=now + timedelta(days=2), scopes=["ingest"])
    token_issue(user=app, name="later", expires_at=now + timedelta(days=30))
    token_issue(user=stranger, name="soon", expires_at=now + timedelta(days=1))
    login(client, Role.OPS, project)

    html = client.get("/ops/digits/").content.decode()

    assert "API keys expiring within 7 days" in html
    table = html.split("API keys expiring within 7 days")[1].split("</table>")[0]
    assert "checkout" in table and ">soon<" in table and "ingest" in table
    assert ">later<" not in table and "elsewhere-app" not in html
