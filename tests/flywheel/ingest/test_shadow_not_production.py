"""Shadow predictions are never production data: a challenger's answers leave drift
profiles, end users' feedback rates, production accuracy and dataset rows as they were."""

from datetime import UTC, datetime, timedelta

from flywheel.ingest import profiling
from flywheel.ingest.selectors import feedback_rates
from flywheel.models import Project, ShadowPrediction
from flywheel.training.selectors import production_accuracy
from labeling.models import Label
from monitoring import selectors as monitoring_selectors
from monitoring.models import Profile
from tests.factories import prediction
from tests.flywheel.datasets.dataset_data import build, rows

N = 40


def log_with_shadows(client, project, **routing):
    """N confident predictions of v1, and a shadow answering a different label for each
    (every one a disagreement, each drawn for a label)."""
    Project.objects.filter(pk=project.pk).update(routing={**project.routing, **routing})
    now = datetime.now(UTC)
    items = [prediction(i, confidence=0.95, created_at=(now - timedelta(minutes=i)).isoformat()) for i in range(N)]
    assert client.post("/api/v1/projects/digits/predictions/", {"predictions": items},
                       format="json").status_code == 201
    shadows = [{"prediction_id": f"p-{i}", "model_version": "rc-1", "label": str((i + 1) % 10), "confidence": 0.99,
                "probabilities": {str((i + 1) % 10): 0.99, str(i % 10): 0.01}} for i in range(N)]
    response = client.post("/api/v1/projects/digits/shadow-predictions/", {"shadow_predictions": shadows},
                           format="json")
    assert response.status_code == 201, response.json()
    assert ShadowPrediction.objects.filter(agrees=False).count() == N


def test_drift_profiles_count_only_served_predictions(app_client, project):
    log_with_shadows(app_client, project)
    profiling.profiles_update(force_grids=True)
    start, end = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=1)
    assert monitoring_selectors.window_histograms(project_id=project.pk, start=start, end=end).count == N
    labels = Profile.objects.filter(project=project, name="label")
    assert sum(p.count for p in labels) == N
    confidence = Profile.objects.filter(project=project, name="confidence")
    assert sum(p.count for p in confidence) == N


def test_feedback_rates_know_only_the_champion(app_client, project):
    log_with_shadows(app_client, project)
    assert app_client.post("/api/v1/projects/digits/feedback/", {"prediction_id": "p-1", "kind": "confirm"},
                           format="json").status_code == 201
    rates = feedback_rates(project=project)["rates"]
    assert {r["model_version"] for r in rates} == {"v1"}
    assert sum(r["predictions"] for r in rates) == N and sum(r["confirmed"] for r in rates) == 1


def test_production_accuracy_is_the_champions_from_its_own_answers(app_client, project):
    log_with_shadows(app_client, project, audit_rate=1.0)
    # People label every audited prediction with the shadow's answer: the champion was wrong
    # on all of them, and nothing of the shadow's may leak into its figures.
    pks = dict(project.predictions.values_list("external_id", "id"))
    Label.objects.bulk_create([Label(project=project, prediction_id=pks[f"p-{i}"], label=str((i + 1) % 10),
                                     source="annotation") for i in range(N)])
    (v1,) = production_accuracy(project=project)
    assert v1["model_version"] == "v1"
    assert v1["audit"] == {"predictions": N, "labeled": N}
    assert v1["accuracy"]["correct"] == 0 and v1["accuracy"]["n"] == N


def test_dataset_rows_are_served_predictions_with_resolved_labels(app_client, project):
    log_with_shadows(app_client, project)
    pks = dict(project.predictions.values_list("external_id", "id"))
    Label.objects.bulk_create([Label(project=project, prediction_id=pks[f"p-{i}"], label=str(i % 10),
                                     source="annotation") for i in range(10)])
    version = build(project)
    read = rows(version)
    assert set(read) == {f"p-{i}" for i in range(10)}
    assert version.counts["rows"] == 10
    assert all(row["label"] == name.removeprefix("p-")[-1] for name, row in read.items())
