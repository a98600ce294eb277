"""Drift through the API (docs/api.md: Monitoring): references, checks, reports, alerts."""

from datetime import timedelta

import pytest
from django.test import override_settings

from accounts.models import AuditEvent
from monitoring.models import DriftAlert, DriftReport, Reference, WebhookDelivery
from tests.monitoring.conftest import WEBHOOK_SECRET, hour_floor, post_traffic, traffic

REFERENCE_DAYS_AGO = 3


def set_reference(client, now, slug="digits"):
    start = hour_floor(now) - timedelta(days=REFERENCE_DAYS_AGO)
    return client.put(f"/api/v1/projects/{slug}/drift/reference/",
                      {"start": start.isoformat(), "end": (start + timedelta(hours=4)).isoformat(),
                       "note": "the week after launch"}, format="json")


def load_reference_and_current(app_client, now, *, current_n=1000, **shift):
    reference_start = hour_floor(now) - timedelta(days=REFERENCE_DAYS_AGO)
    post_traffic(app_client, traffic(3000, seed=1, start=reference_start, hours=3.5, prefix="ref"))
    post_traffic(app_client, traffic(current_n, seed=2, start=now - timedelta(hours=3), hours=2.9, prefix="cur",
                                     **shift))


@pytest.mark.django_db(transaction=True)
def test_a_shifted_feature_is_reported_alone_and_alerts_the_webhook_once(app_client, ops_user_client, project,
                                                                          receiver, now):
    with override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True):
        response = ops_user_client.patch("/api/v1/projects/digits/", {"drift": {
            "webhook_url": receiver.url, "webhook_secret": WEBHOOK_SECRET}}, format="json")
        assert response.status_code == 200, response.json()
        assert response.json()["drift"]["webhook_secret"] == "********"

        load_reference_and_current(app_client, now, f1_shift=1.0)
        response = set_reference(ops_user_client, now)
        assert response.status_code == 200, response.json()
        reference = response.json()
        assert reference["kind"] == "window" and reference["count"] == 3000
        assert reference["set_by"] == ops_user_client.user.username

        response = ops_user_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json")
        assert response.status_code == 201, response.json()
        report = response.json()
        assert report["window"]["count"] == 1000
        assert report["reference"]["kind"] == "window" and report["reference"]["count"] == 3000
        assert report["drifted"] is True and report["alerted"] is True
        assert [f["name"] for f in report["features"] if f["drifted"]] == ["f1"]
        assert report["prediction"]["name"] == "label" and report["prediction"]["drifted"] is False
        f1 = next(f for f in report["features"] if f["name"] == "f1")
        assert f1["statistic"] == "wasserstein" and f1["value"] > f1["threshold"] >= 0.1
        assert f1["statistics"]["wasserstein_normalized"] == f1["value"] and f1["statistics"]["psi"] > 0
        assert f1["p_value"] < 1e-6 and f1["test"] == "ks" and f1["type"] == "numeric"
        assert report["features"][2]["name"] == "color" and report["features"][2]["test"] == "chi2"

        # The alert reached the receiver, signed with the project's secret.
        assert len(receiver.requests) == 1
        received = receiver.requests[0]
        assert received.path == "/hooks/drift" and received.signature_valid()
        assert not received.signature_valid("some-other-secret-000000")
        assert received.headers["X-Flywheel-Event"] == "drift.detected"
        payload = received.json()
        assert payload["project"] == "digits" and payload["alert"]["new_fields"] == ["f1"]
        assert [d["name"] for d in payload["report"]["drifted"]] == ["f1"]
        assert payload["report"]["id"] == report["id"]

        # The same drift an hour later: a new report, no new alert.
        response = ops_user_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json")
        assert response.status_code == 201
        again = response.json()
        assert again["drifted"] is True and again["alerted"] is False
        assert len(receiver.requests) == 1

    reports = ops_user_client.get("/api/v1/projects/digits/drift/reports/").json()
    assert [r["id"] for r in reports] == [again["id"], report["id"]]
    alerts = ops_user_client.get("/api/v1/projects/digits/drift/alerts/").json()
    assert len(alerts) == 1 and alerts[0]["state"] == "open" and alerts[0]["fields"] == ["f1"]
    (delivery,) = alerts[0]["deliveries"]
    assert delivery["state"] == "delivered" and delivery["attempts"] == 1
    assert delivery["attempt_log"][0]["status_code"] == 200


@pytest.mark.django_db(transaction=True)
def test_no_drift_when_the_window_looks_like_the_reference(app_client, ops_client, project, now):
    load_reference_and_current(app_client, now)
    assert set_reference(ops_client, now).status_code == 200
    report = ops_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json").json()
    assert report["drifted"] is False and report["alerted"] is False
    assert not [f["name"] for f in report["features"] if f["drifted"]]
    assert DriftAlert.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_new_category_and_a_changed_mix_drift_a_categorical_feature(app_client, ops_client, project, now):
    load_reference_and_current(app_client, now, color_p=(0.2, 0.3, 0.5))
    assert set_reference(ops_client, now).status_code == 200
    report = ops_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json").json()
    assert [f["name"] for f in report["features"] if f["drifted"]] == ["color"]
    color = next(f for f in report["features"] if f["name"] == "color")
    assert color["test"] == "chi2" and "unseen" in color["histogram"]["bins"]


def test_a_check_without_a_reference_compares_with_the_preceding_week(app_client, ops_client, project, now):
    post_traffic(app_client, traffic(600, seed=3, start=now - timedelta(days=3), hours=24, prefix="old"))
    post_traffic(app_client, traffic(300, seed=4, start=now - timedelta(hours=5), hours=4, prefix="new",
                                     f0_shift=2.0))
    report = ops_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json").json()
    assert report["reference"]["kind"] == "preceding_window" and report["reference"]["count"] == 600
    assert report["reference"]["id"] is None
    assert [f["name"] for f in report["features"] if f["drifted"]] == ["f0"]


def test_an_explicit_window_is_whole_hours_and_does_not_alert(app_client, ops_client, project, now):
    start = hour_floor(now) - timedelta(days=2, hours=5)
    post_traffic(app_client, traffic(200, seed=5, start=start + timedelta(minutes=10), hours=2, prefix="w"))
    response = ops_client.post("/api/v1/projects/digits/drift/checks/", {
        "start": (start + timedelta(minutes=10)).isoformat(),
        "end": (start + timedelta(hours=2, minutes=20)).isoformat(),
    }, format="json")
    assert response.status_code == 201, response.json()
    report = response.json()
    assert report["window"]["start"] == start.isoformat()
    assert report["window"]["end"] == (start + timedelta(hours=3)).isoformat()
    assert report["window"]["count"] == 200 and report["alerted"] is False


def test_setting_a_reference_is_recorded_with_who_and_what(app_client, ops_user_client, project, now):
    load_reference_and_current(app_client, now, current_n=100)
    first = set_reference(ops_user_client, now).json()
    start = hour_floor(now) - timedelta(hours=4)
    second = ops_user_client.put("/api/v1/projects/digits/drift/reference/", {
        "start": start.isoformat(), "end": now.isoformat()}, format="json").json()
    assert second["count"] == 100 and second["current"] is True
    state = ops_user_client.get("/api/v1/projects/digits/drift/reference/").json()
    assert state["current"]["id"] == second["id"]
    assert [r["id"] for r in state["history"]] == [second["id"], first["id"]]
    assert state["history"][1]["current"] is False and state["history"][1]["note"] == "the week after launch"
    events = AuditEvent.objects.filter(action="drift.reference_set").order_by("id")
    assert [e.actor_name for e in events] == [ops_user_client.user.username] * 2
    assert events[0].details["kind"] == "window" and events[0].details["count"] == 3000
    assert Reference.objects.filter(project=project, is_current=True).count() == 1


def test_a_reference_window_without_predictions_is_refused(ops_client, project, now):
    response = set_reference(ops_client, now)
    assert response.status_code == 409 and response.json()["error"]["code"] == "reference_empty"


def test_a_dataset_version_becomes_the_reference(ops_client, project, django_capture_on_commit_callbacks):
    from flywheel.datasets import services as datasets
    from flywheel.models import DatasetVersion
    from labeling.services import label_resolve
    from tests import factories

    app = factories.api_client(factories.user_with_role("app", project)[1])
    app.post("/api/v1/projects/digits/predictions/", {"predictions": [
        factories.prediction(i, features={"f0": float(i % 7), "f1": 2.0, "color": "red"}) for i in range(300)]},
        format="json")
    for prediction in project.predictions.all():
        label_resolve(project_id=project.pk, prediction_id=prediction.pk, label=prediction.label, source="annotation")
    building = DatasetVersion.objects.create(project=project, number=7)
    refused = ops_client.put("/api/v1/projects/digits/drift/reference/", {"dataset_version": 7}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "dataset_not_ready"
    building.delete()
    with django_capture_on_commit_callbacks(execute=True):
        version = datasets.dataset_version_create(project=project)
    response = ops_client.put("/api/v1/projects/digits/drift/reference/", {"dataset_version": version.number},
                              format="json")
    assert response.status_code == 200, response.json()
    reference = Reference.objects.filter(project=project).latest("id")
    assert reference.kind == "dataset_version" and reference.dataset_version == version.number
    assert 200 < reference.count < 300  # the train split: about 80% of the rows
    missing = ops_client.put("/api/v1/projects/digits/drift/reference/", {"dataset_version": 99}, format="json")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "dataset_not_found"


@pytest.mark.parametrize("body, field", [
    ({}, "body"),
    ({"start": "2026-01-01T00:00:00Z"}, "body"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "dataset_version": 2}, "body"),
    ({"dataset_version": 0}, "dataset_version"),
    ({"dataset_version": "three"}, "dataset_version"),
    ({"start": "yesterday", "end": "2026-01-02T00:00:00Z"}, "start"),
    ({"start": "2020-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}, "end"),
])
def test_bad_reference_bodies_get_a_400_naming_the_field(ops_client, project, body, field):
    response = ops_client.put("/api/v1/projects/digits/drift/reference/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


@pytest.mark.parametrize("body", [[], "x", {"start": 5}, {"end": "2026-13-01T00:00:00Z"},
                                  {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}])
def test_bad_check_bodies_get_a_400(ops_client, project, body):
    response = ops_client.post("/api/v1/projects/digits/drift/checks/", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] in ("invalid", "malformed_body")


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x"])
def test_a_bad_limit_is_a_400(ops_client, project, query):
    response = ops_client.get(f"/api/v1/projects/digits/drift/reports/?{query}")
    assert response.status_code == 400 and "limit" in response.json()["error"]["fields"]


def test_reports_of_another_project_are_not_found(ops_client, project, other_project):
    from monitoring.services import drift_check_run

    report = drift_check_run(project=other_project)
    assert ops_client.get(f"/api/v1/projects/digits/drift/reports/{report.pk}/").status_code == 404
    assert ops_client.get(f"/api/v1/projects/other/drift/reports/{report.pk}/").status_code == 404
    assert ops_client.get("/api/v1/projects/digits/drift/reports/").json() == []


def test_listing_reports_takes_the_same_queries_for_many(app_client, ops_client, project, now,
                                                         django_assert_max_num_queries):
    from monitoring.services import drift_check_run

    post_traffic(app_client, traffic(100, seed=6, start=now - timedelta(hours=2), prefix="q"))
    for _ in range(12):
        drift_check_run(project=project)
    with django_assert_max_num_queries(6):
        response = ops_client.get("/api/v1/projects/digits/drift/reports/?limit=12")
    assert len(response.json()) == 12


def test_an_empty_project_gets_a_report_that_judges_nothing(ops_client, project):
    response = ops_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json")
    assert response.status_code == 201
    report = response.json()
    assert report["drifted"] is False and report["window"]["count"] == 0
    assert {f["reason"] for f in report["features"]} == {"not_in_reference"}
    assert DriftReport.objects.count() == 1 and WebhookDelivery.objects.count() == 0


def test_the_schema_describes_the_monitoring_api(client, db):
    import json

    schema = json.loads(client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    paths = schema["paths"]
    assert "201" in paths["/api/v1/projects/{slug}/drift/checks/"]["post"]["responses"]
    assert "put" in paths["/api/v1/projects/{slug}/drift/reference/"]
    assert "get" in paths["/api/v1/projects/{slug}/drift/reports/"]


def test_training_data_handed_in_becomes_the_reference(app_client, ops_client, project, now):
    """What flywheel will do with a dataset version or a new champion's training rows."""
    import numpy as np

    from monitoring.models import DriftState
    from monitoring.services import Observations, reference_set_from_data

    rng = np.random.default_rng(11)
    rows = 2000
    reference = reference_set_from_data(
        project=project, model_version="v7", note="champion v7's training set",
        observations=Observations(
            label=[str(v) for v in rng.integers(0, 10, rows)],
            features={"f0": rng.normal(0, 1, rows).tolist(), "f1": rng.normal(5, 2, rows).tolist(),
                      "color": rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]).tolist()}),
    )
    assert reference.kind == "training_data" and reference.count == rows
    grids = DriftState.objects.get(project=project).grids["feature"]
    assert 4.5 < grids["f1"]["center"] < 5.5, "the training data made the grids"

    post_traffic(app_client, traffic(800, seed=12, start=now - timedelta(hours=3), hours=2.5, f0_shift=1.0))
    report = ops_client.post("/api/v1/projects/digits/drift/checks/", {}, format="json").json()
    assert report["reference"]["kind"] == "training_data" and report["reference"]["model_version"] == "v7"
    assert [f["name"] for f in report["features"] if f["drifted"]] == ["f0"]
    assert report["confidence"]["reason"] == "not_in_reference", "training data has no confidence"
