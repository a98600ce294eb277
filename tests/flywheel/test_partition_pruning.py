"""The hot reads of predictions by time touch only the partitions of their window: the
profiler's read of new batches, the stats' windows, the label-free accuracy's last day.
Checked on PostgreSQL's own plans (EXPLAIN), and with query counts that do not grow."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from flywheel import partitions
from flywheel.ingest import profiling
from flywheel.models import IngestBatch
from tests.factories import prediction

URL = "/api/v1/projects/digits/predictions/"
WEEKS_BACK = 8


def partitions_read(sql: str, params=None) -> set[str]:
    """The partitions PostgreSQL's plan for the statement reads."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        (plan,) = cursor.fetchone()[0]
    found: set[str] = set()

    def walk(node):
        name = node.get("Relation Name", "")
        if name.startswith(partitions.TABLE + "_"):
            found.add(name)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return found


@pytest.fixture
def history(app_client, project):
    """A project with predictions in each of the last WEEKS_BACK weeks, each week in its partition."""
    now = timezone.now()
    partitions.prediction_partitions_ensure(now=now - timedelta(weeks=WEEKS_BACK), weeks_ahead=WEEKS_BACK)
    for week in range(WEEKS_BACK, -1, -1):
        when = now - timedelta(weeks=week)
        items = [
            prediction(week * 100 + i, created_at=when.isoformat(), confidence=0.95 if i % 4 else 0.4)
            for i in range(20)
        ]
        assert app_client.post(URL, {"predictions": items}, format="json").status_code == 201
    return now


def test_the_profiler_reads_only_the_partition_of_its_batches_week(history, project):
    batch = (
        IngestBatch.objects.order_by("-id")
        .values_list("id", "first_prediction_id", "last_prediction_id", "first_created_at", "last_created_at")
        .first()
    )
    span = profiling.created_span([batch])
    sql, params = profiling.feature_rows_query([[batch[1], batch[2]]], [batch[0]], project.features, span)

    assert partitions_read(sql, params) == {partitions.Week.of(history).name}
    # A batch recorded before spans were kept is still read, from every partition.
    sql, params = profiling.feature_rows_query([[batch[1], batch[2]]], [batch[0]], project.features, None)
    assert len(partitions_read(sql, params)) > WEEKS_BACK


def test_profiling_everything_counts_every_prediction_once(history, project):
    assert profiling.profiles_update(project_id=project.pk, force_grids=True) == 20 * (WEEKS_BACK + 1)
    assert profiling.profiles_update(project_id=project.pk, force_grids=True) == 0


def test_the_stats_read_predictions_by_time_only_in_the_weeks_of_their_window(history, ops_client, project):
    with CaptureQueriesContext(connection) as captured:
        assert ops_client.get(f"/api/v1/projects/{project.slug}/stats/").status_code == 200
    by_time = [q["sql"] for q in captured.captured_queries if '"flywheel_prediction"."created_at" >=' in q["sql"]]
    assert len(by_time) >= 2  # the feedback rates' 14 days and the label-free estimate's last day
    too_old = {partitions.Week.of(history - timedelta(weeks=w)).name for w in range(3, WEEKS_BACK + 1)}
    for sql in by_time:
        read = partitions_read(sql)
        assert read and not read & too_old, (sql, read)


def test_the_stats_query_count_does_not_grow_with_history(history, ops_client, project, app_client):
    def count():
        with CaptureQueriesContext(connection) as captured:
            assert ops_client.get(f"/api/v1/projects/{project.slug}/stats/").status_code == 200
        return len(captured.captured_queries)

    count()  # the first request also records the key's use
    before = count()
    later = [prediction(5000 + i, created_at=(history - timedelta(days=3 + i)).isoformat()) for i in range(30)]
    app_client.post(URL, {"predictions": later}, format="json")
    assert count() == before
