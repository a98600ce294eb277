"""Reads of training: the model registry, training runs and promotions, and each model
version's production accuracy from the audit sample."""


from datetime import UTC, timedelta

from django.db.models import Count, Exists, OuterRef, Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Round, Trunc
from django.utils import timezone

from common.errors import NotFound
from flywheel.ingest.feedback import HUMAN_SOURCES
from flywheel.models import (
    ModelAlias,
    ModelAliasName,
    ModelPromotion,
    ModelVersion,
    Prediction,
    Project,
    ShadowModel,
    ShadowPrediction,
    TrainingRun,
)
from flywheel.training import accuracy, evaluation, live
from labeling import selectors as labeling_selectors

# The label-free estimate judges the last day's predictions, at most this many of them.
LABEL_FREE_WINDOW = timedelta(hours=24)
LABEL_FREE_PREDICTIONS = 50_000


def production_accuracy(*, project: Project) -> list[dict]:
    """Per model version, how accurate it really is, estimated from the random audit sample
    and the labels people gave it (feedback labels are left out: end users see the model's
    answer, so their labels lean towards it). With 95% intervals; per true label, per
    predicted label, per value of each declared metadata slice; and calibration."""
    labeled = dict(labeling_selectors.audit_labels(project_id=project.pk, human_sources=HUMAN_SOURCES))
    # count(*), not count(id): the partial audit index alone answers it (an index-only scan),
    # where counting ids fetched every audited row of all history from the table.
    audited = (Prediction.objects.filter(project=project, audit=True)
               .values("model_version__name").annotate(n=Count("*")))
    sample_size = {row["model_version__name"]: row["n"] for row in audited}
    rows = (Prediction.objects.filter(pk__in=list(labeled)).values_list(
        "id", "model_version__name", "label", "confidence", "metadata", "created_at").order_by("id"))
    by_version: dict[str, list] = {}
    made_at: dict[str, list] = {}
    for pk, version, predicted, confidence, metadata, created_at in rows:
        by_version.setdefault(version, []).append((labeled[pk], predicted, confidence, metadata or {}))
        made_at.setdefault(version, []).append(created_at)
    since = timezone.now() - LABEL_FREE_WINDOW
    recent: dict[str, list[float]] = {}
    for version, confidence in (Prediction.objects.filter(project=project, created_at__gte=since)
                                .order_by("-id").values_list("model_version__name", "confidence")
                                [:LABEL_FREE_PREDICTIONS]):
        recent.setdefault(version, []).append(confidence)
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
            "estimated_accuracy": _label_free(items, made_at.get(version, []), recent.get(version, []), since),
        })
    return out




def _label_free(items: list, made_at: list, recent_confidence: list[float], since) -> dict | None:
    """The last day's accuracy from confidence alone, calibrated on the audit labels of
    predictions made before it (all of them while there are too few), and checked against
    the audit labels of the day itself (all of them while there are none): where those
    disagree beyond both intervals, P(right | confidence) moved, and the estimate says so."""
    older = [item for item, moment in zip(items, made_at, strict=True) if moment < since]
    calibrating = older if len(older) >= accuracy.MIN_CALIBRATION_LABELS else items
    day = [item for item, moment in zip(items, made_at, strict=True) if moment >= since] or items
    return accuracy.label_free_accuracy(
        calibration_confidence=[c for _, _, c, _ in calibrating],
        calibration_correct=[p == t for t, p, _, _ in calibrating],
        confidence=recent_confidence,
        audit=accuracy.accuracy([p for _, p, _, _ in day], [t for t, _, _, _ in day]),
    )


def estimated_accuracy_periods(*, project: Project, current: tuple, reference: tuple) -> dict | None:
    """The label-free estimated accuracy of the model serving most predictions in the
    `current` period (the champion when it served any), over that period and over the
    `reference` one, both from one calibration: the audit labels of predictions made
    before the current period starts (all of them while there are too few). With one map
    the two estimates differ only by the confidences the model gave, which is all a
    label-free estimate can see. None when there is nothing to compare."""
    from flywheel.training.registry import champion_get

    (start, end), (ref_start, ref_end) = current, reference
    served = (Prediction.objects.filter(project=project, created_at__gte=start, created_at__lt=end)
              .values("model_version_id").annotate(n=Count("id")).order_by("-n"))
    served = {row["model_version_id"]: row["n"] for row in served}
    champion = champion_get(project)
    version_id = champion.pk if champion is not None and champion.pk in served else next(iter(served), None)
    if version_id is None:
        return None
    labeled = dict(labeling_selectors.audit_labels(project_id=project.pk, human_sources=HUMAN_SOURCES))
    rows = list(Prediction.objects.filter(pk__in=list(labeled), model_version_id=version_id)
                .values_list("id", "label", "confidence", "created_at"))
    before = [row for row in rows if row[3] < start]
    calibrating = before if len(before) >= accuracy.MIN_CALIBRATION_LABELS else rows

    def period(lower, upper) -> dict | None:
        confidence = list(Prediction.objects.filter(
            project=project, model_version_id=version_id, created_at__gte=lower, created_at__lt=upper)
            .order_by("-id").values_list("confidence", flat=True)[:LABEL_FREE_PREDICTIONS])
        estimate = accuracy.label_free_accuracy(
            calibration_confidence=[c for _, _, c, _ in calibrating],
            calibration_correct=[labeled[pk] == predicted for pk, predicted, _, _ in calibrating],
            confidence=confidence)
        return None if estimate is None else {k: estimate[k] for k in ("value", "low", "high", "predictions")}

    now, then = period(start, end), period(ref_start, ref_end)
    if now is None or then is None:
        return None
    version = ModelVersion.objects.only("name").get(pk=version_id)
    return {"model_version": version.name, "current": now, "reference": then,
            "method": accuracy.CBPE_METHOD, "calibration_labels": len(calibrating)}


# The label-free series: per hour over the last two days, or per day over the last 30 (UTC).
ACCURACY_SERIES = {"hour": (timedelta(hours=1), 48), "day": (timedelta(days=1), 30)}
# Confidences are counted to three decimals, so a period of any size is at most 1,001
# (confidence, count) rows per model version; the isotonic map moves far less over 0.001
# than the estimate's interval is wide.
SERIES_CONFIDENCE_DECIMALS = 3


def estimated_accuracy_series(*, project: Project, by: str = "day", now=None) -> dict:
    """Per model version and period (`by` hour: the last 48 hours; day: the last 30 days,
    UTC), the label-free estimated accuracy of the predictions it made in that period,
    beside the audit estimate of the same period (its labeled audit predictions, Wilson
    interval) and whether the two agree. One calibration per model version, shared by its
    periods: its audit labels, less those of the periods whose own labels contradict the
    map fitted on all of them (beyond both intervals: P(right | confidence) moved there, a
    concept shift), so a shifted period neither bends the others' estimates nor hides
    itself. Periods without predictions are in the series with null figures, so every
    version's points line up. Three queries, whatever the number of predictions."""
    step, count = ACCURACY_SERIES[by]
    now = now or timezone.now()
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if by == "day":
        last = last.replace(hour=0)
    periods = [last - step * i for i in range(count - 1, -1, -1)]
    slot = {period: i for i, period in enumerate(periods)}

    counted = (Prediction.objects.filter(project=project, created_at__gte=periods[0])
               .annotate(period=Trunc("created_at", by, tzinfo=UTC),
                         rounded=Round("confidence", SERIES_CONFIDENCE_DECIMALS))
               .values_list("model_version_id", "period", "rounded").annotate(n=Count("id")).order_by())
    confidence: dict[int, dict[int, tuple[list, list]]] = {}
    for version_id, period, rounded, n in counted:
        if period in slot:
            values, weights = confidence.setdefault(version_id, {}).setdefault(slot[period], ([], []))
            values.append(float(rounded))
            weights.append(n)

    labeled = dict(labeling_selectors.audit_labels(project_id=project.pk, human_sources=HUMAN_SOURCES))
    calibration: dict[int, list] = {}
    for pk, version_id, predicted, conf, created_at in (Prediction.objects.filter(pk__in=list(labeled))
                                                        .values_list("id", "model_version_id", "label", "confidence",
                                                                     "created_at")):
        calibration.setdefault(version_id, []).append((conf, predicted == labeled[pk], created_at))

    names = dict(ModelVersion.objects.filter(pk__in=set(confidence) | set(calibration)).values_list("id", "name"))
    def period_of(moment) -> int | None:
        moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return slot.get(moment.replace(hour=0) if by == "day" else moment)

    versions = []
    for version_id in sorted(confidence, key=lambda pk: names[pk]):
        rows = [(c, ok, period_of(created_at)) for c, ok, created_at in calibration.get(version_id, [])]
        groups = [confidence[version_id].get(i, ([], [])) for i in range(count)]
        audits = [accuracy.wilson(sum(ok for _, ok, p in rows if p == i), sum(1 for _, _, p in rows if p == i))
                  for i in range(count)]

        estimates = _series_estimates(rows, groups)
        contradicted = {i for i, e in enumerate(estimates)
                        if e is not None and accuracy.consistent_with_audit(e, audits[i]) is False}
        kept = [row for row in rows if row[2] not in contradicted]
        if contradicted and len(kept) >= accuracy.MIN_CALIBRATION_LABELS:
            rows = kept
            estimates = _series_estimates(rows, groups)
        points = []
        for i, period in enumerate(periods):
            estimate, audit = estimates[i], audits[i]
            points.append({
                "start": period.isoformat(),
                "predictions": int(sum(groups[i][1])),
                "estimated_accuracy": None if estimate is None else {
                    k: estimate[k] for k in ("value", "low", "high")},
                "audit": audit.as_dict(),
                "consistent_with_audit": None if estimate is None else accuracy.consistent_with_audit(estimate, audit),
            })
        versions.append({"model_version": names[version_id], "method": accuracy.CBPE_METHOD,
                         "calibration_labels": len(rows), "points": points})
    return {"by": by, "since": periods[0].isoformat(), "versions": versions}


def _series_estimates(calibrating: list, groups: list) -> list[dict | None]:
    return accuracy.label_free_accuracy_groups(calibration_confidence=[c for c, _, _ in calibrating],
                                               calibration_correct=[ok for _, ok, _ in calibrating], groups=groups)


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


# --- Shadow mode -----------------------------------------------------------------------------------


def shadow_comparison(*, project: Project, name: str) -> dict:
    """Champion against a shadow model on live traffic, from human labels: how often they
    agree; each one's accuracy on the audit sample (unbiased, with Wilson intervals); and
    the accuracy difference from the labeled disagreements weighted by the rate they were
    drawn at (flywheel.training.live), overall and per declared slice; with the live gate's
    verdict. A fixed number of queries, whatever the traffic."""
    challenger = model_version_get(project=project, name=name)
    pairs = ShadowPrediction.objects.filter(project=project, model_version=challenger)
    by_champion = list(pairs.values("champion_id").annotate(n=Count("id"), agreed=Count("id", filter=Q(agrees=True)))
                       .order_by("-n", "-champion_id")[:1])
    if by_champion:
        champion_id, paired, agreed = by_champion[0]["champion_id"], by_champion[0]["n"], by_champion[0]["agreed"]
        champion = ModelVersion.objects.filter(pk=champion_id).values_list("name", flat=True).first()
        pairs = pairs.filter(champion_id=champion_id)
    else:
        current = ModelAlias.objects.filter(project=project, alias=ModelAliasName.CHAMPION).values_list(
            "model_version__name", flat=True).first()
        champion, paired, agreed = current, 0, 0

    audited = list(pairs.filter(prediction__audit=True).values_list(
        "prediction_id", "label", "prediction__label"))
    drawn = list(pairs.filter(agrees=False, prediction__disagreement__drawn=True).values_list(
        "prediction_id", "label", "prediction__label", "prediction__disagreement__rate", "prediction__metadata"))
    truth = {pid: label.label for pid, label in labeling_selectors.current_labels(
        {row[0] for row in audited} | {row[0] for row in drawn}).items() if label.source in HUMAN_SOURCES}

    audit_labeled = [(shadow_label, served_label, truth[pid]) for pid, shadow_label, served_label in audited
                     if pid in truth]
    labeled_drawn = [row for row in drawn if row[0] in truth]
    # Drawn disagreements wait in the queue in random order (routing.disagreement_priority):
    # those labeled so far are a random share of them, which scales every inclusion probability.
    share = len(labeled_drawn) / len(drawn) if drawn else 0.0

    def outcomes(rows):
        return [(int(shadow_label == truth[pid]) - int(served_label == truth[pid]), rate * share)
                for pid, shadow_label, served_label, rate, _ in rows]

    difference = live.accuracy_difference(paired=paired, labeled=outcomes(labeled_drawn))
    slices = _shadow_slices(project=project, pairs=pairs, labeled=labeled_drawn, outcomes=outcomes)
    gate_policy = evaluation.GatePolicy.from_dict(project.retraining)
    verdict = live.live_verdict(difference=difference, slices=slices, policy=live_gate_policy(project),
                                slice_tolerance=gate_policy.slice_tolerance)
    return {
        "model": challenger.name, "champion": champion, "paired": paired,
        "agreement": agreed / paired if paired else None,
        "labeled": {"audit": len(audit_labeled), "disagreement": len(labeled_drawn)},
        "accuracy": {
            "champion": _interval(accuracy.wilson(sum(s == t for _, s, t in audit_labeled), len(audit_labeled))),
            "challenger": _interval(accuracy.wilson(sum(c == t for c, _, t in audit_labeled), len(audit_labeled))),
        },
        "difference": difference.as_dict(), "p_value": difference.p_value, "slices": slices,
        "verdict": verdict.verdict, "reasons": verdict.reasons,
        "shadow": ShadowModel.objects.filter(project=project, model_version=challenger).select_related(
            "model_version", "training_run").first(),
    }


def shadow_comparisons(*, project: Project, limit: int = 5) -> list[dict]:
    """The comparison of each model in shadow, or with shadow answers, newest first: what
    the ops dashboard shows."""
    answered = ShadowPrediction.objects.filter(model_version=OuterRef("pk"))
    active = ShadowModel.objects.filter(model_version=OuterRef("pk"), state="active")
    names = (ModelVersion.objects.filter(project=project).filter(Exists(answered) | Exists(active))
             .order_by("-created_at", "-id").values_list("name", flat=True)[:limit])
    return [shadow_comparison(project=project, name=name) for name in names]


def live_gate_policy(project: Project) -> live.LiveGatePolicy:
    return live.LiveGatePolicy.from_dict(project.retraining.get("live_gate"))


def _interval(estimate: accuracy.Estimate) -> dict:
    return {"value": estimate.value, "low": estimate.low, "high": estimate.high, "n": estimate.n}


def _shadow_slices(*, project: Project, pairs, labeled: list, outcomes) -> list[dict]:
    """The difference per value of each declared metadata slice: one query per slice key."""
    out = []
    for key in project.slices:
        counts = pairs.annotate(slice_value=KeyTextTransform(key, "prediction__metadata")).values(
            "slice_value").annotate(n=Count("id")).order_by("slice_value")
        for row in counts:
            value = row["slice_value"]
            members = [r for r in labeled if str((r[4] or {}).get(key)) == str(value)]
            difference = live.accuracy_difference(paired=row["n"], labeled=outcomes(members))
            out.append({"key": key, "value": str(value), "paired": row["n"], "labeled": len(members),
                        "difference": difference.as_dict()})
    return out
