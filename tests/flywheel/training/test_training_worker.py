"""Retraining on real Celery processes (worker and beat) with the Redis broker and
PostgreSQL: a run that starts by itself, a worker killed mid-training, triggers at once."""

import threading

import pytest
from django.db import connection
from django.test import override_settings

from flywheel.models import ModelAlias, ModelPromotion, ModelVersion, TrainingRun
from flywheel.training import runs
from monitoring import selectors as monitoring_selectors
from tests.flywheel.training.training_data import digits_project, log_and_label
from tests.worker import CeleryProcess, broker_mode, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SLOW = {"FLYWHEEL_TRAINERS": "slow=tests.trainers.SlowTrainer", "FLYWHEEL_TRAINING_STALE_SECONDS": "6"}


def _finished(run_id):
    def check():
        run = TrainingRun.objects.get(pk=run_id)
        assert run.status != "failed", run.error
        return run.status == "succeeded"
    return check


def test_labels_accumulate_and_a_run_starts_by_itself_and_promotes():
    project = digits_project(retraining={"min_new_labels": 300})
    log_and_label(project, start=0, count=200)
    with CeleryProcess(FLYWHEEL_RETRAINING_CHECK_SECONDS="1") as worker, \
            CeleryProcess("beat", queue=worker.queue, FLYWHEEL_RETRAINING_CHECK_SECONDS="1"):
        worker.wait_for_log("flywheel.training.triggers", timeout=30)
        assert not TrainingRun.objects.exists()  # 200 labels are not enough
        log_and_label(project, start=200, count=700)
        wait_until(lambda: TrainingRun.objects.exists(), timeout=90, message="a run started")
        run = TrainingRun.objects.get()
        wait_until(_finished(run.pk), timeout=180, message="the run finished")
    run.refresh_from_db()
    assert run.trigger == "new_labels" and run.triggers[0]["new_labels"] >= 300
    assert run.promoted and run.gate["passed"] and run.dataset_version.status == "ready"
    assert ModelAlias.objects.get(project=project, alias="champion").model_version == run.model_version
    assert monitoring_selectors.reference_current(project=project).dataset_version == run.dataset_version.number
    assert TrainingRun.objects.count() == 1  # the labels were used once, not every second


@override_settings(FLYWHEEL_TRAINERS={"sklearn": "flywheel.training.trainers.SklearnTrainer",
                                      "slow": "tests.trainers.SlowTrainer"})
def test_a_worker_killed_mid_training_is_redelivered_and_the_run_finishes_once():
    project = digits_project(retraining={"trainer": "slow"})
    log_and_label(project, start=0, count=600)
    with CeleryProcess(**SLOW) as first, broker_mode():
        run = runs.training_run_request(project=project, trigger="manual")
        wait_until(lambda: TrainingRun.objects.get(pk=run.pk).stage == "train"
                   and TrainingRun.objects.get(pk=run.pk).token != "", timeout=90, message="training began")
        first.kill()  # SIGKILL: no ack, no cleanup
    assert TrainingRun.objects.get(pk=run.pk).status == "running"
    with CeleryProcess(queue=first.queue, **SLOW):
        wait_until(_finished(run.pk), timeout=180, message="the redelivered run finished")
    run.refresh_from_db()
    assert run.attempts >= 2 and run.promoted
    assert ModelVersion.objects.filter(project=project, source="trained").count() == 1
    assert ModelPromotion.objects.filter(project=project).count() == 1
    assert TrainingRun.objects.count() == 1


def test_two_triggers_at_once_make_one_run():
    project = digits_project()
    log_and_label(project, start=0, count=600)
    barrier = threading.Barrier(2)
    requested = []

    def trigger(kind):
        barrier.wait()
        requested.append(runs.training_run_request(project=project, trigger=kind).pk)
        connection.close()

    with CeleryProcess(), broker_mode():
        threads = [threading.Thread(target=trigger, args=(kind,)) for kind in ("drift", "new_labels")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(requested)) == 1
        wait_until(_finished(requested[0]), timeout=180, message="the run finished")
    run = TrainingRun.objects.get()
    assert sorted(t["trigger"] for t in run.triggers) == ["drift", "new_labels"]
    assert ModelVersion.objects.filter(source="trained").count() == 1
