"""Reads of monitoring: window histograms summed from hourly profiles, references, reports
and alerts, and the figures the ops dashboard draws."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import psycopg
from django.db import connection
from django.utils import timezone

from monitoring import stats
from monitoring.models import (
    AlertState,
    DriftAlert,
    DriftReport,
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


@dataclass
class WindowHistograms:
    count: int = 0
    fields: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def _profile_rows(project_id: int, start: datetime, end: datetime):
    """(source, name, count, bins) of the hours in [start, end). On PostgreSQL one prepared
    statement with binary results: a month of profiles is ~20,000 rows and 20 MB, where
    the ORM's text protocol and server-side cursor took five times longer."""
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(_PROFILE_ROWS_SQL, [project_id, start, end], binary=True, prepare=True)
            return cursor.fetchall()
    return list(Profile.objects.filter(project_id=project_id, hour__gte=start, hour__lt=end)
                .values_list("source", "name", "count", "bins"))


_PROFILE_ROWS_SQL = (f"SELECT source, name, count, bins FROM {Profile._meta.db_table} "
                     "WHERE project_id = %s AND hour >= %s AND hour < %s")


def window_histograms(*, project_id: int, start: datetime, end: datetime) -> WindowHistograms:
    """Every field's fine histogram over [start, end): the sum of the hours' profiles. One
    query; the work grows with hours x fields, never with predictions."""
    blobs: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    count = 0
    for source, name, n, bins in _profile_rows(project_id, start, end):
        blobs[(source, name)].append(bytes(bins))
        if source == ProfileSource.PREDICTION and name == "label":
            count += n  # every prediction has a label
    return WindowHistograms(count=count, fields={key: stats.sparse_sum(parts) for key, parts in blobs.items()})


def sample_decode(row: ProfileSample) -> tuple[np.ndarray, np.ndarray]:
    keys = np.frombuffer(bytes(row.keys), dtype=np.float64)
    rows = np.frombuffer(bytes(row.rows), dtype=np.float32).reshape(len(keys), len(row.names))
    return keys, rows


def reference_sample_rows(sample: ReferenceSample) -> np.ndarray:
    return np.frombuffer(bytes(sample.rows), dtype=np.float32).reshape(-1, len(sample.names))


def sample_align(rows: np.ndarray, names: list[str], wanted: list[str]) -> np.ndarray:
    """Rows with their columns put in `wanted` order; a feature they lack is missing."""
    if list(names) == list(wanted):
        return rows
    out = np.full((len(rows), len(wanted)), np.nan, dtype=np.float32)
    position = {name: i for i, name in enumerate(names)}
    for j, name in enumerate(wanted):
        if name in position:
            out[:, j] = rows[:, position[name]]
    return out


def window_sample(*, project_id: int, start: datetime, end: datetime, names: list[str],
                  limit: int) -> np.ndarray:
    """A uniform random sample of at most `limit` of the window's predictions (numeric
    features in `names` order): the rows with the smallest random keys among its hours'
    samples. Exact while no hour holds more than its share of the sample (HOUR_SAMPLE
    rows each, see services)."""
    keys, rows = [], []
    for row in ProfileSample.objects.filter(project_id=project_id, hour__gte=start, hour__lt=end):
        hour_keys, hour_rows = sample_decode(row)
        keys.append(hour_keys)
        rows.append(sample_align(hour_rows, row.names, names))
    if not keys:
        return np.empty((0, len(names)), dtype=np.float32)
    keys, rows = np.concatenate(keys), np.concatenate(rows)
    return rows[np.argsort(keys, kind="stable")[:limit]]


def reference_histograms(*, reference: Reference) -> dict[tuple[str, str], np.ndarray]:
    rows = ReferenceProfile.objects.filter(reference=reference).values_list("source", "name", "bins")
    return {(source, name): stats.sparse_sum([bytes(bins)]) for source, name, bins in rows}


def reference_info(reference: Reference) -> dict:
    info = {"id": reference.pk, "kind": reference.kind, "count": reference.count,
            "set_by": reference.set_by_name, "set_at": reference.created_at.isoformat()}
    if reference.kind == ReferenceKind.WINDOW:
        info.update(start=reference.window_start.isoformat(), end=reference.window_end.isoformat())
    if reference.dataset_version is not None:
        info["dataset_version"] = reference.dataset_version
    if reference.model_version:
        info["model_version"] = reference.model_version
    if reference.note:
        info["note"] = reference.note
    return info


def reference_current(*, project) -> Reference | None:
    return Reference.objects.filter(project=project, is_current=True).first()


def reference_history(*, project, limit: int = 20) -> list[Reference]:
    return list(Reference.objects.filter(project=project).order_by("-created_at", "-id")[:limit])


def reports_list(*, project, limit: int = 20) -> list[DriftReport]:
    return list(DriftReport.objects.filter(project=project).order_by("-created_at", "-id")[:limit])


def report_get(*, project, report_id: int) -> DriftReport | None:
    return DriftReport.objects.filter(project=project, pk=report_id).first()


def alerts_list(*, project, limit: int = 20) -> list[DriftAlert]:
    """Alert episodes, newest first, each with its deliveries and their attempts attached."""
    alerts = list(DriftAlert.objects.filter(project=project).order_by("-created_at", "-id")[:limit])
    deliveries = defaultdict(list)
    for delivery in WebhookDelivery.objects.filter(alert__in=alerts).order_by("id"):
        delivery.attempts_list = []
        deliveries[delivery.alert_id].append(delivery)
    by_id = {d.pk: d for ds in deliveries.values() for d in ds}
    for attempt in WebhookAttempt.objects.filter(delivery_id__in=by_id).order_by("number"):
        by_id[attempt.delivery_id].attempts_list.append(attempt)
    for alert in alerts:
        alert.deliveries_list = deliveries.get(alert.pk, [])
    return alerts


def alert_open(*, project) -> DriftAlert | None:
    return DriftAlert.objects.filter(project=project, state=AlertState.OPEN).first()


def drift_actions(*, project_id: int) -> dict:
    """What routing does now because of drift: the open alert's actions ({} when no alert
    is open, or the policy asks for none), with the model that finds multivariate
    outliers as `outlier_model` when they are routed. One indexed read of two columns."""
    row = (DriftAlert.objects.filter(project_id=project_id, state=AlertState.OPEN)
           .values_list("actions", "outlier_model").first())
    if row is None:
        return {}
    actions, outlier_model = row
    return {**(actions or {}), "outlier_model": outlier_model} if outlier_model else (actions or {})


# --- Dashboard figures -----------------------------------------------------------------------------


def drift_history(*, project, days: int = 7, limit: int = 500) -> dict:
    """Each field's effect size over its threshold (1: where it would drift; fields judged
    by different statistics share one scale) per check over the last days, oldest first,
    for the line chart. A check
    is placed at the end of the window it judged, not when it ran: a check run late (or a
    backfill) still shows when the data drifted."""
    since = timezone.now() - timedelta(days=days)
    reports = list(
        DriftReport.objects.filter(project=project, window_end__gte=since)
        .order_by("-window_end", "-id").values("id", "window_end", "features", "prediction", "confidence",
                                               "multivariate")[:limit]
    )[::-1]
    series: dict[str, list] = {}
    thresholds: dict[str, list] = {}
    drifted: dict[str, list[bool]] = {}
    for i, report in enumerate(reports):
        results = [*report["features"], report["prediction"], *([report["confidence"]] if report["confidence"] else [])]
        for result in results + ([report["multivariate"]] if report["multivariate"] else []):
            name = result["name"]
            if name not in series:
                series[name] = [None] * len(reports)
                thresholds[name] = [None] * len(reports)
                drifted[name] = [False] * len(reports)
            value = result["value"]
            if result.get("type") == "multivariate" and value is not None:
                value = abs(value - 1)  # a ratio of errors: 1 is no change
            series[name][i] = value
            thresholds[name][i] = result.get("threshold")
            drifted[name][i] = bool(result["drifted"])
    return {"times": [r["window_end"].isoformat() for r in reports], "series": series, "thresholds": thresholds,
            "drifted": drifted, "report_ids": [r["id"] for r in reports]}


def drifted_since(*, project, since) -> bool:
    """Whether a check found drift after `since` (ever, when None)."""
    reports = DriftReport.objects.filter(project=project, drifted=True)
    if since is not None:
        reports = reports.filter(created_at__gt=since)
    return reports.exists()
