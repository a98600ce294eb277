"""External trainers: a run hands its dataset version to a signed webhook and waits for the
trainer to report back the model it made."""

import orjson
from django.db import transaction

from accounts.services import audit_record
from common import signed_http
from common.errors import Conflict
from common.jobs import Unreachable
from flywheel.models import TrainingRun, TrainingStage, TrainingStatus
from flywheel.training.evaluation_set import eval_version_pin
from flywheel.training.policy import RetrainingPolicy
from flywheel.training.registry import model_version_record
from flywheel.training.runs import enqueue_stage, stage_finish


def external_request(run: TrainingRun, token: str, policy: RetrainingPolicy) -> str:
    """Hand the dataset version to an external trainer, which reports back through
    POST /api/v1/training-runs/{id}/complete/."""
    version = run.dataset_version
    eval_version = eval_version_pin(run)
    body = orjson.dumps({
        # "run" is the id, kept for trainers written against it; run_id and run_number name both.
        "event": "training.requested", "run": run.pk, "run_id": run.pk, "run_number": run.number,
        "project": run.project.slug,
        "dataset_version": version.number, "manifest_uri": version.manifest_uri,
        "manifest_sha256": version.manifest_sha256,
        "evaluation": {"dataset_version": eval_version.number, "manifest_uri": eval_version.manifest_uri,
                       "split": "test"},
        "complete": f"/api/v1/training-runs/{run.pk}/complete/",
    })
    result = signed_http.send(url=policy.external_url, body=body, secret=policy.external_secret,
                           event="training.requested", delivery_id=run.pk)
    if not result.succeeded:
        if result.retryable:
            raise Unreachable(f"external trainer unreachable: {result.error}")
        raise RuntimeError(f"external trainer refused the request: {result.error}")
    stage_finish(run_id=run.pk, token=token, next_stage=TrainingStage.WAITING, eval_dataset_version=eval_version,
                 progress=0.4)
    return "done"


def training_run_complete(*, run: TrainingRun, model_version: str, artifact_uri: str, metrics: dict,
                          predictions: dict[str, str] | None, actor=None) -> TrainingRun:
    """An external trainer's report: the candidate it made, and (to be judged like a
    built-in candidate) what it predicts for each evaluation row, by prediction row id."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update(of=("self",)).select_related("project", "dataset_version").get(
            pk=run.pk)
        if run.status != TrainingStatus.RUNNING or run.stage != TrainingStage.WAITING:
            raise Conflict("run_not_waiting", f"Run {run.number} is not waiting for a trainer ({run.stage}).")
        candidate = model_version_record(run, artifact_uri=artifact_uri, artifact=None, trainer="external",
                                          metrics={**metrics, "evaluation_predictions": predictions or {}},
                                          name=model_version)
        run.model_version, run.stage, run.progress = candidate, TrainingStage.EVALUATE, 0.6
        run.save(update_fields=["model_version", "stage", "progress", "updated_at"])
        audit_record(actor=actor, action="training.complete", project=run.project, target=f"run #{run.number}",
                     details={"model_version": model_version})
        enqueue_stage(run.pk, TrainingStage.EVALUATE)
    return run
