"""Dataset versions, the writes: create a version, build it (read the labeled rows, write
and upload only the shards that changed, publish the manifest last), fail it, retry it.

A build holds its version through a token on the row and shows it is alive with a
heartbeat; a second build of the same version does nothing, and a build whose worker died
is taken over once its heartbeat is stale. Nothing a reader can see changes until the
manifest is written: shards are content-addressed (an orphan is harmless and is reused by
the next attempt) and the manifest is put only if absent, under the version's row lock."""

import subprocess
import tempfile
import time
import tomllib
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Max
from django.utils import timezone

from accounts.services import audit_record
from common.enqueue import enqueue_on_commit
from common.errors import Conflict
from common.jobs import TRANSIENT_ERRORS, Lease, Superseded
from common.storage import ObjectExists, Storage, get_storage
from flywheel.datasets import selectors, shards
from flywheel.models import DatasetStatus, DatasetVersion, Project
from labeling import selectors as labeling_selectors

log = structlog.get_logger(__name__)

BUILD_TASK = "flywheel.datasets.build_version"
# A building version whose heartbeat (or, never started, whose queueing) is older than
# FLYWHEEL_DATASET_STALE_SECONDS has lost its worker or its message.
LEASE = Lease(DatasetVersion, token_field="build_token", stale_setting="FLYWHEEL_DATASET_STALE_SECONDS")
# Progress is recorded at most this often (the lease's own heartbeat runs beside it).
PROGRESS_SECONDS = 5.0
UPLOAD_THREADS = 4


# --- Create, retry, fail -----------------------------------------------------------------------------


def _enqueue_build(version_id: int) -> None:
    enqueue_on_commit(BUILD_TASK, version_id)


def dataset_version_create(*, project: Project, note: str = "", trigger: str = "manual",
                           actor=None) -> DatasetVersion:
    """Number a new version of the project's dataset and queue its build. What rows it holds
    is decided when the build starts."""
    with transaction.atomic():
        # The project's row lock hands out version numbers one at a time.
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).get()
        last = DatasetVersion.objects.filter(project=project).aggregate(last=Max("number"))["last"] or 0
        version = DatasetVersion.objects.create(
            project=project, number=last + 1, note=note, trigger=trigger,
            created_by=actor if getattr(actor, "pk", None) else None, phase="queued",
        )
        audit_record(actor=actor, action="dataset.create", project=project, target=f"v{version.number}",
                     details={"note": note[:200], "trigger": trigger})
        _enqueue_build(version.pk)
    log.info("dataset.version_created", project=project.slug, version=version.number, trigger=trigger)
    return version


def dataset_version_retry(*, version: DatasetVersion, actor=None) -> DatasetVersion:
    """Build a failed version again (or one whose worker died). Ready versions never change."""
    with transaction.atomic():
        version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == DatasetStatus.READY:
            raise Conflict("dataset_ready", f"Version {version.number} is ready; a ready version is never rebuilt.")
        if version.status == DatasetStatus.BUILDING and LEASE.is_held(version):
            raise Conflict("dataset_building", f"Version {version.number} is being built right now.")
        version.status = DatasetStatus.BUILDING
        version.error = ""
        version.build_token = ""
        version.phase = "queued"
        version.progress = 0.0
        version.heartbeat_at = None
        version.finished_at = None
        version.save(update_fields=["status", "error", "build_token", "phase", "progress", "heartbeat_at",
                                    "finished_at", "updated_at"])
        audit_record(actor=actor, action="dataset.retry", project=version.project, target=f"v{version.number}")
        _enqueue_build(version.pk)
    log.info("dataset.version_retried", version_id=version.pk, number=version.number)
    return version


def dataset_version_fail(*, version_id: int, reason: str, token: str | None = None) -> bool:
    """Mark a building version failed. With `token`, only if that attempt still holds it;
    without, only if no attempt does. Returns whether it was marked."""
    held = {"build_token": token} if token is not None else {"build_token": ""}
    marked = DatasetVersion.objects.filter(pk=version_id, status=DatasetStatus.BUILDING, **held).update(
        status=DatasetStatus.FAILED, error=reason[:4000], build_token="", phase="", finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if marked:
        log.warning("dataset.build_failed", version_id=version_id, reason=reason[:300])
    return bool(marked)


def dataset_version_release(*, version_id: int, token: str, reason: str) -> None:
    """Let go of a version after a transient failure so that the retry can take it at once."""
    DatasetVersion.objects.filter(pk=version_id, status=DatasetStatus.BUILDING, build_token=token).update(
        build_token="", phase="retrying", error=reason[:4000], updated_at=timezone.now())


def dataset_versions_sweep(*, now=None, max_attempts: int = 5) -> dict[str, int]:
    """Builds whose worker died (heartbeat stale): queue them again, or fail them after
    `max_attempts` attempts (a build that kills its worker every time is not retried forever)."""
    now = now or timezone.now()
    # Stale: a build whose heartbeat stopped, or one queued that no worker ever started (its
    # message was lost, or the broker was away when it was queued).
    stale_filter = LEASE.stale_q(now)
    stale = DatasetVersion.objects.filter(stale_filter, status=DatasetStatus.BUILDING)
    requeued = failed = 0
    for version_id, attempts in stale.values_list("pk", "attempts"):
        still_stale = DatasetVersion.objects.filter(stale_filter, pk=version_id, status=DatasetStatus.BUILDING)
        if attempts >= max_attempts:
            failed += still_stale.update(
                status=DatasetStatus.FAILED, build_token="", phase="", finished_at=now, updated_at=now,
                error=f"The build stopped answering {attempts} times (worker lost); it is not retried again.")
            continue
        with transaction.atomic():
            if still_stale.update(build_token="", phase="queued", updated_at=now):
                _enqueue_build(version_id)
                requeued += 1
    if requeued or failed:
        log.warning("dataset.sweep", requeued=requeued, failed=failed)
    return {"requeued": requeued, "failed": failed}


# --- Build -----------------------------------------------------------------------------------------


# The checkout or image this code runs from: where its git metadata and pyproject.toml are,
# whatever BASE_DIR a deployment or a test points elsewhere.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """The version of the code that writes a dataset: FLYWHEEL_CODE_VERSION when the
    deployment sets it (the image records the commit it was built from), else the git
    commit of a checkout, else the release in pyproject.toml, else "unknown" (a dataset
    build never fails for want of a version to record)."""
    if settings.FLYWHEEL_CODE_VERSION:
        return settings.FLYWHEEL_CODE_VERSION
    try:
        result = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=SOURCE_ROOT,
                                capture_output=True, text=True, timeout=2)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open(SOURCE_ROOT / "pyproject.toml", "rb") as pyproject:
            return f"release-{tomllib.load(pyproject)['project']['version']}"
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "unknown"


def _build_claim(version_id: int) -> tuple[DatasetVersion, str] | None:
    """Take the version for this attempt, or None when there is nothing to do: it is ready
    or failed (a task run twice), or a live attempt holds it."""
    with transaction.atomic():
        version = DatasetVersion.objects.select_for_update().select_related("project").filter(pk=version_id).first()
        if version is None or version.status != DatasetStatus.BUILDING:
            return None
        now = timezone.now()
        if LEASE.is_held(version, now):
            return None
        parent = (DatasetVersion.objects.filter(project_id=version.project_id, status=DatasetStatus.READY,
                                                number__lt=version.number).order_by("-number").first())
        token = LEASE.new_token()
        version.build_token = token
        version.parent = parent
        version.attempts = F("attempts") + 1
        version.phase = "reading"
        version.progress = 0.0
        version.heartbeat_at = now
        version.error = ""
        version.save(update_fields=["build_token", "parent", "attempts", "phase", "progress", "heartbeat_at",
                                    "error", "updated_at"])
        version.refresh_from_db(fields=["attempts"])
    return version, token


def dataset_version_build(*, version_id: int) -> DatasetVersion | None:
    """Build a version: a no-op unless it is building and free. A transient failure (store
    or database away) releases the version and raises, for the task to retry; any other
    failure marks it failed with the reason. Returns the version as it ends up."""
    claim = _build_claim(version_id)
    if claim is None:
        log.info("dataset.build_skipped", version_id=version_id)
        return DatasetVersion.objects.filter(pk=version_id).first()
    version, token = claim
    build = _Build(version, token)
    try:
        with LEASE.heartbeat(version_id, token):
            build.run()
    except Superseded:
        log.info("dataset.build_superseded", version_id=version_id)
    except TRANSIENT_ERRORS as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("dataset.build_interrupted", version_id=version_id, error=reason[:300])
        try:
            dataset_version_release(version_id=version_id, token=token, reason=reason)
        except (OperationalError, InterfaceError):
            pass  # the database is the one away: the stale-build sweep will pick it up
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure is recorded on the version, not lost
        log.exception("dataset.build_error", version_id=version_id)
        dataset_version_fail(version_id=version_id, token=token, reason=f"{type(exc).__name__}: {exc}")
    return DatasetVersion.objects.filter(pk=version_id).first()


@dataclass
class _Upload:
    key: str
    sha256: str
    size: int
    path: Path | None = None
    data: bytes | None = None


class _Build:
    """One attempt at building one version."""

    def __init__(self, version: DatasetVersion, token: str):
        self.version = version
        self.token = token
        self.project = version.project
        self.storage: Storage = get_storage()
        self.features = list(self.project.features)
        self.schema = shards.segment_schema(self.features)
        self.partitions = shards.PARTITIONS
        self.last_beat = self.started = time.monotonic()
        self.stats = {"shards": 0, "shards_uploaded": 0, "shards_reused": 0, "bytes": 0, "bytes_uploaded": 0,
                      "rows_read": 0, "partitions": {}}

    @contextmanager
    def timed(self, step: str):
        """Seconds each step took, kept in the version's stats (they show where a build's time goes)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.stats.setdefault("timings", {})[step] = round(time.monotonic() - started, 3)

    # Progress: reading labels 0-10%, rows 10-70%, uploading 70-95%, publishing the rest.
    def beat(self, phase: str, progress: float, *, force: bool = False) -> None:
        """Record progress and a heartbeat (at most every few seconds); stop if another
        attempt has taken the version."""
        if not force and time.monotonic() - self.last_beat < PROGRESS_SECONDS:
            return
        self.last_beat = time.monotonic()
        LEASE.update_if_held(self.version.pk, self.token, where={"status": DatasetStatus.BUILDING}, phase=phase,
                             progress=round(min(max(progress, 0.0), 1.0), 4), heartbeat_at=timezone.now())

    def run(self) -> None:
        self.beat("reading", 0.0, force=True)
        with self.timed("labels"):
            labels = shards.parse_labels(list(labeling_selectors.current_labels_csv(project_id=self.project.pk)))
        with self.timed("plan"):
            parent_layout = self._parent_layout()
            if not parent_layout:
                self.partitions = shards.partition_count(len(labels))
            groups = shards.group_by_partition(labels.row_ids, self.partitions)
            plans = {p: shards.plan_partition(p, labels.row_ids[groups[p]], parent_layout.get(p))
                     for p in range(self.partitions)}
            plans = self._check_kept_segments(plans, labels, groups)
        self.beat("reading", 0.1, force=True)
        with tempfile.TemporaryDirectory(prefix="flywheel-dataset-") as scratch:
            with self.timed("segments"):
                written = self._write_segments(Path(scratch), plans)
            with self.timed("label_shards"):
                uploads, entries, label_tables = self._label_shards(plans, written, labels, groups)
            with self.timed("upload"):
                self._upload(uploads)
        with self.timed("publish"):
            counts = shards.count_rows(label_tables)
            document = self._manifest(entries, counts)
            self._publish(document)
        log.info("dataset.built", project=self.project.slug, version=self.version.number, rows=counts["rows"],
                 shards=self.stats["shards"], uploaded=self.stats["shards_uploaded"],
                 bytes_uploaded=self.stats["bytes_uploaded"], seconds=self.stats["seconds"])

    # -- The parent's layout --

    def _parent_layout(self) -> dict[int, shards.ParentPartition]:
        """What the parent stored, partition by partition, for reuse. A parent that cannot
        be read (missing or corrupt) or has another feature schema gives nothing to reuse:
        the version is written in full, which is slower but just as correct."""
        parent = self.version.parent
        if parent is None:
            return {}
        try:
            document = selectors.manifest_load(version=parent, storage=self.storage)
            if document.get("features") != self.features:
                log.info("dataset.parent_schema_changed", version=self.version.number, parent=parent.number)
                return {}
            partitions = shards.manifest_partitions(document)

            def load(label: dict) -> pa.Table:
                return selectors.shard_load(storage=self.storage, project_slug=self.project.slug, shard=label)

            with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
                tables = list(pool.map(load, [label for _, label in partitions.values()]))
            layout = {
                partition: shards.parent_partition(
                    [shards.Segment(s["sha256"], s["rows"], s["bytes"]) for s in segments], table)
                for (partition, (segments, _)), table in zip(partitions.items(), tables, strict=True)
            }
            self.partitions = document["partitioning"]["partitions"]
            return layout
        except shards.ShardError as exc:
            log.warning("dataset.parent_unusable", version=self.version.number, parent=parent.number, error=str(exc))
            return {}

    def _check_kept_segments(self, plans, labels, groups):
        """Segments taken over from the parent must still be in the store with their size;
        a partition with one missing is written afresh."""
        kept = sorted({s for plan in plans.values() for s in plan.kept}, key=lambda s: s.sha256)
        if not kept:
            return plans

        def present(segment: shards.Segment) -> bool:
            return self.storage.matches(selectors.shard_key(self.project.slug, segment.sha256), size=segment.bytes,
                                        sha256=segment.sha256)

        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            missing = {s for s, ok in zip(kept, pool.map(present, kept), strict=True) if not ok}
        if missing:
            log.warning("dataset.parent_shards_missing", version=self.version.number, missing=len(missing))
        for p, plan in plans.items():
            if any(s in missing for s in plan.kept):
                plans[p] = shards.plan_partition(p, labels.row_ids[groups[p]], None)
        return plans

    # -- Feature segments --

    def _write_segments(self, scratch: Path, plans) -> dict[int, shards.ShardFile]:
        """Read the rows of every new segment from the database, once, in id order, and write
        them; parsing runs in a second thread while the next batch is read."""
        wanted = [p for p, plan in plans.items() if len(plan.new_row_ids)]
        if not wanted:
            return {}
        needed = np.sort(np.concatenate([plans[p].new_row_ids for p in wanted]))
        router = shards.SegmentRouter(scratch, self.schema, self.partitions, wanted)

        def route(chunk: bytes) -> None:
            router.write(shards.parse_prediction_rows(chunk, self.features))

        try:
            with ThreadPoolExecutor(1, thread_name_prefix="dataset-parse") as parser:
                pending = deque()
                for chunk in selectors.dataset_prediction_rows_csv(project_id=self.project.pk, row_ids=needed,
                                                                   features=self.features):
                    pending.append(parser.submit(route, chunk))
                    while len(pending) > 2:
                        pending.popleft().result()
                    self.beat("reading", 0.1 + 0.6 * router.rows / len(needed))
                while pending:
                    pending.popleft().result()
            written = router.close()
        except BaseException:
            router.abort()
            raise
        self.stats["rows_read"] = router.rows
        return written

    # -- Label shards --

    def _label_shards(self, plans, written, labels: shards.LabelSet, groups):
        uploads: list[_Upload] = []
        entries: list[dict] = []
        tables: list[pa.Table] = []
        for p, plan in plans.items():
            segment = written.get(p)
            new_ids = segment.row_ids if segment is not None else np.zeros(0, dtype=np.int64)
            order = np.concatenate([plan.kept_row_ids, new_ids])
            self.stats["partitions"][plan.reason] = self.stats["partitions"].get(plan.reason, 0) + 1
            if not len(order):
                continue
            for kept in plan.kept:
                entries.append({"kind": "features", "partition": p, "sha256": kept.sha256, "rows": kept.rows,
                                "bytes": kept.bytes})
            if segment is not None and segment.rows:
                entries.append({"kind": "features", "partition": p, "sha256": segment.sha256, "rows": segment.rows,
                                "bytes": segment.bytes})
                uploads.append(_Upload(selectors.shard_key(self.project.slug, segment.sha256), segment.sha256,
                                       segment.bytes, path=segment.path))
            rows = groups[p]
            table = shards.label_shard(order, labels.row_ids[rows], labels.labels.take(pa.array(rows)),
                                       labels.sources.take(pa.array(rows)), labels.weights[rows])
            data = shards.encode_label_shard(table)
            digest = shards.sha256_bytes(data)
            entries.append({"kind": "labels", "partition": p, "sha256": digest, "rows": table.num_rows,
                            "bytes": len(data)})
            uploads.append(_Upload(selectors.shard_key(self.project.slug, digest), digest, len(data), data=data))
            tables.append(table)
        for entry in entries:
            entry["key"] = selectors.shard_key(self.project.slug, entry["sha256"])
        self.stats["shards"] = len(entries)
        self.stats["bytes"] = sum(e["bytes"] for e in entries)
        return uploads, entries, tables

    # -- Upload --

    def _upload_one(self, upload: _Upload) -> bool:
        """Upload a shard unless the store already holds exactly these bytes under its name:
        returns whether bytes were sent."""
        if self.storage.matches(upload.key, size=upload.size, sha256=upload.sha256):
            return False
        if upload.path is not None:
            self.storage.put_file(upload.key, upload.path, sha256=upload.sha256)
        else:
            self.storage.put(upload.key, upload.data, sha256=upload.sha256)
        return True

    def _upload(self, uploads: list[_Upload]) -> None:
        total = sum(u.size for u in uploads) or 1
        done_bytes = 0
        self.beat("uploading", 0.7, force=True)
        with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="dataset-upload") as pool:
            futures = {pool.submit(self._upload_one, u): u for u in uploads}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=PROGRESS_SECONDS, return_when=FIRST_EXCEPTION)
                for future in done:
                    upload = futures[future]
                    if future.result():
                        self.stats["shards_uploaded"] += 1
                        self.stats["bytes_uploaded"] += upload.size
                    done_bytes += upload.size
                self.beat("uploading", 0.7 + 0.25 * done_bytes / total)
        # Shards this version names but did not upload were already in the store.
        self.stats["shards_reused"] = self.stats["shards"] - self.stats["shards_uploaded"]

    # -- Manifest --

    def _manifest(self, entries: list[dict], counts: dict) -> dict:
        version = self.version
        return {
            "format": shards.FORMAT,
            "project": self.project.slug,
            "version": version.number,
            "parent": version.parent.number if version.parent else None,
            "dataset_uid": str(version.uid),
            "note": version.note,
            "trigger": version.trigger,
            "created_at": timezone.now().isoformat(),
            "code_version": code_version(),
            "writer": {"pyarrow": pa.__version__},
            **shards.describe_hashing(self.partitions),
            "features": self.features,
            "schema": {"features": shards.describe_schema(self.schema),
                       "labels": shards.describe_schema(shards.LABEL_SCHEMA)},
            "layout": {"row_group_rows": shards.ROW_GROUP_ROWS, "max_segments": shards.MAX_SEGMENTS,
                       "max_dead_share": shards.MAX_DEAD_SHARE},
            "shards": entries,
            "counts": counts,
            "bytes": sum(e["bytes"] for e in entries),
        }

    def _adopt(self, key: str) -> tuple[bytes, dict]:
        """The manifest already at `key`: ours if an earlier attempt of this version wrote it
        and then lost the database before recording it; anything else is refused."""
        existing = self.storage.get(key)
        try:
            document = shards.parse_manifest(existing)
        except shards.ShardError:
            document = {}
        if document.get("dataset_uid") != str(self.version.uid):
            raise shards.ShardError(
                f"The store already holds a manifest at {key} that this version did not write; it is never "
                "overwritten.")
        log.info("dataset.manifest_adopted", version=self.version.number, key=key)
        return existing, document

    def _publish(self, document: dict) -> None:
        """Write the manifest, last and only once, then record its hash: under the version's
        row lock, the manifest key is checked and then written only if absent (conditional
        put where the store supports it), so two attempts can never both publish."""
        self.beat("publishing", 0.95, force=True)
        key = selectors.manifest_key(self.project.slug, self.version.number)
        data = shards.manifest_bytes(document)
        with transaction.atomic():
            locked = DatasetVersion.objects.select_for_update().filter(
                pk=self.version.pk, build_token=self.token, status=DatasetStatus.BUILDING).first()
            if locked is None:
                raise Superseded(self.version.pk)
            try:
                if self.storage.exists(key):
                    raise ObjectExists(key)
                self.storage.put(key, data, if_absent=True, sha256=shards.sha256_bytes(data))
            except ObjectExists:
                data, document = self._adopt(key)
            now = timezone.now()
            self.stats["seconds"] = round(time.monotonic() - self.started, 3)
            DatasetVersion.objects.filter(pk=self.version.pk).update(
                status=DatasetStatus.READY, manifest_key=key, manifest_uri=self.storage.uri(key),
                manifest_sha256=shards.sha256_bytes(data), counts=document["counts"], stats=self.stats,
                phase="", progress=1.0, build_token="", heartbeat_at=now, finished_at=now, updated_at=now, error="",
            )
