"""Monitoring's Celery tasks: each safe to run twice, and the beat names only real tasks."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from config.celery import app
from flywheel.ingest import profiling
from flywheel.models import IngestBatch
from monitoring import services, tasks
from monitoring.models import CheckTrigger, DeliveryState, DriftAlert, DriftReport, Profile, WebhookDelivery
from tests.live import (
    ROOT,  # noqa: E402
    database_url,
)
from tests.monitoring.conftest import WEBHOOK_SECRET, post_traffic, traffic


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()  # what a worker does at start: every app's tasks.py

    schedule = app.conf.beat_schedule
    assert {"drift-profiles", "drift-checks", "drift-webhook-retries"} <= set(schedule)
    for entry in schedule.values():
        assert entry["task"] in app.tasks, entry["task"]


@pytest.fixture
def profiled_project(app_client, project):
    post_traffic(app_client, traffic(300, seed=1, start=datetime.now(UTC) - timedelta(hours=2), hours=1.5))
    profiling.profiles_update(force_grids=True)
    return project


def test_scheduled_checks_run_once_per_slot(profiled_project):
    first = tasks.drift_checks_run_due.delay().get()
    assert len(first) == 1
    assert DriftReport.objects.get(pk=first[0]).trigger == CheckTrigger.SCHEDULED
    assert tasks.drift_checks_run_due.delay().get() == [], "a second run in the same hour does nothing"
    assert DriftReport.objects.count() == 1


def test_the_next_slot_gets_the_next_check_and_a_policy_can_turn_them_off(profiled_project):
    now = datetime.now(UTC).replace(minute=5)
    assert len(services.drift_checks_run_due(now=now)) == 1
    assert services.drift_checks_run_due(now=now + timedelta(minutes=50)) == []
    assert len(services.drift_checks_run_due(now=now + timedelta(hours=1))) == 1
    profiled_project.drift = {**profiled_project.drift, "schedule": False}
    profiled_project.save()
    assert services.drift_checks_run_due(now=now + timedelta(hours=2)) == []


@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_a_delivery_task_run_twice_sends_once(project, receiver):
    project.drift = {**project.drift, "webhook_url": receiver.url, "webhook_secret": WEBHOOK_SECRET}
    project.save()
    delivery = _delivery(project, receiver.url)
    assert tasks.webhook_deliver.delay(delivery.pk).get() == DeliveryState.DELIVERED
    assert tasks.webhook_deliver.delay(delivery.pk).get() is None
    assert len(receiver.requests) == 1


@override_settings(FLYWHEEL_WEBHOOK_ALLOW_LOOPBACK=True)
def test_the_retry_sweep_run_twice_attempts_once(project, receiver):
    project.drift = {**project.drift, "webhook_url": receiver.url, "webhook_secret": WEBHOOK_SECRET}
    project.save()
    receiver.statuses = [503]
    delivery = _delivery(project, receiver.url)
    assert tasks.webhook_deliveries_retry.delay().get() == 1
    assert tasks.webhook_deliveries_retry.delay().get() == 0, "the next attempt waits for its backoff"
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.PENDING and delivery.attempts == 1 and len(receiver.requests) == 1


def _delivery(project, url) -> WebhookDelivery:
    report = services.drift_check_run(project=project, sync=False)
    alert = DriftAlert.objects.create(project=project, features=["f0"], opened_by=report, last_report=report)
    return WebhookDelivery.objects.create(project=project, alert=alert, report=report, event="drift.detected",
                                          url=url, payload={"event": "drift.detected"},
                                          next_attempt_at=datetime.now(UTC))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
# The suite runs tasks eagerly; this one goes through the broker on purpose.
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_a_real_worker_profiles_through_the_broker(app_client, project):
    """The beat's task, sent through Redis to a worker process, as deployed."""
    post_traffic(app_client, traffic(1200, seed=9, start=datetime.now(UTC) - timedelta(hours=1), hours=0.5))
    queue = f"flywheel-test-{os.getpid()}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SECRET_KEY": settings.SECRET_KEY,
           "DATABASE_URL": database_url(), "CELERY_TASK_ALWAYS_EAGER": "false", "LOG_LEVEL": "WARNING",
           "CELERY_BROKER_URL": settings.CELERY_BROKER_URL, "CELERY_TASK_DEFAULT_QUEUE": queue}
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "--pool=solo", "--concurrency=1",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-Q", queue, "--loglevel=WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        app.send_task("flywheel.profiles_update", queue=queue)
        deadline = time.monotonic() + 60
        while IngestBatch.objects.filter(profiled_at__isnull=True).exists():
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the worker did not profile within a minute"
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    assert sum(p.count for p in Profile.objects.filter(project=project, name="label")) == 1200
