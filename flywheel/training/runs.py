"""Training runs: requesting one (triggers that arrive together share it, at most one runs
per project), and holding its stages as a leased job (common.jobs).

Every stage runs as a Celery task and is safe to run twice: a stage first claims the run
under its row lock (it must be running and at that stage, and no live attempt may hold
it), works, then commits its result only if it still holds the claim. A worker that dies
mid-stage leaves a stale heartbeat; the redelivered task, or the watchdog, claims the
stage again and the run finishes once. The stages themselves are in stages.py."""

from datetime import datetime, timedelta

import structlog
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts.services import audit_record
from common.enqueue import enqueue_on_commit
from common.errors import Conflict
from common.jobs import Lease, Superseded
from flywheel.models import DatasetStatus, DatasetVersion, Project, TrainingRun, TrainingStage, TrainingStatus
from flywheel.training.policy import RetrainingPolicy, trainer_for

log = structlog.get_logger(__name__)

STAGE_TASK = "flywheel.training.stage"
LEASE = Lease(TrainingRun, token_field="token", stale_setting="FLYWHEEL_TRAINING_STALE_SECONDS")
# The longest a stage's transient-error retry waits before its next try.
STAGE_BACKOFF_MAX_SECONDS = 600
NEXT_STAGE = {
    TrainingStage.DATASET: TrainingStage.TRAIN,
    TrainingStage.TRAIN: TrainingStage.EVALUATE,
    TrainingStage.WAITING: TrainingStage.EVALUATE,
    TrainingStage.EVALUATE: TrainingStage.GATE,
    TrainingStage.GATE: TrainingStage.PROMOTE,
    TrainingStage.PROMOTE: TrainingStage.DONE,
}


# --- Requesting runs ----------------------------------------------------------------------------


def training_run_request(*, project: Project, trigger: str, details: dict | None = None,
                         dataset_version: DatasetVersion | None = None, actor=None) -> TrainingRun:
    """Ask for a retraining. Triggers that arrive together share one run; a trigger during
    a run (once it has read its data) joins the one queued run, created if needed: it is
    recorded, not lost, and at most one run is in flight per project."""
    policy = RetrainingPolicy.from_dict(project.retraining)
    trainer_for(policy.trainer)  # refuse an unknown trainer now, not in a worker
    if dataset_version is not None and dataset_version.status != DatasetStatus.READY:
        raise Conflict("dataset_not_ready", f"Dataset version {dataset_version.number} is {dataset_version.status}.")
    entry = {"trigger": trigger, "at": timezone.now().isoformat(), **(details or {})}
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).get()
        starting = TrainingRun.objects.filter(project=project, status=TrainingStatus.RUNNING,
                                              stage=TrainingStage.DATASET, dataset_version__isnull=True).first()
        if starting is not None and dataset_version is None:
            # Triggers that arrive together share one run: this one has not read its data yet.
            starting.triggers = [*starting.triggers, entry]
            starting.save(update_fields=["triggers", "updated_at"])
            return starting
        run = TrainingRun.objects.filter(project=project, status=TrainingStatus.QUEUED).first()
        if run is None:
            number = (TrainingRun.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
            run = TrainingRun.objects.create(
                project=project, number=number, trigger=trigger, triggers=[entry], trainer=policy.trainer,
                requested_dataset=dataset_version, created_by=actor if getattr(actor, "pk", None) else None,
            )
        else:
            run.triggers = [*run.triggers, entry]
            if dataset_version is not None:
                run.requested_dataset = dataset_version
            run.save(update_fields=["triggers", "requested_dataset", "updated_at"])
        audit_record(actor=actor, action="training.request", project=project, target=f"run #{run.number}",
                     details={"trigger": trigger, "run_id": run.pk, "run_number": run.number})
        _start_next(project)
    run.refresh_from_db()
    log.info("training.requested", project=project.slug, run_id=run.pk, run_number=run.number, trigger=trigger,
             status=run.status)
    return run


def _start_next(project: Project) -> None:
    """Start the queued run if none is running. Called under the project's row lock."""
    if TrainingRun.objects.filter(project=project, status=TrainingStatus.RUNNING).exists():
        return
    run = TrainingRun.objects.filter(project=project, status=TrainingStatus.QUEUED).first()
    if run is None:
        return
    run.status, run.stage, run.started_at = TrainingStatus.RUNNING, TrainingStage.DATASET, timezone.now()
    run.save(update_fields=["status", "stage", "started_at", "updated_at"])
    enqueue_stage(run.pk, TrainingStage.DATASET)


def enqueue_stage(run_id: int, stage: str) -> None:
    """Send the stage's task once the transaction that moved the run there commits."""
    enqueue_on_commit(STAGE_TASK, run_id, stage)


# --- Holding a stage ------------------------------------------------------------------------------


def stage_claim(*, run_id: int, stage: str) -> tuple[TrainingRun, str] | None:
    """Take the stage for this attempt, or None when there is nothing to do: the run is not
    running at that stage, or another attempt holds it and is alive."""
    now = timezone.now()
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update(of=("self",)).filter(pk=run_id).select_related("project").first()
        if run is None or run.status != TrainingStatus.RUNNING or run.stage != stage:
            return None
        if LEASE.is_held(run, now):
            return None
        token = LEASE.new_token()
        run.token, run.heartbeat_at, run.attempts = token, now, run.attempts + 1
        run.save(update_fields=["token", "heartbeat_at", "attempts", "updated_at"])
    return run, token


def stage_update(run_id: int, token: str, **fields) -> None:
    """Write to the run only while this attempt still holds its stage."""
    LEASE.update_if_held(run_id, token, **fields)


def stage_finish(*, run_id: int, token: str, next_stage: str, **fields) -> None:
    """Commit the stage's result and hand the run to the next stage, if still ours."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.token != token:
            raise Superseded(run_id)
        for name, value in fields.items():
            setattr(run, name, value)
        run.stage, run.token = next_stage, ""
        if next_stage == TrainingStage.DONE:
            run.status, run.finished_at, run.progress = TrainingStatus.SUCCEEDED, timezone.now(), 1.0
        run.save()
        if next_stage == TrainingStage.DONE:
            Project.objects.select_for_update().filter(pk=run.project_id).values_list("pk", flat=True).get()
            _start_next(run.project)
        elif next_stage != TrainingStage.WAITING:
            enqueue_stage(run.pk, next_stage)
    log.info("training.stage_done", run_id=run_id, next_stage=next_stage)


def stage_release(*, run_id: int, token: str) -> None:
    """Give the stage up after a transient failure, for the retry to claim it at once."""
    TrainingRun.objects.filter(pk=run_id, token=token).update(token="", updated_at=timezone.now())


def training_run_fail(*, run_id: int, reason: str, token: str | None = None) -> bool:
    """End a run as failed with its reason, and start the queued one."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status not in (TrainingStatus.RUNNING, TrainingStatus.QUEUED):
            return False
        if token is not None and run.token not in ("", token):
            return False
        run.status, run.error, run.token, run.finished_at = TrainingStatus.FAILED, reason[:4000], "", timezone.now()
        run.save(update_fields=["status", "error", "token", "finished_at", "updated_at"])
        Project.objects.select_for_update().filter(pk=run.project_id).values_list("pk", flat=True).get()
        _start_next(run.project)
    log.warning("training.failed", run_id=run_id, reason=reason[:300])
    return True


# --- The watchdog --------------------------------------------------------------------------------


def training_watchdog(*, now: datetime | None = None, max_attempts: int = 6) -> list[int]:
    """Find running stages whose heartbeat stopped (their worker died) and queue them again;
    fail a run whose stages keep dying."""
    now = now or timezone.now()
    stale = TrainingRun.objects.filter(status=TrainingStatus.RUNNING, heartbeat_at__lt=now - LEASE.stale_after()) \
        .exclude(stage=TrainingStage.WAITING).exclude(token="")
    # A stage nobody claimed: its message was lost (the broker restarted empty, or was away
    # when the stage was queued). A live retry chain touches the run at least once per
    # backoff, so only a run quiet for longer than that is sent again.
    unclaimed = TrainingRun.objects.filter(
        status=TrainingStatus.RUNNING, token="",
        updated_at__lt=now - LEASE.stale_after() - timedelta(seconds=STAGE_BACKOFF_MAX_SECONDS),
    ).exclude(stage=TrainingStage.WAITING)
    requeued = []
    for run in unclaimed:
        with transaction.atomic():
            if TrainingRun.objects.filter(pk=run.pk, token="", stage=run.stage).update(updated_at=now):
                enqueue_stage(run.pk, run.stage)
                requeued.append(run.pk)
                log.warning("training.stage_resent", run_id=run.pk, stage=run.stage)
    for run in stale:
        if run.attempts >= max_attempts:
            training_run_fail(run_id=run.pk, reason=f"{run.stage}: its worker died {run.attempts} times")
            continue
        with transaction.atomic():
            enqueue_stage(run.pk, run.stage)
        requeued.append(run.pk)
        log.warning("training.stage_requeued", run_id=run.pk, stage=run.stage, attempts=run.attempts)
    return requeued
