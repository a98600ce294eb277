"""The prediction log's weekly partitions on PostgreSQL (flywheel.partitions): made ahead by
the beat, a default partition for any other time, and the idempotency key that holds
across partitions."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts.models import Role
from flywheel import partitions
from flywheel.models import Feedback, IngestBatch, Prediction
from flywheel.tasks import partitions_ensure_task
from labeling.models import Label, Task
from tests import factories
from tests.factories import prediction

URL = "/api/v1/projects/digits/predictions/"
FAR_PAST = datetime(2021, 3, 3, 12, 0, tzinfo=UTC)  # a Wednesday; no partition covers it


def partition_of(external_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM flywheel_prediction WHERE external_id = %s", [external_id])
        return cursor.fetchone()[0]


def key_rows(project) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT external_id, prediction_id FROM flywheel_predictionkey WHERE project_id = %s ORDER BY external_id",
            [project.pk],
        )
        return cursor.fetchall()


def test_the_table_is_partitioned_by_week_with_a_default_partition_and_weeks_ahead(db):
    assert partitions.is_partitioned()
    names = set(partitions.partitions_list())
    this_week = partitions.Week.of(timezone.now())
    ahead = [this_week]
    for _ in range(partitions.WEEKS_AHEAD):
        ahead.append(ahead[-1].next())
    assert {w.name for w in ahead} | {partitions.DEFAULT_PARTITION} <= names


def test_the_beat_makes_partitions_ahead_and_a_second_run_makes_nothing(db):
    later = timezone.now() + timedelta(weeks=20)
    created = partitions.prediction_partitions_ensure(now=later, weeks_ahead=2)
    assert created == [partitions.Week.of(later + timedelta(weeks=k)).name for k in range(3)]
    assert partitions.prediction_partitions_ensure(now=later, weeks_ahead=2) == []
    assert partitions_ensure_task.apply().get() == []  # this week and the weeks ahead exist already
    assert settings.CELERY_BEAT_SCHEDULE["prediction-partitions"]["task"] == "flywheel.partitions_ensure"


def test_an_out_of_range_time_lands_in_the_default_partition_and_moves_when_its_week_is_made(app_client, project):
    response = app_client.post(URL, prediction(1, created_at=FAR_PAST.isoformat(), confidence=0.4), format="json")
    assert response.status_code == 201, response.json()
    assert partition_of("p-1") == partitions.DEFAULT_PARTITION
    task = Task.objects.get()

    (name,) = partitions.prediction_partitions_ensure(now=FAR_PAST, weeks_ahead=0)

    assert name == "flywheel_prediction_w20210301" and partition_of("p-1") == name
    moved = Prediction.objects.get(external_id="p-1")
    assert moved.pk == task.prediction_id and moved.created_at == FAR_PAST


def test_the_beat_gives_recent_weeks_the_default_partition_caught_their_own_partition(app_client, project):
    late = timezone.now() - timedelta(days=30)
    app_client.post(
        URL,
        {"predictions": [prediction(1, created_at=late.isoformat()), prediction(2, created_at=FAR_PAST.isoformat())]},
        format="json",
    )
    assert partition_of("p-1") == partitions.DEFAULT_PARTITION

    assert partitions_ensure_task.apply().get() == [partitions.Week.of(late).name]

    assert partition_of("p-1") == partitions.Week.of(late).name
    assert partition_of("p-2") == partitions.DEFAULT_PARTITION  # older than the horizon: stays
    assert Prediction.objects.count() == 2


def test_the_management_command_makes_the_weeks_ahead_and_lists_them(db, capsys):
    call_command("flywheel_partitions", "--weeks-ahead", "6")
    out = capsys.readouterr().out
    assert partitions.Week.of(timezone.now() + timedelta(weeks=6)).name in out
    assert partitions.DEFAULT_PARTITION in out


# --- Idempotency across partitions -----------------------------------------------------------


def test_a_retried_id_with_another_created_at_in_another_partition_is_a_duplicate(app_client, project):
    now = timezone.now()
    partitions.prediction_partitions_ensure(now=now - timedelta(days=8), weeks_ahead=0)  # last week's
    first = app_client.post(URL, prediction(1, created_at=now.isoformat()), format="json").json()
    for when in (now - timedelta(days=8), now - timedelta(days=400), FAR_PAST):
        again = app_client.post(URL, prediction(1, created_at=when.isoformat()), format="json")
        assert again.status_code == 201
        assert again.json()["created"] == 0 and again.json()["results"][0]["duplicate"] is True
    assert first["created"] == 1
    stored = Prediction.objects.get()
    assert stored.created_at == now and partition_of("p-1") == partitions.Week.of(now).name
    assert key_rows(project) == [("p-1", stored.pk)]
    assert IngestBatch.objects.count() == 1  # the retries recorded no batch


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_different_times_create_every_prediction_once():
    project = factories.project()
    token = factories.user_with_role(Role.APP, project)[1]
    now = timezone.now()
    # Each copy of the request says another week (one of them a week no partition covers).
    times = [now, now - timedelta(days=9), now - timedelta(days=15), FAR_PAST]
    barrier = threading.Barrier(len(times))
    responses = []

    def send(when):
        items = [prediction(i, confidence=0.4, created_at=when.isoformat()) for i in range(200)]
        client = factories.api_client(token)
        barrier.wait()
        responses.append(
            client.post(f"/api/v1/projects/{project.slug}/predictions/", {"predictions": items}, format="json")
        )
        connection.close()

    threads = [threading.Thread(target=send, args=(when,)) for when in times]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [201] * len(times)
    assert sum(r.json()["created"] for r in responses) == 200
    assert Prediction.objects.filter(project=project).count() == 200
    assert Task.objects.filter(project=project).count() == 200
    assert len(key_rows(project)) == 200
    assert Prediction.objects.filter(project=project).values("created_at").distinct().count() == 1


# --- Foreign keys into the partitioned table ------------------------------------------------


def test_deleting_a_project_cascades_through_predictions_to_their_keys_tasks_labels_and_feedback(app_client, project):
    app_client.post(URL, {"predictions": [prediction(i, confidence=0.4) for i in range(5)]}, format="json")
    app_client.post(
        f"/api/v1/projects/{project.slug}/feedback/",
        {"feedback": [{"prediction_id": "p-1", "kind": "correct", "label": "7"}]},
        format="json",
    )
    one = Prediction.objects.get(external_id="p-2")
    Label.objects.create(project=project, prediction=one, label="3", source="gold")
    assert Feedback.objects.count() == 1 and Task.objects.count() == 5 and len(key_rows(project)) == 5

    project.delete()

    assert Prediction.objects.count() == 0 and Task.objects.count() == 0
    assert Feedback.objects.count() == 0 and Label.objects.count() == 0 and key_rows(project) == []
