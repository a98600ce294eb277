"""Reads of ingested predictions: one prediction with what became of it, and end users' feedback rates."""

from datetime import timedelta

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from common.errors import Gone, NotFound
from flywheel.models import Feedback, Prediction, Project
from flywheel.retention.selectors import archived_prediction_locate
from labeling import selectors as labeling_selectors


def prediction_detail(*, project: Project, external_id: str) -> Prediction:
    """A prediction with its tasks, current task, resolved label and feedback attached."""
    prediction = (
        Prediction.objects.select_related("model_version")
        .filter(project=project, external_id=external_id)
        .first()
    )
    if prediction is None:
        archived = archived_prediction_locate(project=project, external_id=external_id)
        if archived is not None:
            raise Gone("archived", f"Prediction '{external_id}' was archived and removed from the database; its row "
                                   f"is in {archived['uri']}.", details={"archive": archived})
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
