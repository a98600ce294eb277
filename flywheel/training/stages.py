"""The stages of a training run (dataset, train, evaluate, gate, promote), each run by one
Celery task on the run's lease (runs.py)."""

import structlog

from common.jobs import TRANSIENT_ERRORS, Superseded
from flywheel.datasets import services as datasets
from flywheel.models import DatasetStatus, ModelAliasName, ModelVersion, TrainingRun, TrainingStage
from flywheel.training import evaluation
from flywheel.training.artifacts import artifact_store, evaluation_load, evaluation_store
from flywheel.training.evaluation_set import eval_version_pin, frozen_evaluation_set, majority_label, predict
from flywheel.training.external import external_request
from flywheel.training.policy import RetrainingPolicy, trainer_for
from flywheel.training.registry import alias_set, champion_get, model_promote, model_version_record
from flywheel.training.rows import numeric_ranges, rows_without, version_rows
from flywheel.training.runs import LEASE, stage_claim, stage_finish, stage_release, stage_update, training_run_fail
from flywheel.training.selectors import live_gate_policy
from flywheel.training.shadow import shadow_start
from labeling import selectors as labeling_selectors

log = structlog.get_logger(__name__)


def stage_run(*, run_id: int, stage: str) -> str:
    """Run one stage of a run: 'done' when it did its work, 'skipped' when there was
    nothing to do, 'wait' when it must be tried again shortly (a dataset still building).
    Transient errors propagate for the task to retry; any other failure fails the run."""
    claim = stage_claim(run_id=run_id, stage=stage)
    if claim is None:
        return "skipped"
    run, token = claim
    try:
        with LEASE.heartbeat(run_id, token):
            outcome = STAGES[stage](run, token)
    except Superseded:
        return "skipped"
    except TRANSIENT_ERRORS:
        stage_release(run_id=run_id, token=token)
        raise
    except Exception as exc:  # noqa: BLE001 - recorded on the run, not lost
        log.exception("training.stage_error", run_id=run_id, stage=stage)
        training_run_fail(run_id=run_id, token=token, reason=f"{stage}: {type(exc).__name__}: {exc}")
        return "failed"
    if outcome == "wait":
        stage_release(run_id=run_id, token=token)
    return outcome


def _stage_dataset(run: TrainingRun, token: str) -> str:
    """Use the requested dataset version, or build a new one (in this task, so the run does
    not wait on another queue)."""
    version = run.dataset_version or run.requested_dataset
    if version is None:
        version = datasets.dataset_version_create(project=run.project, note=f"training run #{run.number} (id {run.pk})",
                                                  trigger="training")
        stage_update(run.pk, token, dataset_version=version)
    datasets.dataset_version_build(version_id=version.pk)  # a no-op when another build holds it
    version.refresh_from_db()
    if version.status == DatasetStatus.BUILDING:
        stage_update(run.pk, token, progress=0.1 * version.progress)
        return "wait"
    if version.status == DatasetStatus.FAILED:
        raise RuntimeError(f"dataset version {version.number} failed: {version.error}")
    if not version.counts.get("rows"):
        raise RuntimeError(f"dataset version {version.number} has no labeled rows to train on")
    stage_finish(run_id=run.pk, token=token, next_stage=TrainingStage.TRAIN, dataset_version=version, progress=0.2)
    return "done"


def _stage_train(run: TrainingRun, token: str) -> str:
    project, version = run.project, run.dataset_version
    policy = RetrainingPolicy.from_dict(project.retraining)
    if run.trainer == "external":
        return external_request(run, token, policy)
    # Gold answers belong to the frozen evaluation set: a model trained on them would be
    # judged on what it memorized.
    # The validation split too: nothing here tunes on it, and the test split stays unseen.
    rows = rows_without(version_rows(version, split=("train", "validation")),
                    set(labeling_selectors.gold_answers(project_id=project.pk)))
    if len(rows.labels) == 0:
        raise RuntimeError(f"dataset version {version.number} has no rows in its train split")
    trainer = trainer_for(run.trainer, policy=policy)
    _model, artifact = trainer.train(rows.training_data(numeric_ranges=numeric_ranges(project)))
    uri = artifact_store(project, artifact)
    candidate = model_version_record(run, artifact_uri=uri, artifact=artifact, trainer=run.trainer)
    stage_finish(run_id=run.pk, token=token, next_stage=TrainingStage.EVALUATE, model_version=candidate,
                 progress=0.6)
    return "done"


def _stage_evaluate(run: TrainingRun, token: str) -> str:
    """Score the candidate, the champion and the majority-class baseline on the frozen
    evaluation set (the test split of the pinned version, plus gold answers), and keep
    what every one predicted for the gate."""
    project = run.project
    eval_version = eval_version_pin(run)
    frozen = frozen_evaluation_set(project, eval_version)
    if len(frozen.labels) == 0:
        raise RuntimeError("the frozen evaluation set is empty (no test rows, no gold answers)")
    candidate = run.model_version
    candidate_labels, candidate_confidence = predict(candidate, frozen)
    champion = champion_get(project)
    champion_labels = None
    if champion is not None and champion.pk != candidate.pk:
        champion_labels = predict(champion, frozen, allow_logged=True)[0]
    baseline = [majority_label(run.dataset_version)] * len(frozen.labels)
    truth = frozen.labels.tolist()
    slices = frozen.slices
    evaluated = {
        "truth": truth, "candidate": candidate_labels, "champion": champion_labels, "baseline": baseline,
        "slices": slices, "prediction_ids": frozen.prediction_ids.tolist(),
    }
    evaluation_store(run, evaluated)
    metrics = {
        "candidate": evaluation.metrics(truth, candidate_labels, candidate_confidence, slices=slices),
        "champion": evaluation.metrics(truth, champion_labels, slices=slices) if champion_labels else None,
        "baseline": evaluation.metrics(truth, baseline),
        "evaluation_set": {"dataset_version": eval_version.number, "rows": len(truth), "gold": frozen.gold},
    }
    ModelVersion.objects.filter(pk=candidate.pk).update(metrics=metrics["candidate"])
    stage_finish(run_id=run.pk, token=token, next_stage=TrainingStage.GATE, metrics=metrics,
                 eval_dataset_version=eval_version, champion=champion if champion_labels else None, progress=0.8)
    return "done"


def _stage_gate(run: TrainingRun, token: str) -> str:
    evaluated = evaluation_load(run)
    policy = evaluation.GatePolicy.from_dict(run.project.retraining)
    champion = evaluated["champion"]
    if champion is not None and any(label is None for label in champion):
        # An external champion is judged on the rows it served itself.
        keep = [i for i, label in enumerate(champion) if label is not None]
        evaluated = {k: ([v[i] for i in keep] if isinstance(v, list) else v) for k, v in evaluated.items()}
        evaluated["slices"] = {s: [vals[i] for i in keep] for s, vals in evaluated["slices"].items()}
    decision = evaluation.gate(truth=evaluated["truth"], candidate=evaluated["candidate"],
                               champion=evaluated["champion"], baseline=evaluated["baseline"],
                               slices=evaluated["slices"], policy=policy)
    stage_finish(run_id=run.pk, token=token, next_stage=TrainingStage.PROMOTE,
                 gate={"passed": decision.passed, "reasons": decision.reasons, "policy": policy.as_dict()},
                 progress=0.9)
    return "done"


def _stage_promote(run: TrainingRun, token: str) -> str:
    promoted = False
    live_gate = live_gate_policy(run.project)
    if run.gate.get("passed") and live_gate.enabled and champion_get(run.project) is not None:
        # Judged on live traffic before it serves anyone: the live gate promotes or retires it.
        shadow_start(project=run.project, model_version=run.model_version, run=run,
                     reason=f"training run #{run.number} passed the offline gate; the live gate decides")
    elif run.gate.get("passed"):
        promoted = model_promote(project=run.project, model_version=run.model_version, actor=None, run=run,
                                 reason=f"training run #{run.number} passed the gate") is not None
    else:
        alias_set(run.project, ModelAliasName.CHALLENGER, run.model_version)
    stage_finish(run_id=run.pk, token=token, next_stage=TrainingStage.DONE, promoted=promoted)
    return "done"


STAGES = {
    TrainingStage.DATASET: _stage_dataset,
    TrainingStage.TRAIN: _stage_train,
    TrainingStage.EVALUATE: _stage_evaluate,
    TrainingStage.GATE: _stage_gate,
    TrainingStage.PROMOTE: _stage_promote,
}












