"""Drift that acts: while a drift alert is open, the random draw for labeling rises to the
policy's boost_audit_rate and predictions in the regions that grew are routed with reason
drift within the budget; both end when the alert closes, and the audit sample the
accuracy estimate reads stays uniform over time."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from accounts.models import Role
from flywheel.ingest import profiling, routing
from flywheel.models import Prediction, RoutingBudget
from labeling.models import Label, Task
from monitoring import services, stats
from monitoring.models import AlertState, DriftAlert
from tests.monitoring.conftest import post_traffic, traffic
from tests.monitoring.test_dashboard import login

DAY0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
BASE_AUDIT, BOOST = 0.02, 0.3


def day(n: int) -> datetime:
    return DAY0 + timedelta(days=n)


def acting(project, **on_drift):
    project.routing = {**project.routing, "audit_rate": BASE_AUDIT, "threshold": 0.9, "daily_budget": 100_000}
    project.drift = {**project.drift, "on_drift": on_drift}
    project.save()


def routed(prefix: str) -> dict[str, str]:
    """external id -> task reason, of the predictions whose id starts with `prefix`."""
    return dict(Task.objects.filter(prediction__external_id__startswith=f"{prefix}-")
                .values_list("prediction__external_id", "reason"))


def expected_reasons(project, predictions, actions: dict | None) -> dict[str, str]:
    response = routing.DriftResponse.from_actions(actions)
    out = {}
    for p in predictions:
        draw = routing.audit_draw(project.audit_salt, p["id"])
        if draw < BASE_AUDIT:
            out[p["id"]] = "audit"
        elif response.boosted(draw, BASE_AUDIT) or response.in_region(p["features"]):
            out[p["id"]] = "drift"
    return out


@pytest.mark.django_db(transaction=True)
def test_boost_and_drift_routing_start_with_the_alert_and_end_when_it_closes(app_client, client, ops_client, project):
    acting(project, boost_audit_rate=BOOST, route_drifted=True)
    login(client, Role.OPS, project)
    post_traffic(app_client, traffic(1000, seed=1, start=day(0), hours=6, prefix="ref"))
    services.reference_set_window(project=project, start=day(0), end=day(0) + timedelta(hours=6))

    before = traffic(400, seed=2, start=day(1), hours=4, prefix="before")
    post_traffic(app_client, before)
    assert set(routed("before").values()) == {"audit"}
    assert routed("before") == expected_reasons(project, before, None)

    post_traffic(app_client, traffic(400, seed=3, start=day(2), hours=4, prefix="shifted", f1_shift=1.5))
    report = services.drift_check_run(project=project, now=day(2) + timedelta(hours=5))
    alert = DriftAlert.objects.get(state=AlertState.OPEN)
    assert report.alert == alert and "f1" in alert.features
    assert alert.actions["boost_audit_rate"] == BOOST and alert.actions["route_drifted"] is True
    # f1 moved up by 1.5 sd: the regions that grew lie above its reference median (5).
    f1_regions = [r for r in alert.actions["regions"] if r["feature"] == "f1"]
    assert f1_regions and all(r["low"] is not None and r["low"] > 5 for r in f1_regions)

    listed = ops_client.get("/api/v1/projects/digits/drift/alerts/").json()
    assert listed[0]["actions"] == alert.actions
    payload = services._webhook_payload(project=project, alert=alert, report=report, new_fields=["f1"])
    assert payload["alert"]["actions"] == alert.actions
    html = client.get("/ops/digits/").content.decode()
    assert "random labeling draw raised to 30%" in html and "routing drifted regions: f1 " in html

    during = traffic(400, seed=4, start=day(2), hours=4, prefix="during", f1_shift=1.5)
    post_traffic(app_client, during)
    reasons = routed("during")
    assert reasons == expected_reasons(project, during, alert.actions)
    drift_routed = [k for k, v in reasons.items() if v == "drift"]
    # The boost alone draws about 28% of them; the grown regions add more.
    assert len(drift_routed) > 0.28 * 400
    in_region = [p for p in during if routing.in_drift_region(p["features"], alert.actions["regions"])]
    assert sum(1 for p in in_region if reasons.get(p["id"]) in ("drift", "audit")) == len(in_region)
    # The extra draws are not the audit sample: its flag stays the routing policy's draw.
    audited = set(Prediction.objects.filter(external_id__startswith="during-", audit=True)
                  .values_list("external_id", flat=True))
    assert audited == {k for k, v in reasons.items() if v == "audit"}

    # Resending the same predictions routes nothing again and answers as before.
    response = app_client.post("/api/v1/projects/digits/predictions/", {"predictions": during[:200]}, format="json")
    assert response.status_code == 201
    body = {r["id"]: r for r in response.json()["results"]}
    assert all(r["duplicate"] for r in body.values())
    assert {k for k, r in body.items() if r["routed"]} == {k for k in reasons if k in body}
    assert all(r["reason"] == reasons[k] for k, r in body.items() if r["routed"])
    assert routed("during") == reasons

    post_traffic(app_client, traffic(400, seed=5, start=day(3), hours=4, prefix="clean"))
    services.drift_check_run(project=project, now=day(3) + timedelta(hours=5))
    assert DriftAlert.objects.get(pk=alert.pk).state == AlertState.RESOLVED
    assert "data-drift-action" not in client.get("/ops/digits/").content.decode()

    after = traffic(400, seed=6, start=day(3), hours=4, prefix="after", f1_shift=1.5)
    post_traffic(app_client, after)
    assert set(routed("after").values()) <= {"audit"}
    assert routed("after") == expected_reasons(project, after, None)


@pytest.mark.django_db(transaction=True)
def test_multivariate_outliers_are_routed_while_joint_drift_is_open_and_not_after(app_client, client, ops_client,
                                                                                   project):
    acting(project, route_drifted=True)
    login(client, Role.OPS, project)
    post_traffic(app_client, traffic(3000, seed=1, start=day(0), hours=6, prefix="ref", correlation=0.8))
    services.reference_set_window(project=project, start=day(0), end=day(0) + timedelta(hours=6))

    before = traffic(400, seed=2, start=day(1), hours=4, prefix="before", correlation=-0.8)
    post_traffic(app_client, before)
    assert set(routed("before").values()) == {"audit"}

    # f0 and f1 now move against each other; neither moved on its own.
    post_traffic(app_client, traffic(2500, seed=3, start=day(2), hours=4, prefix="flipped", correlation=-0.8))
    report = services.drift_check_run(project=project, now=day(2) + timedelta(hours=5))
    alert = DriftAlert.objects.get(state=AlertState.OPEN)
    assert report.multivariate["drifted"] and not any(f["drifted"] for f in report.features)
    assert alert.features == ["multivariate"] and alert.actions["regions"] == []
    assert alert.actions["outliers"]["features"] == ["f0", "f1"] and alert.actions["outliers"]["level"] == 0.99
    assert alert.outlier_model["threshold"] == alert.actions["outliers"]["threshold"]
    # The alert as the API shows it names what is routed, without the model's numbers.
    listed = ops_client.get("/api/v1/projects/digits/drift/alerts/").json()
    assert listed[0]["actions"] == alert.actions and "quantiles" not in str(listed[0])
    html = client.get("/ops/digits/").content.decode()
    assert "routing multivariate outliers of f0, f1" in html

    during = traffic(400, seed=4, start=day(2), hours=4, prefix="during", correlation=-0.8)
    post_traffic(app_client, during)
    reasons = routed("during")
    actions = {**alert.actions, "outlier_model": alert.outlier_model}
    assert reasons == expected_reasons(project, during, actions)
    outlying = stats.outliers(alert.outlier_model, np.array(routing.outlier_rows(
        [p["features"] for p in during], ["f0", "f1"])))
    # Rows off the reference's diagonal: about 39% of the flipped traffic (1% of unchanged).
    assert 0.25 * 400 < outlying.sum() < 0.55 * 400
    flagged = [p["id"] for p, out in zip(during, outlying, strict=True) if out]
    assert all(reasons.get(key) in ("drift", "audit") for key in flagged)
    assert {k for k, v in reasons.items() if v == "drift"} == {k for k in flagged if reasons[k] != "audit"}
    unchanged = traffic(400, seed=5, start=day(2), hours=4, prefix="unchanged", correlation=0.8)
    post_traffic(app_client, unchanged)
    assert list(routed("unchanged").values()).count("drift") < 0.05 * 400

    post_traffic(app_client, traffic(2500, seed=6, start=day(3), hours=4, prefix="clean", correlation=0.8))
    services.drift_check_run(project=project, now=day(3) + timedelta(hours=5))
    assert DriftAlert.objects.get(pk=alert.pk).state == AlertState.RESOLVED

    after = traffic(400, seed=7, start=day(3), hours=4, prefix="after", correlation=-0.8)
    post_traffic(app_client, after)
    assert set(routed("after").values()) == {"audit"}
    assert routed("after") == expected_reasons(project, after, None)


@pytest.mark.django_db(transaction=True)
def test_drift_routing_stays_within_the_daily_budget(app_client, project):
    acting(project, route_drifted=True)
    project.routing = {**project.routing, "daily_budget": 10}
    project.save()
    post_traffic(app_client, traffic(1000, seed=1, start=day(0), hours=6, prefix="ref"))
    services.reference_set_window(project=project, start=day(0), end=day(0) + timedelta(hours=6))
    post_traffic(app_client, traffic(400, seed=3, start=day(2), hours=4, prefix="shifted", f1_shift=1.5))
    services.drift_check_run(project=project, now=day(2) + timedelta(hours=5))
    assert DriftAlert.objects.get(state=AlertState.OPEN).actions["regions"]

    post_traffic(app_client, traffic(400, seed=4, start=day(2), hours=4, prefix="during", f1_shift=1.5))
    reasons = list(routed("during").values())
    assert reasons.count("drift") == 10
    assert sum(RoutingBudget.objects.filter(project=project).values_list("used", flat=True)) == 10


@pytest.mark.django_db(transaction=True)
def test_without_on_drift_an_open_alert_changes_no_routing(app_client, project):
    acting(project)
    post_traffic(app_client, traffic(1000, seed=1, start=day(0), hours=6, prefix="ref"))
    services.reference_set_window(project=project, start=day(0), end=day(0) + timedelta(hours=6))
    post_traffic(app_client, traffic(400, seed=3, start=day(2), hours=4, prefix="shifted", f1_shift=1.5))
    services.drift_check_run(project=project, now=day(2) + timedelta(hours=5))
    assert DriftAlert.objects.get(state=AlertState.OPEN).actions == {}

    during = traffic(400, seed=4, start=day(2), hours=4, prefix="during", f1_shift=1.5)
    post_traffic(app_client, during)
    assert routed("during") == expected_reasons(project, during, None)


def test_the_audit_sample_stays_unbiased_while_the_boost_is_on():
    """A model that gets worse exactly while an alert is open: the boost draws many more
    of the bad period. The audit flag (the routing policy's own draw) still estimates the
    whole period's accuracy within its interval; counting the boosted draws would not."""
    rng = np.random.default_rng(7)
    n = 200_000
    in_alert = np.arange(n) >= n // 2
    correct = np.where(in_alert, rng.random(n) < 0.6, rng.random(n) < 0.9)
    draws = np.array([routing.audit_draw("salt", f"p-{i}") for i in range(n)])
    boost = routing.DriftResponse(boost_audit_rate=0.5)
    audited = draws < BASE_AUDIT
    boosted = in_alert & np.array([boost.boosted(d, BASE_AUDIT) for d in draws])
    truth = correct.mean()

    audit_estimate = correct[audited].mean()
    standard_error = np.sqrt(audit_estimate * (1 - audit_estimate) / audited.sum())
    assert abs(audit_estimate - truth) < 3 * standard_error
    naive = correct[audited | boosted].mean()
    assert abs(naive - truth) > 10 * standard_error


def test_grown_regions_are_the_bins_whose_share_rose_most():
    bins = ["missing", "< 0", "0 to 1", "1 to 2", "> 2"]
    regions = stats.grown_regions(name="x", type_="numeric", bins=bins, reference=[0, 25, 25, 25, 25],
                                  current=[50, 10, 10, 30, 50], edges=[0.0, 1.0, 2.0])
    # The missing bin rose most, yet no value can be matched to it.
    assert regions == [{"feature": "x", "low": 2.0, "high": None}]
    assert routing.in_drift_region({"x": 7.5}, regions) and not routing.in_drift_region({"x": 1.5}, regions)
    colors = stats.grown_regions(name="c", type_="categorical", bins=["missing", "red", "blue", "unseen"],
                                 reference=[0, 50, 50, 0], current=[0, 20, 60, 20], edges=None)
    assert colors == [{"feature": "c", "categories": ["blue"]}]
    assert routing.in_drift_region({"c": "blue"}, colors) and not routing.in_drift_region({"c": "red"}, colors)


def test_a_multivariate_outlier_is_a_row_off_the_way_the_reference_features_move_together():
    rng = np.random.default_rng(3)

    def rows(n, correlation):
        a = rng.normal(0, 1, n)
        return np.column_stack([a, 5 + 2 * (correlation * a + np.sqrt(1 - correlation ** 2) * rng.normal(0, 1, n))])

    model = stats.outlier_model(rows(3000, 0.8), ["f0", "f1"])
    assert json.loads(json.dumps(model)) == model, "stored as JSON on the alert"
    assert stats.outliers(model, rows(20_000, 0.8)).mean() < 0.02
    assert stats.outliers(model, rows(20_000, -0.8)).mean() > 0.3
    # A missing value counts as the reference's median, a text one as missing.
    assert routing.outlier_rows([{"f0": 1.5, "f1": "x"}, None], ["f0", "f1"])[0][0] == 1.5
    assert stats.outliers(model, np.array([[np.nan, np.nan]])).tolist() == [False]
    assert stats.outlier_model(rows(100, 0.8), ["f0", "f1"]) is None, "too few rows to fit"


@pytest.mark.parametrize("on_drift, field", [
    ({"boost_rate": 0.2}, "drift.on_drift.boost_rate"),
    ({"boost_audit_rate": 1.5}, "drift.on_drift.boost_audit_rate"),
    ({"route_drifted": "sometimes"}, "drift.on_drift.route_drifted"),
])
def test_a_bad_on_drift_policy_is_a_400(ops_client, project, on_drift, field):
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": {"on_drift": on_drift}}, format="json")
    assert response.status_code == 400 and field in response.json()["error"]["fields"], response.json()
    project.refresh_from_db()
    assert project.drift["on_drift"] == {"boost_audit_rate": 0.0, "route_drifted": False}


def test_on_drift_is_stored_with_its_defaults(ops_client, project):
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": {"on_drift": {"route_drifted": True}}},
                                format="json")
    assert response.status_code == 200
    assert response.json()["drift"]["on_drift"] == {"boost_audit_rate": 0.0, "route_drifted": True}
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": {"on_drift": {"boost_audit_rate": 0.2}}},
                                format="json")
    assert response.json()["drift"]["on_drift"] == {"boost_audit_rate": 0.2, "route_drifted": True}


def _with_confidence(predictions, low, high, seed):
    rng = np.random.default_rng(seed)
    return [{**p, "label": "1", "confidence": round(float(c), 4)}
            for p, c in zip(predictions, rng.uniform(low, high, len(predictions)), strict=True)]


def _label_calibrated(project, prefix, seed):
    """Human labels on the audit sample of a calibrated model: right with the chance its
    confidence says."""
    rng = np.random.default_rng(seed)
    rows = Prediction.objects.filter(project=project, external_id__startswith=f"{prefix}-", audit=True)
    Label.objects.bulk_create([
        Label(project=project, prediction_id=pk, label="1" if rng.random() < confidence else "2", source="annotation")
        for pk, confidence in rows.values_list("id", "confidence").order_by("id")])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("current_confidence, alerted", [((0.4, 0.6), True), ((0.4, 1.0), False)])
def test_an_estimated_accuracy_drop_raises_an_alert(app_client, project, current_confidence, alerted):
    project.routing = {**project.routing, "audit_rate": 0.5}
    project.save()
    reference = _with_confidence(traffic(1000, seed=1, start=day(0), hours=6, prefix="ref"), 0.4, 1.0, seed=1)
    post_traffic(app_client, reference)
    _label_calibrated(project, "ref", seed=2)
    services.reference_set_window(project=project, start=day(0), end=day(0) + timedelta(hours=6))

    current = _with_confidence(traffic(600, seed=3, start=day(2), hours=4, prefix="now"), *current_confidence, seed=3)
    post_traffic(app_client, current)
    report = services.drift_check_run(project=project, now=day(2) + timedelta(hours=5))

    accuracy = report.accuracy
    assert accuracy["model_version"] == "v1" and accuracy["threshold"] == 0.05
    assert accuracy["reference"]["predictions"] == 1000 and accuracy["current"]["predictions"] == 600
    # A calibrated model: the estimate is near the mean confidence (isotonic steps are coarse
    # where labels are few).
    assert accuracy["reference"]["value"] == pytest.approx(0.7, abs=0.06)
    assert accuracy["current"]["value"] == pytest.approx(np.mean(current_confidence), abs=0.1)
    assert accuracy["drifted"] is alerted
    alert = DriftAlert.objects.filter(state=AlertState.OPEN).first()
    assert ("estimated_accuracy" in (alert.features if alert else [])) is alerted
    if alerted:
        assert report.drifted and report.alert == alert
        payload = services._webhook_payload(project=project, alert=alert, report=report, new_fields=[])
        assert "estimated_accuracy" in [r["name"] for r in payload["report"]["drifted"]]


def test_the_accuracy_drop_is_a_policy_field(ops_client, project):
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": {"accuracy_drop": 0}}, format="json")
    assert response.status_code == 400 and "drift.accuracy_drop" in response.json()["error"]["fields"]
    response = ops_client.patch("/api/v1/projects/digits/", {"drift": {"accuracy_drop": 0.1}}, format="json")
    assert response.status_code == 200 and response.json()["drift"]["accuracy_drop"] == 0.1


def test_on_drift_is_set_from_the_console_settings_form(client, project):
    login(client, Role.OPS, project)
    html = client.get("/ops/digits/settings/").content.decode()
    assert 'name="drift.on_drift.boost_audit_rate"' in html and 'name="drift.on_drift.route_drifted"' in html
    refused = client.post("/ops/digits/settings/", {"section": "drift", "drift.on_drift.boost_audit_rate": "2"})
    assert refused.status_code == 400 and "drift.on_drift.boost_audit_rate" in refused.content.decode()
    saved = client.post("/ops/digits/settings/", {"section": "drift", "drift.on_drift.boost_audit_rate": "0.25",
                                                  "drift.on_drift.route_drifted": "true"})
    assert saved.status_code == 302
    project.refresh_from_db()
    assert project.drift["on_drift"] == {"boost_audit_rate": 0.25, "route_drifted": True}


@pytest.mark.django_db(transaction=True)
def test_the_scheduled_check_run_twice_opens_one_alert_with_the_same_actions(app_client, project):
    acting(project, boost_audit_rate=BOOST, route_drifted=True)
    post_traffic(app_client, traffic(1000, seed=1, start=day(0), hours=6, prefix="ref"))
    services.reference_set_window(project=project, start=day(0), end=day(0) + timedelta(hours=6))
    post_traffic(app_client, traffic(400, seed=3, start=day(2), hours=4, prefix="shifted", f1_shift=1.5))
    profiling.profiles_update(force_grids=True)  # the beat's job: scheduled checks do not sync
    now = day(2) + timedelta(hours=5)
    assert len(services.drift_checks_run_due(now=now)) == 1
    alert = DriftAlert.objects.get(state=AlertState.OPEN)
    assert services.drift_checks_run_due(now=now + timedelta(minutes=10)) == []
    assert DriftAlert.objects.count() == 1 and DriftAlert.objects.get().actions == alert.actions
    tasks_before = Task.objects.count()
    post_traffic(app_client, traffic(200, seed=4, start=day(2), hours=4, prefix="shifted", f1_shift=1.5))
    assert Task.objects.count() == tasks_before, "the same predictions again route nothing new"
