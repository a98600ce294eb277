"""The pure shard logic (flywheel.shards): hashing the row id into partitions and splits,
deterministic Parquet, which shards a version takes over, label shards, diffs, manifests.
No database here."""

import io

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from common.csvrows import csv_chunks
from flywheel.datasets import shards

FEATURES = [{"name": "f0", "type": "numeric"}, {"name": "color", "type": "categorical"}]


def test_partition_and_split_depend_on_the_row_id_alone():
    row_ids = np.arange(1, 200_001, dtype=np.int64)
    parts = shards.partitions_of(row_ids)
    assert set(np.unique(parts)) == set(range(shards.PARTITIONS))
    # The same id lands in the same place whatever else is hashed with it.
    shuffled = np.random.default_rng(1).permutation(row_ids)
    assert np.array_equal(shards.partitions_of(shuffled), parts[shuffled - 1])
    assert np.array_equal(shards.split_codes(shuffled), shards.split_codes(row_ids)[shuffled - 1])
    # Pinned values: a change to the hash would move rows between splits of published versions.
    pinned = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1_000_000])
    assert shards.split_codes(pinned).tolist() == [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]
    assert shards.partitions_of(pinned).tolist() == [6, 2, 4, 11, 5, 11, 6, 14, 15, 4, 1]
    assert shards.mix64(np.array([0]), np.uint64(0))[0] == np.uint64(0xE220A8397B1DCDAF)


def test_splits_follow_the_declared_shares():
    counts = np.bincount(shards.split_codes(np.arange(1, 100_001)), minlength=3) / 100_000
    assert counts == pytest.approx([0.8, 0.1, 0.1], abs=0.01)
    partitions = np.bincount(shards.partitions_of(np.arange(1, 100_001)), minlength=shards.PARTITIONS)
    assert partitions.min() > 0.9 * 100_000 / shards.PARTITIONS


def _rows(row_ids, *, color="red"):
    csv = b"".join(csv_chunks(
        ([int(i), f"p-{i}", None, None, float(i) / 3, color] for i in row_ids), chunk_bytes=1 << 20))
    return shards.parse_prediction_rows(csv, FEATURES)


def test_the_same_rows_make_the_same_bytes_however_they_arrive(tmp_path):
    row_ids = np.arange(1, 5_001)
    digests = set()
    for chunking in ([5_000], [1, 999, 4_000], [17] * 294 + [2]):
        writer = shards.SegmentWriter(tmp_path / f"{len(chunking)}.parquet", shards.segment_schema(FEATURES),
                                      row_group_rows=1_024)
        start = 0
        for size in chunking:
            writer.write(_rows(row_ids[start:start + size]))
            start += size
        written = writer.close()
        assert written.rows == 5_000 and np.array_equal(written.row_ids, row_ids)
        digests.add(written.sha256)
    assert len(digests) == 1


def test_a_segment_refuses_rows_out_of_order(tmp_path):
    writer = shards.SegmentWriter(tmp_path / "s.parquet", shards.segment_schema(FEATURES))
    writer.write(_rows([5, 6]))
    with pytest.raises(shards.ShardError):
        writer.write(_rows([4]))
    writer.abort()
    assert not (tmp_path / "s.parquet").exists()


def test_prediction_rows_keep_nulls_empty_strings_and_odd_characters():
    odd = 'a "quoted", comma\nand newline'
    csv = b"".join(csv_chunks([[1, "p,1", "text", None, None, odd], [2, 'p"2', None, "s3://b/k", 2.5, ""]],
                              chunk_bytes=10))
    table = shards.parse_prediction_rows(csv, FEATURES)
    assert table.column("prediction_id").to_pylist() == ["p,1", 'p"2']
    assert table.column("feature.color").to_pylist() == [odd, ""]
    assert table.column("feature.f0").to_pylist() == [None, 2.5]
    assert table.column("input_url").to_pylist() == [None, "s3://b/k"]
    assert table.column("split").to_pylist() == shards.split_array(np.array([1, 2])).to_pylist()


def test_labels_parse_in_any_chunking_and_sort():
    rows = [[3, "b", "review", 1.0], [1, "a", "annotation", 0.5], [2, "a,x", "gold", 2.0]]
    labels = shards.parse_labels(list(csv_chunks(rows, chunk_bytes=1)))
    assert labels.row_ids.tolist() == [1, 2, 3]
    assert labels.labels.cast(pa.string()).to_pylist() == ["a", "a,x", "b"]
    assert labels.weights.tolist() == [0.5, 2.0, 1.0]
    with pytest.raises(shards.ShardError):
        shards.parse_labels(list(csv_chunks([[1, "a", "gold", 1.0], [1, "b", "gold", 1.0]], chunk_bytes=1)))
    assert len(shards.parse_labels([])) == 0


def _segments(*sizes):
    return [shards.Segment(f"{i:064x}", size, size * 10) for i, size in enumerate(sizes)]


def test_plan_reuses_segments_and_appends_new_rows():
    parent = shards.ParentPartition(_segments(3, 2), np.array([1, 4, 7, 9, 12]))
    unchanged = shards.plan_partition(0, np.array([1, 4, 7, 9, 12]), parent)
    assert unchanged.reason == "unchanged" and unchanged.kept == parent.segments and not len(unchanged.new_row_ids)
    appended = shards.plan_partition(0, np.array([1, 2, 4, 7, 9, 12, 20]), parent)
    assert appended.reason == "appended" and appended.new_row_ids.tolist() == [2, 20]
    assert appended.kept_row_ids.tolist() == [1, 4, 7, 9, 12]
    # One row of five gone (20%): still reused, the label shard marks it absent.
    one_gone = shards.plan_partition(0, np.array([1, 4, 7, 9]), parent)
    assert one_gone.reason == "unchanged"
    # Two of five gone: written afresh without them.
    rewritten = shards.plan_partition(0, np.array([1, 4, 7]), parent)
    assert rewritten.reason == "rewritten" and not rewritten.kept and rewritten.new_row_ids.tolist() == [1, 4, 7]
    assert shards.plan_partition(0, np.array([5]), None).reason == "new"


def test_plan_merges_small_segments_past_the_limit():
    parent = shards.ParentPartition(_segments(4, 1, 1), np.array([1, 2, 3, 4, 10, 11]))
    plan = shards.plan_partition(0, np.array([1, 2, 3, 4, 10, 11, 12]), parent, max_segments=3)
    assert plan.reason == "merged"
    assert plan.kept == parent.segments[:1] and plan.kept_row_ids.tolist() == [1, 2, 3, 4]
    assert plan.new_row_ids.tolist() == [10, 11, 12]


def test_a_label_shard_lines_up_with_its_segments_and_marks_absent_rows():
    labels = pa.array(["x", "y", "z"]).dictionary_encode()
    table = shards.label_shard(np.array([9, 3, 5, 7]), np.array([3, 7, 9]), labels,
                               pa.array(["gold", "review", "annotation"]), np.array([2.0, 1.0, 0.5]))
    assert table.to_pydict() == {"row_id": [9, 3, 5, 7], "label": ["z", "x", None, "y"],
                                 "source": ["annotation", "gold", None, "review"], "weight": [0.5, 2.0, None, 1.0]}
    data = shards.encode_label_shard(table)
    assert shards.encode_label_shard(shards.read_parquet(data)) == data
    counts = shards.count_rows([table])
    assert counts["rows"] == 3 and counts["by_label"] == {"x": 1, "y": 1, "z": 1}
    assert sum(counts["by_split"].values()) == 3


def test_join_refuses_a_label_shard_that_does_not_line_up():
    features = _rows([3, 5, 7])
    good = shards.label_shard(np.array([3, 5, 7]), np.array([3, 7]), pa.array(["a", "b"]), pa.array(["g", "g"]),
                              np.ones(2))
    joined = shards.join_partition([features], good)
    assert joined.column("row_id").to_pylist() == [3, 7] and joined.column("label").to_pylist() == ["a", "b"]
    shifted = good.set_column(0, "row_id", pa.array([3, 7, 5]))
    with pytest.raises(shards.ShardError):
        shards.join_partition([features], shifted)
    with pytest.raises(shards.ShardError):
        shards.join_partition([features], good.slice(0, 2))


def test_diff_counts_added_removed_and_relabeled():
    old = pa.table({"row_id": [1, 2, 3, 4], "label": ["a", "b", "c", None]})
    new = pa.table({"row_id": [2, 3, 4, 5], "label": ["b", "x", "d", "e"]})
    diff = shards.diff_labels(old, new, examples=5)
    assert (diff.added, diff.removed, diff.relabeled) == (2, 1, 1)
    assert diff.added_examples == [(4, "d"), (5, "e")]
    assert diff.removed_examples == [(1, "a")]
    assert diff.relabeled_examples == [(3, "c", "x")]


def _manifest(**changes):
    label = {"kind": "labels", "partition": 0, "sha256": "b" * 64, "rows": 3, "bytes": 5}
    document = {"format": shards.FORMAT, "version": 1, "partitioning": {"partitions": 16},
                "shards": [{"kind": "features", "partition": 0, "sha256": "a" * 64, "rows": 3, "bytes": 9}, label],
                "counts": {"rows": 3}}
    document.update(changes)
    return shards.manifest_bytes(document)


def test_a_manifest_is_checked_before_it_is_trusted():
    data = _manifest()
    assert shards.parse_manifest(data, sha256=shards.sha256_bytes(data))["version"] == 1
    with pytest.raises(shards.ShardError, match="corrupted"):
        shards.parse_manifest(data + b" ", sha256=shards.sha256_bytes(data))
    bad_shards = [
        [{"kind": "features", "partition": 0, "sha256": "../../etc/passwd", "rows": 1, "bytes": 1}],
        [{"kind": "features", "partition": 99, "sha256": "a" * 64, "rows": 1, "bytes": 1}],
        [{"kind": "features", "partition": 0, "sha256": "a" * 64, "rows": 3, "bytes": 1}],  # no label shard
    ]
    for bad in bad_shards:
        with pytest.raises(shards.ShardError):
            shards.parse_manifest(_manifest(shards=bad))
    for raw in (b"not json", orjson.dumps({"format": "other"})):
        with pytest.raises(shards.ShardError):
            shards.parse_manifest(raw)


def test_csv_rows_match_what_copy_writes():
    # COPY's CSV: NULL unquoted and empty, '' quoted; pyarrow reads them apart.
    data = b"".join(csv_chunks([[1, None, ""], [2, "x", 'q"']], chunk_bytes=1))
    assert data == b'1,,""\n2,"x","q"""\n'
    table = pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(column_names=["a", "b", "c"]),
                           convert_options=pacsv.ConvertOptions(strings_can_be_null=True,
                                                                quoted_strings_can_be_null=False,
                                                                column_types={"b": pa.string(), "c": pa.string()}))
    assert table.to_pydict() == {"a": [1, 2], "b": [None, "x"], "c": ["", 'q"']}


def test_large_datasets_start_with_more_partitions():
    assert shards.partition_count(0) == shards.partition_count(1_000_000) == 16
    assert shards.partition_count(4_000_001) == 32
    assert shards.partition_count(10**12) == shards.MAX_PARTITIONS
