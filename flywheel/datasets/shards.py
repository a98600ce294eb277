"""The rows of a dataset version as Parquet shards: partitions and splits from hashes of
the row id, which shards a new version can take over from its parent, deterministic
encoding, hashing, the manifest, reading back and diffing. Arrow and NumPy only, no
Django, so it is tested and benchmarked alone.

Layout. A row is one labeled prediction; its row id is the prediction's primary key. Rows
fall into PARTITIONS partitions by a hash of the row id. Each partition is stored as
  - one or more *feature segments*: the columns that never change for a row (prediction
    id, input reference, split, features), written once and carried over unchanged from
    version to version; new rows arrive as a new, small segment;
  - one *label shard*: the columns that do change (label, source, weight), with one row
    per row of the segments, in the same order, and a null label for a row that is no
    longer in the version.
Every shard is named by the SHA-256 of its bytes. Relabeling 1% of rows touches every
partition but rewrites only the label shards (a few bytes per row); the feature segments,
almost all of the bytes, are reused."""

import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMAT = "flywheel.dataset/1"
# Partitions of a new lineage: at least PARTITIONS, more for large datasets so that a
# partition holds at most about PARTITION_ROWS rows when it is first written (readers load
# one partition at a time). Versions built on a parent keep the parent's count.
PARTITIONS = 16
PARTITION_ROWS = 250_000
MAX_PARTITIONS = 1024
SPLITS = ("train", "validation", "test")
# A row's split: its split hash modulo 1000, below 800 train, below 900 validation, else test.
SPLIT_PER_MILLE = {"train": 800, "validation": 100, "test": 100}
# Rows per Parquet row group of a feature segment: row groups are cut at fixed row counts,
# never where a database read happened to end, so the same rows make the same bytes.
ROW_GROUP_ROWS = 16_384
LABEL_ROW_GROUP_ROWS = 1 << 20
# A partition may hold this many feature segments; past it the newer ones are merged
# into one. When this share of a partition's segment rows has left the version, the
# partition is written afresh.
MAX_SEGMENTS = 8
MAX_DEAD_SHARE = 0.25

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FEATURE_PREFIX = "feature."

# Fixed forever, like the format: changing one moves every row to another partition or split.
_PARTITION_SEED = np.uint64(0x243F6A8885A308D3)
_SPLIT_SEED = np.uint64(0x13198A2E03707344)

_LABEL_COLUMNS = ("row_id", "label", "source", "weight")
LABEL_SCHEMA = pa.schema([
    pa.field("row_id", pa.int64(), nullable=False),
    pa.field("label", pa.string()),
    pa.field("source", pa.string()),
    pa.field("weight", pa.float64()),
])
# Columns of the prediction rows a build reads from the database, before the features.
PREDICTION_COLUMNS = ("row_id", "prediction_id", "input_kind", "input_url")


class ShardError(Exception):
    """A shard or manifest that does not say what it should (wrong hash, shape or schema)."""


# --- Hashes of the row id ------------------------------------------------------------------


def mix64(values: np.ndarray, seed: np.uint64) -> np.ndarray:
    """SplitMix64's finalizer over (value + seed): a fast, well-spread 64-bit hash that any
    language can recompute from the row id."""
    with np.errstate(over="ignore"):
        z = np.asarray(values).astype(np.uint64) + seed + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def partition_count(rows: int) -> int:
    """Partitions for a dataset of `rows` rows written afresh: a power of two."""
    count = PARTITIONS
    while count < MAX_PARTITIONS and rows > count * PARTITION_ROWS:
        count *= 2
    return count


def partitions_of(row_ids: np.ndarray, partitions: int = PARTITIONS) -> np.ndarray:
    return (mix64(row_ids, _PARTITION_SEED) % np.uint64(partitions)).astype(np.int64)


def split_codes(row_ids: np.ndarray) -> np.ndarray:
    """0 train, 1 validation, 2 test: a function of the row id alone, so a row keeps its
    split in every version."""
    per_mille = mix64(row_ids, _SPLIT_SEED) % np.uint64(1000)
    train = SPLIT_PER_MILLE["train"]
    return np.where(per_mille < train, 0, np.where(per_mille < train + SPLIT_PER_MILLE["validation"], 1, 2)).astype(
        np.int8)


def split_array(row_ids: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(SPLITS, dtype=object)[split_codes(row_ids)], type=pa.string())


def describe_hashing(partitions: int) -> dict:
    """How partitions and splits are computed, for the manifest: enough to recompute both."""
    return {
        "partitioning": {"hash": "splitmix64", "column": "row_id", "seed": int(_PARTITION_SEED),
                         "partitions": partitions},
        "split": {"hash": "splitmix64", "column": "row_id", "seed": int(_SPLIT_SEED), "modulo": 1000,
                  "per_mille": SPLIT_PER_MILLE},
    }


# --- Schemas and encoding ------------------------------------------------------------------


def feature_column(name: str) -> str:
    return FEATURE_PREFIX + name


def _feature_type(kind: str) -> pa.DataType:
    return pa.float64() if kind == "numeric" else pa.string()


def segment_schema(features: Sequence[dict]) -> pa.Schema:
    """Columns of a feature segment for a project's feature schema ([{"name", "type"}])."""
    return pa.schema(
        [pa.field("row_id", pa.int64(), nullable=False), pa.field("prediction_id", pa.string()),
         pa.field("split", pa.string()), pa.field("input_kind", pa.string()), pa.field("input_url", pa.string())]
        + [pa.field(feature_column(f["name"]), _feature_type(f["type"])) for f in features]
    )


def describe_schema(schema: pa.Schema) -> list[dict]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


def _write_options(schema: pa.Schema) -> dict:
    """Parquet settings per column: dictionaries for the few-valued strings, delta coding
    for the sorted row ids, byte-stream-split for floats (it lets zstd find the shared
    exponent bytes). Fixed here, so the bytes depend on the rows alone."""
    dictionary, encoding = [], {}
    for f in schema:
        if f.name == "row_id":
            encoding[f.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_floating(f.type) and f.name != "weight":
            encoding[f.name] = "BYTE_STREAM_SPLIT"
        elif f.name not in ("prediction_id", "input_url"):
            dictionary.append(f.name)
    return {"compression": "zstd", "compression_level": 1, "use_dictionary": dictionary,
            "column_encoding": encoding, "write_statistics": True}


def encode_table(table: pa.Table, row_group_rows: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=max(1, row_group_rows), **_write_options(table.schema))
    return sink.getvalue()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_parquet(data: bytes | Path, *, sha256: str | None = None) -> pa.Table:
    """A shard's table; with `sha256`, refuses bytes that do not hash to it."""
    if isinstance(data, Path):
        data = data.read_bytes()
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise ShardError(f"Shard {sha256} is corrupted: its bytes hash to {sha256_bytes(data)}.")
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"Shard {sha256 or ''} is not readable Parquet: {exc}") from exc


# --- Reading rows out of the database's CSV ---------------------------------------------------------


def _csv_options(names: list[str], types: dict[str, pa.DataType]):
    return (
        pacsv.ReadOptions(column_names=names, block_size=4 << 20),
        # A categorical value may hold a newline; COPY quotes it.
        pacsv.ParseOptions(newlines_in_values=True),
        # COPY writes NULL as an unquoted empty field and '' as "": keep them apart.
        pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False),
    )


def prediction_csv_columns(features: Sequence[dict]) -> list[str]:
    """The columns, in order, of the prediction rows CSV a build reads."""
    return list(PREDICTION_COLUMNS) + [feature_column(f["name"]) for f in features]


def parse_prediction_rows(chunk: bytes | bytearray, features: Sequence[dict]) -> pa.Table:
    """Prediction rows (CSV with prediction_csv_columns) as a feature segment table, with
    the split computed from the row id."""
    schema = segment_schema(features)
    names = prediction_csv_columns(features)
    types = {name: schema.field(name).type for name in names}
    read, parse, convert = _csv_options(names, types)
    try:
        table = pacsv.read_csv(pa.BufferReader(chunk), read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise ShardError(f"Prediction rows do not match the feature schema: {exc}") from exc
    row_ids = table.column("row_id").to_numpy()
    table = table.add_column(2, "split", split_array(row_ids))
    return table.select(schema.names).cast(schema)


@dataclass
class LabelSet:
    """The current labels of a project: row ids in ascending order and their label, source
    and weight."""

    row_ids: np.ndarray
    labels: pa.Array
    sources: pa.Array
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.row_ids)


def parse_labels(chunks: Iterable[bytes]) -> LabelSet:
    """The labels CSV (prediction_id, label, source, weight), in any number of chunks."""
    names = list(_LABEL_COLUMNS)
    types = {"row_id": pa.int64(), "label": pa.dictionary(pa.int32(), pa.string()),
             "source": pa.dictionary(pa.int32(), pa.string()), "weight": pa.float64()}
    read, parse, convert = _csv_options(names, types)
    tables = [pacsv.read_csv(pa.BufferReader(chunk), read_options=read, parse_options=parse, convert_options=convert)
              for chunk in chunks if chunk]
    if not tables:
        empty = pa.array([], type=pa.string())
        return LabelSet(np.zeros(0, dtype=np.int64), empty, empty, np.zeros(0))
    table = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    row_ids = table.column("row_id").to_numpy()
    if len(row_ids) > 1 and not np.all(row_ids[1:] > row_ids[:-1]):
        order = np.argsort(row_ids, kind="stable")
        row_ids = row_ids[order]
        if np.any(row_ids[1:] == row_ids[:-1]):
            raise ShardError("Two current labels for one prediction.")
        table = table.take(pa.array(order))
    return LabelSet(
        row_ids=row_ids,
        labels=table.column("label").combine_chunks(),
        sources=table.column("source").combine_chunks(),
        weights=table.column("weight").to_numpy(zero_copy_only=False).astype(np.float64),
    )


def group_by_partition(row_ids: np.ndarray, partitions: int) -> list[np.ndarray]:
    """For each partition, the positions in `row_ids` of its rows, in their original order."""
    part = partitions_of(row_ids, partitions)
    order = np.argsort(part, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(part, minlength=partitions))])
    return [order[bounds[p]:bounds[p + 1]] for p in range(partitions)]


# --- Writing feature segments -----------------------------------------------------------------


@dataclass(frozen=True)
class ShardFile:
    path: Path
    sha256: str
    rows: int
    bytes: int
    row_ids: np.ndarray = field(repr=False, compare=False)


class SegmentWriter:
    """Writes the rows of one feature segment, in ascending row id, to a local Parquet file,
    in row groups of exactly ROW_GROUP_ROWS rows (the last one smaller) however the rows
    arrive, so the same rows always make the same bytes. Holds at most a row group and one
    incoming batch in memory."""

    def __init__(self, path: Path, schema: pa.Schema, *, row_group_rows: int = ROW_GROUP_ROWS):
        self.path = Path(path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        self._writer = pq.ParquetWriter(self.path, schema, **_write_options(schema))
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._row_ids: list[np.ndarray] = []
        self._last_row_id: int | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        row_ids = table.column("row_id").to_numpy()
        if (self._last_row_id is not None and row_ids[0] <= self._last_row_id) or (
                len(row_ids) > 1 and not np.all(row_ids[1:] > row_ids[:-1])):
            raise ShardError("Rows of a segment must arrive in ascending row id.")
        self._last_row_id = int(row_ids[-1])
        self._row_ids.append(row_ids)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        merged = pa.concat_tables(self._pending).combine_chunks()
        size = self.row_group_rows
        full = merged.num_rows if final else (merged.num_rows // size) * size
        for start in range(0, full, size):
            self._writer.write_table(merged.slice(start, min(size, full - start)), row_group_size=size)
        # The rows left over are copied out: a slice would keep the whole merged table alive.
        rest = merged.take(pa.array(np.arange(full, merged.num_rows))) if full < merged.num_rows else None
        self._pending = [rest] if rest is not None else []
        self._pending_rows = rest.num_rows if rest is not None else 0

    def close(self) -> ShardFile:
        if self._pending_rows:
            self._flush(final=True)
        self._writer.close()
        row_ids = np.concatenate(self._row_ids) if self._row_ids else np.zeros(0, dtype=np.int64)
        return ShardFile(self.path, sha256_file(self.path), len(row_ids), self.path.stat().st_size, row_ids)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.path.unlink(missing_ok=True)


class SegmentRouter:
    """Sends each incoming prediction row to the segment writer of its partition. Only the
    partitions that get a new segment have a writer; a row for another is a bug."""

    def __init__(self, directory: Path, schema: pa.Schema, partitions: int, wanted: Iterable[int], *,
                 row_group_rows: int = ROW_GROUP_ROWS):
        self.partitions = partitions
        self.writers = {
            p: SegmentWriter(Path(directory) / f"segment-{p:04d}.parquet", schema, row_group_rows=row_group_rows)
            for p in wanted
        }
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        part = partitions_of(table.column("row_id").to_numpy(), self.partitions)
        order = np.argsort(part, kind="stable")  # keeps row id order within each partition
        bounds = np.concatenate([[0], np.cumsum(np.bincount(part, minlength=self.partitions))])
        for p in np.flatnonzero(np.diff(bounds)):
            writer = self.writers.get(int(p))
            if writer is None:
                raise ShardError(f"A row of partition {p} arrived, which gets no new segment.")
            # One compact copy per partition: a slice of a shared table would keep every
            # partition's rows alive until the slowest partition writes its row group.
            writer.write(table.take(pa.array(order[bounds[p]:bounds[p + 1]])))
        self.rows += table.num_rows

    def close(self) -> dict[int, ShardFile]:
        return {p: writer.close() for p, writer in self.writers.items()}

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


# --- Which shards a version takes over from its parent -------------------------------------------


@dataclass(frozen=True)
class Segment:
    sha256: str
    rows: int
    bytes: int


@dataclass
class ParentPartition:
    """A partition as the parent version left it: its feature segments, in order, and the
    row ids of all their rows in the same order (read from its label shard)."""

    segments: list[Segment]
    row_ids: np.ndarray


@dataclass
class PartitionPlan:
    partition: int
    kept: list[Segment]      # the parent's segments this version references unchanged
    kept_row_ids: np.ndarray  # their rows, in segment order, whether still labeled or not
    new_row_ids: np.ndarray   # the rows of the one new segment, ascending (may be empty)
    reason: str               # new | unchanged | appended | merged | rewritten


def plan_partition(partition: int, live_ids: np.ndarray, parent: ParentPartition | None, *,
                   max_segments: int = MAX_SEGMENTS, max_dead_share: float = MAX_DEAD_SHARE) -> PartitionPlan:
    """What to write for one partition, given the row ids that have a current label
    (ascending) and what the parent stored."""
    empty = np.zeros(0, dtype=np.int64)
    if parent is None or not parent.segments:
        return PartitionPlan(partition, [], empty, live_ids, "new")
    existing = parent.row_ids
    fresh = np.setdiff1d(live_ids, existing, assume_unique=True)
    dead = len(existing) - (len(live_ids) - len(fresh))
    if dead > max_dead_share * len(existing):
        return PartitionPlan(partition, [], empty, live_ids, "rewritten")
    if len(fresh) == 0:
        return PartitionPlan(partition, list(parent.segments), existing, empty, "unchanged")
    if len(parent.segments) < max_segments:
        return PartitionPlan(partition, list(parent.segments), existing, fresh, "appended")
    # Too many segments: keep the first (the big one) and fold the others, with the new
    # rows, into one. Their rows are read again from the database, not from the old shards.
    base = parent.segments[0]
    base_ids = existing[:base.rows]
    tail = np.intersect1d(existing[base.rows:], live_ids, assume_unique=True)
    return PartitionPlan(partition, [base], base_ids, np.union1d(tail, fresh), "merged")


def parent_partition(segments: list[Segment], label_table: pa.Table) -> ParentPartition:
    row_ids = label_table.column("row_id").to_numpy()
    if sum(s.rows for s in segments) != len(row_ids):
        raise ShardError("The label shard does not cover its feature segments row for row.")
    return ParentPartition(segments, row_ids)


# --- Label shards ---------------------------------------------------------------------------------


def label_shard(row_order: np.ndarray, live_ids: np.ndarray, labels: pa.Array, sources: pa.Array,
                weights: np.ndarray) -> pa.Table:
    """One row per row of the partition's segments, in `row_order`; label, source and weight
    from the current labels (`live_ids` ascending, with `labels`, `sources` and `weights`
    beside them), null where a row has no current label any more."""
    n = len(live_ids)
    if n:
        pos = np.minimum(np.searchsorted(live_ids, row_order), n - 1)
        present = live_ids[pos] == row_order
    else:
        pos = np.zeros(len(row_order), dtype=np.int64)
        present = np.zeros(len(row_order), dtype=bool)
    missing = pa.array(~present)

    def pick(values: pa.Array) -> pa.Array:
        if n == 0:
            return pa.nulls(len(row_order), pa.string())
        taken = values.take(pa.array(pos))
        if pa.types.is_dictionary(taken.type):
            taken = taken.dictionary_decode()
        return pc.if_else(missing, pa.scalar(None, pa.string()), taken.cast(pa.string()))

    weight = weights[pos] if n else np.zeros(len(row_order))
    return pa.table({
        "row_id": pa.array(row_order, type=pa.int64()),
        "label": pick(labels),
        "source": pick(sources),
        "weight": pa.array(weight, type=pa.float64(), mask=~present),
    }, schema=LABEL_SCHEMA)


def encode_label_shard(table: pa.Table) -> bytes:
    return encode_table(table, LABEL_ROW_GROUP_ROWS)


def present_rows(label_table: pa.Table) -> pa.Table:
    return label_table.filter(pc.is_valid(label_table.column("label")))


def _value_counts(column: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    counts = pc.value_counts(column)
    return {str(v): int(c) for v, c in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                                           strict=True) if v is not None}


def count_rows(label_tables: Iterable[pa.Table]) -> dict:
    """Counts of a version from its label shards: rows, by label, by source and by split."""
    rows, by_label, by_source, by_split = 0, {}, {}, dict.fromkeys(SPLITS, 0)
    for table in label_tables:
        table = present_rows(table)
        if table.num_rows == 0:
            continue
        rows += table.num_rows
        for target, column in ((by_label, "label"), (by_source, "source")):
            for value, count in _value_counts(table.column(column)).items():
                target[value] = target.get(value, 0) + count
        codes = np.bincount(split_codes(table.column("row_id").to_numpy()), minlength=len(SPLITS))
        for name, count in zip(SPLITS, codes, strict=True):
            by_split[name] += int(count)
    return {"rows": rows, "by_label": dict(sorted(by_label.items())), "by_source": dict(sorted(by_source.items())),
            "by_split": by_split}


# --- Reading a partition back ---------------------------------------------------------------------


def join_partition(segment_tables: Sequence[pa.Table], label_table: pa.Table) -> pa.Table:
    """A partition's rows with their labels: the segments side by side with the label shard,
    row for row (checked), without the rows that are not in the version."""
    if label_table.schema.names[:4] != list(_LABEL_COLUMNS):
        raise ShardError("A label shard has unexpected columns.")
    features = pa.concat_tables(segment_tables, promote_options="permissive") if segment_tables else None
    if features is None or features.num_rows != label_table.num_rows:
        raise ShardError("A partition's label shard and feature segments differ in row count.")
    if label_table.num_rows and not pc.all(
            pc.equal(features.column("row_id"), label_table.column("row_id"))).as_py():
        raise ShardError("A partition's label shard and feature segments disagree on row ids.")
    table = features
    for name in ("label", "source", "weight"):
        table = table.append_column(name, label_table.column(name))
    return table.filter(pc.is_valid(label_table.column("label")))


# --- Diff -----------------------------------------------------------------------------------------


@dataclass
class LabelDiff:
    added: int = 0
    removed: int = 0
    relabeled: int = 0
    # Up to `examples` of each: (row_id, label) / (row_id, old label, new label).
    added_examples: list[tuple[int, str]] = field(default_factory=list)
    removed_examples: list[tuple[int, str]] = field(default_factory=list)
    relabeled_examples: list[tuple[int, str, str]] = field(default_factory=list)

    def merge(self, other: "LabelDiff", examples: int) -> None:
        self.added += other.added
        self.removed += other.removed
        self.relabeled += other.relabeled
        self.added_examples = (self.added_examples + other.added_examples)[:examples]
        self.removed_examples = (self.removed_examples + other.removed_examples)[:examples]
        self.relabeled_examples = (self.relabeled_examples + other.relabeled_examples)[:examples]


def _sorted_present(table: pa.Table) -> tuple[np.ndarray, pa.Array]:
    table = present_rows(table)
    row_ids = table.column("row_id").to_numpy()
    order = np.argsort(row_ids, kind="stable")
    return row_ids[order], table.column("label").combine_chunks().take(pa.array(order))


def diff_labels(old: pa.Table, new: pa.Table, *, examples: int = 10) -> LabelDiff:
    """Rows added, removed and relabeled from label table `old` to `new` (label shards, or
    any tables with row_id and label)."""
    old_ids, old_labels = _sorted_present(old)
    new_ids, new_labels = _sorted_present(new)
    common, in_old, in_new = np.intersect1d(old_ids, new_ids, assume_unique=True, return_indices=True)
    added = np.setdiff1d(np.arange(len(new_ids)), in_new, assume_unique=True)
    removed = np.setdiff1d(np.arange(len(old_ids)), in_old, assume_unique=True)
    before = old_labels.take(pa.array(in_old))
    after = new_labels.take(pa.array(in_new))
    changed = np.flatnonzero(pc.not_equal(before, after).to_numpy(zero_copy_only=False))
    return LabelDiff(
        added=len(added), removed=len(removed), relabeled=len(changed),
        added_examples=[(int(new_ids[i]), new_labels[int(i)].as_py()) for i in added[:examples]],
        removed_examples=[(int(old_ids[i]), old_labels[int(i)].as_py()) for i in removed[:examples]],
        relabeled_examples=[(int(common[i]), before[int(i)].as_py(), after[int(i)].as_py())
                            for i in changed[:examples]],
    )


# --- The manifest ---------------------------------------------------------------------------------


def manifest_bytes(document: dict) -> bytes:
    """The manifest's canonical bytes (sorted keys, indented): its SHA-256 is the version's."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ShardError(f"Invalid manifest: {what}.")


def parse_manifest(data: bytes, *, sha256: str | None = None) -> dict:
    """A manifest from storage, checked against its recorded hash and for the shape readers
    rely on (shard names are hashes, each partition's label shard covers its segments)."""
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise ShardError(f"The manifest is corrupted: its bytes hash to {sha256_bytes(data)}, not {sha256}.")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ShardError(f"Invalid manifest: not JSON ({exc}).") from None
    _require(isinstance(document, dict) and document.get("format") == FORMAT, f"format is not {FORMAT}")
    _require(isinstance(document.get("version"), int), "no version")
    partitions = document.get("partitioning", {}).get("partitions")
    _require(isinstance(partitions, int) and partitions > 0, "no partition count")
    shards = document.get("shards")
    _require(isinstance(shards, list), "no shard list")
    covered: dict[int, int] = {}
    labels: dict[int, int] = {}
    for shard in shards:
        _require(isinstance(shard, dict) and isinstance(shard.get("sha256"), str)
                 and SHA256_RE.match(shard["sha256"]) is not None, "a shard without a SHA-256 name")
        _require(shard.get("kind") in ("features", "labels"), "a shard of unknown kind")
        _require(isinstance(shard.get("partition"), int) and 0 <= shard["partition"] < partitions,
                 "a shard outside the partitions")
        _require(all(isinstance(shard.get(k), int) and shard[k] >= 0 for k in ("rows", "bytes")),
                 "a shard without rows and bytes")
        if shard["kind"] == "features":
            covered[shard["partition"]] = covered.get(shard["partition"], 0) + shard["rows"]
        else:
            _require(shard["partition"] not in labels, "two label shards in a partition")
            labels[shard["partition"]] = shard["rows"]
    _require(covered == labels, "a label shard that does not cover its partition's segments")
    return document


def manifest_partitions(document: dict) -> dict[int, tuple[list[dict], dict]]:
    """{partition: ([feature shard, ...] in order, label shard)} of a parsed manifest."""
    out: dict[int, tuple[list[dict], dict]] = {}
    for shard in document["shards"]:
        segments, label = out.get(shard["partition"], ([], None))
        if shard["kind"] == "features":
            segments.append(shard)
        else:
            label = shard
        out[shard["partition"]] = (segments, label)
    return dict(sorted(out.items()))
