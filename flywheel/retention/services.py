"""Retention, the writes: archive a project's predictions past its policy's raw_days that the
loop no longer needs, then remove them from the database.

A day of predictions at a time: its rows are read in id order, written as content-addressed
Parquet parts (flywheel.retention.parts), uploaded, named by the day's manifest (written
last), recorded with a Bloom filter of their ids (what answers a removed prediction's GET),
and only then removed. Anything that fails before the records are written (an upload, the
manifest) removes nothing; the next run archives the same rows into the same bytes under
the same names, so a retry costs no second copy.

Removal: where the predictions table is partitioned (PostgreSQL's declarative partitioning)
and a partition holds nothing but rows just archived, it is detached and dropped; the rest
is deleted in bounded batches by primary key, each batch checking again that its rows are
still unneeded (a task or feedback may have arrived since they were read)."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

import numpy as np
import structlog
from django.db import connection, transaction
from django.db.models import Min, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from common.jobs import Lease, Superseded
from common.storage import ObjectExists, get_storage
from flywheel.datasets import shards
from flywheel.models import ModelVersion, Prediction, PredictionArchive, Project, RetentionRun, RetentionStatus
from flywheel.retention import bloom, parts, selectors
from flywheel.retention.policy import RetentionPolicy

log = structlog.get_logger(__name__)

LEASE = Lease(RetentionRun, token_field="token", stale_setting="FLYWHEEL_RETENTION_STALE_SECONDS")
READ_ROWS = 10_000
# Rows per DELETE: each holds its row locks (and its WAL) only this long.
DELETE_ROWS = 10_000
# JSON fields are read as their JSON text (Cast), features as the text of each value (KT):
# the part is built from text, never from decoded Python objects.
_JSON_FIELDS = ("probabilities", "input", "metadata")


def retention_run(*, project: Project, now: datetime | None = None) -> RetentionRun | None:
    """Today's retention of `project`. A no-op when today's run succeeded or a live attempt
    holds it; a failed or abandoned one is taken over. Returns the run as it ends up (None
    when another attempt took it over meanwhile)."""
    now = now or timezone.now()
    claim = _claim(project, now.astimezone(UTC).date())
    if claim is None:
        return RetentionRun.objects.get(project=project, day=now.astimezone(UTC).date())
    run, token = claim
    work = _Retention(project=project, run=run, token=token, now=now)
    try:
        with LEASE.heartbeat(run.pk, token):
            work.perform()
    except Superseded:
        log.info("retention.superseded", project=project.slug, run=run.pk)
        return None
    except Exception as exc:
        RetentionRun.objects.filter(pk=run.pk, token=token).update(
            status=RetentionStatus.FAILED, token="", error=f"{type(exc).__name__}: {exc}"[:2000],
            archived=work.archived, removed=work.removed,
            finished_at=timezone.now(), updated_at=timezone.now())
        log.warning("retention.failed", project=project.slug, run=run.pk, error=str(exc)[:200])
        raise
    # Released and finished in one write, only while this attempt still holds the run.
    if not RetentionRun.objects.filter(pk=run.pk, token=token).update(
            status=RetentionStatus.SUCCEEDED, token="", archived=work.archived, removed=work.removed, held=work.held,
            cutoff=work.cutoff, partitions_dropped=work.dropped, error="", finished_at=timezone.now(),
            updated_at=timezone.now()):
        log.info("retention.superseded", project=project.slug, run=run.pk)
        return None
    log.info("retention.finished", project=project.slug, archived=work.archived, removed=work.removed,
             partitions_dropped=len(work.dropped), held=work.held)
    run.refresh_from_db()
    return run


def retention_run_all(*, now: datetime | None = None) -> dict[str, int]:
    """Today's retention of every project, oldest first: {slug: rows removed}. A project
    whose run fails is logged and the others still run; its run is retried on the next."""
    removed = {}
    for project in Project.objects.order_by("id"):
        try:
            run = retention_run(project=project, now=now)
        except Exception:  # noqa: BLE001 (logged by retention_run; one project must not stop the rest)
            continue
        removed[project.slug] = run.removed if run else 0
    return removed


def _claim(project: Project, day) -> tuple[RetentionRun, str] | None:
    with transaction.atomic():
        run, _ = RetentionRun.objects.get_or_create(project=project, day=day)
        run = RetentionRun.objects.select_for_update().get(pk=run.pk)
        if run.status == RetentionStatus.SUCCEEDED or (run.status == RetentionStatus.RUNNING and LEASE.is_held(run)):
            return None
        token = LEASE.new_token()
        RetentionRun.objects.filter(pk=run.pk).update(
            status=RetentionStatus.RUNNING, token=token, attempts=run.attempts + 1, heartbeat_at=timezone.now(),
            error="", updated_at=timezone.now())
    return run, token


@dataclass
class _Part:
    record: PredictionArchive
    row_ids: np.ndarray = field(repr=False)


class _Retention:
    def __init__(self, *, project: Project, run: RetentionRun, token: str, now: datetime):
        self.project, self.run, self.token = project, run, token
        self.policy = RetentionPolicy.from_dict(project.retention)
        self.storage = get_storage() if self.policy.archive else None
        midnight = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
        self.cutoff = None if self.policy.raw_days is None else midnight - timedelta(days=self.policy.raw_days)
        self.archived = self.removed = 0
        self.held: int | None = None
        self.dropped: list[str] = []
        self.versions: dict[int, str] = {}

    def perform(self) -> None:
        if self.cutoff is not None:
            eligible = selectors.retention_eligible(project=self.project, cutoff=self.cutoff)
            after = None
            while True:
                pending = eligible if after is None else eligible.filter(created_at__gte=after)
                first = pending.aggregate(first=Min("created_at"))["first"]
                if first is None:
                    break
                start = datetime.combine(first.astimezone(UTC).date(), time(), tzinfo=UTC)
                after = start + timedelta(days=1)
                day = eligible.filter(created_at__gte=start, created_at__lt=after)
                if self.policy.archive:
                    archived = self._archive_day(day, start.date().isoformat())
                else:
                    archived = [_Part(record=None, row_ids=np.fromiter(day.values_list("id", flat=True), np.int64))]
                LEASE.update_if_held(self.run.pk, self.token, archived=self.archived, removed=self.removed)
                self._remove(eligible, archived)
        self.held = Prediction.objects.filter(project=self.project).count()

    # --- Archive ---------------------------------------------------------------------------------------

    def _version_name(self, version_id: int) -> str:
        if version_id not in self.versions:
            self.versions.update(ModelVersion.objects.filter(project=self.project).values_list("id", "name"))
        return self.versions.get(version_id, "")

    def _rows(self, day):
        """The day's rows in id order as tuples (parts.READ_COLUMNS, then the features)."""
        features = self.project.features
        day = day.annotate(**{f"json_{name}": Cast(name, TextField()) for name in _JSON_FIELDS},
                           **{f"feature_{i}": KT(f"features__{f['name']}") for i, f in enumerate(features)})
        columns = ("id", "external_id", "model_version_id", "label", "confidence", "least_confidence", "margin",
                   "entropy", *(f"json_{name}" for name in _JSON_FIELDS), "embedding", "created_at", "received_at",
                   *(f"feature_{i}" for i in range(len(features))))
        last = 0
        while True:
            batch = list(day.filter(id__gt=last).order_by("id").values_list(*columns)[:READ_ROWS])
            if not batch:
                return
            for row in batch:
                yield (*row[:2], self._version_name(row[2]), *row[3:])
            last = batch[-1][0]

    def _archive_day(self, day, date: str) -> list[_Part]:
        """Write the day's parts and its manifest, then record them: what is recorded is in
        storage, named by a manifest."""
        features = self.project.features
        written: list[_Part] = []
        buffer: list[tuple] = []
        for row in self._rows(day):
            buffer.append(row)
            if len(buffer) >= parts.PART_ROWS:
                written.append(self._write_part(buffer, date, features))
                buffer = []
        if buffer:
            written.append(self._write_part(buffer, date, features))
        if not written:
            return []
        document = parts.manifest_document(
            slug=self.project.slug, date=date, schema=parts.archive_schema(features), features=features,
            parts=[{"key": p.record.key, "sha256": p.record.sha256, "rows": p.record.rows, "bytes": p.record.bytes,
                    "min_row_id": p.record.min_row_id, "max_row_id": p.record.max_row_id} for p in written])
        data = parts.manifest_bytes(document)
        manifest_key = parts.manifest_key(self.project.slug, date, shards.sha256_bytes(data))
        try:
            self.storage.put(manifest_key, data, if_absent=True, sha256=shards.sha256_bytes(data))
        except ObjectExists:
            pass  # named by its hash: the same manifest, from an earlier attempt
        for part in written:
            part.record.manifest_key = manifest_key
        with transaction.atomic():
            LEASE.update_if_held(self.run.pk, self.token)
            PredictionArchive.objects.bulk_create([p.record for p in written], ignore_conflicts=True)
        self.archived += sum(p.record.rows for p in written)
        log.info("retention.day_archived", project=self.project.slug, date=date, parts=len(written),
                 rows=sum(p.record.rows for p in written))
        return written

    def _write_part(self, rows: list[tuple], date: str, features) -> _Part:
        table = parts.part_table(rows, features)
        data = parts.part_bytes(table)
        sha256 = shards.sha256_bytes(data)
        key = parts.part_key(self.project.slug, date, sha256)
        if not self.storage.matches(key, size=len(data), sha256=sha256):
            self.storage.put(key, data, sha256=sha256)
        row_ids = table.column("row_id").to_numpy()
        bits = bloom.bloom_bits(len(rows))
        record = PredictionArchive(
            project=self.project, run=self.run, date=date, key=key, sha256=sha256, rows=len(rows), bytes=len(data),
            min_row_id=int(row_ids[0]), max_row_id=int(row_ids[-1]), bloom_bits=bits,
            bloom=bloom.bloom_build(table.column("prediction_id").to_pylist(), bits))
        return _Part(record=record, row_ids=row_ids)

    # --- Removal ---------------------------------------------------------------------------------------

    def _remove(self, eligible, archived: list[_Part]) -> None:
        ids = np.concatenate([p.row_ids for p in archived]) if archived else np.zeros(0, np.int64)
        if not len(ids):
            return
        gone = self._drop_partitions(eligible, ids) if _partitioned() else np.zeros(0, np.int64)
        for part in archived:
            left = np.setdiff1d(part.row_ids, gone, assume_unique=True)
            removed = len(part.row_ids) - len(left)
            for start in range(0, len(left), DELETE_ROWS):
                batch = left[start:start + DELETE_ROWS].tolist()
                with transaction.atomic():
                    LEASE.update_if_held(self.run.pk, self.token)
                    # The batch's rows were checked to have no related rows (the filter says it
                    # again): Django's cascade collector would query seven tables per batch for
                    # nothing.
                    removed += eligible.filter(pk__in=batch)._raw_delete(eligible.db)
            self.removed += removed
            if part.record is not None:
                PredictionArchive.objects.filter(project=self.project, key=part.record.key).update(removed=removed)

    def _drop_partitions(self, eligible, ids: np.ndarray) -> np.ndarray:
        """Detach and drop every partition of the predictions table that holds only rows in
        `ids` still unneeded; returns the ids they held."""
        table = Prediction._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT tableoid::regclass::text, count(*) FROM {table} "  # noqa: S608 (our table name)
                           "WHERE project_id = %s AND id = ANY(%s) GROUP BY 1", [self.project.pk, ids.tolist()])
            leaves = cursor.fetchall()
        gone = []
        for leaf, archived_here in leaves:
            with transaction.atomic(), connection.cursor() as cursor:
                # EXCLUSIVE: readers go on; no insert, and no task or feedback referencing a row
                # in it, until the partition is gone.
                cursor.execute(f"LOCK TABLE {leaf} IN EXCLUSIVE MODE")
                cursor.execute(f"SELECT count(*) FROM {leaf}")  # noqa: S608
                (total,) = cursor.fetchone()
                if total != archived_here:
                    continue
                cursor.execute(f"SELECT id FROM {leaf}")  # noqa: S608
                held = np.array([r[0] for r in cursor.fetchall()], dtype=np.int64)
                still = sum(eligible.filter(pk__in=held[s:s + DELETE_ROWS].tolist()).count()
                            for s in range(0, len(held), DELETE_ROWS))
                if still != total:
                    continue
                LEASE.update_if_held(self.run.pk, self.token)
                cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {leaf}")
                cursor.execute(f"DROP TABLE {leaf}")
            gone.append(held)
            self.dropped.append(leaf)
            log.info("retention.partition_dropped", project=self.project.slug, partition=leaf, rows=total)
        return np.concatenate(gone) if gone else np.zeros(0, np.int64)


def _partitioned() -> bool:
    """Whether the predictions table is partitioned (PostgreSQL's declarative partitioning)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s))",
                       [Prediction._meta.db_table])
        return cursor.fetchone()[0]
