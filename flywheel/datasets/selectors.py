"""Reads of dataset versions: a project's versions, the prediction rows a build reads, and
a version's manifest and shards on object storage, each checked against its hash before
use, for diffs, exports and pulls."""

import io
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from django.db import connection
from django.db.models import QuerySet
from psycopg import sql

from common.csvrows import csv_chunks
from common.errors import Conflict, NotFound
from common.storage import ObjectMissing, Storage, get_storage, key
from flywheel.datasets import shards
from flywheel.models import DatasetStatus, DatasetVersion, Prediction, Project

# --- Where things are stored -------------------------------------------------------------------
# Keys come only from validated parts: the project's slug (a slug, checked again by key())
# and hex digests or numbers this code produced.


def shard_key(project_slug: str, sha256: str) -> str:
    if not shards.SHA256_RE.match(sha256):
        raise ValueError(f"Not a SHA-256 digest: {sha256!r}")
    return key("datasets", project_slug, "shards", f"{sha256}.parquet")


def manifest_key(project_slug: str, number: int) -> str:
    return key("datasets", project_slug, "manifests", f"{int(number):08d}.json")


# --- Versions ----------------------------------------------------------------------------------


def dataset_versions(*, project: Project) -> QuerySet[DatasetVersion]:
    return DatasetVersion.objects.filter(project=project).select_related("project", "parent").order_by("-number")


def dataset_version_get(*, project: Project, number: int) -> DatasetVersion:
    version = dataset_versions(project=project).filter(number=number).first() if 0 < number < 2**31 else None
    if version is None:
        raise NotFound("dataset_not_found", f"Project '{project.slug}' has no dataset version {number}.")
    return version


def dataset_version_ready(*, project: Project, number: int) -> DatasetVersion:
    version = dataset_version_get(project=project, number=number)
    if version.status != DatasetStatus.READY:
        raise Conflict("dataset_not_ready", f"Dataset version {number} is {version.status}, not ready.")
    return version


def prediction_external_ids(*, project: Project, row_ids: Sequence[int]) -> dict[int, str]:
    if not row_ids:
        return {}
    return dict(Prediction.objects.filter(project=project, pk__in=list(row_ids)).values_list("id", "external_id"))


# --- The rows a build reads ---------------------------------------------------------------------

_ROWS_TABLE = "flywheel_dataset_build_rows"
_INPUT_KIND_SQL = ("CASE WHEN jsonb_exists(p.input, 'image_url') THEN 'image_url' "
                   "WHEN jsonb_exists(p.input, 'image') THEN 'image' "
                   "WHEN jsonb_exists(p.input, 'text') THEN 'text' END")
# Large reads use this many connections: PostgreSQL spends most of a build turning each
# feature's JSON number into text, one core per connection.
READ_CONNECTIONS = 2
PARALLEL_MIN_ROWS = 200_000


def dataset_prediction_rows_csv(*, project_id: int, row_ids: np.ndarray, features: Sequence[dict],
                                batch_rows: int = 65_536, connections: int = READ_CONNECTIONS,
                                parallel_min_rows: int = PARALLEL_MIN_ROWS) -> Iterator[bytes]:
    """The predictions with these ids (ascending) as CSV rows with the columns of
    shards.prediction_csv_columns(features), in id order: one chunk per `batch_rows` ids.
    Each chunk is read whole before it is yielded, so between chunks the connection is free
    for the caller (a build records its heartbeat there).

    On PostgreSQL the ids go into a temporary table and each batch is one COPY of a merge
    join with the predictions, with PostgreSQL pulling each feature out of the JSON. From
    `parallel_min_rows` ids on, outside a transaction, `connections` connections of their own
    read alternate batches."""
    row_ids = np.asarray(row_ids, dtype=np.int64)
    if not len(row_ids):
        return iter(())
    if connection.vendor != "postgresql":
        return _prediction_rows_orm(project_id, row_ids, features, batch_rows)
    batches = [row_ids[start:start + batch_rows] for start in range(0, len(row_ids), batch_rows)]
    # Other connections cannot see what the caller's open transaction has not committed.
    if connections > 1 and len(row_ids) >= parallel_min_rows and not connection.in_atomic_block:
        return _prediction_rows_parallel(project_id, batches, features, connections)
    return _prediction_rows_copy(project_id, batches, features)


class _RowReader:
    """Reads batches of prediction rows over one PostgreSQL cursor (Django's or a raw one)."""

    def __init__(self, cursor, project_id: int, features: Sequence[dict]):
        self.cursor = cursor
        columns = [sql.SQL("p.id"), sql.SQL("p.external_id"), sql.SQL(_INPUT_KIND_SQL),
                   sql.SQL("p.input ->> 'image_url'")]
        columns += [sql.SQL("p.features ->> {}").format(sql.Literal(f["name"])) for f in features]
        self.parts = {"columns": sql.SQL(", ").join(columns), "rows": sql.Identifier(_ROWS_TABLE),
                      "predictions": sql.Identifier(Prediction._meta.db_table), "project": sql.Literal(int(project_id))}

    def load(self, row_ids: np.ndarray) -> None:
        """The ids into a temporary table, in COPY's binary format built by NumPy (a million
        ids in tens of milliseconds, where a text COPY costs a second)."""
        self.cursor.execute(f"DROP TABLE IF EXISTS {_ROWS_TABLE}")
        self.cursor.execute(f"CREATE TEMPORARY TABLE {_ROWS_TABLE} (id bigint NOT NULL)")
        records = np.empty(len(row_ids), dtype=[("fields", ">i2"), ("length", ">i4"), ("id", ">i8")])
        records["fields"], records["length"], records["id"] = 1, 8, row_ids
        header = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
        with self.cursor.copy(f"COPY {_ROWS_TABLE} (id) FROM STDIN WITH (FORMAT binary)") as copy:
            copy.write(header + records.tobytes() + b"\xff\xff")
        self.cursor.execute(f"CREATE UNIQUE INDEX ON {_ROWS_TABLE} (id)")
        self.cursor.execute(f"ANALYZE {_ROWS_TABLE}")

    def read(self, batch: np.ndarray) -> bytearray:
        # The id range is stated on both sides of the join: PostgreSQL does not carry a range
        # across an equality, and without it every batch would scan the predictions from the first.
        query = sql.SQL(
            "COPY (SELECT {columns} FROM {rows} t JOIN {predictions} p ON p.id = t.id "
            "WHERE p.project_id = {project} AND t.id BETWEEN {low} AND {high} AND p.id BETWEEN {low} AND {high} "
            "ORDER BY p.id) TO STDOUT WITH (FORMAT csv)"
        ).format(low=sql.Literal(int(batch[0])), high=sql.Literal(int(batch[-1])), **self.parts)
        buffer = bytearray()
        with self.cursor.copy(query) as copy:
            for row in copy:
                buffer += row
        return buffer  # not copied into bytes: a batch is tens of megabytes

    def drop(self) -> None:
        self.cursor.execute(f"DROP TABLE IF EXISTS {_ROWS_TABLE}")


def _prediction_rows_copy(project_id, batches, features) -> Iterator[bytes]:
    with connection.cursor() as cursor:
        reader = _RowReader(cursor, project_id, features)
        try:
            reader.load(np.concatenate(batches))
            for batch in batches:
                yield reader.read(batch)
        finally:
            reader.drop()


def _prediction_rows_parallel(project_id, batches, features, connections) -> Iterator[bytes]:
    """Batch i is read by connection i % connections; the chunks still come out in order.
    A connection reads at most `connections` batches ahead of the caller, so memory stays
    bounded and the batch the caller waits for is never stuck behind others."""
    results = [Future() for _ in batches]
    state = threading.Condition()
    consumed = [0]
    stop = threading.Event()
    params = connection.get_connection_params()

    def work(offset: int) -> None:
        mine = range(offset, len(batches), connections)
        try:
            # Errors of these raw connections surface as Django's (OperationalError...).
            with connection.wrap_database_errors, psycopg.connect(**params) as raw, raw.cursor() as cursor:
                reader = _RowReader(cursor, project_id, features)
                reader.load(np.concatenate([batches[i] for i in mine]))
                for i in mine:
                    with state:
                        state.wait_for(lambda i=i: stop.is_set() or i < consumed[0] + connections)
                    if stop.is_set():
                        return
                    results[i].set_result(reader.read(batches[i]))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through its batches
            for i in mine:
                if not results[i].done():
                    results[i].set_exception(exc)

    threads = [threading.Thread(target=work, args=(k,), name=f"dataset-read-{k}", daemon=True)
               for k in range(connections)]
    for thread in threads:
        thread.start()
    try:
        for i in range(len(results)):
            chunk = results[i].result()
            results[i] = None  # the caller owns the chunk now; do not keep every batch alive
            with state:
                consumed[0] = i + 1
                state.notify_all()
            yield chunk
    finally:
        stop.set()
        with state:
            state.notify_all()
        for thread in threads:
            thread.join()


def _input_kind(value: dict) -> str | None:
    for kind in ("image_url", "image", "text"):
        if kind in value:
            return kind
    return None


def _feature_value(value, kind: str):
    if value is None:
        return None
    if kind == "numeric":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return value if isinstance(value, str) else orjson.dumps(value).decode().strip('"')


def _prediction_rows_orm(project_id, row_ids, features, batch_rows) -> Iterator[bytes]:
    # SQLite (the embedded default) limits the parameters of one statement.
    batch_rows = min(batch_rows, 900)
    for start in range(0, len(row_ids), batch_rows):
        batch = row_ids[start:start + batch_rows].tolist()
        rows = (
            [pk, external_id, _input_kind(input_value or {}), (input_value or {}).get("image_url")]
            + [_feature_value((values or {}).get(f["name"]), f["type"]) for f in features]
            for pk, external_id, input_value, values in Prediction.objects.filter(
                project_id=project_id, pk__in=batch).order_by("pk").values_list("pk", "external_id", "input",
                                                                                "features")
        )
        yield b"".join(csv_chunks(rows, chunk_bytes=1 << 30))


# --- A version on storage -------------------------------------------------------------------------


def manifest_load(*, version: DatasetVersion, storage: Storage | None = None) -> dict:
    """The manifest of a ready version, checked against the hash recorded at publication."""
    storage = storage or get_storage()
    try:
        data = storage.get(version.manifest_key)
    except ObjectMissing:
        raise shards.ShardError(f"The manifest of version {version.number} is missing from storage.") from None
    return shards.parse_manifest(data, sha256=version.manifest_sha256)


def shard_load(*, storage: Storage, project_slug: str, shard: dict) -> pa.Table:
    """A shard named by a manifest, refused unless its bytes hash to its name."""
    try:
        data = storage.get(shard_key(project_slug, shard["sha256"]))
    except ObjectMissing:
        raise shards.ShardError(f"Shard {shard['sha256']} is missing from storage.") from None
    return shards.read_parquet(data, sha256=shard["sha256"])


def version_partitions(*, version: DatasetVersion, split: str | None = None, storage: Storage | None = None,
                       document: dict | None = None) -> Iterator[pa.Table]:
    """The rows of a ready version, one partition at a time (bounded memory), every shard
    verified. `document` is its manifest, if the caller has loaded it already."""
    storage = storage or get_storage()
    document = document or manifest_load(version=version, storage=storage)
    slug = version.project.slug
    for segments, label in shards.manifest_partitions(document).values():
        tables = [shard_load(storage=storage, project_slug=slug, shard=s) for s in segments]
        table = shards.join_partition(tables, shard_load(storage=storage, project_slug=slug, shard=label))
        if split is not None:
            table = table.filter(pc.equal(table.column("split"), split))
        yield table


def _label_shards(document: dict) -> dict[int, dict]:
    return {p: label for p, (_, label) in shards.manifest_partitions(document).items()}


def dataset_diff(*, project: Project, a: int, b: int, examples: int = 10) -> dict:
    """What changed from version `a` to version `b`: rows added, removed and relabeled, with
    up to `examples` of each. Reads only label shards, and skips the partitions whose label
    shard is the same in both."""
    old, new = dataset_version_ready(project=project, number=a), dataset_version_ready(project=project, number=b)
    storage = get_storage()
    old_doc, new_doc = manifest_load(version=old, storage=storage), manifest_load(version=new, storage=storage)
    old_labels, new_labels = _label_shards(old_doc), _label_shards(new_doc)
    empty = shards.LABEL_SCHEMA.empty_table()

    def load(shard):
        return shard_load(storage=storage, project_slug=project.slug, shard=shard) if shard else empty

    diff = shards.LabelDiff()
    same_layout = old_doc["partitioning"] == new_doc["partitioning"]
    if same_layout:
        for partition in sorted(old_labels.keys() | new_labels.keys()):
            before, after = old_labels.get(partition), new_labels.get(partition)
            if before and after and before["sha256"] == after["sha256"]:
                continue
            diff.merge(shards.diff_labels(load(before), load(after), examples=examples), examples)
    else:
        before = pa.concat_tables([load(s) for s in old_labels.values()] or [empty])
        after = pa.concat_tables([load(s) for s in new_labels.values()] or [empty])
        diff = shards.diff_labels(before, after, examples=examples)
    ids = prediction_external_ids(project=project, row_ids=[
        row[0] for row in diff.added_examples + diff.removed_examples + diff.relabeled_examples])

    def name(row_id):
        return ids.get(row_id, f"#{row_id}")

    return {
        "from": a, "to": b, "added": diff.added, "removed": diff.removed, "relabeled": diff.relabeled,
        "examples": {
            "added": [{"prediction_id": name(r), "label": label} for r, label in diff.added_examples],
            "removed": [{"prediction_id": name(r), "label": label} for r, label in diff.removed_examples],
            "relabeled": [{"prediction_id": name(r), "from": before, "to": after}
                          for r, before, after in diff.relabeled_examples],
        },
    }


# --- Exports ----------------------------------------------------------------------------------------

EXPORT_FORMATS = ("jsonl", "csv")
_EXPORT_SLICE_ROWS = 8_192


def _export_columns(features: Sequence[dict]) -> list[str]:
    return (["prediction_id", "split", "label", "source", "weight", "input_kind", "input_url"]
            + [shards.feature_column(f["name"]) for f in features])


def dataset_export(*, version: DatasetVersion, fmt: str, split: str | None = None) -> Iterator[bytes]:
    """A ready version's rows as JSON lines or CSV, streamed a slice at a time. The manifest
    is read (and verified) before the first byte, so a missing or corrupt version fails
    before anything is sent."""
    storage = get_storage()
    document = manifest_load(version=version, storage=storage)
    features = document.get("features", [])
    partitions = version_partitions(version=version, split=split, storage=storage, document=document)
    if fmt == "csv":
        return _export_csv(partitions, features)
    return _export_jsonl(partitions, features)


def _export_jsonl(partitions: Iterator[pa.Table], features: Sequence[dict]) -> Iterator[bytes]:
    names = [f["name"] for f in features]
    columns = [shards.feature_column(n) for n in names]
    for table in partitions:
        for start in range(0, table.num_rows, _EXPORT_SLICE_ROWS):
            part = table.slice(start, _EXPORT_SLICE_ROWS)
            lines = []
            for row in part.to_pylist():
                lines.append(orjson.dumps({
                    "prediction_id": row["prediction_id"], "split": row["split"], "label": row["label"],
                    "source": row["source"], "weight": row["weight"],
                    "input": {"kind": row["input_kind"], "url": row["input_url"]},
                    "features": {n: row[c] for n, c in zip(names, columns, strict=True)},
                }))
            yield b"\n".join(lines) + b"\n"


def _export_csv(partitions: Iterator[pa.Table], features: Sequence[dict]) -> Iterator[bytes]:
    columns = _export_columns(features)
    header = True
    for table in partitions:
        for start in range(0, max(table.num_rows, 1 if header else 0), _EXPORT_SLICE_ROWS):
            sink = io.BytesIO()
            pacsv.write_csv(table.slice(start, _EXPORT_SLICE_ROWS).select(columns), sink,
                            write_options=pacsv.WriteOptions(include_header=header))
            header = False
            yield sink.getvalue()
    if header:  # a version without rows still has a header
        yield (",".join(f'"{c}"' for c in columns) + "\n").encode()


# --- Pulling a version to a directory -------------------------------------------------------------


@dataclass
class PullResult:
    directory: Path
    shards: int
    downloaded: int
    bytes: int
    rows: int


def dataset_pull(*, version: DatasetVersion, directory: Path, storage: Storage | None = None) -> PullResult:
    """Download a ready version into `directory` (shards/<sha256>.parquet, then
    manifest.json) and verify every byte: the manifest against the hash recorded in the
    database, each shard against its name. A shard already there and intact is kept. A
    corrupt one is deleted and raises ShardError; the manifest is written only when every
    shard is good, so a directory with a manifest holds the whole version."""
    storage = storage or get_storage()
    directory = Path(directory)
    try:
        data = storage.get(version.manifest_key)
    except ObjectMissing:
        raise shards.ShardError(f"The manifest of version {version.number} is missing from storage.") from None
    document = shards.parse_manifest(data, sha256=version.manifest_sha256)
    target_dir = directory / "shards"
    target_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    downloaded = total = 0
    for shard in document["shards"]:
        digest = shard["sha256"]
        if digest in seen:
            continue
        seen.add(digest)
        total += shard["bytes"]
        target = target_dir / f"{digest}.parquet"
        if target.exists() and shards.sha256_file(target) == digest:
            continue
        partial = target_dir / f".{digest}.partial"
        try:
            storage.get_file(shard_key(version.project.slug, digest), partial)
        except ObjectMissing:
            raise shards.ShardError(f"Shard {digest} of version {version.number} is missing from storage.") from None
        actual = shards.sha256_file(partial)
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise shards.ShardError(
                f"Shard {digest} of version {version.number} is corrupted: its bytes hash to {actual}. "
                "Refusing it; nothing was written for it.")
        os.replace(partial, target)
        downloaded += 1
    manifest_path = directory / "manifest.json"
    partial = directory / ".manifest.json.partial"
    partial.write_bytes(data)
    os.replace(partial, manifest_path)
    return PullResult(directory, len(seen), downloaded, total, document["counts"]["rows"])
