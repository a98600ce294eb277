"""Feeding drift monitoring: every stored prediction is counted into the hourly profiles
exactly once, off the ingestion path; and dataset versions become drift references.

Exactly once, without the broker: ingestion records each request as an IngestBatch in
the same transaction as its predictions. A profiler (the beat's task every minute, an
on-demand check, or the rebuild command) takes the project's drift-state lock, claims
unprofiled batches with SELECT ... FOR UPDATE SKIP LOCKED, reads their predictions by
the id range they recorded, adds them to the profiles and sets `profiled_at`, all in one
transaction. A worker that dies rolls back and the batches stay unprofiled; a broker
that is down only delays the next run; two runs at once never claim the same batch, and
a second run finds nothing to do. Ingestion itself does no profiling work at all.
"""

import time
from datetime import datetime, timedelta

import orjson
import psycopg
import structlog
from django.db import connection, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from common.errors import Conflict
from flywheel.models import IngestBatch, Prediction, Project
from monitoring import services as monitoring_services
from monitoring.services import Observations

log = structlog.get_logger(__name__)

# Predictions one claim reads (and one transaction profiles).
CLAIM_PREDICTIONS = 50_000
CLAIM_BATCHES = 5_000
# A project's fine grids are made from the first values profiled, so its first profiling
# waits for a fair sample: this many predictions, or this long.
GRID_SAMPLE = 1_000
GRID_WAIT = timedelta(hours=1)
# Batch id ranges closer than this are read with one range scan.
RANGE_GAP = 10_000


def created_span(batches) -> tuple[datetime, datetime] | None:
    """The created_at span of these batches' predictions (id, first, last, first_created_at,
    last_created_at); None when a batch predates the recorded span."""
    if any(b[3] is None for b in batches):
        return None
    return min(b[3] for b in batches), max(b[4] for b in batches)


def _observations(batches: list[tuple], schema: list[dict]) -> Observations:
    """The predictions of these batches (id, first, last, first_created_at, last_created_at),
    read by primary-key ranges: the prediction table has no index on batch_id, and needs
    none. The batches' created_at span prunes the read to the partitions of those weeks."""
    ranges: list[list[int]] = []
    for _, first, last, *_ in sorted(batches, key=lambda b: b[1]):
        if ranges and first <= ranges[-1][1] + RANGE_GAP:
            ranges[-1][1] = max(ranges[-1][1], last)
        else:
            ranges.append([first, last])
    batch_ids = [b[0] for b in batches]
    if connection.vendor == "postgresql":
        return _observations_postgres(ranges, batch_ids, schema, created_span(batches))
    in_ranges = Q()
    for first, last in ranges:
        in_ranges |= Q(id__range=(first, last))
    rows = (
        Prediction.objects.filter(in_ranges, batch_id__in=batch_ids)
        .annotate(features_text=Cast("features", TextField()))
        .values_list("created_at", "label", "confidence", "features_text")
    )
    created_at, labels, confidence, features = [], [], [], []
    for moment, label, value, text in rows.iterator(chunk_size=5_000):
        created_at.append(moment)
        labels.append(label)
        confidence.append(value)
        features.append(orjson.loads(text) if text else {})
    columns = {f["name"]: [row.get(f["name"]) for row in features] for f in schema}
    return Observations(label=labels, confidence=confidence, features=columns, created_at=created_at)


def _observations_postgres(ranges: list[list[int]], batch_ids: list[int], schema: list[dict],
                           span: tuple[datetime, datetime] | None) -> Observations:
    """PostgreSQL takes the features out of the JSON, typed, and the hour out of the time;
    binary results bring them back without parsing: several times faster than decoding
    each row's JSON here."""
    try:
        with transaction.atomic():  # a savepoint: a failed cast must not end the claim's transaction
            rows = _feature_rows(ranges, batch_ids, schema, span, checked=False)
    except psycopg.errors.DataError:
        # Validation lets only numbers (or null) into numeric features; rows written some
        # other way may hold a string. Read them type by type: a wrong one is missing.
        log.warning("profiles.feature_type_mismatch", batches=len(batch_ids))
        rows = _feature_rows(ranges, batch_ids, schema, span, checked=True)
    if not rows:
        return Observations(label=[], features={}, hours=[])
    values = list(zip(*rows, strict=True))
    return Observations(hours=values[0], label=list(values[1]), confidence=values[2],
                        features={f["name"]: values[3 + i] for i, f in enumerate(schema)})


_NUMERIC = "(features ->> %s)::float8"
_NUMERIC_CHECKED = "CASE WHEN jsonb_typeof(features -> %s) = 'number' THEN (features ->> %s)::float8 END"


def _feature_rows(ranges, batch_ids, schema, span, *, checked: bool) -> list[tuple]:
    sql, params = feature_rows_query(ranges, batch_ids, schema, span, checked=checked)
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()


def feature_rows_query(ranges, batch_ids, schema, span, *, checked: bool = False) -> tuple[str, list]:
    """The statement that reads batches' predictions for profiling, and its parameters."""
    columns, params = [], []
    for feature in schema:
        if feature["type"] == "numeric":
            columns.append(_NUMERIC_CHECKED if checked else _NUMERIC)
            params += [feature["name"]] * (2 if checked else 1)
        else:
            columns.append("features ->> %s")
            params.append(feature["name"])
    where = " OR ".join("id BETWEEN %s AND %s" for _ in ranges)
    params += [bound for pair in ranges for bound in pair] + [batch_ids]
    in_span = ""
    if span is not None:
        in_span = " AND created_at BETWEEN %s AND %s"
        params += list(span)
    sql = (f"SELECT floor(extract(epoch FROM created_at) / 3600)::int8, label, confidence"
           f"{''.join(', ' + c for c in columns)} FROM {Prediction._meta.db_table} "
           f"WHERE ({where}) AND batch_id = ANY(%s){in_span}")
    return sql, params


def _claim_candidates(project_id: int) -> list[int]:
    """Unprofiled batches of the project, oldest first, up to CLAIM_PREDICTIONS predictions."""
    candidates = (
        IngestBatch.objects.filter(project_id=project_id, profiled_at__isnull=True)
        .order_by("id").values_list("id", "first_prediction_id", "last_prediction_id")[:CLAIM_BATCHES]
    )
    chosen, size = [], 0
    for batch_id, first, last in candidates:
        span = (last - first + 1) if first is not None else 0
        if chosen and size + span > CLAIM_PREDICTIONS:
            break
        chosen.append(batch_id)
        size += span
    return chosen


def _profile_one_claim(*, project_id: int, force_grids: bool, now: datetime) -> int | None:
    """Profile one claim of a project's batches in one transaction; the number of
    predictions profiled, or None when there is nothing to do now."""
    with transaction.atomic():
        state = monitoring_services.drift_state_lock(project_id=project_id, skip_locked=True)
        if state is None:
            return None  # another profiler holds this project; it will get there
        chosen = _claim_candidates(project_id)
        batches = list(
            IngestBatch.objects.select_for_update(skip_locked=True)
            .filter(pk__in=chosen, profiled_at__isnull=True).order_by("id")
            .values_list("id", "first_prediction_id", "last_prediction_id", "first_created_at", "last_created_at",
                         "received_at")
        )
        if not batches:
            return None
        project = Project.objects.only("slug", "features", "labels").get(pk=project_id)
        predictions = sum(b[2] - b[1] + 1 for b in batches if b[1] is not None)
        waiting_for_sample = (
            not force_grids and predictions < GRID_SAMPLE and min(b[5] for b in batches) > now - GRID_WAIT
            and not monitoring_services.grids_made(project_id=project_id)
        )
        if waiting_for_sample:
            return None
        with_rows = [b[:5] for b in batches if b[1] is not None]
        observations = _observations(with_rows, project.features) if with_rows else Observations(label=[],
                                                                                                   features={})
        monitoring_services.profiles_add(state=state, schema=project.features, labels=project.labels,
                                         observations=observations)
        IngestBatch.objects.filter(pk__in=[b[0] for b in batches]).update(profiled_at=now)
    log.info("profiles.updated", project=project.slug, batches=len(batches), predictions=len(observations))
    return len(observations)


def profiles_update(*, project_id: int | None = None, force_grids: bool = False,
                    time_budget: float | None = None, now: datetime | None = None) -> int:
    """Profile the predictions not yet profiled, of every project or of one; returns how
    many. Stops claiming after `time_budget` seconds (the next run goes on). With
    `force_grids`, grids are made from whatever sample there is (a check that wants
    the newest data now)."""
    deadline = time.monotonic() + time_budget if time_budget else None
    if project_id is None:
        project_ids = sorted(set(IngestBatch.objects.filter(profiled_at__isnull=True)
                                 .values_list("project_id", flat=True).distinct()))
    else:
        project_ids = [project_id]
    total = 0
    for pid in project_ids:
        while True:
            profiled = _profile_one_claim(project_id=pid, force_grids=force_grids, now=now or timezone.now())
            if profiled is None:
                break
            total += profiled
            if deadline is not None and time.monotonic() > deadline:
                return total
    return total


def profiles_sync(*, project_id: int, force_grids: bool = True) -> int:
    """monitoring.hooks.profiles_sync: bring one project up to date before a check reads it.
    Bounded, so that a long backlog (a broker outage) cannot hold a request for long; the
    beat catches up the rest."""
    return profiles_update(project_id=project_id, force_grids=force_grids, time_budget=20)


def profiles_rebuild(*, project_id: int, now: datetime | None = None) -> int:
    """Count a project's profiles again from its stored predictions, in one transaction:
    readers see the old profiles until the new ones are complete. The profiles are a
    denormalized counter; this is the command that rebuilds it."""
    now = now or timezone.now()
    total = 0
    with transaction.atomic():
        state = monitoring_services.drift_state_lock(project_id=project_id)
        project = Project.objects.only("slug", "features", "labels").get(pk=project_id)
        monitoring_services.profiles_clear(state=state)
        after = 0
        while True:
            batches = list(
                IngestBatch.objects.select_for_update().filter(project_id=project_id, pk__gt=after)
                .order_by("id").values_list("id", "first_prediction_id", "last_prediction_id", "first_created_at",
                                            "last_created_at")[:CLAIM_BATCHES]
            )
            if not batches:
                break
            chunk, size = [], 0
            for batch in batches:
                span = batch[2] - batch[1] + 1 if batch[1] is not None else 0
                if chunk and size + span > CLAIM_PREDICTIONS:
                    break
                chunk.append(batch)
                size += span
            with_rows = [b for b in chunk if b[1] is not None]
            if with_rows:
                total += monitoring_services.profiles_add(
                    state=state, schema=project.features, labels=project.labels,
                    observations=_observations(with_rows, project.features))
            IngestBatch.objects.filter(pk__in=[b[0] for b in chunk]).update(profiled_at=now)
            after = chunk[-1][0]
    log.info("profiles.rebuilt", project=project.slug, predictions=total)
    return total


def drift_reference_from_dataset_version(*, project: Project, dataset_version: int, actor=None):
    """monitoring.hooks.reference_from_dataset_version: make the training rows (the train
    split) of a dataset version the project's drift reference. Used by
    PUT .../drift/reference/ {"dataset_version": n}, and by promotions and rollbacks, whose
    champion's training data becomes the reference."""
    from flywheel.datasets import selectors as dataset_selectors
    from flywheel.datasets import shards
    from flywheel.models import DatasetStatus, ModelVersion
    from monitoring.services import Observations, reference_set_from_data

    version = dataset_selectors.dataset_version_get(project=project, number=dataset_version)
    if version.status != DatasetStatus.READY:
        raise Conflict("dataset_not_ready", f"Dataset version {dataset_version} is {version.status}.")
    labels: list = []
    features: dict[str, list] = {f["name"]: [] for f in project.features}
    for table in dataset_selectors.version_partitions(version=version, split="train"):
        labels.extend(table.column("label").to_pylist())
        for name, values in features.items():
            column = shards.feature_column(name)
            values.extend(table.column(column).to_pylist() if column in table.column_names
                          else [None] * table.num_rows)
    trained = ModelVersion.objects.filter(project=project, dataset_version=version).order_by("-created_at").first()
    return reference_set_from_data(
        project=project, observations=Observations(label=labels, features=features), actor=actor,
        dataset_version=dataset_version, model_version=trained.name if trained else "",
        note=f"the train split of dataset version {dataset_version}",
    )
