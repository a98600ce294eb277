"""Celery tasks of the flywheel app. Thin: JSON arguments (ids), load, call a service.
Dataset builds and training stages are leased jobs (common.jobs): retried on a store or
database that is away for a moment, with capped backoff, and failed with the reason when
the retries run out."""

from celery import shared_task

from common.jobs import Backoff, run_or_retry
from flywheel import partitions
from flywheel.datasets import services as datasets
from flywheel.ingest import profiling
from flywheel.models import Project
from flywheel.retention import services as retention
from flywheel.training import runs, shadow, stages, triggers
from labeling import group_services

DATASET_BUILD_RETRIES = 5
DATASET_BUILD_BACKOFF = Backoff(base_seconds=10, max_seconds=300)
TRAINING_RETRIES = 8
TRAINING_BACKOFF = Backoff(base_seconds=10, max_seconds=runs.STAGE_BACKOFF_MAX_SECONDS)


@shared_task(name=datasets.BUILD_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=3300, time_limit=3600, max_retries=DATASET_BUILD_RETRIES, ignore_result=True)
def dataset_version_build_task(self, version_id: int) -> None:
    """Build dataset version `version_id`. Safe to run twice: a version that is ready,
    failed or held by a live build is left alone."""
    run_or_retry(self, lambda: datasets.dataset_version_build(version_id=version_id),
                 backoff=DATASET_BUILD_BACKOFF, max_retries=DATASET_BUILD_RETRIES,
                 give_up=lambda reason: datasets.dataset_version_fail(version_id=version_id, reason=reason))


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


@shared_task(name=runs.STAGE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=3300, time_limit=3600, max_retries=None, ignore_result=True)
def training_stage_task(self, run_id: int, stage: str) -> None:
    """Run one stage of a training run (dataset, train, evaluate, gate, promote); each stage
    queues the next. Safe to run twice: a stage another attempt holds, or one the run has
    left, is skipped. A dataset still building is waited for."""
    outcome = run_or_retry(self, lambda: stages.stage_run(run_id=run_id, stage=stage),
                           backoff=TRAINING_BACKOFF, max_retries=TRAINING_RETRIES,
                           give_up=lambda reason: runs.training_run_fail(run_id=run_id, reason=f"{stage}: {reason}"))
    if outcome == "wait":
        if self.request.is_eager:
            # Inline, nothing else can finish the dataset's build: it failed to start here.
            runs.training_run_fail(run_id=run_id, reason=f"{stage}: the dataset version is held by another build")
            return
        raise self.retry(countdown=5) from None


@shared_task(name="flywheel.training.triggers", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=120, time_limit=180, ignore_result=True)
def retraining_triggers_task() -> list[int]:
    """The beat's look at every project's retraining triggers."""
    return triggers.retraining_triggers_evaluate()


@shared_task(name="flywheel.training.watchdog", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=50, time_limit=60, ignore_result=True)
def training_watchdog_task() -> list[int]:
    """Queue again the training stages whose worker died."""
    return runs.training_watchdog()


@shared_task(name="flywheel.groups_build", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=240, time_limit=300, ignore_result=True)
def groups_build_task() -> int:
    """The beat's group build for projects with grouping enabled (labeling.group_services);
    a project without new open tasks is left as it is."""
    projects = Project.objects.filter(labeling__grouping__enabled=True).order_by("id")
    return group_services.groups_build_due(projects=projects)

@shared_task(name=shadow.SCORE_TASK, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=240, time_limit=300)
def shadows_score_task() -> int:
    """The beat's look at models in shadow: each scores the predictions stored since it last
    did, exactly once. Safe to run twice and to miss a beat (what is unscored stays so until
    some run takes it); no retries, the next beat is the retry."""
    return shadow.shadows_score(time_budget=50)


@shared_task(name="flywheel.shadow.live_gate", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=120, time_limit=180)
def live_gates_task() -> dict[str, int]:
    """The live gate's look at every model in shadow: promote, retire or wait. Safe to run
    twice: a shadow it decided on is no longer active."""
    return shadow.live_gates_evaluate()


@shared_task(name="flywheel.partitions_ensure", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=240, time_limit=300, ignore_result=True)
def partitions_ensure_task() -> list[str]:
    """The beat's daily look at the prediction table's weekly partitions: the weeks ahead
    exist before any prediction needs them. Safe to run twice: an existing week is kept."""
    return partitions.prediction_partitions_ensure()


@shared_task(name="flywheel.retention.run", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=3300, time_limit=3600, ignore_result=True)
def retention_task() -> dict[str, int]:
    """Today's retention of every project (flywheel.retention.services). Safe to run twice:
    a project's succeeded run of the day, or one a live attempt holds, is left alone; no
    retries, the next beat is the retry."""
    return retention.retention_run_all()
