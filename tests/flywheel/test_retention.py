"""Retention: predictions past the policy's raw_days that the loop no longer needs go to the
Parquet archive and leave the database; everything the loop reads stays. The archive reads
back with pyarrow's dataset API and with DuckDB; a failed upload removes nothing; a removed
prediction's GET answers 410 with where its row lives."""

from datetime import UTC, timedelta
from io import StringIO

import duckdb
import orjson
import pyarrow.dataset as pads
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from common.storage import StorageUnavailable, get_storage
from flywheel import partitions
from flywheel.ingest import profiling
from flywheel.models import (
    Disagreement,
    Feedback,
    ModelVersion,
    Prediction,
    PredictionArchive,
    RetentionRun,
    RetentionStatus,
    ShadowPrediction,
)
from flywheel.retention import bloom, parts
from flywheel.retention import services as retention
from flywheel.tasks import retention_task
from labeling.models import GoldAnswer, Label, RuledOutLabel, Task
from tests import factories
from tests.flywheel.datasets.dataset_data import ingest
from tests.s3 import S3Server

NOW = timezone.now()
OLD_A = NOW - timedelta(days=101)  # past the default 90 days
OLD_B = NOW - timedelta(days=100)
RECENT = NOW - timedelta(days=10)
# p-1..p-8 are old but something in the loop still needs each of them.
NEEDED = {f"p-{i}" for i in range(1, 9)}


def _fill(project) -> dict[str, int]:
    """p-0..p-19 made 101 days ago, p-20..p-39 100 days ago, p-40..p-44 10 days ago; all
    profiled; p-1..p-8 each tied to the loop in one way."""
    pks = ingest(project, range(0, 20), created_at=OLD_A)
    pks |= ingest(project, range(20, 40), created_at=OLD_B)
    pks |= ingest(project, range(40, 45), created_at=RECENT)
    profiling.profiles_update(project_id=project.pk, force_grids=True)
    version = ModelVersion.objects.get(project=project, name="v1")
    Task.objects.create(project=project, prediction_id=pks["p-1"], reason="uncertainty", priority=1.0)
    Label.objects.create(project=project, prediction_id=pks["p-2"], label="2", source="annotation")
    Feedback.objects.create(project=project, prediction_id=pks["p-3"], kind="confirm", created_at=NOW)
    RuledOutLabel.objects.create(prediction_id=pks["p-4"], label="4")
    GoldAnswer.objects.create(project=project, prediction_id=pks["p-5"], label="5")
    ShadowPrediction.objects.create(project=project, prediction_id=pks["p-6"], model_version=version,
                                    champion=version, label="6", confidence=0.8, agrees=True, received_at=NOW)
    Prediction.objects.filter(pk=pks["p-7"]).update(audit=True)
    Disagreement.objects.create(prediction_id=pks["p-8"], project=project, rate=0.5, drawn=False,
                                reason="not_drawn", created_at=NOW)
    return pks


def _archive_root(project):
    return settings.FLYWHEEL_STORAGE_ROOT / "archive" / project.slug


def test_retention_keeps_what_the_loop_needs_and_archives_the_rest_readable_by_pyarrow_and_duckdb(project):
    pks = _fill(project)
    run = retention.retention_run(project=project, now=NOW)

    archived = {f"p-{i}" for i in range(40)} - NEEDED
    assert run.status == RetentionStatus.SUCCEEDED
    assert (run.archived, run.removed, run.held) == (32, 32, 13)
    held = set(Prediction.objects.filter(project=project).values_list("external_id", flat=True))
    assert held == NEEDED | {f"p-{i}" for i in range(40, 45)}

    # The open archive: Hive partitions by day, typed feature columns, every archived row once.
    table = pads.dataset(_archive_root(project), format="parquet", partitioning="hive").to_table()
    assert sorted(table["prediction_id"].to_pylist()) == sorted(archived)
    assert str(table.schema.field("feature.f0").type) == "double"
    assert str(table.schema.field("feature.color").type) == "string"
    rows = {r["prediction_id"]: r for r in table.to_pylist()}
    assert rows["p-9"]["feature.f0"] == 9.0 and rows["p-9"]["row_id"] == pks["p-9"]
    assert str(rows["p-9"]["date"]) == OLD_A.astimezone(UTC).date().isoformat()
    assert str(rows["p-29"]["date"]) == OLD_B.astimezone(UTC).date().isoformat()
    assert rows["p-9"]["label"] == "9" and rows["p-9"]["model_version"] == "v1"
    assert rows["p-9"]["feature.color"] == "green" and rows["p-10"]["feature.color"] == "red"
    assert orjson.loads(rows["p-9"]["input"]) == {"text": "text 9"} and orjson.loads(rows["p-9"]["metadata"]) == {}
    assert rows["p-9"]["probabilities"] is None and rows["p-9"]["confidence"] == 0.9

    found = duckdb.sql(
        f"SELECT prediction_id, date, \"feature.f0\" FROM read_parquet('{_archive_root(project)}/*/*.parquet', "
        "hive_partitioning = true) ORDER BY prediction_id").fetchall()
    assert sorted(r[0] for r in found) == sorted(archived)
    assert ("p-9", OLD_A.astimezone(UTC).date(), 9.0) in found

    # Content-addressed parts, named by each day's manifest.
    storage = get_storage()
    for part in PredictionArchive.objects.filter(project=project):
        assert part.key == f"archive/{project.slug}/date={part.date}/part-{part.sha256}.parquet"
        manifest = orjson.loads(storage.get(part.manifest_key))
        assert part.key in [p["key"] for p in manifest["parts"]] and manifest["date"] == str(part.date)
        assert part.removed == part.rows
    assert PredictionArchive.objects.filter(project=project).count() == 2  # one part per day


def test_a_removed_prediction_answers_410_with_where_its_row_lives(project, ops_client):
    _fill(project)
    retention.retention_run(project=project, now=NOW)
    response = ops_client.get(f"/api/v1/projects/{project.slug}/predictions/p-9/")
    assert response.status_code == 410
    error = response.json()["error"]
    assert error["code"] == "archived"
    archive = error["details"]["archive"]
    assert archive["key"].startswith(f"archive/{project.slug}/date={OLD_A.astimezone(UTC).date()}/part-")
    assert archive["uri"] == get_storage().uri(archive["key"])
    assert ops_client.get(f"/api/v1/projects/{project.slug}/predictions/p-1/").status_code == 200
    assert ops_client.get(f"/api/v1/projects/{project.slug}/predictions/p-41/").status_code == 200
    # An id no part holds is 404, even when a Bloom filter matches it by chance.
    assert ops_client.get(f"/api/v1/projects/{project.slug}/predictions/never/").status_code == 404

    stats = ops_client.get(f"/api/v1/projects/{project.slug}/stats/").json()["retention"]
    assert (stats["held"], stats["archived"], stats["removed"]) == (13, 32, 32)
    assert stats["policy"] == {"raw_days": 90, "archive": True} and stats["archive_parts"] == 2


def test_a_bloom_filter_false_match_is_ruled_out_by_reading_the_part(project, ops_client):
    _fill(project)
    retention.retention_run(project=project, now=NOW)
    # A filter with every bit set matches any id: the part must be read to answer.
    PredictionArchive.objects.filter(project=project).update(bloom=b"\xff" * 8, bloom_bits=64)
    assert ops_client.get(f"/api/v1/projects/{project.slug}/predictions/never/").status_code == 404
    assert ops_client.get(f"/api/v1/projects/{project.slug}/predictions/p-9/").status_code == 410


def test_bloom_filters_hold_every_id_and_match_few_others():
    ids = [f"id-{i}" for i in range(5000)]
    bits = bloom.bloom_bits(len(ids))
    field = bloom.bloom_build(ids, bits)
    assert all(bloom.bloom_contains(field, bits, i) for i in ids)
    false = sum(bloom.bloom_contains(field, bits, f"other-{i}") for i in range(5000))
    assert false < 5000 * 0.02


def test_a_failed_upload_removes_nothing_and_the_next_run_finishes(project, settings, monkeypatch):
    server = S3Server().start()
    try:
        server.client().create_bucket(Bucket="flywheel-retention")
        for name, value in server.settings_for("flywheel-retention").items():
            setattr(settings, name, value)
        settings.S3_MAX_ATTEMPTS = 1
        _fill(project)
        before = Prediction.objects.filter(project=project).count()
        server.stop()
        with pytest.raises(StorageUnavailable):
            retention.retention_run(project=project, now=NOW)
        assert Prediction.objects.filter(project=project).count() == before == 45
        assert not PredictionArchive.objects.exists()
        run = RetentionRun.objects.get(project=project)
        assert run.status == RetentionStatus.FAILED and "StorageUnavailable" in run.error and run.removed == 0

        server.start()
        run = retention.retention_run(project=project, now=NOW)  # the failed run is taken over
        assert run.status == RetentionStatus.SUCCEEDED and run.removed == 32 and run.attempts == 2
        keys = [o["Key"] for o in server.client().list_objects_v2(Bucket="flywheel-retention")["Contents"]]
        assert len([k for k in keys if "/archive/digits/date=" in k]) == 2
        assert len([k for k in keys if "/archive-manifests/digits/" in k]) == 2
    finally:
        server.stop()


def test_the_task_runs_every_project_and_its_second_run_is_a_no_op(project, other_project):
    _fill(project)
    assert retention_task() == {"digits": 32, "other": 0}
    parts = list(PredictionArchive.objects.values_list("key", flat=True))
    runs = list(RetentionRun.objects.values_list("id", "attempts", "removed"))
    assert retention_task() == {"digits": 32, "other": 0}  # today's runs, unchanged
    assert list(PredictionArchive.objects.values_list("key", flat=True)) == parts
    assert list(RetentionRun.objects.values_list("id", "attempts", "removed")) == runs
    assert Prediction.objects.filter(project=project).count() == 13


def test_a_live_run_is_left_to_its_holder(project):
    _fill(project)
    RetentionRun.objects.create(project=project, day=NOW.astimezone(UTC).date(), token="other",
                                heartbeat_at=timezone.now())
    run = retention.retention_run(project=project, now=NOW)
    assert run.token == "other" and run.removed == 0
    assert Prediction.objects.filter(project=project).count() == 45


def test_raw_days_null_keeps_everything_and_archive_false_removes_without_archiving(project):
    _fill(project)
    project.retention = {"raw_days": None}
    project.save()
    assert retention.retention_run(project=project, now=NOW).removed == 0
    project.retention = {"raw_days": 90, "archive": False}
    project.save()
    run = retention.retention_run(project=project, now=NOW + timedelta(days=1))
    assert (run.archived, run.removed) == (0, 32) and not PredictionArchive.objects.exists()


def test_the_command_runs_one_project(project, other_project):
    _fill(project)
    out = StringIO()
    call_command("flywheel_retention", "--project", "digits", stdout=out)
    assert "digits: succeeded; archived 32, removed 32, held 13" in out.getvalue()
    assert not RetentionRun.objects.filter(project=other_project).exists()
    with pytest.raises(CommandError, match="No project ghost"):
        call_command("flywheel_retention", "--project", "ghost", stdout=StringIO())


@pytest.mark.parametrize("policy, field, reason", [
    ({"raw_days": 0}, "retention.raw_days", "Ensure this value is greater than or equal to 1."),
    ({"raw_days": "soon"}, "retention.raw_days", "A valid integer is required."),
    ({"archive": "maybe"}, "retention.archive", "Must be a valid boolean."),
    ({"raw_day": 30}, "retention.raw_day", "Unknown key; did you mean 'raw_days'?"),
])
def test_bad_retention_policies_are_refused_naming_the_field(project, policy, field, reason):
    client = factories.api_client(factories.user_with_role("ops", project)[1])
    response = client.patch(f"/api/v1/projects/{project.slug}/", {"retention": policy}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {field: [reason]}
    project.refresh_from_db()
    assert project.retention == {"raw_days": 90, "archive": True}


def test_a_retention_policy_is_merged_and_shown(project):
    client = factories.api_client(factories.user_with_role("ops", project)[1])
    response = client.patch(f"/api/v1/projects/{project.slug}/", {"retention": {"raw_days": 30}}, format="json")
    assert response.status_code == 200 and response.json()["retention"] == {"raw_days": 30, "archive": True}


def test_on_a_partitioned_table_a_week_of_archived_rows_is_dropped_whole(project):
    # A week holding only rows nobody needs (p-0, p-9..p-39), and the next week, still past
    # raw_days, holding the ones the loop needs (p-1..p-8, each with a task).
    ingest(project, [0, *range(9, 40)], created_at=OLD_A)
    needed = {f"p-{i}" for i in range(1, 9)}
    ingest(project, range(1, 9), created_at=OLD_A + timedelta(days=7))
    profiling.profiles_update(project_id=project.pk, force_grids=True)
    Task.objects.bulk_create([Task(project=project, prediction=p, reason="uncertainty", priority=1.0)
                              for p in Prediction.objects.filter(external_id__in=needed)])
    # Those weeks came in through the default partition; the beat's daily run gives them
    # partitions of their own.
    partitions.prediction_partitions_ensure(now=NOW)
    leaf = partitions.Week.of(OLD_A).name
    assert leaf in partitions.partitions_list()

    run = retention.retention_run(project=project, now=NOW)
    assert run.partitions_dropped == [leaf] and (run.archived, run.removed) == (32, 32)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [leaf])
        assert cursor.fetchone()[0] is None
    assert set(Prediction.objects.values_list("external_id", flat=True)) == needed
    table = pads.dataset(_archive_root(project), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 32


def test_profiles_are_not_recounted_once_retention_removed_predictions(project):
    """The profiles are all that is left of removed predictions: a recount from the table
    would lose them."""
    _fill(project)
    retention.retention_run(project=project, now=NOW)
    with pytest.raises(CommandError, match="Retention removed predictions of digits"):
        call_command("flywheel_profiles_rebuild", "--project", "digits", stdout=StringIO())


def test_a_part_types_its_features_from_text_or_numbers_and_a_stray_value_is_missing():
    features = [{"name": "x", "type": "numeric"}, {"name": "c", "type": "categorical"}]
    base = ("m", "1", 0.9, 0.1, 0.1, 0.1, None, "{}", "{}", None, NOW, NOW)
    table = parts.part_table([(2, "b", *base, "2.5", "red"), (1, "a", *base, "oops", None)], features)
    assert table["row_id"].to_pylist() == [1, 2]
    assert table["feature.x"].to_pylist() == [None, 2.5] and table["feature.c"].to_pylist() == [None, "red"]
    table = parts.part_table([(1, "a", *base, 3, 7)], features)  # SQLite gives numbers
    assert table["feature.x"].to_pylist() == [3.0] and table["feature.c"].to_pylist() == ["7"]
