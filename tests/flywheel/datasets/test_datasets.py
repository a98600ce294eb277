"""Dataset versions end to end, on both storage backends (local files, and S3 over HTTP to
the local S3 server): build, read back and verify, reuse of unchanged shards, new rows,
split stability, diff, manifests that are never overwritten, outages and retries."""

import hashlib
from datetime import timedelta

import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from common.errors import Conflict
from common.storage import get_storage
from flywheel.datasets import selectors as dataset_selectors
from flywheel.datasets import services as datasets
from flywheel.datasets import shards
from flywheel.models import DatasetStatus, DatasetVersion
from flywheel.tasks import dataset_version_build_task, dataset_versions_sweep_task
from tests.flywheel.datasets.dataset_data import build, ingest, label, rows, shard_keys, unlabel
from tests.s3 import S3Server


@pytest.fixture(params=["file", "s3"])
def backend(request):
    if request.param == "s3":
        request.getfixturevalue("s3_bucket")
    return request.param


def test_a_version_holds_every_labeled_prediction_and_reads_back_verified(project, backend):
    pks = ingest(project, range(120))
    label(project, range(95))
    label(project, range(95, 100), source="gold", weight=2.0)
    version = build(project, note="first")
    assert version.status == DatasetStatus.READY, version.error
    assert version.number == 1 and version.parent is None
    storage = get_storage()
    manifest = storage.get(version.manifest_key)
    assert hashlib.sha256(manifest).hexdigest() == version.manifest_sha256
    assert version.manifest_uri == storage.uri(version.manifest_key)
    assert version.manifest_uri.startswith("s3://" if backend == "s3" else "file://")

    read = rows(version)
    assert set(read) == {f"p-{i}" for i in range(100)}  # unlabeled predictions are not rows
    row = read["p-7"]
    assert (row["label"], row["source"], row["weight"]) == ("7", "annotation", 1.0)
    assert (row["feature.f0"], row["feature.f1"], row["feature.color"]) == (7.0, 1.0, "green")
    assert (row["input_kind"], row["input_url"]) == ("image_url", "s3://images/7.png")
    assert read["p-6"]["input_kind"] == "text" and read["p-6"]["input_url"] is None
    assert (read["p-97"]["source"], read["p-97"]["weight"]) == ("gold", 2.0)
    for name, row in read.items():
        assert row["split"] == shards.SPLITS[shards.split_codes(np.array([pks[name]]))[0]]

    counts = version.counts
    assert counts["rows"] == 100 and counts["by_source"] == {"annotation": 95, "gold": 5}
    assert counts["by_label"] == {str(d): 10 for d in range(10)}
    assert sum(counts["by_split"].values()) == 100 and counts["by_split"]["train"] > 50
    document = dataset_selectors.manifest_load(version=version)
    assert document["version"] == 1 and document["parent"] is None and document["note"] == "first"
    assert document["counts"] == counts and document["code_version"]
    assert all(shards.SHA256_RE.match(s["sha256"]) and s["rows"] >= 0 and s["bytes"] > 0
               for s in document["shards"])
    assert [f["name"] for f in document["schema"]["labels"]] == ["row_id", "label", "source", "weight"]


def test_a_relabel_uploads_only_label_shards(project, backend):
    ingest(project, range(200))
    label(project, range(200))
    first = build(project)
    first_doc = dataset_selectors.manifest_load(version=first)
    before = shard_keys(project)

    label(project, [3, 50, 123], ["9", "9", "9"], source="review")
    second = build(project)
    assert second.status == DatasetStatus.READY and second.parent_id == first.pk
    doc = dataset_selectors.manifest_load(version=second)
    features = lambda d: sorted(s["sha256"] for s in d["shards"] if s["kind"] == "features")  # noqa: E731
    assert features(doc) == features(first_doc)  # every feature segment reused as it was
    new_keys = shard_keys(project) - before
    assert 1 <= len(new_keys) <= 3 and second.stats["shards_uploaded"] == len(new_keys)
    assert second.stats["bytes_uploaded"] < 0.2 * first.stats["bytes_uploaded"]
    assert rows(second)["p-50"]["label"] == "9" and rows(second)["p-50"]["source"] == "review"
    assert rows(first)["p-50"]["label"] == "0"  # the first version is unchanged

    third = build(project)  # nothing changed: nothing uploaded but the manifest
    assert third.stats["shards_uploaded"] == 0 and third.stats["shards_reused"] == len(doc["shards"])
    assert third.manifest_sha256 != second.manifest_sha256


def test_new_rows_arrive_as_new_segments_beside_the_old_ones(project, backend):
    ingest(project, range(150))
    label(project, range(100))
    first = build(project)
    old_segments = {s["sha256"] for s in dataset_selectors.manifest_load(version=first)["shards"]
                    if s["kind"] == "features"}
    label(project, range(100, 130))
    second = build(project)
    doc = dataset_selectors.manifest_load(version=second)
    segments = [s for s in doc["shards"] if s["kind"] == "features"]
    assert old_segments <= {s["sha256"] for s in segments}
    assert sum(s["rows"] for s in segments if s["sha256"] not in old_segments) == 30
    assert second.stats["partitions"].get("appended", 0) >= 1
    assert set(rows(second)) == {f"p-{i}" for i in range(130)}


def test_rows_keep_their_split_in_every_version(project):
    ingest(project, range(300))
    label(project, range(200))
    first = build(project)
    label(project, range(0, 300, 2), ["1"] * 150)  # relabels and new rows
    second = build(project)
    before, after = rows(first), rows(second)
    assert len(after) == 250
    assert all(after[name]["split"] == row["split"] for name, row in before.items())
    assert {row["split"] for row in after.values()} == set(shards.SPLITS)


def test_removed_rows_leave_the_version_and_a_diff_names_every_change(project, backend):
    ingest(project, range(100))
    label(project, range(80))
    build(project)
    unlabel(project, [1, 2])
    label(project, [10, 11, 12], ["5", "5", "5"])  # 10 was "0": relabeled; 15's label stays
    label(project, [15])
    label(project, range(80, 84))
    second = build(project)
    assert len(rows(second)) == 82
    diff = dataset_selectors.dataset_diff(project=project, a=1, b=2)
    assert (diff["added"], diff["removed"], diff["relabeled"]) == (4, 2, 3)
    assert {e["prediction_id"] for e in diff["examples"]["removed"]} == {"p-1", "p-2"}
    assert {e["prediction_id"] for e in diff["examples"]["added"]} == {f"p-{i}" for i in range(80, 84)}
    assert {(e["prediction_id"], e["from"], e["to"]) for e in diff["examples"]["relabeled"]} == {
        ("p-10", "0", "5"), ("p-11", "1", "5"), ("p-12", "2", "5")}
    backwards = dataset_selectors.dataset_diff(project=project, a=2, b=1, examples=1)
    assert (backwards["added"], backwards["removed"], backwards["relabeled"]) == (2, 4, 3)
    assert len(backwards["examples"]["removed"]) == 1
    same = dataset_selectors.dataset_diff(project=project, a=2, b=2)
    assert (same["added"], same["removed"], same["relabeled"]) == (0, 0, 0)


def test_a_version_without_labels_is_ready_and_empty(project):
    ingest(project, range(5))
    version = build(project)
    assert version.status == DatasetStatus.READY and version.counts["rows"] == 0
    assert rows(version) == {} and dataset_selectors.manifest_load(version=version)["shards"] == []


def test_the_build_task_builds_once_and_a_second_run_is_a_no_op(project, django_capture_on_commit_callbacks):
    ingest(project, range(40))
    label(project, range(40))
    with django_capture_on_commit_callbacks(execute=True):
        version = datasets.dataset_version_create(project=project)
    version.refresh_from_db()
    assert version.status == DatasetStatus.READY and version.attempts == 1
    keys = set(get_storage().list("datasets/"))
    dataset_version_build_task.delay(version.pk)
    again = DatasetVersion.objects.get(pk=version.pk)
    assert (again.status, again.attempts, again.manifest_sha256, again.updated_at) == (
        version.status, version.attempts, version.manifest_sha256, version.updated_at)
    assert set(get_storage().list("datasets/")) == keys


def test_a_failed_version_is_not_rebuilt_by_a_second_run_but_by_a_retry(project, django_capture_on_commit_callbacks):
    ingest(project, range(10))
    label(project, range(10))
    version = datasets.dataset_version_create(project=project)
    assert datasets.dataset_version_fail(version_id=version.pk, reason="worker lost", token="")
    dataset_version_build_task.delay(version.pk)
    version.refresh_from_db()
    assert version.status == DatasetStatus.FAILED and version.error == "worker lost"
    with django_capture_on_commit_callbacks(execute=True):
        datasets.dataset_version_retry(version=version)
    version.refresh_from_db()
    assert version.status == DatasetStatus.READY and not version.error and version.counts["rows"] == 10
    with pytest.raises(Conflict):
        datasets.dataset_version_retry(version=version)


def test_a_build_whose_message_was_lost_is_sent_again_by_the_sweep(project, django_capture_on_commit_callbacks):
    """Queued while the broker was away, or lost when it restarted empty: no worker ever
    started it, so it has no heartbeat. The sweep sends it once it has waited too long."""
    ingest(project, range(10))
    label(project, range(10))
    version = datasets.dataset_version_create(project=project)  # its message is never delivered here
    assert datasets.dataset_versions_sweep() == {"requeued": 0, "failed": 0}  # not stale yet
    queued_long_ago = timezone.now() - timedelta(seconds=settings.FLYWHEEL_DATASET_STALE_SECONDS + 5)
    DatasetVersion.objects.filter(pk=version.pk).update(updated_at=queued_long_ago)
    with django_capture_on_commit_callbacks(execute=True):
        assert datasets.dataset_versions_sweep() == {"requeued": 1, "failed": 0}
    version.refresh_from_db()
    assert version.status == DatasetStatus.READY and version.counts["rows"] == 10


def test_a_build_whose_worker_died_is_requeued_by_the_sweep(project, django_capture_on_commit_callbacks):
    ingest(project, range(10))
    label(project, range(10))
    version = datasets.dataset_version_create(project=project)
    # A worker took it and vanished: a token, and a heartbeat long stopped.
    long_ago = version.created_at - timedelta(seconds=settings.FLYWHEEL_DATASET_STALE_SECONDS * 2)
    DatasetVersion.objects.filter(pk=version.pk).update(build_token="dead", heartbeat_at=long_ago, attempts=1)
    dataset_version_build_task.delay(version.pk)  # a stale holder does not block a new attempt...
    version.refresh_from_db()
    assert version.status == DatasetStatus.READY
    other = datasets.dataset_version_create(project=project)
    DatasetVersion.objects.filter(pk=other.pk).update(build_token="dead", heartbeat_at=long_ago, attempts=1)
    with django_capture_on_commit_callbacks(execute=True):
        dataset_versions_sweep_task.delay()  # ...and the sweep queues it again
    other.refresh_from_db()
    assert other.status == DatasetStatus.READY and other.attempts == 2
    with django_capture_on_commit_callbacks(execute=True) as queued:
        dataset_versions_sweep_task.delay()  # a second sweep finds nothing to do
    assert queued == []
    hopeless = datasets.dataset_version_create(project=project)
    DatasetVersion.objects.filter(pk=hopeless.pk).update(build_token="dead", heartbeat_at=long_ago, attempts=5)
    assert datasets.dataset_versions_sweep() == {"requeued": 0, "failed": 1}
    hopeless.refresh_from_db()
    assert hopeless.status == DatasetStatus.FAILED and "worker lost" in hopeless.error


def test_a_live_build_is_left_alone(project):
    version = datasets.dataset_version_create(project=project)
    DatasetVersion.objects.filter(pk=version.pk).update(build_token="alive", heartbeat_at=version.created_at)
    datasets.dataset_version_build(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == DatasetStatus.BUILDING and version.build_token == "alive"
    with pytest.raises(Conflict):
        datasets.dataset_version_retry(version=version)


def test_a_manifest_is_never_overwritten(project, backend):
    ingest(project, range(10))
    label(project, range(10))
    key = dataset_selectors.manifest_key(project.slug, 1)
    get_storage().put(key, b'{"written": "by someone else"}')
    version = build(project)
    assert version.status == DatasetStatus.FAILED and "never overwritten" in version.error
    assert get_storage().get(key) == b'{"written": "by someone else"}'


def test_a_manifest_written_before_the_database_was_lost_is_adopted(project, backend):
    ingest(project, range(30))
    label(project, range(30))
    version = build(project)
    published = version.manifest_sha256
    # As if the database had gone away right after the manifest was put: the row never
    # learned that the version was published.
    DatasetVersion.objects.filter(pk=version.pk).update(status=DatasetStatus.BUILDING, manifest_key="",
                                                        manifest_sha256="", manifest_uri="", build_token="")
    datasets.dataset_version_build(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == DatasetStatus.READY and version.manifest_sha256 == published


def test_a_corrupt_parent_is_not_built_upon(project, backend):
    ingest(project, range(60))
    label(project, range(60))
    first = build(project)
    storage = get_storage()
    label_shard = next(s for s in dataset_selectors.manifest_load(version=first)["shards"] if s["kind"] == "labels")
    key = dataset_selectors.shard_key(project.slug, label_shard["sha256"])
    storage.put(key, storage.get(key)[::-1])  # same size, other bytes
    second = build(project)
    assert second.status == DatasetStatus.READY
    assert set(second.stats["partitions"]) == {"new"}  # written in full, nothing taken on trust
    # The same labels make the same label shard: the damaged object was put right on the
    # way, and the first version reads whole again.
    assert storage.matches(key, size=label_shard["bytes"], sha256=label_shard["sha256"])
    assert len(rows(second)) == len(rows(first)) == 60


class _StopAfterUploads:
    """The real store, with an outage at a chosen moment: after `uploads` shards have gone
    up, the S3 server stops answering."""

    def __init__(self, storage, server: S3Server, uploads: int):
        self.storage, self.server, self.left = storage, server, uploads

    def __getattr__(self, name):
        return getattr(self.storage, name)

    def put_file(self, *args, **kwargs):
        self.storage.put_file(*args, **kwargs)
        self._count()

    def put(self, *args, **kwargs):
        self.storage.put(*args, **kwargs)
        self._count()

    def _count(self):
        self.left -= 1
        if self.left == 0:
            self.server.stop()


def test_s3_failing_mid_build_fails_the_version_without_a_manifest_and_a_retry_succeeds(
        project, settings, monkeypatch, django_capture_on_commit_callbacks):
    server = S3Server().start()
    try:
        server.client().create_bucket(Bucket="flywheel-outage")
        for name, value in server.settings_for("flywheel-outage").items():
            setattr(settings, name, value)
        settings.S3_MAX_ATTEMPTS = 1
        ingest(project, range(300))
        label(project, range(300))
        real = get_storage()
        monkeypatch.setattr(datasets, "get_storage", lambda: _StopAfterUploads(real, server, uploads=3))
        with django_capture_on_commit_callbacks(execute=True):
            version = datasets.dataset_version_create(project=project)
        version.refresh_from_db()
        assert version.status == DatasetStatus.FAILED
        assert "Gave up after" in version.error and "StorageUnavailable" in version.error
        assert version.attempts == 6 and not version.manifest_sha256

        server.start()  # the store is back, with what it held
        keys = [o["Key"] for o in server.client().list_objects_v2(Bucket="flywheel-outage").get("Contents", [])]
        assert len([k for k in keys if "/shards/" in k]) >= 3 and not [k for k in keys if "/manifests/" in k]
        monkeypatch.setattr(datasets, "get_storage", get_storage)
        with django_capture_on_commit_callbacks(execute=True):
            datasets.dataset_version_retry(version=version)
        version.refresh_from_db()
        assert version.status == DatasetStatus.READY and version.counts["rows"] == 300
        assert version.stats["shards_reused"] >= 3  # what went up before the outage is not sent again
        assert len(rows(version)) == 300
    finally:
        server.stop()


def test_the_database_reads_give_the_same_rows_with_or_without_copy(project):
    """PostgreSQL's COPY and the ORM path (SQLite, the embedded default) must produce rows
    that parse the same, odd characters and missing values included."""
    from flywheel.datasets.selectors import _prediction_rows_copy, _prediction_rows_orm
    from labeling.selectors import _current_labels_copy, _current_labels_orm

    pks = ingest(project, range(20))
    odd = ingest(project, [20], features={"f0": None, "color": 'a "b", c\nd'}, input={"text": "t", "image": "x"})
    ingest(project, [21], features={"f1": 2.5, "color": ""}, input={})
    label(project, range(22))
    label(project, [5], ['q"uote, and\nnewline'], source="review", weight=0.25)
    row_ids = np.array(sorted({**pks, **odd}.values()) + [max(odd.values()) + 1])
    features = project.features
    batches = [row_ids[i:i + 7] for i in range(0, len(row_ids), 7)]
    via_copy = [shards.parse_prediction_rows(c, features) for c in _prediction_rows_copy(project.pk, batches,
                                                                                         features)]
    via_orm = [shards.parse_prediction_rows(c, features) for c in _prediction_rows_orm(project.pk, row_ids,
                                                                                       features, 7)]
    assert pa_concat(via_copy).equals(pa_concat(via_orm))
    table = pa_concat(via_copy).to_pylist()
    assert table[20]["feature.color"] == 'a "b", c\nd' and table[20]["feature.f0"] is None
    assert table[20]["input_kind"] == "image"
    labels_copy = shards.parse_labels(list(_current_labels_copy(project.pk, 64)))
    labels_orm = shards.parse_labels(list(_current_labels_orm(project.pk, 64)))
    assert np.array_equal(labels_copy.row_ids, labels_orm.row_ids) and len(labels_copy) == 22
    assert labels_copy.labels.to_pylist() == labels_orm.labels.to_pylist()
    assert 'q"uote, and\nnewline' in labels_copy.labels.to_pylist()
    assert labels_copy.weights.tolist() == labels_orm.weights.tolist()


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)


@pytest.mark.django_db(transaction=True)
def test_large_reads_over_several_connections_come_out_in_order():
    """Past PARALLEL_MIN_ROWS the rows are read over connections of their own (which see
    committed rows only: this test commits)."""
    from tests import factories

    project = factories.project()
    pks = ingest(project, range(500))
    row_ids = np.array(sorted(pks.values()))
    features = project.features
    one = b"".join(dataset_selectors.dataset_prediction_rows_csv(
        project_id=project.pk, row_ids=row_ids, features=features, batch_rows=16, connections=1))
    for connections in (2, 3):
        chunks = list(dataset_selectors.dataset_prediction_rows_csv(
            project_id=project.pk, row_ids=row_ids, features=features, batch_rows=16, connections=connections,
            parallel_min_rows=1))
        assert len(chunks) == 32 and b"".join(chunks) == one
    # A caller that stops early leaves no reader behind.
    partial = dataset_selectors.dataset_prediction_rows_csv(
        project_id=project.pk, row_ids=row_ids, features=features, batch_rows=16, connections=2, parallel_min_rows=1)
    next(partial)
    partial.close()
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("dataset-read")]
