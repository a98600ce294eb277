"""Celery tasks of the flywheel app. Thin: JSON arguments (ids), load, call a service."""

import structlog
from celery import shared_task

from flywheel.datasets import services as datasets
from flywheel.ingest import profiling
from flywheel.training import runs as training

log = structlog.get_logger(__name__)

# Dataset builds: retried on a store or database that is away for a moment, with capped
# exponential backoff; a build that runs out of retries is marked failed with the reason.
DATASET_BUILD_RETRIES = 5
DATASET_BUILD_BACKOFF_SECONDS = 10
DATASET_BUILD_BACKOFF_MAX_SECONDS = 300


@shared_task(name="flywheel.datasets.build_version", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=3300, time_limit=3600, max_retries=DATASET_BUILD_RETRIES, ignore_result=True)
def dataset_version_build_task(self, version_id: int) -> None:
    """Build dataset version `version_id`. Safe to run twice: a version that is ready,
    failed or held by a live build is left alone."""
    try:
        datasets.dataset_version_build(version_id=version_id)
    except datasets.TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            datasets.dataset_version_fail(
                version_id=version_id,
                reason=f"Gave up after {self.request.retries + 1} attempts: {type(exc).__name__}: {exc}")
            return
        countdown = min(DATASET_BUILD_BACKOFF_MAX_SECONDS, DATASET_BUILD_BACKOFF_SECONDS * 2 ** self.request.retries)
        log.info("dataset.build_retry", version_id=version_id, retries=self.request.retries, countdown=countdown)
        if self.request.is_eager:
            # Run inline (the embedded default, the tests) there is no queue to come back
            # through, and Celery would hand the Retry to the caller: try again in place.
            self.apply(args=(version_id,), retries=self.request.retries + 1)
            return
        raise self.retry(exc=exc, countdown=countdown) from None


@shared_task(name="flywheel.datasets.sweep_stale_builds", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=50, time_limit=60, ignore_result=True)
def dataset_versions_sweep_task() -> None:
    """Requeue (or, after repeated losses, fail) dataset builds whose worker died."""
    datasets.dataset_versions_sweep()


@shared_task(name="flywheel.profiles_update", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=240, time_limit=300)
def profiles_update() -> int:
    """The beat's minute: profile what ingestion stored since. Safe to run twice and to miss
    a beat (batches stay unprofiled until some run claims them); no retries, the next
    beat is the retry."""
    return profiling.profiles_update(time_budget=50)


# --- Retraining ---------------------------------------------------------------------------------

TRAINING_RETRIES = 8
TRAINING_BACKOFF_SECONDS = 10


@shared_task(name="flywheel.training.stage", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=3300, time_limit=3600, max_retries=None, ignore_result=True)
def training_stage_task(self, run_id: int, stage: str) -> None:
    """Run one stage of a training run (dataset, train, evaluate, gate, promote); each stage
    queues the next. Safe to run twice: a stage another attempt holds, or one the run has
    left, is skipped. Store or database outages are retried with capped backoff; a dataset
    still building is waited for."""
    try:
        outcome = training.stage_run(run_id=run_id, stage=stage)
    except training.TRANSIENT_ERRORS as exc:
        if self.request.retries >= TRAINING_RETRIES:
            training.training_run_fail(run_id=run_id, reason=f"{stage}: gave up after {self.request.retries + 1} "
                                                              f"attempts: {type(exc).__name__}: {exc}")
            return
        countdown = min(training.STAGE_BACKOFF_MAX_SECONDS, TRAINING_BACKOFF_SECONDS * 2 ** self.request.retries)
        log.info("training.stage_retry", run=run_id, stage=stage, countdown=countdown)
        if self.request.is_eager:
            self.apply(args=(run_id, stage), retries=self.request.retries + 1)
            return
        raise self.retry(exc=exc, countdown=countdown) from None
    if outcome == "wait":
        if self.request.is_eager:
            # Inline, nothing else can finish the dataset's build: it failed to start here.
            training.training_run_fail(run_id=run_id, reason=f"{stage}: the dataset version is held by another build")
            return
        raise self.retry(countdown=5) from None


@shared_task(name="flywheel.training.triggers", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=120, time_limit=180, ignore_result=True)
def retraining_triggers_task() -> list[int]:
    """The beat's look at every project's retraining triggers."""
    return training.retraining_triggers_evaluate()


@shared_task(name="flywheel.training.watchdog", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=50, time_limit=60, ignore_result=True)
def training_watchdog_task() -> list[int]:
    """Queue again the training stages whose worker died."""
    return training.training_watchdog()
