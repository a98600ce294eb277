"""Writes of monitoring: hourly profiles, references, drift checks, alerts and webhook
deliveries. Everything here receives what it needs from the caller (a project, values to
count); it never reads predictions itself (flywheel/profiling.py feeds it)."""

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import structlog
from django.db import transaction
from django.utils import timezone

from accounts.services import audit_record
from common import signed_http
from common.enqueue import enqueue_now
from common.errors import DomainError
from common.jobs import Backoff
from monitoring import hooks, selectors, stats
from monitoring.models import (
    AlertState,
    CheckTrigger,
    DeliveryState,
    DriftAlert,
    DriftReport,
    DriftState,
    Profile,
    ProfileSample,
    ProfileSource,
    Reference,
    ReferenceKind,
    ReferenceProfile,
    ReferenceSample,
    WebhookAttempt,
    WebhookDelivery,
)
from monitoring.policy import DriftPolicy

log = structlog.get_logger(__name__)

HOUR = timedelta(hours=1)
LABEL, CONFIDENCE = "label", "confidence"
PRECEDING_WINDOW = timedelta(days=7)
# A check alerts only when it looks at the present: a window that ended longer ago than
# this is history, and history does not page anyone.
ALERT_RECENCY = timedelta(hours=1)
WEBHOOK_MAX_ATTEMPTS = 8
# 30 s after the first failed attempt, doubling, at most an hour.
WEBHOOK_BACKOFF = Backoff(base_seconds=30, max_seconds=3600)
WEBHOOK_TASK = "monitoring.webhook_deliver"
WEBHOOK_LEASE = timedelta(seconds=signed_http.TIMEOUT_SECONDS + 30)


# --- Per-project state and grids ---------------------------------------------------------------


def drift_state_lock(*, project_id: int, skip_locked: bool = False) -> DriftState | None:
    """The project's monitoring row, locked until the end of the caller's transaction (None
    with skip_locked when another transaction holds it)."""
    DriftState.objects.get_or_create(project_id=project_id)
    return DriftState.objects.select_for_update(skip_locked=skip_locked).filter(project_id=project_id).first()


@dataclass
class Observations:
    """Values to count, one entry per prediction (or training row) in every sequence.
    `created_at` places predictions in their hour (not needed for a reference);
    `confidence` may be None (training data has none)."""

    label: Sequence[str | None]
    features: Mapping[str, Sequence]
    confidence: Sequence[float | None] | None = None
    created_at: Sequence[datetime] | None = None
    # The same as hours since the epoch (created_at // 3600 s), when the caller has them.
    hours: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.label)


def _floats(values: Sequence) -> np.ndarray:
    """Numbers as floats, anything else (None, a stray string) as missing."""
    try:
        return np.array(values, dtype=float)  # None becomes NaN
    except (TypeError, ValueError):
        return np.array([v if isinstance(v, int | float) and not isinstance(v, bool) else np.nan for v in values],
                        dtype=float)


def _strings(values: Sequence) -> list[str | None]:
    return [None if v is None else v if isinstance(v, str) else str(v) for v in values]


@dataclass(frozen=True)
class Field:
    """One profiled field with its fine grid."""

    source: str
    name: str
    type: str  # numeric | categorical
    grid: stats.AsinhGrid | stats.LinearGrid | None = None
    vocabulary: stats.Vocabulary | None = None

    @property
    def size(self) -> int:
        if self.grid is not None:
            return self.grid.size
        if self.vocabulary is not None:
            return self.vocabulary.size
        return 1  # no values seen yet: only the missing bin

    def index(self, values: Sequence) -> np.ndarray:
        if self.type == "categorical":
            return self.vocabulary.index(_strings(values))
        x = _floats(values)
        if self.grid is None:
            return np.zeros(len(x), dtype=np.int64)
        return self.grid.index(x)


def fields_from_grids(grids: Mapping, schema: Sequence[Mapping]) -> list[Field]:
    """The fields a project profiles, in report order: its features, then label and confidence."""
    out = []
    features = grids.get("feature", {})
    for feature in schema:
        name, type_ = feature["name"], feature["type"]
        entry = features.get(name)
        if type_ == "categorical":
            out.append(Field(ProfileSource.FEATURE, name, type_,
                             vocabulary=stats.Vocabulary((entry or {}).get("categories", []))))
        else:
            grid = stats.grid_from_dict(entry) if entry and "grid" in entry else None
            out.append(Field(ProfileSource.FEATURE, name, "numeric", grid=grid))
    prediction = grids.get("prediction", {})
    out.append(Field(ProfileSource.PREDICTION, LABEL, "categorical",
                     vocabulary=stats.Vocabulary(prediction.get(LABEL, {}).get("categories", []))))
    confidence = prediction.get(CONFIDENCE)
    out.append(Field(ProfileSource.PREDICTION, CONFIDENCE, "numeric",
                     grid=stats.grid_from_dict(confidence) if confidence else stats.LinearGrid()))
    return out


def _grids_settle(grids: dict, *, schema: Sequence[Mapping], labels: Sequence[str],
                  observations: Observations) -> bool:
    """Make the grids these values need: a numeric feature's grid from the first values
    it is seen with (the profiler waits for a sample of them, see flywheel/profiling.py);
    new categories appended. Returns whether anything changed."""
    changed = False
    features = grids.setdefault("feature", {})
    for feature in schema:
        name, type_ = feature["name"], feature["type"]
        values = observations.features.get(name)
        if type_ == "categorical":
            entry = features.setdefault(name, {"type": "categorical", "categories": []})
            vocabulary = stats.Vocabulary(entry["categories"])
            if values is not None and vocabulary.learn(_strings(values)):
                entry["categories"] = vocabulary.categories
                changed = True
        elif name not in features and values is not None:
            grid = stats.AsinhGrid.from_sample(_floats(values))
            if grid is not None:
                features[name] = {"type": "numeric", **grid.as_dict()}
                changed = True
    prediction = grids.setdefault("prediction", {})
    label_entry = prediction.setdefault(LABEL, {"type": "categorical", "categories": []})
    vocabulary = stats.Vocabulary(label_entry["categories"])
    # The project's label set first, in its order: bins read like the project page.
    if vocabulary.learn(list(labels)) | vocabulary.learn(_strings(observations.label)):
        label_entry["categories"] = vocabulary.categories
        changed = True
    if CONFIDENCE not in prediction:
        prediction[CONFIDENCE] = {"type": "numeric", **stats.LinearGrid().as_dict()}
        changed = True
    return changed


def grids_made(*, project_id: int) -> bool:
    """Whether the project's grids were made (by its first profiling, or by a reference
    from training data). Before that the profiler waits for a fair sample; after it, a
    feature first seen later gets its grid from the values it arrives with."""
    state = DriftState.objects.filter(project_id=project_id).only("grids").first()
    return bool(state and state.grids.get("prediction"))


def _field_values(field: Field, observations: Observations) -> Sequence | None:
    if field.source == ProfileSource.PREDICTION:
        return observations.label if field.name == LABEL else observations.confidence
    return observations.features.get(field.name)


# --- Samples of rows, for joint drift ------------------------------------------------------------

# Rows an hour keeps (a window's sample is drawn from its hours' samples, see
# selectors.window_sample), and rows a reference keeps: twice a check's default sample,
# since a check fits on half of them and compares the window with the other half.
HOUR_SAMPLE = 1_000
REFERENCE_SAMPLE = 10_000
_sample_random = np.random.default_rng()


def numeric_features(schema: Sequence[Mapping]) -> list[str]:
    return [feature["name"] for feature in schema if feature["type"] != "categorical"]


def feature_matrix(observations: Observations, names: Sequence[str]) -> np.ndarray:
    """The numeric features as rows x features, float32, missing values NaN."""
    n = len(observations)
    columns = [_floats(observations.features.get(name) or [None] * n) for name in names]
    return np.column_stack(columns).astype(np.float32) if columns else np.empty((n, 0), dtype=np.float32)


def _samples_add(*, project_id: int, names: list[str], matrix: np.ndarray, hour_of: np.ndarray,
                 hours: list[datetime]) -> None:
    keys = _sample_random.random(len(matrix))
    existing = {row.hour: row for row in ProfileSample.objects.filter(project_id=project_id, hour__in=hours)}
    created, updated = [], []
    for number, hour in enumerate(hours):
        mine = hour_of == number
        hour_keys, hour_rows, seen = keys[mine], matrix[mine], int(mine.sum())
        row = existing.get(hour)
        if row is not None:
            old_keys, old_rows = selectors.sample_decode(row)
            hour_keys = np.concatenate([old_keys, hour_keys])
            hour_rows = np.concatenate([selectors.sample_align(old_rows, row.names, names), hour_rows])
            seen += row.seen
        keep = np.argsort(hour_keys, kind="stable")[:HOUR_SAMPLE]
        values = {"names": names, "seen": seen, "keys": hour_keys[keep].astype(np.float64).tobytes(),
                  "rows": np.ascontiguousarray(hour_rows[keep], dtype=np.float32).tobytes()}
        if row is None:
            created.append(ProfileSample(project_id=project_id, hour=hour, **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
            updated.append(row)
    ProfileSample.objects.bulk_create(created, batch_size=500)
    ProfileSample.objects.bulk_update(updated, ["names", "seen", "keys", "rows"], batch_size=500)


# --- Profiles ------------------------------------------------------------------------------------


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime) -> datetime:
    floor = _hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def profiles_add(*, state: DriftState, schema: Sequence[Mapping], labels: Sequence[str],
                 observations: Observations) -> int:
    """Count predictions into their hours' profiles. The caller holds `state` locked and
    marks the predictions profiled in the same transaction: that is what makes every
    prediction counted exactly once (flywheel/profiling.py)."""
    n = len(observations)
    if n == 0:
        return 0
    if _grids_settle(state.grids, schema=schema, labels=labels, observations=observations):
        DriftState.objects.filter(pk=state.pk).update(grids=state.grids, updated_at=timezone.now())
    if observations.hours is not None:
        keys = np.asarray(observations.hours, dtype=np.int64)
    else:
        keys = (np.fromiter((m.timestamp() for m in observations.created_at), dtype=float, count=n) // 3600)
    hour_keys, hour_of = np.unique(keys.astype(np.int64), return_inverse=True)
    hours = [datetime.fromtimestamp(int(key) * 3600, UTC) for key in hour_keys]

    existing = {
        (row.hour, row.source, row.name): row
        for row in Profile.objects.filter(project_id=state.project_id, hour__in=hours)
    }
    created, updated = [], []
    for field in fields_from_grids(state.grids, schema):
        values = _field_values(field, observations)
        if values is None:
            values = [None] * n
        size = field.size
        counts = np.bincount(hour_of * size + field.index(values), minlength=len(hours) * size)
        counts = counts.reshape(len(hours), size)
        for number, hour in enumerate(hours):
            add = counts[number]
            total = int(add.sum())
            if total == 0:
                continue
            row = existing.get((hour, field.source, field.name))
            if row is None:
                created.append(Profile(project_id=state.project_id, hour=hour, source=field.source, name=field.name,
                                       count=total, bins=stats.sparse_encode(add)))
            else:
                merged = stats.padded(stats.sparse_sum([bytes(row.bins)], size), size) + stats.padded(add, size)
                row.count += total
                row.bins = stats.sparse_encode(merged)
                updated.append(row)
    Profile.objects.bulk_create(created, batch_size=1000)
    Profile.objects.bulk_update(updated, ["count", "bins"], batch_size=1000)
    names = numeric_features(schema)
    if len(names) >= 2:
        _samples_add(project_id=state.project_id, names=names, matrix=feature_matrix(observations, names),
                     hour_of=hour_of, hours=hours)
    return n


def profiles_clear(*, state: DriftState) -> int:
    """Forget a project's profiles (the rebuild command counts them again, in the same
    transaction). The grids stay: references are counted on them."""
    deleted, _ = Profile.objects.filter(project_id=state.project_id).delete()
    ProfileSample.objects.filter(project_id=state.project_id).delete()
    return deleted


# --- References ----------------------------------------------------------------------------------


def _reference_store(*, project, kind: str, histograms: Mapping[tuple[str, str], np.ndarray], count: int,
                     actor, window_start=None, window_end=None, dataset_version=None, model_version: str = "",
                     note: str = "", sample: tuple[list[str], np.ndarray] | None = None) -> Reference:
    Reference.objects.filter(project=project, is_current=True).update(is_current=False)
    reference = Reference.objects.create(
        project=project, kind=kind, window_start=window_start, window_end=window_end,
        dataset_version=dataset_version, model_version=model_version, count=count, note=note[:500],
        set_by=actor if getattr(actor, "pk", None) else None,
        set_by_name=getattr(actor, "username", None) or "system",
    )
    ReferenceProfile.objects.bulk_create(
        ReferenceProfile(reference=reference, source=source, name=name, count=int(counts.sum()),
                         bins=stats.sparse_encode(counts))
        for (source, name), counts in histograms.items() if counts.sum() > 0
    )
    if sample is not None and len(sample[1]):
        ReferenceSample.objects.create(reference=reference, names=sample[0],
                                       rows=np.ascontiguousarray(sample[1], dtype=np.float32).tobytes())
    details = {"kind": kind, "count": count, "reference_id": reference.pk}
    if window_start is not None:
        details.update(start=window_start.isoformat(), end=window_end.isoformat())
    if dataset_version is not None:
        details["dataset_version"] = dataset_version
    audit_record(actor=actor, action="drift.reference_set", project=project, target=project.slug, details=details)
    log.info("drift.reference_set", project=project.slug, kind=kind, count=count, reference=reference.pk)
    return reference


def reference_set_window(*, project, start: datetime, end: datetime, actor=None, note: str = "") -> Reference:
    """Make a window of production predictions the reference. Its histograms are the sum of
    the window's hourly profiles, frozen now: predictions that arrive later for that
    window do not move it."""
    start, end = _hour_floor(start), _hour_ceil(end)
    if end <= start:
        raise DomainError("invalid", "The window must end after it starts.", fields={"end": ["Must be after start."]})
    hooks.profiles_sync(project_id=project.pk)
    with transaction.atomic():
        drift_state_lock(project_id=project.pk)
        window = selectors.window_histograms(project_id=project.pk, start=start, end=end)
        if window.count == 0:
            raise DomainError("reference_empty",
                              f"No predictions were made between {start.isoformat()} and {end.isoformat()}; "
                              "choose a window with predictions.", status_code=409)
        names = numeric_features(project.features)
        sample = (names, selectors.window_sample(project_id=project.pk, start=start, end=end, names=names,
                                                 limit=REFERENCE_SAMPLE))
        return _reference_store(project=project, kind=ReferenceKind.WINDOW, histograms=window.fields,
                                count=window.count, actor=actor, window_start=start, window_end=end, note=note,
                                sample=sample)


def reference_set_from_data(*, project, observations: Observations, actor=None, dataset_version: int | None = None,
                            model_version: str = "", note: str = "") -> Reference:
    """Make rows handed in the reference: the data a model was trained on (flywheel calls
    this with a dataset version's rows). `observations.label` are the training labels;
    there is no confidence. When the project has no grids yet, the training data makes
    them, which is the best sample there is."""
    if len(observations) == 0:
        raise DomainError("reference_empty", "The reference data has no rows.", status_code=409)
    with transaction.atomic():
        state = drift_state_lock(project_id=project.pk)
        if _grids_settle(state.grids, schema=project.features, labels=project.labels, observations=observations):
            DriftState.objects.filter(pk=state.pk).update(grids=state.grids, updated_at=timezone.now())
        histograms = {}
        for field in fields_from_grids(state.grids, project.features):
            values = _field_values(field, observations)
            if values is not None:
                histograms[(field.source, field.name)] = stats.histogram(field.index(values), field.size)
        kind = ReferenceKind.TRAINING_DATA if dataset_version is None else ReferenceKind.DATASET_VERSION
        names = numeric_features(project.features)
        rows = feature_matrix(observations, names)
        if len(rows) > REFERENCE_SAMPLE:
            rows = rows[np.sort(_sample_random.choice(len(rows), REFERENCE_SAMPLE, replace=False))]
        return _reference_store(project=project, kind=kind, histograms=histograms, count=len(observations),
                                actor=actor, dataset_version=dataset_version, model_version=model_version,
                                note=note, sample=(names, rows))


# --- Checks ----------------------------------------------------------------------------------------


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _comparison_json(comparison: stats.Comparison) -> dict:
    return {
        "name": comparison.name, "type": comparison.type, "statistic": comparison.statistic,
        "value": _finite(comparison.value),
        "p_value": _finite(comparison.p_value), "p_value_adjusted": _finite(comparison.p_value_adjusted),
        "test": comparison.test, "threshold": _finite(comparison.threshold), "drifted": comparison.drifted,
        "reason": "missing_share" if comparison.drifted and comparison.extra.get("missing_shifted")
        else comparison.reason, "count": comparison.count, "reference_count": comparison.reference_count,
        "statistics": {
            "psi": _finite(comparison.psi), "js_distance": _finite(comparison.js), "chi2": _finite(comparison.chi2),
            "chi2_p": _finite(comparison.chi2_p), "ks": _finite(comparison.ks), "ks_p": _finite(comparison.ks_p),
            "wasserstein_normalized": _finite(comparison.wasserstein),
        },
        "histogram": {"bins": comparison.labels, "reference": comparison.reference_hist,
                      "current": comparison.current_hist,
                      **({"edges": [_finite(e) for e in comparison.edges]} if comparison.edges else {})},
    }


def _compare(field: Field, reference: np.ndarray, current: np.ndarray, policy: DriftPolicy) -> stats.Comparison:
    if field.type == "categorical":
        return stats.compare_categorical(field.name, reference, current, field.vocabulary.categories)
    grid = field.grid or stats.AsinhGrid(0.0, 1.0)  # no values seen yet: only the missing bin is used
    size = max(grid.size, len(reference), len(current))
    return stats.compare_numeric(field.name, stats.padded(reference, size), stats.padded(current, size),
                                 grid.edges(), policy.numeric_bins)


def _default_window(now: datetime, policy: DriftPolicy) -> tuple[datetime, datetime]:
    end = _hour_ceil(now)
    return end - timedelta(hours=policy.window_hours), end


def drift_check_run(*, project, start: datetime | None = None, end: datetime | None = None,
                    trigger: str = CheckTrigger.ON_DEMAND, actor=None, now: datetime | None = None,
                    sync: bool = True) -> DriftReport:
    """Compare a window (default: the policy's last 24 hours) with the reference, store the
    report, and raise or settle the project's alert. Windows are whole UTC hours: the
    start is rounded down and the end up."""
    started = time.perf_counter()
    now = now or timezone.now()
    policy = DriftPolicy.from_dict(project.drift)
    if start is None and end is None:
        start, end = _default_window(now, policy)
    else:
        end = _hour_ceil(end or now)
        start = _hour_floor(start) if start else end - timedelta(hours=policy.window_hours)
    if end <= start:
        raise DomainError("invalid", "The window must end after it starts.", fields={"end": ["Must be after start."]})
    if sync:
        hooks.profiles_sync(project_id=project.pk)

    state = DriftState.objects.filter(project_id=project.pk).first()
    fields = fields_from_grids(state.grids if state else {}, project.features)
    window = selectors.window_histograms(project_id=project.pk, start=start, end=end)
    reference = Reference.objects.filter(project=project, is_current=True).first()
    if reference is not None:
        reference_fields = selectors.reference_histograms(reference=reference)
        reference_info = selectors.reference_info(reference)
    else:
        preceding = selectors.window_histograms(project_id=project.pk, start=start - PRECEDING_WINDOW, end=start)
        reference_fields = preceding.fields
        reference_info = {"id": None, "kind": ReferenceKind.PRECEDING_WINDOW, "count": preceding.count,
                          "start": (start - PRECEDING_WINDOW).isoformat(), "end": start.isoformat()}

    empty = np.zeros(1, dtype=np.int64)
    comparisons = [
        _compare(field, reference_fields.get((field.source, field.name), empty),
                 window.fields.get((field.source, field.name), empty), policy)
        for field in fields
    ]
    stats.judge(comparisons, policy.judge_policy())
    results = [_comparison_json(c) for c in comparisons]
    feature_results, label_result, confidence_result = results[:-2], results[-2], results[-1]
    multivariate, outliers = _multivariate(project=project, reference=reference, start=start, end=end,
                                           policy=policy)
    accuracy = _accuracy_drop(project=project, reference=reference, start=start, end=end, policy=policy)
    drifted = (any(r["drifted"] for r in results) or bool(multivariate and multivariate["drifted"])
               or bool(accuracy and accuracy["drifted"]))

    with transaction.atomic():
        drift_state_lock(project_id=project.pk)
        report = DriftReport.objects.create(
            project=project, created_at=now, trigger=trigger,
            requested_by=actor if getattr(actor, "pk", None) else None,
            window_start=start, window_end=end, window_count=window.count, reference=reference,
            reference_info=reference_info, drifted=drifted, features=feature_results, prediction=label_result,
            confidence=confidence_result, multivariate=multivariate, accuracy=accuracy,
            policy={**policy.judge_policy().__dict__, **policy.multivariate_policy(),
                    "accuracy_drop": policy.accuracy_drop},
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        if end >= now - ALERT_RECENCY:
            alert = _alert_settle(project=project, report=report, policy=policy, now=now, outliers=outliers)
            if alert is not None:
                DriftReport.objects.filter(pk=report.pk).update(alert=alert)
                report.alert = alert
    log.info("drift.check_finished", project=project.slug, report=report.pk, trigger=trigger, drifted=drifted,
             drifted_fields=[r["name"] for r in results if r["drifted"]], window_count=window.count,
             duration_ms=round(report.duration_ms, 1))
    return report


def _multivariate(*, project, reference: Reference | None, start: datetime, end: datetime,
                  policy: DriftPolicy) -> tuple[dict | None, dict | None]:
    """Joint drift of the numeric features: the window's random sample against the
    reference's (or the preceding week's); None when the policy turns it off. And, when
    it drifted and on_drift routes drifted traffic, the model that tells a single row
    that does not fit the reference (stats.outlier_model), for routing."""
    if not policy.multivariate:
        return None, None
    names = numeric_features(project.features)
    if reference is not None:
        stored = ReferenceSample.objects.filter(reference=reference).first()
        reference_rows = (selectors.sample_align(selectors.reference_sample_rows(stored), stored.names, names)
                          if stored is not None else np.empty((0, len(names))))
    else:
        reference_rows = selectors.window_sample(project_id=project.pk, start=start - PRECEDING_WINDOW, end=start,
                                                 names=names, limit=2 * policy.multivariate_sample)
    current_rows = selectors.window_sample(project_id=project.pk, start=start, end=end, names=names,
                                           limit=policy.multivariate_sample)
    result = stats.multivariate_pca(reference_rows.astype(float), current_rows.astype(float), names,
                                    threshold=policy.multivariate_threshold, alpha=policy.multivariate_alpha)
    out = result.as_dict()
    out["value"], out["p_value"] = _finite(out["value"]), _finite(out["p_value"])
    outliers = None
    if result.drifted and policy.on_drift_policy().route_drifted:
        outliers = stats.outlier_model(reference_rows.astype(float), names)
    return out, outliers


ESTIMATED_ACCURACY = "estimated_accuracy"


def _accuracy_drop(*, project, reference: Reference | None, start: datetime, end: datetime,
                   policy: DriftPolicy) -> dict | None:
    """Whether the label-free estimated accuracy fell by more than the policy's
    accuracy_drop from the reference period (the reference's window when it has one, else
    as long a period right before the window) to the window. None when it cannot be told
    (no audit labels to calibrate on, no predictions in either period)."""
    if reference is not None and reference.window_start and reference.window_end:
        reference_period = (reference.window_start, reference.window_end)
    else:
        reference_period = (start - (end - start), start)
    estimate = hooks.estimated_accuracy(project=project, current=(start, end), reference=reference_period)
    if estimate is None:
        return None
    drop = estimate["reference"]["value"] - estimate["current"]["value"]
    return {"name": ESTIMATED_ACCURACY, "type": "accuracy", "statistic": "accuracy_drop", "value": _finite(drop),
            "threshold": policy.accuracy_drop, "p_value": None, "drifted": bool(drop > policy.accuracy_drop),
            "model_version": estimate["model_version"], "method": estimate["method"],
            "current": estimate["current"], "reference": estimate["reference"],
            "reference_window": {"start": reference_period[0].isoformat(), "end": reference_period[1].isoformat()}}


def drift_checks_run_due(*, now: datetime | None = None) -> list[int]:
    """The beat's hourly checks: one per project and interval slot (by default each clock
    hour), so a beat that fires twice, or a task run twice, checks once."""
    now = now or timezone.now()
    done = []
    for project_id in DriftState.objects.order_by("project_id").values_list("project_id", flat=True):
        with transaction.atomic():
            state = DriftState.objects.select_for_update(skip_locked=True).filter(project_id=project_id).first()
            if state is None:
                continue  # another worker is on it
            project = state.project
            policy = DriftPolicy.from_dict(project.drift)
            slot = timedelta(minutes=max(1, policy.check_interval_minutes)).total_seconds()
            last = state.last_scheduled_check_at
            if not policy.schedule or (last is not None and last.timestamp() // slot >= now.timestamp() // slot):
                continue
            report = drift_check_run(project=project, trigger=CheckTrigger.SCHEDULED, now=now, sync=False)
            DriftState.objects.filter(pk=state.pk).update(last_scheduled_check_at=now)
            done.append(report.pk)
    return done


# --- Alerts ----------------------------------------------------------------------------------------


def _drifted_fields(report: DriftReport) -> list[dict]:
    return [r for r in [*report.features, report.prediction, report.confidence or {}, report.multivariate or {},
                        report.accuracy or {}] if r.get("drifted")]


# Per drifted feature, how many of the bins that grew are routed (on_drift.route_drifted).
GROWN_BINS_PER_FEATURE = 2


def alert_actions(*, report: DriftReport, policy: DriftPolicy, outliers: dict | None = None) -> dict:
    """What the loop does while this report's alert is open, as the drift policy's
    on_drift says: the raised audit rate, the regions that grew in the report's drifted
    features, and, when the report found joint drift, its multivariate outliers (in
    words here: the model that finds them, `outliers`, is stored beside, on the alert).
    Re-read on every report, so the routing follows the drift."""
    on_drift = policy.on_drift_policy()
    if not on_drift.active:
        return {}
    regions = []
    if on_drift.route_drifted:
        for result in report.features:
            if result.get("drifted"):
                histogram = result["histogram"]
                regions += stats.grown_regions(name=result["name"], type_=result["type"], bins=histogram["bins"],
                                               reference=histogram["reference"], current=histogram["current"],
                                               edges=histogram.get("edges"), top=GROWN_BINS_PER_FEATURE)
    actions = {"boost_audit_rate": on_drift.boost_audit_rate, "route_drifted": on_drift.route_drifted,
               "regions": regions}
    if on_drift.route_drifted and outliers is not None:
        actions["outliers"] = {"features": outliers["features"], "level": outliers["level"],
                               "threshold": outliers["threshold"]}
    return actions


def _alert_settle(*, project, report: DriftReport, policy: DriftPolicy, now: datetime,
                  outliers: dict | None = None) -> DriftAlert | None:
    """Open, extend or resolve the project's drift episode; returns the alert when this
    report raises it (new drift, or a field not alerted on before), None otherwise. The
    caller holds the project's drift state locked."""
    alert = DriftAlert.objects.filter(project=project, state=AlertState.OPEN).first()
    drifted = [r["name"] for r in _drifted_fields(report)]
    if not drifted:
        if alert is not None:
            DriftAlert.objects.filter(pk=alert.pk).update(state=AlertState.RESOLVED, resolved_by=report,
                                                          resolved_at=now, last_report=report, updated_at=now)
            log.info("drift.resolved", project=project.slug, alert=alert.pk, report=report.pk)
        return None
    actions = alert_actions(report=report, policy=policy, outliers=outliers)
    outlier_model = outliers if "outliers" in actions else None
    if alert is None:
        alert = DriftAlert.objects.create(project=project, features=drifted, opened_by=report, last_report=report,
                                          actions=actions, outlier_model=outlier_model)
        new = drifted
    else:
        new = [name for name in drifted if name not in alert.features]
        alert.features = alert.features + new
        alert.last_report = report
        alert.actions = actions
        alert.outlier_model = outlier_model
        alert.save(update_fields=["features", "last_report", "actions", "outlier_model", "updated_at"])
        if not new:
            log.info("drift.persists", project=project.slug, alert=alert.pk, report=report.pk, fields=drifted)
            return None
    log.warning("drift.alert", project=project.slug, alert=alert.pk, report=report.pk, fields=drifted,
                new_fields=new, webhook=bool(policy.webhook_url))
    if policy.webhook_url:
        delivery = _webhook_delivery_create(project=project, alert=alert, report=report, new_fields=new,
                                            policy=policy, now=now)
        transaction.on_commit(lambda: _webhook_enqueue(delivery.pk))
    return alert


def _webhook_payload(*, project, alert: DriftAlert, report: DriftReport, new_fields: list[str]) -> dict:
    drifted = _drifted_fields(report)
    return {
        "event": "drift.detected",
        "project": project.slug,
        "alert": {"id": alert.pk, "opened_at": alert.created_at.isoformat(), "fields": alert.features,
                  "new_fields": new_fields, "actions": alert.actions},
        "report": {
            "id": report.pk, "created_at": report.created_at.isoformat(),
            "window": {"start": report.window_start.isoformat(), "end": report.window_end.isoformat(),
                       "count": report.window_count},
            "reference": report.reference_info,
            "drifted": [{k: r[k] for k in ("name", "type", "statistic", "value", "threshold", "p_value")}
                        for r in drifted],
        },
        "dashboard": f"/ops/{project.slug}/",
    }


def _webhook_delivery_create(*, project, alert, report, new_fields, policy: DriftPolicy, now) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        project=project, alert=alert, report=report, event="drift.detected", url=policy.webhook_url,
        payload=_webhook_payload(project=project, alert=alert, report=report, new_fields=new_fields),
        next_attempt_at=now,
    )


def _webhook_enqueue(delivery_id: int) -> None:
    # A broker that is away only delays it: the beat's retry sweep sends due deliveries.
    enqueue_now(WEBHOOK_TASK, delivery_id)


def webhook_backoff(attempts: int) -> timedelta:
    """Wait before the next try after `attempts` tries: 30 s doubling, at most an hour."""
    return timedelta(seconds=WEBHOOK_BACKOFF.seconds(attempts - 1))


def webhook_delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Try one delivery if it is due and nobody else is sending it; record the attempt and
    schedule the next one (capped exponential backoff) or settle it. Returns the delivery
    as it ends up, or None when there was nothing to do."""
    now = now or timezone.now()
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .select_related("project")
            .filter(pk=delivery_id, state=DeliveryState.PENDING, next_attempt_at__lte=now)
            .first()
        )
        if delivery is None or (delivery.lease_expires_at is not None and delivery.lease_expires_at > now):
            return None
        delivery.attempts += 1
        delivery.lease_expires_at = now + WEBHOOK_LEASE
        delivery.save(update_fields=["attempts", "lease_expires_at", "updated_at"])

    # Outside any transaction: a slow receiver holds no database lock; the lease keeps
    # other workers off it meanwhile.
    secret = DriftPolicy.from_dict(delivery.project.drift).webhook_secret
    started_at = timezone.now()
    if secret:
        result = signed_http.send(url=delivery.url, body=orjson.dumps(delivery.payload), secret=secret,
                                  event=delivery.event, delivery_id=delivery.pk)
    else:
        result = signed_http.SendResult(None, "refused: the drift policy has no webhook_secret to sign with", 0.0)
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery, number=delivery.attempts, started_at=started_at, duration_ms=result.duration_ms,
            status_code=result.status_code, error=result.error, succeeded=result.succeeded,
        )
        delivery.lease_expires_at = None
        delivery.last_error = result.error
        if result.succeeded:
            delivery.state = DeliveryState.DELIVERED
            delivery.delivered_at = timezone.now()
        elif result.retryable and delivery.attempts < WEBHOOK_MAX_ATTEMPTS:
            delivery.next_attempt_at = now + webhook_backoff(delivery.attempts)
        else:
            delivery.state = DeliveryState.FAILED
        delivery.save(update_fields=["state", "delivered_at", "next_attempt_at", "lease_expires_at", "last_error",
                                     "updated_at"])
    event = {DeliveryState.DELIVERED: "webhook.delivered", DeliveryState.FAILED: "webhook.failed"}.get(
        delivery.state, "webhook.retry_scheduled")
    getattr(log, "info" if delivery.state == DeliveryState.DELIVERED else "warning")(
        event, project=delivery.project.slug, delivery=delivery.pk, attempt=delivery.attempts,
        status_code=result.status_code, error=result.error or None,
        next_attempt_at=delivery.next_attempt_at.isoformat() if delivery.state == DeliveryState.PENDING else None,
    )
    return delivery


def webhook_deliveries_due(*, now: datetime | None = None, limit: int = 100) -> list[int]:
    now = now or timezone.now()
    return list(
        WebhookDelivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    )
