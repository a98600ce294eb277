"""Reads of the flywheel app."""

from datetime import timedelta

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from common.errors import NotFound
from flywheel.ingest.feedback import HUMAN_SOURCES
from flywheel.models import Feedback, ModelPromotion, ModelVersion, Prediction, Project, TrainingRun
from flywheel.training import accuracy
from labeling import selectors as labeling_selectors


def prediction_detail(*, project: Project, external_id: str) -> Prediction:
    """A prediction with its tasks, current task, resolved label and feedback attached."""
    prediction = (
        Prediction.objects.select_related("model_version")
        .filter(project=project, external_id=external_id)
        .first()
    )
    if prediction is None:
        raise NotFound("prediction_not_found", f"No prediction '{external_id}' in project '{project.slug}'.")
    prediction.tasks_list = labeling_selectors.tasks_for_prediction(prediction.pk)
    active = [t for t in prediction.tasks_list if t.status in ("open", "review")]
    prediction.task = (active or prediction.tasks_list or [None])[-1]
    prediction.resolved_label = labeling_selectors.current_label(prediction.pk)
    prediction.feedback_list = [
        {"id": f.external_id, "kind": f.kind, "label": f.label or None, "user": f.user, "created_at": f.created_at}
        for f in prediction.feedback.order_by("created_at", "id")
    ]
    prediction.ruled_out = sorted(labeling_selectors.ruled_out_labels([prediction.pk]).get(prediction.pk, set()))
    return prediction


def project_stats(*, project: Project) -> dict:
    """The flywheel at a glance (API.md: stats/), from each app's selectors."""
    return {
        "queue": labeling_selectors.queue_depth(project_id=project.pk),
        "labels_per_day": labeling_selectors.labels_per_day(project_id=project.pk),
        "annotators": labeling_selectors.annotator_stats(project_id=project.pk),
        "agreement": labeling_selectors.project_agreement(project_id=project.pk, labels=project.labels),
        "feedback": feedback_rates(project=project),
        "accuracy": production_accuracy(project=project),
    }


def production_accuracy(*, project: Project) -> list[dict]:
    """Per model version, how accurate it really is, estimated from the random audit sample
    and the labels people gave it (feedback labels are left out: end users see the model's
    answer, so their labels lean towards it). With 95% intervals; per true label, per
    predicted label, per value of each declared metadata slice; and calibration."""
    labeled = dict(labeling_selectors.audit_labels(project_id=project.pk, human_sources=HUMAN_SOURCES))
    audited = (Prediction.objects.filter(project=project, audit=True)
               .values("model_version__name").annotate(n=Count("id")))
    sample_size = {row["model_version__name"]: row["n"] for row in audited}
    rows = (Prediction.objects.filter(pk__in=list(labeled)).values_list(
        "id", "model_version__name", "label", "confidence", "metadata").order_by("id"))
    by_version: dict[str, list] = {}
    for pk, version, predicted, confidence, metadata in rows:
        by_version.setdefault(version, []).append((labeled[pk], predicted, confidence, metadata or {}))
    out = []
    for version in sorted(set(sample_size) | set(by_version)):
        items = by_version.get(version, [])
        truth = [t for t, _, _, _ in items]
        predicted = [p for _, p, _, _ in items]
        slices = {key: accuracy.accuracy_by([str(m.get(key)) for _, _, _, m in items], predicted, truth)
                  for key in project.slices}
        out.append({
            "model_version": version,
            "audit": {"predictions": sample_size.get(version, 0), "labeled": len(items)},
            "accuracy": accuracy.accuracy(predicted, truth).as_dict(),
            "by_label": accuracy.accuracy_by(truth, predicted, truth),
            "by_predicted_label": accuracy.accuracy_by(predicted, predicted, truth),
            "slices": slices,
            "calibration": accuracy.calibration([c for _, _, c, _ in items],
                                                [p == t for p, t in zip(predicted, truth, strict=True)]),
        })
    return out


def feedback_rates(*, project: Project, days: int = 14, now=None) -> dict:
    """Per model version and day: the predictions made, and the share of them end users
    confirmed, corrected and rejected."""
    since = (now or timezone.now()) - timedelta(days=days)
    made = (Prediction.objects.filter(project=project, created_at__gte=since)
            .annotate(day=TruncDate("created_at")).values("model_version__name", "day").annotate(n=Count("id")))
    acted = (Feedback.objects.filter(project=project, prediction__created_at__gte=since)
             .annotate(day=TruncDate("prediction__created_at"))
             .values("prediction__model_version__name", "day", "kind")
             .annotate(n=Count("prediction", distinct=True)))
    counts: dict = {}
    for row in acted:
        counts[(row["prediction__model_version__name"], row["day"], row["kind"])] = row["n"]
    rates = []
    for row in sorted(made, key=lambda r: (r["day"], r["model_version__name"])):
        version, day, n = row["model_version__name"], row["day"], row["n"]
        entry = {"model_version": version, "day": day.isoformat(), "predictions": n}
        for kind, name in (("confirm", "confirmed"), ("correct", "corrected"), ("reject", "rejected")):
            k = counts.get((version, day, kind), 0)
            entry[name] = k
            entry[f"{name}_rate"] = k / n if n else None
        rates.append(entry)
    totals = dict(Feedback.objects.filter(project=project).values_list("kind").annotate(n=Count("id")))
    return {"by_kind": {kind: totals.get(kind, 0) for kind in ("confirm", "correct", "reject")}, "rates": rates}


def model_versions(*, project: Project) -> list[ModelVersion]:
    """The registry: every version with its aliases, newest first."""
    versions = list(ModelVersion.objects.filter(project=project).select_related("dataset_version")
                    .prefetch_related("aliases").order_by("-created_at", "-id"))
    for version in versions:
        version.alias_names = sorted(a.alias for a in version.aliases.all())
    return versions


def model_version_get(*, project: Project, name: str) -> ModelVersion:
    version = ModelVersion.objects.filter(project=project, name=name).first()
    if version is None:
        raise NotFound("model_version_not_found", f"No model version '{name}' in project '{project.slug}'.")
    return version


def training_runs(*, project: Project, limit: int = 50) -> list[TrainingRun]:
    return list(TrainingRun.objects.filter(project=project).select_related(
        "dataset_version", "eval_dataset_version", "model_version", "champion").order_by("-number")[:limit])


def training_run_get(*, project: Project, number: int) -> TrainingRun:
    run = TrainingRun.objects.filter(project=project, number=number).select_related(
        "dataset_version", "eval_dataset_version", "model_version", "champion").first()
    if run is None:
        raise NotFound("training_run_not_found", f"No training run {number} in project '{project.slug}'.")
    return run


def promotions(*, project: Project, limit: int = 20) -> list[ModelPromotion]:
    return list(ModelPromotion.objects.filter(project=project).select_related(
        "model_version", "previous", "training_run")[:limit])


def training_run_by_id(*, project: Project, run_id: int) -> TrainingRun:
    run = TrainingRun.objects.filter(project=project, pk=run_id).select_related(
        "project", "dataset_version", "eval_dataset_version", "model_version", "champion").first()
    if run is None:
        raise NotFound("training_run_not_found", f"No training run {run_id} in project '{project.slug}'.")
    return run


def training_run_for_user(*, user, run_id: int) -> TrainingRun:
    """A run of a project the user may see; any other is the same 404."""
    from accounts.selectors import projects_for_user

    run = TrainingRun.objects.filter(pk=run_id, project__in=projects_for_user(user)).select_related("project").first()
    if run is None:
        raise NotFound("training_run_not_found", f"No training run {run_id}.")
    return run
