"""Production accuracy from the audit sample, calibration, and feedback rates in stats/."""

import numpy as np

from accounts.models import Role
from flywheel.models import Project
from labeling import services as labeling_services
from labeling.models import Task
from tests import factories

PREDICTIONS = "/api/v1/projects/digits/predictions/"


def test_stats_estimate_production_accuracy_per_version_label_and_slice(app_client, ops_client, project):
    project.routing = {**project.routing, "threshold": 1.0, "audit_rate": 0.3, "daily_budget": 0}
    project.slices = ["region"]
    # A fixed salt fixes which predictions fall in the audit sample, so the test does not
    # fail in the 5% of samples whose 95% interval misses; the estimator's coverage over
    # many samples is checked in test_accuracy.py.
    project.audit_salt = "coverage-test-salt"
    project.save()
    rng = np.random.default_rng(7)
    truth, items = {}, []
    for i in range(1500):
        region = "eu" if i % 2 else "us"
        true_label = str(rng.integers(0, 10))
        right = rng.random() < (0.9 if region == "eu" else 0.6)
        predicted = true_label if right else str((int(true_label) + 1 + rng.integers(0, 9)) % 10)
        confidence = float(np.clip(rng.normal(0.85 if right else 0.6, 0.1), 0.05, 1.0))
        items.append({"id": f"p-{i}", "model_version": "v2" if i >= 1000 else "v1", "label": predicted,
                      "confidence": confidence, "metadata": {"region": region}})
        truth[f"p-{i}"] = (true_label, predicted)
    assert app_client.post(PREDICTIONS, {"predictions": items}, format="json").status_code == 201
    # Annotators label the audit sample (routed at random, whatever the confidence).
    annotator = factories.user_with_role(Role.ANNOTATOR, project)[0]
    project.refresh_from_db()
    while (task := labeling_services.task_claim(project=project, user=annotator)) is not None:
        labeling_services.annotation_submit(task_id=task.pk, user=annotator,
                                            label=truth[task.prediction.external_id][0])
    audited = Task.objects.filter(reason="audit").count()
    assert 350 < audited < 550 and not Task.objects.exclude(reason="audit").exists()

    stats = ops_client.get("/api/v1/projects/digits/stats/").json()
    by_version = {entry["model_version"]: entry for entry in stats["accuracy"]}
    v1 = by_version["v1"]
    assert v1["audit"]["predictions"] == v1["audit"]["labeled"] > 250
    population = np.mean([t == p for key, (t, p) in truth.items() if int(key[2:]) < 1000])
    estimate = v1["accuracy"]
    audited_v1 = Task.objects.filter(prediction__model_version__name="v1") \
        .values_list("prediction__external_id", flat=True)
    observed = np.mean([truth[key][0] == truth[key][1] for key in audited_v1])
    assert abs(estimate["accuracy"] - observed) < 1e-9
    assert estimate["low"] <= population <= estimate["high"]
    assert 0.03 < estimate["high"] - estimate["low"] < 0.15
    assert v1["slices"]["region"]["eu"]["accuracy"] > v1["slices"]["region"]["us"]["accuracy"] + 0.15
    assert sum(group["n"] for group in v1["by_label"].values()) == v1["audit"]["labeled"]
    calibration = v1["calibration"]
    assert 0 <= calibration["ece"] < 0.3 and sum(b["n"] for b in calibration["bins"]) == v1["audit"]["labeled"]
    assert by_version["v2"]["audit"]["labeled"] > 100
    # Without labels: the confidence, calibrated on the audit labels, estimates the day's
    # accuracy over every prediction; nothing moved, so it agrees with the audit.
    label_free = v1["estimated_accuracy"]
    assert label_free["method"] == "cbpe_isotonic" and label_free["predictions"] == 1000
    assert label_free["low"] <= population <= label_free["high"] and label_free["consistent_with_audit"] is True
    assert label_free["calibration_labels"] == v1["audit"]["labeled"]


def test_feedback_labels_are_kept_out_of_the_accuracy_estimate(app_client, ops_client, project):
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, "audit_rate": 1.0},
                                                 feedback={"min_users": 1})
    app_client.post(PREDICTIONS, factories.prediction(1, confidence=0.99), format="json")
    app_client.post("/api/v1/projects/digits/feedback/", {"prediction_id": "p-1", "kind": "confirm"}, format="json")
    entry = ops_client.get("/api/v1/projects/digits/stats/").json()["accuracy"][0]
    assert entry["audit"] == {"predictions": 1, "labeled": 0} and entry["accuracy"]["accuracy"] is None


def test_stats_report_feedback_rates_per_model_version(app_client, ops_client, project):
    items = [factories.prediction(i, confidence=0.99, model_version="v1" if i < 10 else "v2") for i in range(20)]
    app_client.post(PREDICTIONS, {"predictions": items}, format="json")
    feedback = ([{"prediction_id": f"p-{i}", "kind": "confirm", "user": "u"} for i in range(5)]
                + [{"prediction_id": "p-5", "kind": "reject"}, {"prediction_id": "p-5", "kind": "reject"}]
                + [{"prediction_id": "p-12", "kind": "correct", "label": "4"}])
    assert app_client.post("/api/v1/projects/digits/feedback/", {"feedback": feedback},
                           format="json").status_code == 201
    rates = ops_client.get("/api/v1/projects/digits/stats/").json()["feedback"]
    assert rates["by_kind"] == {"confirm": 5, "correct": 1, "reject": 2}
    by_version = {r["model_version"]: r for r in rates["rates"]}
    assert by_version["v1"]["predictions"] == 10 and by_version["v1"]["confirmed_rate"] == 0.5
    assert by_version["v1"]["rejected_rate"] == 0.1  # two rejects of one prediction count once
    assert by_version["v2"]["corrected_rate"] == 0.1 and by_version["v2"]["confirmed"] == 0
