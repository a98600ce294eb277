"""The upgrade that partitions the predictions table (flywheel 0009) keeps every row of a
database filled before it: predictions, tasks, labels, feedback, shadow predictions and
what points at them, and the idempotency of the ids already stored."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from flywheel import partitions
from flywheel.models import Prediction
from tests import factories

BEFORE = [("flywheel", "0008_shadow_mode"), ("labeling", "0007_group_worth")]
pytestmark = pytest.mark.django_db(transaction=True)  # the migration runs outside a test transaction


def _fill(apps, now):
    """A project as the version before partitions stored it: 600 predictions over six weeks
    and two years back, a third of them with a task, labels, feedback and shadow answers."""
    Project, ModelVersion = apps.get_model("flywheel", "Project"), apps.get_model("flywheel", "ModelVersion")
    IngestBatch, Prediction = apps.get_model("flywheel", "IngestBatch"), apps.get_model("flywheel", "Prediction")
    project = Project.objects.create(slug="before", name="Before", labels=["a", "b"], audit_salt="s" * 32)
    version = ModelVersion.objects.create(project=project, name="v1")
    batch = IngestBatch.objects.create(project=project, received_at=now)
    times = [now - timedelta(hours=7 * i) for i in range(599)] + [datetime(2021, 3, 3, tzinfo=UTC)]
    Prediction.objects.bulk_create(
        [
            Prediction(
                project=project,
                external_id=f"old-{i}",
                model_version=version,
                label="a",
                confidence=0.6,
                least_confidence=0.4,
                margin=0.8,
                entropy=0.9,
                features={"f0": i},
                audit=i % 50 == 0,
                batch=batch,
                created_at=when,
                received_at=now,
            )
            for i, when in enumerate(times)
        ]
    )
    stored = list(Prediction.objects.order_by("id"))
    Task, Label = apps.get_model("labeling", "Task"), apps.get_model("labeling", "Label")
    Task.objects.bulk_create(
        [Task(project=project, prediction=p, reason="low_confidence", priority=0.4) for p in stored[::3]]
    )
    Label.objects.bulk_create(
        [Label(project=project, prediction=p, label="b", source="annotation") for p in stored[::5]]
    )
    apps.get_model("labeling", "RuledOutLabel").objects.bulk_create(
        [apps.get_model("labeling", "RuledOutLabel")(prediction=p, label="a") for p in stored[::7]]
    )
    apps.get_model("labeling", "GoldAnswer").objects.create(project=project, prediction=stored[1], label="b")
    Feedback = apps.get_model("flywheel", "Feedback")
    Feedback.objects.bulk_create(
        [Feedback(project=project, prediction=p, kind="confirm", created_at=now) for p in stored[::4]]
    )
    ShadowPrediction = apps.get_model("flywheel", "ShadowPrediction")
    ShadowPrediction.objects.bulk_create(
        [
            ShadowPrediction(
                project=project,
                prediction=p,
                model_version=version,
                champion=version,
                label="a",
                confidence=0.5,
                agrees=True,
                received_at=now,
            )
            for p in stored[::6]
        ]
    )


def _snapshot() -> dict[str, list[tuple]]:
    """Every row of the tables that hold or point at predictions, as tuples."""
    queries = {
        "predictions": "SELECT id, project_id, external_id, created_at, features::text, audit, batch_id "
        "FROM flywheel_prediction ORDER BY id",
        "tasks": "SELECT id, prediction_id, reason FROM labeling_task ORDER BY id",
        "labels": "SELECT id, prediction_id, label FROM labeling_label ORDER BY id",
        "ruled_out": "SELECT id, prediction_id, label FROM labeling_ruledoutlabel ORDER BY id",
        "gold": "SELECT id, prediction_id FROM labeling_goldanswer ORDER BY id",
        "feedback": "SELECT id, prediction_id, kind FROM flywheel_feedback ORDER BY id",
        "shadow": "SELECT id, prediction_id FROM flywheel_shadowprediction ORDER BY id",
    }
    with connection.cursor() as cursor:
        out = {}
        for name, sql in queries.items():
            cursor.execute(sql)
            out[name] = cursor.fetchall()
        return out


def test_partitioning_an_existing_database_keeps_every_row_and_every_id_idempotent():
    now = timezone.now()
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate(BEFORE)
        assert not partitions.is_partitioned()  # really the schema from before
        _fill(MigrationExecutor(connection).loader.project_state(BEFORE).apps, now)
        before = _snapshot()
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(leaves)

    assert partitions.is_partitioned()
    after = _snapshot()
    assert {name: len(rows) for name, rows in after.items()} == {
        "predictions": 600,
        "tasks": 200,
        "labels": 120,
        "ruled_out": 86,
        "gold": 1,
        "feedback": 150,
        "shadow": 100,
    }
    assert after == before
    # Each row sits in its week's partition; the one from 2021, older than the conversion's
    # horizon, in the default partition.
    with connection.cursor() as cursor:
        cursor.execute("SELECT external_id, created_at, tableoid::regclass::text FROM flywheel_prediction")
        for external_id, created_at, partition in cursor.fetchall():
            expected = partitions.DEFAULT_PARTITION if created_at.year == 2021 else partitions.Week.of(created_at).name
            assert partition == expected, external_id

    # The ids stored before stay taken: resending one creates nothing; a new one gets a new id.
    project = Prediction.objects.get(external_id="old-0").project
    token = factories.user_with_role("app", project)[1]
    client = factories.api_client(token)
    url = f"/api/v1/projects/{project.slug}/predictions/"
    body = {
        "predictions": [
            {"id": "old-5", "model_version": "v1", "label": "b", "confidence": 0.9, "features": {"f0": 1}},
            {"id": "new-1", "model_version": "v1", "label": "b", "confidence": 0.9, "features": {"f0": 1}},
        ]
    }
    answer = client.post(url, body, format="json").json()
    assert answer["created"] == 1 and [r["duplicate"] for r in answer["results"]] == [True, False]
    assert Prediction.objects.get(external_id="new-1").pk > max(row[0] for row in before["predictions"])
    assert Prediction.objects.count() == 601
