"""Archived predictions as Parquet: the columns (typed features from the project's declared
schema), the bytes of one part, its Hive-style key and the day's manifest. Arrow only, no
Django. Bytes are written the way dataset shards are (flywheel.datasets.shards): sorted by
row id, fixed row groups and encodings, so the same rows always make the same bytes and a
part is named by their SHA-256."""

from collections.abc import Sequence

import orjson
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


def _json(value) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _feature(value, kind: str):
    if value is None:
        return None
    if kind == "numeric":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def part_table(rows: Sequence[dict], features: Sequence[dict]) -> pa.Table:
    """Rows (dicts of the prediction's fields, `model_version` by name) as an archive table in
    ascending row id."""
    rows = sorted(rows, key=lambda r: r["id"])
    schema = archive_schema(features)
    columns = {
        "row_id": [r["id"] for r in rows], "prediction_id": [r["external_id"] for r in rows],
        "model_version": [r["model_version"] for r in rows], "label": [r["label"] for r in rows],
        **{name: [r[name] for r in rows] for name in ("confidence", "least_confidence", "margin", "entropy")},
        **{name: [_json(r[name]) for r in rows] for name in ("probabilities", "input", "metadata")},
        "embedding": [None if r["embedding"] is None else bytes(r["embedding"]) for r in rows],
        "created_at": [r["created_at"] for r in rows], "received_at": [r["received_at"] for r in rows],
    }
    for f in features:
        columns[shards.feature_column(f["name"])] = [_feature((r["features"] or {}).get(f["name"]), f["type"])
                                                     for r in rows]
    return pa.table({name: pa.array(columns[name], type=schema.field(name).type) for name in schema.names},
                    schema=schema)


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
