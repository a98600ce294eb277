"""Drift profiles are fed from stored predictions exactly once, off the ingestion path."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from flywheel.ingest import profiling
from flywheel.models import IngestBatch
from flywheel.tasks import profiles_update as profiles_update_task
from monitoring import selectors
from monitoring.models import DriftState, Profile
from tests.live import (
    ROOT,  # noqa: E402
    database_url,
)
from tests.monitoring.conftest import post_traffic, traffic

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def profiled_counts(project) -> dict:
    """{(hour, source, name): count} of every profile row."""
    return {(p.hour, p.source, p.name): p.count for p in Profile.objects.filter(project=project)}


def window_count(project, start=EPOCH, end=None) -> int:
    end = end or datetime.now(UTC) + timedelta(days=1)
    return selectors.window_histograms(project_id=project.pk, start=start, end=end).count


def test_ingestion_does_no_profiling_and_the_profiler_counts_each_prediction_once(app_client, project):
    now = datetime.now(UTC)
    post_traffic(app_client, traffic(1500, seed=1, start=now - timedelta(hours=3), hours=2.5))
    for i in range(5):  # single predictions are batches too
        assert app_client.post("/api/v1/projects/digits/predictions/",
                               {**traffic(1, seed=10 + i, start=now, hours=0.01)[0], "id": f"single-{i}"},
                               format="json").status_code == 201
    assert Profile.objects.count() == 0, "ingestion itself writes no profile"
    assert IngestBatch.objects.filter(profiled_at__isnull=True).count() == 7

    assert profiles_update_task.delay().get() == 1505
    assert IngestBatch.objects.filter(profiled_at__isnull=True).count() == 0
    assert window_count(project) == 1505
    counts = profiled_counts(project)
    assert {name for _, _, name in counts} == {"f0", "f1", "color", "label", "confidence"}
    hours = sorted({hour for hour, _, _ in counts})
    assert len(hours) in (3, 4) and all(h.minute == 0 for h in hours)
    for name in ("f0", "color", "label", "confidence"):
        assert sum(n for (_, _, field), n in counts.items() if field == name) == 1505

    # A second run (a beat firing twice, a redelivered task) finds nothing and changes nothing.
    assert profiles_update_task.delay().get() == 0
    assert profiled_counts(project) == counts


def test_late_predictions_land_in_their_own_hour(app_client, project):
    old = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)
    post_traffic(app_client, traffic(40, seed=2, start=old, hours=0.25, prefix="late"))
    profiling.profiles_update(force_grids=True)
    assert {hour for hour, _, _ in profiled_counts(project)} == {datetime(2026, 3, 4, 10, tzinfo=UTC)}
    assert window_count(project, old - timedelta(hours=1), old + timedelta(hours=1)) == 40
    assert window_count(project, old + timedelta(hours=1), old + timedelta(hours=2)) == 0


def test_the_first_grids_wait_for_a_sample_unless_a_check_asks(app_client, project):
    now = datetime.now(UTC)

    def without_f0(predictions):  # an app that never sends f0
        return [{**p, "features": {k: v for k, v in p["features"].items() if k != "f0"}} for p in predictions]

    post_traffic(app_client, without_f0(traffic(20, seed=3, start=now - timedelta(minutes=10), hours=0.1)))
    assert profiling.profiles_update(now=now) == 0, "20 values make a poor grid; wait for more"
    assert IngestBatch.objects.filter(profiled_at__isnull=True).count() == 1
    assert profiling.profiles_update(now=now + timedelta(hours=2)) == 20, "but not forever"
    grids = DriftState.objects.get(project=project).grids["feature"]
    assert "f1" in grids and "f0" not in grids
    # Once a project has grids, small claims are profiled at once, f0 or no f0.
    post_traffic(app_client, without_f0(traffic(5, seed=4, start=now, hours=0.01, prefix="later")))
    assert profiling.profiles_update(now=now) == 5


def test_a_sample_is_enough_to_make_the_grids(app_client, project):
    post_traffic(app_client, traffic(1200, seed=4, start=datetime.now(UTC) - timedelta(hours=1), hours=0.5))
    assert profiling.profiles_update() == 1200
    grid = DriftState.objects.get(project=project).grids["feature"]["f1"]
    assert grid["grid"] == "asinh" and 4.5 < grid["center"] < 5.5 and 0.3 < grid["scale"] < 1.0


def test_rebuild_counts_the_same_as_the_profiler_and_repairs_lost_rows(app_client, project):
    now = datetime.now(UTC)
    post_traffic(app_client, traffic(2500, seed=5, start=now - timedelta(hours=6), hours=5))
    profiling.profiles_update(force_grids=True)
    incremental = profiled_counts(project)
    Profile.objects.filter(project=project, name="f0").delete()
    Profile.objects.filter(project=project, name="label").update(count=1)

    call_command("flywheel_profiles_rebuild", project=["digits"], stdout=open(os.devnull, "w"))
    assert profiled_counts(project) == incremental
    blobs = {(p.hour, p.name): bytes(p.bins) for p in Profile.objects.filter(project=project)}
    call_command("flywheel_profiles_rebuild", stdout=open(os.devnull, "w"))
    assert {(p.hour, p.name): bytes(p.bins) for p in Profile.objects.filter(project=project)} == blobs
    assert IngestBatch.objects.filter(profiled_at__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_profilers_running_at_once_count_each_prediction_once(app_client, project):
    now = datetime.now(UTC)
    for part in range(8):
        post_traffic(app_client, traffic(400, seed=20 + part, start=now - timedelta(hours=2), hours=1.5,
                                         prefix=f"c{part}"))
    errors = []

    def run():
        try:
            for _ in range(20):
                profiling.profiles_update(force_grids=True)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    profiling.profiles_update(force_grids=True)
    assert window_count(project) == 3200
    assert IngestBatch.objects.filter(profiled_at__isnull=True).count() == 0


_DYING_PROFILER = """
import os, sys, time
import django
django.setup()
from monitoring import services
original = services.profiles_add
def profile_then_hang(**kwargs):
    count = original(**kwargs)
    print("profiled", count, flush=True)
    time.sleep(120)  # killed here: profiles written, batches marked next, nothing committed
    return count
services.profiles_add = profile_then_hang
from flywheel.ingest import profiling
profiling.profiles_update(force_grids=True)
"""


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_profile_loses_and_doubles_nothing(app_client, project):
    post_traffic(app_client, traffic(900, seed=7, start=datetime.now(UTC) - timedelta(hours=2), hours=1))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SECRET_KEY": settings.SECRET_KEY,
           "DATABASE_URL": database_url(), "LOG_LEVEL": "ERROR"}
    worker = subprocess.Popen([sys.executable, "-c", _DYING_PROFILER], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = worker.stdout.readline()
        assert line.startswith("profiled 900"), worker.stderr.read()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    # PostgreSQL rolls the dead worker's transaction back once it notices the connection
    # is gone; until then its locks make the profiler skip the project, not wait or double.
    deadline = time.monotonic() + 30
    while IngestBatch.objects.filter(profiled_at__isnull=True).exists() and time.monotonic() < deadline:
        profiling.profiles_update(force_grids=True)
        time.sleep(0.2)
    assert window_count(project) == 900
    assert sum(p.count for p in Profile.objects.filter(project=project, name="f0")) == 900


def test_a_value_of_the_wrong_type_is_counted_missing_not_a_failure(app_client, project):
    from flywheel.models import ModelVersion, Prediction

    now = datetime.now(UTC)
    post_traffic(app_client, traffic(50, seed=8, start=now - timedelta(hours=1), hours=0.5))
    # A row written around the API's validation (a bulk load, a migration).
    batch = IngestBatch.objects.create(project=project, received_at=now)
    odd = Prediction.objects.create(
        project=project, external_id="odd", model_version=ModelVersion.objects.get(project=project, name="v1"),
        label="1", confidence=0.9, least_confidence=0.1, margin=0.2, entropy=0.3, batch=batch,
        features={"f0": "n/a", "f1": 2.0, "color": "red"}, created_at=now, received_at=now)
    IngestBatch.objects.filter(pk=batch.pk).update(first_prediction_id=odd.pk, last_prediction_id=odd.pk)
    assert profiling.profiles_update(force_grids=True) == 51
    window = selectors.window_histograms(project_id=project.pk, start=EPOCH, end=now + timedelta(days=1))
    assert window.fields[("feature", "f0")][0] == 1, "the string is a missing value"
    assert window.fields[("feature", "f1")].sum() == 51
