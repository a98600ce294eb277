"""The label-free estimated accuracy per model version and day or hour (stats/?accuracy_by=),
beside the audit estimate of the same period: within its interval of the truth on days
whose inputs moved, flagged on the day the model's confidence stopped meaning what it did."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from accounts.models import Role
from flywheel.models import Prediction
from labeling.models import Label
from tests.monitoring.test_dashboard import login

PREDICTIONS = "/api/v1/projects/digits/predictions/"
DAYS = 6  # days before today with traffic; the last of them is the concept shift
PER_DAY = 600


def load(app_client, project, *, today: datetime) -> dict[int, float]:
    """Six days of a model's predictions, the confidence moving from day to day (covariate
    shift: the model stays calibrated), then a day where it is right far less often than
    its confidence says (concept shift). Audit labels from the truth. Returns each day's
    true accuracy, by days ago."""
    project.routing = {**project.routing, "threshold": 1.0, "audit_rate": 0.25, "daily_budget": 0}
    project.audit_salt = "series-salt"
    project.save()
    rng = np.random.default_rng(11)
    truth, right = {}, {}
    for ago in range(DAYS, 0, -1):
        start = today - timedelta(days=ago)
        low = 0.55 + 0.05 * (ago % 3)  # the mix of easy and hard inputs moves
        confidence = rng.uniform(low, 1.0, PER_DAY)
        chance = confidence - (0.35 if ago == 1 else 0.0)
        correct = rng.random(PER_DAY) < chance
        items = [{"id": f"d{ago}-{i}", "model_version": "v1", "label": "1", "confidence": round(float(c), 4),
                  "created_at": (start + timedelta(minutes=2 * i)).isoformat()}
                 for i, c in enumerate(confidence)]
        assert app_client.post(PREDICTIONS, {"predictions": items}, format="json").status_code == 201
        right.update({f"d{ago}-{i}": bool(ok) for i, ok in enumerate(correct)})
        truth[ago] = float(correct.mean())
    audited = Prediction.objects.filter(project=project, audit=True).values_list("id", "external_id")
    Label.objects.bulk_create([Label(project=project, prediction_id=pk, label="1" if right[key] else "2",
                                     source="annotation") for pk, key in audited])
    return truth


def test_the_daily_series_covers_the_truth_under_covariate_shift_and_flags_the_concept_shift(
        app_client, ops_client, project):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    truth = load(app_client, project, today=today)

    response = ops_client.get("/api/v1/projects/digits/stats/?accuracy_by=day")
    assert response.status_code == 200
    series = response.json()["accuracy_series"]
    assert series["by"] == "day" and series["since"] == (today - timedelta(days=29)).isoformat()
    (v1,) = series["versions"]
    assert v1["model_version"] == "v1" and v1["method"] == "cbpe_isotonic" and len(v1["points"]) == 30
    points = {datetime.fromisoformat(p["start"]): p for p in v1["points"]}
    assert set(points) == {today - timedelta(days=d) for d in range(30)}
    for ago, accuracy in truth.items():
        point = points[today - timedelta(days=ago)]
        assert point["predictions"] == PER_DAY and point["audit"]["n"] > 100
        estimate = point["estimated_accuracy"]
        if ago == 1:
            # Right far less often than its confidence says: the label-free estimate cannot
            # see it, the day's own audit labels can, and the point says so.
            assert point["consistent_with_audit"] is False
            assert estimate["low"] > accuracy + 0.2
            assert point["audit"]["low"] <= accuracy <= point["audit"]["high"]
        else:
            assert point["consistent_with_audit"] is True
            assert estimate["low"] <= accuracy <= estimate["high"], (ago, estimate, accuracy)
            assert estimate["high"] - estimate["low"] < 0.1
    # The concept-shifted day is left out of the calibration, so it bends no other day.
    assert v1["calibration_labels"] == sum(p["audit"]["n"] for p in v1["points"]) - points[
        today - timedelta(days=1)]["audit"]["n"]
    quiet = points[today - timedelta(days=20)]
    assert quiet["predictions"] == 0 and quiet["estimated_accuracy"] is None
    assert quiet["consistent_with_audit"] is None and quiet["audit"]["n"] == 0


def test_the_hourly_series_covers_the_last_48_hours(app_client, ops_client, project):
    now = datetime.now(UTC)
    project.routing = {**project.routing, "audit_rate": 1.0, "threshold": 1.0, "daily_budget": 0}
    project.save()
    hour = now.replace(minute=0, second=0, microsecond=0)
    items = [{"id": f"h-{i}", "model_version": "v1", "label": "1", "confidence": 0.9,
              "created_at": (hour - timedelta(hours=i % 60)).isoformat()} for i in range(240)]
    assert app_client.post(PREDICTIONS, {"predictions": items}, format="json").status_code == 201
    audited = Prediction.objects.filter(project=project).values_list("id", "external_id")
    Label.objects.bulk_create([Label(project=project, prediction_id=pk, label="1" if int(key[2:]) % 10 else "2",
                                     source="annotation") for pk, key in audited])

    series = ops_client.get("/api/v1/projects/digits/stats/?accuracy_by=hour").json()["accuracy_series"]
    (v1,) = series["versions"]
    assert series["by"] == "hour" and len(v1["points"]) == 48
    assert v1["points"][-1]["start"] == hour.isoformat()
    # 240 predictions over 60 hours, 4 an hour; 48 of those hours are in the series.
    assert [p["predictions"] for p in v1["points"]] == [4] * 48
    assert all(p["estimated_accuracy"]["low"] <= 0.9 <= p["estimated_accuracy"]["high"] for p in v1["points"])


@pytest.mark.parametrize("value", ["week", "HOUR", "0"])
def test_an_unknown_period_is_a_400_naming_the_field(ops_client, project, value):
    response = ops_client.get(f"/api/v1/projects/digits/stats/?accuracy_by={value}")
    assert response.status_code == 400 and "accuracy_by" in response.json()["error"]["fields"]


def test_without_accuracy_by_stats_keep_their_fields(ops_client, project):
    body = ops_client.get("/api/v1/projects/digits/stats/").json()
    assert "accuracy_series" not in body and "accuracy" in body


def test_the_quality_page_draws_the_series_beside_the_audit_estimate(app_client, client, project):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    load(app_client, project, today=today)
    login(client, Role.OPS, project)
    html = client.get("/ops/digits/quality/").content.decode()
    chart = html.split('data-testid="accuracy-series"')[1].split("</section>")[0]
    assert 'data-model="v1"' in chart and "Per hour, last 48 hours" in chart
    assert chart.count('<polyline class="label-free"') == 1 and chart.count('class="label-free-band"') == 1
    # One audit dot per day with labels; the concept-shifted day drawn apart, and said in words.
    assert chart.count('<g class="audit') == DAYS and chart.count('<g class="audit disagrees">') == 1
    assert "In 1 day the audit labels disagree with the estimate beyond both intervals." in chart
    hourly = client.get("/ops/digits/quality/?accuracy_by=hour").content.decode()
    assert "Per day, last 30 days" in hourly.split('data-testid="accuracy-series"')[1]
