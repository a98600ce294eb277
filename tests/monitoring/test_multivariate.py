"""Joint drift through the API: a correlation that flips while every marginal stays the
same is drift (and alerts), the same correlation is not; samples of rows are kept per
hour as predictions are profiled, and frozen with a reference."""

import json
from datetime import timedelta

import numpy as np
import pytest

from accounts.models import Role
from monitoring.models import ProfileSample, ReferenceSample
from tests.monitoring.conftest import hour_floor, post_traffic, traffic
from tests.monitoring.test_dashboard import login

REFERENCE_DAYS_AGO = 3


def load(app_client, now, *, reference_correlation, current_correlation):
    reference_start = hour_floor(now) - timedelta(days=REFERENCE_DAYS_AGO)
    post_traffic(app_client, traffic(3000, seed=1, start=reference_start, hours=3.5, prefix="ref",
                                     correlation=reference_correlation))
    post_traffic(app_client, traffic(2500, seed=2, start=now - timedelta(hours=3), hours=2.9, prefix="cur",
                                     correlation=current_correlation))
    return reference_start


def set_reference(client, start):
    response = client.put("/api/v1/projects/digits/drift/reference/", {
        "start": start.isoformat(), "end": (start + timedelta(hours=4)).isoformat()}, format="json")
    assert response.status_code == 200, response.json()


@pytest.mark.django_db(transaction=True)
def test_a_flipped_correlation_is_joint_drift_though_no_feature_drifts(client, app_client, ops_user_client, project,
                                                                       now):
    start = load(app_client, now, reference_correlation=0.8, current_correlation=-0.8)
    set_reference(ops_user_client, start)
    sample = ReferenceSample.objects.get()
    assert sample.names == ["f0", "f1"] and len(bytes(sample.rows)) == 3000 * 2 * 4

    response = ops_user_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json")
    assert response.status_code == 201, response.json()
    report = response.json()
    assert not any(f["drifted"] for f in report["features"]), "every marginal is unchanged"
    joint = report["multivariate"]
    assert joint["statistic"] == "pca_reconstruction_error" and joint["drifted"] is True
    assert joint["value"] > 1 + joint["threshold"] and joint["p_value"] < 1e-6
    assert joint["features"] == ["f0", "f1"] and joint["current_rows"] == 2500 and joint["reference_rows"] == 3000
    assert report["drifted"] is True and report["alerted"] is True
    alerts = ops_user_client.get("/api/v1/projects/digits/drift/alerts/").json()
    assert alerts[0]["fields"] == ["multivariate"]

    # The dashboard shows it where the per-feature drift is, drifted, with its figures.
    login(client, Role.OPS, project)
    html = client.get("/ops/digits/").content.decode()
    figure = html.split('data-field="multivariate"')[1].split("</figure>")[0]
    assert "Joint drift" in figure and "drifted" in figure and f"{joint['value']:.3f}" in figure
    data = json.loads(html.split('id="ops-data" type="application/json">')[1].split("</script>")[0])
    assert data["drifted"]["any_drifted"] and data["drifted"]["multivariate"]["drifted"]
    series = next(s for s in data["over_time"]["series"] if s["name"] == "multivariate")
    assert series["drifted"] == [True] and series["values"][0] > 1


@pytest.mark.django_db(transaction=True)
def test_the_same_correlation_is_not_joint_drift(app_client, ops_user_client, project, now):
    start = load(app_client, now, reference_correlation=0.8, current_correlation=0.8)
    set_reference(ops_user_client, start)
    report = ops_user_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json").json()
    joint = report["multivariate"]
    assert joint["drifted"] is False and abs(joint["value"] - 1) < joint["threshold"]
    assert report["drifted"] is False


@pytest.mark.django_db(transaction=True)
def test_each_hour_keeps_a_bounded_random_sample_of_its_rows(app_client, ops_user_client, project, now,
                                                              monkeypatch):
    from monitoring import services

    monkeypatch.setattr(services, "HOUR_SAMPLE", 100)
    start = hour_floor(now) - timedelta(days=1)
    rows = traffic(700, seed=3, start=start, hours=1.0, prefix="a", correlation=0.5)
    post_traffic(app_client, rows[:300])
    ops_user_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json")  # profiles the first part
    post_traffic(app_client, rows[300:])
    ops_user_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json")
    (sample,) = ProfileSample.objects.filter(hour=start)
    assert sample.seen == 700 and sample.names == ["f0", "f1"]
    keys = np.frombuffer(bytes(sample.keys), dtype=np.float64)
    values = np.frombuffer(bytes(sample.rows), dtype=np.float32).reshape(-1, 2)
    assert len(keys) == len(values) == 100
    # The rows are the posted ones, drawn from both parts.
    posted = np.array([r["features"]["f0"] for r in rows])
    nearest = np.abs(values[:, 0][:, None] - posted[None, :]).argmin(axis=1)
    assert np.allclose(posted[nearest], values[:, 0], atol=1e-5)
    drawn_first = int((nearest < 300).sum())
    assert 20 <= drawn_first <= 70, "about 300/700 of the sample comes from the first part"


@pytest.mark.django_db(transaction=True)
def test_the_policy_can_turn_joint_drift_off_and_refuses_bad_values(ops_user_client, project):
    response = ops_user_client.patch("/api/v1/projects/digits/", {"drift": {"multivariate": False}}, format="json")
    assert response.status_code == 200 and response.json()["drift"]["multivariate"] is False
    report = ops_user_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json").json()
    assert report["multivariate"] is None
    for body, field in [({"multivariate_alpha": 0.5}, "drift.multivariate_alpha"),
                        ({"multivariate_sample": 10}, "drift.multivariate_sample"),
                        ({"multivariate_treshold": 0.2}, "drift.multivariate_treshold"),
                        ({"numeric_statistic": "ks"}, "drift.numeric_statistic")]:
        response = ops_user_client.patch("/api/v1/projects/digits/", {"drift": body}, format="json")
        assert response.status_code == 400, body
        assert field in response.json()["error"]["fields"], response.json()
