"""Archived predictions as Parquet: the columns (typed features from the project's declared
schema), the bytes of one part, its Hive-style key and the day's manifest. Arrow only, no
Django. Bytes are written the way dataset shards are (flywheel.datasets.shards): sorted by
row id, fixed row groups and encodings, so the same rows always make the same bytes and a
part is named by their SHA-256."""

from collections.abc import Sequence

import pyarrow as pa

from common.storage import key
from flywheel.datasets import shards

FORMAT = "flywheel.archive/1"
# Rows per part at most: a part is read whole to answer one GET (after its Bloom filter
# matched) and loaded by query engines one file per task.
PART_ROWS = 250_000
ROOT = "archive"
MANIFESTS = "archive-manifests"


def archive_schema(features: Sequence[dict]) -> pa.Schema:
    """The archive's columns. The date is not a column: it is the Hive partition (the path)."""
    utc = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [pa.field("row_id", pa.int64(), nullable=False), pa.field("prediction_id", pa.string(), nullable=False),
         pa.field("model_version", pa.string()), pa.field("label", pa.string()),
         pa.field("confidence", pa.float64()), pa.field("least_confidence", pa.float64()),
         pa.field("margin", pa.float64()), pa.field("entropy", pa.float64()),
         pa.field("probabilities", pa.string()), pa.field("input", pa.string()), pa.field("metadata", pa.string()),
         pa.field("embedding", pa.binary()), pa.field("created_at", utc), pa.field("received_at", utc)]
        + [pa.field(shards.feature_column(f["name"]), pa.float64() if f["type"] == "numeric" else pa.string())
           for f in features]
    )


# The columns a part is built from, in the order the database read gives them: the JSON
# fields arrive as JSON text and each feature as the text of its value (a cast in the query,
# so no row is decoded into Python objects and encoded again).
READ_COLUMNS = ("row_id", "prediction_id", "model_version", "label", "confidence", "least_confidence", "margin",
                "entropy", "probabilities", "input", "metadata", "embedding", "created_at", "received_at")


def _numeric(values: list) -> pa.Array:
    """Feature values as doubles. PostgreSQL gives each as text, SQLite as a number; one that
    is not a number (validation lets none in, but rows written some other way may hold one)
    is missing."""
    for kind in (pa.float64(), pa.string()):
        try:
            return pa.array(values, type=kind).cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            continue

    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return pa.array([number(v) for v in values], type=pa.float64())


def _text(values: list) -> pa.Array:
    return pa.array([v if v is None or isinstance(v, str) else str(v) for v in values], type=pa.string())


def part_table(rows: Sequence[tuple], features: Sequence[dict]) -> pa.Table:
    """Rows (tuples: READ_COLUMNS, then each feature's value as text) as an archive table in
    ascending row id."""
    schema = archive_schema(features)
    rows = sorted(rows, key=lambda r: r[0])
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(len(READ_COLUMNS) + len(features))]
    arrays = []
    for name, values in zip(READ_COLUMNS, columns, strict=False):
        if name == "embedding":
            values = [None if v is None else bytes(v) for v in values]
        arrays.append(pa.array(values, type=schema.field(name).type))
    for f, values in zip(features, columns[len(READ_COLUMNS):], strict=True):
        arrays.append(_numeric(list(values)) if f["type"] == "numeric" else _text(list(values)))
    return pa.Table.from_arrays(arrays, schema=schema)


def part_bytes(table: pa.Table) -> bytes:
    return shards.encode_table(table, shards.ROW_GROUP_ROWS)


def part_key(slug: str, date: str, sha256: str) -> str:
    return key(ROOT, slug, f"date={date}", f"part-{sha256}.parquet")


def manifest_key(slug: str, date: str, sha256: str) -> str:
    """Outside the table's root: engines that read every file under it see Parquet only."""
    return key(MANIFESTS, slug, f"date={date}", f"{sha256}.json")


def manifest_document(*, slug: str, date: str, schema: pa.Schema, features: Sequence[dict],
                      parts: Sequence[dict]) -> dict:
    """What a day's archive holds: its parts by key and hash. No timestamps, so archiving
    the same rows again writes the same manifest."""
    return {"format": FORMAT, "project": slug, "date": date, "features": list(features),
            "schema": shards.describe_schema(schema), "rows": sum(p["rows"] for p in parts),
            "parts": sorted(parts, key=lambda p: p["key"])}


def manifest_bytes(document: dict) -> bytes:
    return shards.manifest_bytes(document)
