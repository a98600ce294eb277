"""Retraining: when a run starts, its stages (dataset, train, evaluate, gate, promote), the
model registry (champion alias, promotions, rollback) and the triggers that start runs.

Every stage runs as a Celery task and is safe to run twice: a stage first claims the run
under its row lock (it must be running and at that stage, and no live attempt may hold
it), works, then commits its result only if it still holds the claim. A worker that dies
mid-stage leaves a stale heartbeat; the redelivered task, or the watchdog, claims the
stage again and the run finishes once."""

import contextlib
import hashlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import numpy as np
import orjson
import pyarrow as pa
import structlog
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.module_loading import import_string

from accounts.services import audit_record
from common.enqueue import enqueue_on_commit
from common.errors import Conflict, DomainError
from common.storage import ObjectMissing, StorageError, get_storage, key
from flywheel.datasets import selectors as dataset_selectors
from flywheel.datasets import services as datasets
from flywheel.datasets import shards
from flywheel.ingest import routing
from flywheel.models import (
    DatasetStatus,
    DatasetVersion,
    ModelAlias,
    ModelAliasName,
    ModelPromotion,
    ModelSource,
    ModelVersion,
    Prediction,
    Project,
    PromotionAction,
    TrainingRun,
    TrainingStage,
    TrainingStatus,
)
from flywheel.training import evaluation
from flywheel.training.trainers import Artifact, Model, TrainingData, load_model
from labeling import selectors as labeling_selectors
from labeling import services as labeling_services
from monitoring import selectors as monitoring_selectors
from monitoring import webhooks

log = structlog.get_logger(__name__)

TRANSIENT_ERRORS = (StorageError, OperationalError, InterfaceError)
HEARTBEAT_SECONDS = 5.0
SCHEDULES = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}
NEXT_STAGE = {
    TrainingStage.DATASET: TrainingStage.TRAIN,
    TrainingStage.TRAIN: TrainingStage.EVALUATE,
    TrainingStage.WAITING: TrainingStage.EVALUATE,
    TrainingStage.EVALUATE: TrainingStage.GATE,
    TrainingStage.GATE: TrainingStage.PROMOTE,
    TrainingStage.PROMOTE: TrainingStage.DONE,
}


@dataclass(frozen=True)
class RetrainingPolicy:
    # Retrain once this many labels were resolved since the last run started.
    min_new_labels: int = 500
    # Retrain when a drift check reports drift (since the last run started).
    on_drift: bool = True
    # Retrain on a schedule too: none, hourly, daily or weekly.
    schedule: str = "none"
    # The trainer plug-in (FLYWHEEL_TRAINERS).
    trainer: str = "sklearn"
    # The dataset version whose test split is the frozen evaluation set; pinned by the first
    # run when unset.
    eval_dataset_version: int | None = None
    # How the built-in trainer scales numeric features: "standard" (zero mean, unit variance),
    # "max_abs" (divided by the largest magnitude in the training rows; keeps zeros zero,
    # where standardizing near-constant pixels amplifies noise) or "range" (from each
    # feature's declared min and max, max_abs where none is declared: the same scale whatever
    # rows routing happened to label).
    feature_scaling: str = "standard"
    # An external trainer's endpoint and the secret its calls are signed with.
    external_url: str = ""
    external_secret: str = ""

    @classmethod
    def from_dict(cls, data) -> "RetrainingPolicy":
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__})

    def as_dict(self) -> dict:
        return asdict(self)


def trainer_for(name: str, *, policy: RetrainingPolicy | None = None):
    paths = settings.FLYWHEEL_TRAINERS
    if name not in paths:
        raise DomainError("unknown_trainer", f"No trainer '{name}'; configured: {', '.join(sorted(paths))}.")
    trainer = import_string(paths[name])()
    # A policy option reaches a trainer that declares it (the built-in one: feature_scaling).
    if policy is not None and hasattr(trainer, "feature_scaling"):
        trainer.feature_scaling = policy.feature_scaling
    return trainer


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
        audit_record(actor=actor, action="training.request", project=project, target=f"run {run.number}",
                     details={"trigger": trigger})
        _start_next(project)
    run.refresh_from_db()
    log.info("training.requested", project=project.slug, run=run.number, trigger=trigger, status=run.status)
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
    _enqueue_stage(run.pk, TrainingStage.DATASET)


def _enqueue_stage(run_id: int, stage: str) -> None:
    from flywheel.tasks import training_stage_task  # tasks import this module

    enqueue_on_commit(training_stage_task, run_id, stage)


# --- Claiming a stage -----------------------------------------------------------------------------


class StageSuperseded(Exception):
    """Another attempt holds this stage now, or the run moved on: stop quietly."""


# The longest a stage's transient-error retry waits before its next try.
STAGE_BACKOFF_MAX_SECONDS = 600


def _stale_after() -> timedelta:
    return timedelta(seconds=settings.FLYWHEEL_TRAINING_STALE_SECONDS)


def stage_claim(*, run_id: int, stage: str) -> tuple[TrainingRun, str] | None:
    """Take the stage for this attempt, or None when there is nothing to do: the run is not
    running at that stage, or another attempt holds it and is alive."""
    now = timezone.now()
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update(of=("self",)).filter(pk=run_id).select_related("project").first()
        if run is None or run.status != TrainingStatus.RUNNING or run.stage != stage:
            return None
        if run.token and run.heartbeat_at and now - run.heartbeat_at < _stale_after():
            return None
        token = uuid.uuid4().hex
        run.token, run.heartbeat_at, run.attempts = token, now, run.attempts + 1
        run.save(update_fields=["token", "heartbeat_at", "attempts", "updated_at"])
    return run, token


def _stage_update(run_id: int, token: str, **fields) -> None:
    """Write to the run only while this attempt still holds its stage."""
    if not TrainingRun.objects.filter(pk=run_id, token=token).update(**fields, updated_at=timezone.now()):
        raise StageSuperseded(run_id)


@contextlib.contextmanager
def _heartbeat(run_id: int, token: str) -> Iterator[None]:
    """Beat while the stage works, so a dead worker is told from a slow one."""
    stop = threading.Event()

    def beat():
        from django.db import connection

        try:
            while not stop.wait(HEARTBEAT_SECONDS):
                TrainingRun.objects.filter(pk=run_id, token=token).update(heartbeat_at=timezone.now())
        finally:
            connection.close()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def stage_finish(*, run_id: int, token: str, next_stage: str, **fields) -> None:
    """Commit the stage's result and hand the run to the next stage, if still ours."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.token != token:
            raise StageSuperseded(run_id)
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
            _enqueue_stage(run.pk, next_stage)
    log.info("training.stage_done", run=run_id, next_stage=next_stage)


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
    log.warning("training.failed", run=run_id, reason=reason[:300])
    return True


def stage_run(*, run_id: int, stage: str) -> str:
    """Run one stage of a run: 'done' when it did its work, 'skipped' when there was
    nothing to do, 'wait' when it must be tried again shortly (a dataset still building).
    Transient errors propagate for the task to retry; any other failure fails the run."""
    claim = stage_claim(run_id=run_id, stage=stage)
    if claim is None:
        return "skipped"
    run, token = claim
    try:
        with _heartbeat(run_id, token):
            outcome = STAGES[stage](run, token)
    except StageSuperseded:
        return "skipped"
    except TRANSIENT_ERRORS:
        stage_release(run_id=run_id, token=token)
        raise
    except Exception as exc:  # noqa: BLE001 - recorded on the run, not lost
        log.exception("training.stage_error", run=run_id, stage=stage)
        training_run_fail(run_id=run_id, token=token, reason=f"{stage}: {type(exc).__name__}: {exc}")
        return "failed"
    if outcome == "wait":
        stage_release(run_id=run_id, token=token)
    return outcome


# --- Stages ---------------------------------------------------------------------------------------


def _stage_dataset(run: TrainingRun, token: str) -> str:
    """Use the requested dataset version, or build a new one (in this task, so the run does
    not wait on another queue)."""
    version = run.dataset_version or run.requested_dataset
    if version is None:
        version = datasets.dataset_version_create(project=run.project, note=f"training run {run.number}",
                                                  trigger="training")
        _stage_update(run.pk, token, dataset_version=version)
    datasets.dataset_version_build(version_id=version.pk)  # a no-op when another build holds it
    version.refresh_from_db()
    if version.status == DatasetStatus.BUILDING:
        _stage_update(run.pk, token, progress=0.1 * version.progress)
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
        return _external_request(run, token, policy)
    # Gold answers belong to the frozen evaluation set: a model trained on them would be
    # judged on what it memorized.
    # The validation split too: nothing here tunes on it, and the test split stays unseen.
    rows = _without(_rows(version, split=("train", "validation")),
                    set(labeling_selectors.gold_answers(project_id=project.pk)))
    if len(rows.labels) == 0:
        raise RuntimeError(f"dataset version {version.number} has no rows in its train split")
    trainer = trainer_for(run.trainer, policy=policy)
    _model, artifact = trainer.train(rows.training_data(numeric_ranges=_numeric_ranges(project)))
    uri = _artifact_store(project, artifact)
    candidate = _model_version_record(run, artifact_uri=uri, artifact=artifact, trainer=run.trainer)
    stage_finish(run_id=run.pk, token=token, next_stage=TrainingStage.EVALUATE, model_version=candidate,
                 progress=0.6)
    return "done"


def _stage_evaluate(run: TrainingRun, token: str) -> str:
    """Score the candidate, the champion and the majority-class baseline on the frozen
    evaluation set (the test split of the pinned version, plus gold answers), and keep
    what every one predicted for the gate."""
    project = run.project
    eval_version = _eval_version_pin(run)
    frozen = _evaluation_set(project, eval_version)
    if len(frozen.labels) == 0:
        raise RuntimeError("the frozen evaluation set is empty (no test rows, no gold answers)")
    candidate = run.model_version
    candidate_labels, candidate_confidence = _predict(candidate, frozen)
    champion = champion_get(project)
    champion_labels = None
    if champion is not None and champion.pk != candidate.pk:
        champion_labels = _predict(champion, frozen, allow_logged=True)[0]
    baseline = [_majority_label(run.dataset_version)] * len(frozen.labels)
    truth = frozen.labels.tolist()
    slices = frozen.slices
    evaluated = {
        "truth": truth, "candidate": candidate_labels, "champion": champion_labels, "baseline": baseline,
        "slices": slices, "prediction_ids": frozen.prediction_ids.tolist(),
    }
    _evaluation_store(run, evaluated)
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
    evaluated = _evaluation_load(run)
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
    if run.gate.get("passed"):
        promoted = model_promote(project=run.project, model_version=run.model_version, actor=None, run=run,
                                 reason=f"training run {run.number} passed the gate") is not None
    else:
        _alias_set(run.project, ModelAliasName.CHALLENGER, run.model_version)
    stage_finish(run_id=run.pk, token=token, next_stage=TrainingStage.DONE, promoted=promoted)
    return "done"


STAGES = {
    TrainingStage.DATASET: _stage_dataset,
    TrainingStage.TRAIN: _stage_train,
    TrainingStage.EVALUATE: _stage_evaluate,
    TrainingStage.GATE: _stage_gate,
    TrainingStage.PROMOTE: _stage_promote,
}


# --- Rows of a dataset version as arrays -------------------------------------------------------------


@dataclass
class Rows:
    numeric: np.ndarray
    categorical: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    prediction_ids: np.ndarray  # the predictions' row ids (primary keys)

    def training_data(self, *, numeric_ranges=None) -> TrainingData:
        return TrainingData(numeric=self.numeric, categorical=self.categorical, labels=self.labels,
                            weights=self.weights, numeric_ranges=numeric_ranges)


def _without(rows: Rows, prediction_ids: set[int]) -> Rows:
    if not prediction_ids:
        return rows
    keep = ~np.isin(rows.prediction_ids, list(prediction_ids))
    return Rows(numeric=rows.numeric[keep], categorical=rows.categorical[keep], labels=rows.labels[keep],
                weights=rows.weights[keep], prediction_ids=rows.prediction_ids[keep])


def _feature_names(project: Project) -> tuple[list[str], list[str]]:
    numeric = [f["name"] for f in project.features if f["type"] == "numeric"]
    categorical = [f["name"] for f in project.features if f["type"] == "categorical"]
    return numeric, categorical


def _numeric_ranges(project: Project) -> list[tuple[float, float] | None]:
    """The declared (min, max) of each numeric feature, in the order of the rows' columns."""
    return [(f["min"], f["max"]) if "min" in f else None for f in project.features if f["type"] == "numeric"]


def _rows(version: DatasetVersion, *, split: str | tuple[str, ...] | None) -> Rows:
    splits = (split,) if isinstance(split, str) else split
    tables = [table for s in (splits or (None,))
              for table in dataset_selectors.version_partitions(version=version, split=s)]
    table = pa.concat_tables(tables, promote_options="permissive") if tables else None
    return _rows_from_table(version.project, table)


def _rows_from_table(project: Project, table: pa.Table | None) -> Rows:
    numeric_names, categorical_names = _feature_names(project)
    n = 0 if table is None else table.num_rows

    def column(name, kind):
        column_name = shards.feature_column(name)
        if table is None or column_name not in table.column_names:
            return np.full(n, np.nan) if kind == "numeric" else np.full(n, None, dtype=object)
        values = table.column(column_name)
        if kind == "numeric":
            return values.to_numpy(zero_copy_only=False).astype(float)
        return np.array(values.to_pylist(), dtype=object)

    numeric = np.column_stack([column(c, "numeric") for c in numeric_names]) if numeric_names else np.empty((n, 0))
    categorical = (np.column_stack([column(c, "categorical") for c in categorical_names])
                   if categorical_names else np.empty((n, 0), dtype=object))
    if table is None:
        return Rows(numeric, categorical, np.array([], dtype=object), np.array([]), np.array([], dtype=np.int64))
    return Rows(numeric=numeric, categorical=categorical,
                labels=np.array(table.column("label").to_pylist(), dtype=object),
                weights=table.column("weight").to_numpy(zero_copy_only=False).astype(float),
                prediction_ids=table.column("row_id").to_numpy(zero_copy_only=False).astype(np.int64))


def _majority_label(version: DatasetVersion) -> str:
    """The most frequent label of the training data: what the trivial baseline always says."""
    by_label = version.counts.get("by_label", {})
    return max(sorted(by_label), key=by_label.get) if by_label else ""


@dataclass
class EvaluationSet:
    rows: Rows
    labels: np.ndarray
    prediction_ids: np.ndarray
    slices: dict[str, list[str]]
    gold: int


def _eval_version_pin(run: TrainingRun) -> DatasetVersion:
    """The version whose test split is the project's frozen evaluation set; the first run
    pins its own, so every later candidate is judged on the same rows."""
    project = Project.objects.get(pk=run.project_id)
    policy = RetrainingPolicy.from_dict(project.retraining)
    if policy.eval_dataset_version is not None:
        pinned = DatasetVersion.objects.filter(project=project, number=policy.eval_dataset_version,
                                               status=DatasetStatus.READY).first()
        if pinned is not None:
            return pinned
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        current = RetrainingPolicy.from_dict(locked.retraining).eval_dataset_version
        if current is None or current == policy.eval_dataset_version:
            locked.retraining = {**locked.retraining, "eval_dataset_version": run.dataset_version.number}
            Project.objects.filter(pk=locked.pk).update(retraining=locked.retraining)
            audit_record(actor=None, action="training.eval_set_pinned", project=locked,
                         target=f"dataset v{run.dataset_version.number}")
            return run.dataset_version
    return DatasetVersion.objects.get(project=project, number=current)


def _evaluation_set(project: Project, version: DatasetVersion) -> EvaluationSet:
    test = _rows(version, split="test")
    ids = test.prediction_ids
    gold = labeling_selectors.gold_answers(project_id=project.pk)
    in_test = set(ids.tolist())
    extra = {pid: label for pid, label in gold.items() if pid not in in_test}
    rows = test
    labels = test.labels
    if extra:
        gold_rows = _prediction_rows(project, list(extra))
        rows = Rows(numeric=np.vstack([test.numeric, gold_rows.numeric]),
                    categorical=np.vstack([test.categorical, gold_rows.categorical]),
                    labels=np.concatenate([test.labels, np.array([extra[p] for p in gold_rows.prediction_ids],
                                                                 dtype=object)]),
                    weights=np.concatenate([test.weights, np.ones(len(gold_rows.prediction_ids))]),
                    prediction_ids=np.concatenate([ids, gold_rows.prediction_ids]))
        labels = rows.labels
    metadata = dict(Prediction.objects.filter(pk__in=rows.prediction_ids.tolist()).values_list("id", "metadata"))
    slices = {key_: [str((metadata.get(int(pid)) or {}).get(key_)) for pid in rows.prediction_ids]
              for key_ in project.slices}
    return EvaluationSet(rows=rows, labels=labels, prediction_ids=rows.prediction_ids, slices=slices,
                         gold=len(extra))


def _prediction_rows(project: Project, prediction_ids: list[int]) -> Rows:
    """Features of stored predictions (gold answers outside the dataset) as arrays."""
    numeric_names, categorical_names = _feature_names(project)
    found = list(Prediction.objects.filter(project=project, pk__in=prediction_ids).values_list("id", "features"))
    n = len(found)
    numeric = np.array([[float(f.get(c)) if f.get(c) is not None else np.nan for c in numeric_names]
                        for _, f in found], dtype=float).reshape(n, len(numeric_names))
    categorical = np.array([[f.get(c) for c in categorical_names] for _, f in found],
                           dtype=object).reshape(n, len(categorical_names))
    return Rows(numeric=numeric, categorical=categorical, labels=np.array([], dtype=object), weights=np.ones(n),
                prediction_ids=np.array([pid for pid, _ in found], dtype=np.int64))


def _predict(model_version: ModelVersion, frozen: EvaluationSet, *, allow_logged: bool = False):
    """What a model says on the evaluation set: from its artifact, or, for a model logged by
    an app, what it said in production on the rows it served (None elsewhere)."""
    if model_version.artifact_sha256:
        model = model_load(model_version)
        labels, confidence = model.predict(frozen.rows.numeric, frozen.rows.categorical)
        return list(labels), [float(c) for c in confidence]
    if model_version.metrics.get("evaluation_predictions"):
        reported = model_version.metrics["evaluation_predictions"]
        return [reported.get(str(int(pid))) for pid in frozen.prediction_ids], None
    if not allow_logged:
        raise RuntimeError(f"model {model_version.name} has no artifact and reported no predictions")
    logged = dict(Prediction.objects.filter(pk__in=frozen.prediction_ids.tolist(), model_version=model_version)
                  .values_list("id", "label"))
    labels = [logged.get(int(pid)) for pid in frozen.prediction_ids]
    return (labels if any(label is not None for label in labels) else None), None


# --- Artifacts and evaluation records on storage -----------------------------------------------------


def _artifact_store(project: Project, artifact: Artifact) -> str:
    """Store the artifact under its hash, with the libraries it needs beside it. Storing the
    same bytes twice (a retried stage) writes nothing new."""
    storage = get_storage()
    artifact_key = key("models", project.slug, f"{artifact.sha256}.pkl")
    if not storage.exists(artifact_key):
        storage.put(artifact_key, artifact.content)
    sidecar_key = key("models", project.slug, f"{artifact.sha256}.json")
    if not storage.exists(sidecar_key):
        storage.put(sidecar_key, orjson.dumps({"sha256": artifact.sha256, "libraries": artifact.libraries,
                                                "format": "pickle"}))
    return storage.uri(artifact_key)


_loaded: dict[str, Model] = {}


def model_artifact_bytes(model_version: ModelVersion) -> bytes:
    """The stored artifact of a model trained here, checked against its recorded hash."""
    sha = model_version.artifact_sha256
    if not sha:
        raise DomainError("no_artifact", f"Model {model_version.name} was not trained here: it has no artifact.",
                          status_code=404)
    try:
        content = get_storage().get(key("models", model_version.project.slug, f"{sha}.pkl"))
    except ObjectMissing:
        raise DomainError("artifact_missing", f"The artifact of model {model_version.name} is missing from storage.",
                          status_code=502) from None
    if artifact_digest(content) != sha:
        raise DomainError("artifact_corrupt", f"The artifact of model {model_version.name} does not match its hash.",
                          status_code=502)
    return content


def artifact_digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def model_load(model_version: ModelVersion) -> Model:
    """A trained model from its artifact, verified against its recorded hash (kept in memory)."""
    sha = model_version.artifact_sha256
    if sha not in _loaded:
        _loaded[sha] = load_model(model_artifact_bytes(model_version), sha256=sha)
    return _loaded[sha]


def _evaluation_key(run: TrainingRun) -> str:
    return key("training", run.project.slug, f"run-{run.number}-evaluation.json")


def _evaluation_store(run: TrainingRun, evaluated: dict) -> None:
    get_storage().put(_evaluation_key(run), orjson.dumps(evaluated, option=orjson.OPT_SERIALIZE_NUMPY))


def _evaluation_load(run: TrainingRun) -> dict:
    return orjson.loads(get_storage().get(_evaluation_key(run)))


def _model_version_record(run: TrainingRun, *, artifact_uri: str, artifact: Artifact | None, trainer: str,
                          metrics: dict | None = None, name: str | None = None) -> ModelVersion:
    """The candidate in the registry; a retried stage finds the one it made before."""
    name = name or f"run-{run.number}"
    defaults = {
        "source": ModelSource.TRAINED, "artifact_uri": artifact_uri, "trainer": trainer,
        "artifact_sha256": artifact.sha256 if artifact else "", "libraries": artifact.libraries if artifact else {},
        "dataset_version": run.dataset_version, "metrics": metrics or {},
    }
    try:
        with transaction.atomic():
            version, created = ModelVersion.objects.get_or_create(project=run.project, name=name, defaults=defaults)
    except IntegrityError:
        version, created = ModelVersion.objects.get(project=run.project, name=name), False
    if not created:
        ModelVersion.objects.filter(pk=version.pk).update(**defaults)
        version.refresh_from_db()
    return version


# --- External trainers --------------------------------------------------------------------------------


def _external_request(run: TrainingRun, token: str, policy: RetrainingPolicy) -> str:
    """Hand the dataset version to an external trainer, which reports back through
    POST /api/v1/training-runs/{id}/complete/."""
    version = run.dataset_version
    eval_version = _eval_version_pin(run)
    body = orjson.dumps({
        "event": "training.requested", "run": run.pk, "project": run.project.slug,
        "dataset_version": version.number, "manifest_uri": version.manifest_uri,
        "manifest_sha256": version.manifest_sha256,
        "evaluation": {"dataset_version": eval_version.number, "manifest_uri": eval_version.manifest_uri,
                       "split": "test"},
        "complete": f"/api/v1/training-runs/{run.pk}/complete/",
    })
    result = webhooks.send(url=policy.external_url, body=body, secret=policy.external_secret,
                           event="training.requested", delivery_id=run.pk)
    if not result.succeeded:
        if result.retryable:
            raise StorageError(f"external trainer unreachable: {result.error}")  # transient: retried
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
        candidate = _model_version_record(run, artifact_uri=artifact_uri, artifact=None, trainer="external",
                                          metrics={**metrics, "evaluation_predictions": predictions or {}},
                                          name=model_version)
        run.model_version, run.stage, run.progress = candidate, TrainingStage.EVALUATE, 0.6
        run.save(update_fields=["model_version", "stage", "progress", "updated_at"])
        audit_record(actor=actor, action="training.complete", project=run.project, target=f"run {run.number}",
                     details={"model_version": model_version})
        _enqueue_stage(run.pk, TrainingStage.EVALUATE)
    return run


# --- The registry ---------------------------------------------------------------------------------


def champion_get(project: Project) -> ModelVersion | None:
    alias = ModelAlias.objects.filter(project=project, alias=ModelAliasName.CHAMPION).select_related(
        "model_version").first()
    return alias.model_version if alias else None


def _alias_set(project: Project, alias: str, model_version: ModelVersion) -> None:
    ModelAlias.objects.update_or_create(project=project, alias=alias, defaults={"model_version": model_version})


def model_promote(*, project: Project, model_version: ModelVersion, actor=None, run: TrainingRun | None = None,
                  reason: str = "") -> ModelPromotion | None:
    """Make a model the champion: the alias moves, the old version stays in the registry,
    the drift reference becomes the new champion's training data, and the change is logged
    with who or what did it. Promoting the champion again changes nothing."""
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).get()
        previous = champion_get(project)
        if previous is not None and previous.pk == model_version.pk:
            return None
        _alias_set(project, ModelAliasName.CHAMPION, model_version)
        promotion = ModelPromotion.objects.create(
            project=project, action=PromotionAction.PROMOTE, model_version=model_version, previous=previous,
            training_run=run, actor=actor if getattr(actor, "pk", None) else None,
            actor_name=getattr(actor, "username", None) or ("gate" if run else "system"), reason=reason,
        )
        audit_record(actor=actor, action="model.promote", project=project, target=model_version.name,
                     details={"previous": previous.name if previous else None, "run": run.number if run else None,
                              "reason": reason})
        _reference_follow(project, model_version, actor)
        demoted = _stale_tasks_demote(project, model_version)
    log.info("model.promoted", demoted_tasks=demoted, project=project.slug, model=model_version.name,
             previous=previous.name if previous else None)
    return promotion


def model_rollback(*, project: Project, actor=None, reason: str = "") -> ModelPromotion:
    """Put back the champion the current one replaced: one call."""
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).get()
        current = champion_get(project)
        # What the current champion replaced when it was promoted: rolling back twice walks
        # further back instead of toggling between two versions.
        last = ModelPromotion.objects.filter(project=project, model_version=current,
                                             action=PromotionAction.PROMOTE).first() if current else None
        if last is None or last.previous is None:
            raise Conflict("nothing_to_roll_back", "There is no earlier champion to roll back to.")
        _alias_set(project, ModelAliasName.CHAMPION, last.previous)
        promotion = ModelPromotion.objects.create(
            project=project, action=PromotionAction.ROLLBACK, model_version=last.previous, previous=current,
            actor=actor if getattr(actor, "pk", None) else None,
            actor_name=getattr(actor, "username", None) or "system", reason=reason,
        )
        audit_record(actor=actor, action="model.rollback", project=project, target=last.previous.name,
                     details={"from": current.name, "reason": reason})
        _reference_follow(project, last.previous, actor)
        demoted = _stale_tasks_demote(project, last.previous)
    log.info("model.rolled_back", demoted_tasks=demoted, project=project.slug, to=last.previous.name, frm=current.name)
    return promotion


def _stale_tasks_demote(project: Project, champion: ModelVersion) -> int:
    """The queue serves the new champion's uncertainty first (RoutingPolicy.demote_stale)."""
    if not routing.RoutingPolicy.from_dict(project.routing).demote_stale:
        return 0
    return labeling_services.tasks_demote_stale(project_id=project.pk, champion_id=champion.pk,
                                                demotion=routing.STALE_DEMOTION)


def _reference_follow(project: Project, model_version: ModelVersion, actor) -> None:
    """Drift is measured against the data the champion was trained on."""
    if model_version.dataset_version_id is None:
        return
    from flywheel.ingest.profiling import drift_reference_from_dataset_version

    drift_reference_from_dataset_version(project=project, dataset_version=model_version.dataset_version.number,
                                         actor=actor)


# --- Triggers and the watchdog ------------------------------------------------------------------------


def retraining_triggers_evaluate(*, now: datetime | None = None) -> list[int]:
    """Start (or join) a run for every project whose retraining policy says so: enough new
    labels, a drifted report, or the schedule. Returns the runs touched."""
    now = now or timezone.now()
    touched = []
    for project in Project.objects.exclude(retraining={}):
        policy = RetrainingPolicy.from_dict(project.retraining)
        last = TrainingRun.objects.filter(project=project).order_by("-created_at").first()
        since = last.created_at if last else None
        reasons = []
        new_labels = labeling_selectors.labels_resolved_since(project_id=project.pk, since=since)
        if policy.min_new_labels and new_labels >= policy.min_new_labels:
            reasons.append(("new_labels", {"new_labels": new_labels}))
        if policy.on_drift and monitoring_selectors.drifted_since(project=project, since=since):
            reasons.append(("drift", {}))
        interval = SCHEDULES.get(policy.schedule)
        if interval and (last is None or now - last.created_at >= interval) and new_labels:
            reasons.append(("schedule", {"schedule": policy.schedule}))
        if not reasons or (last is not None and last.status == TrainingStatus.QUEUED):
            continue
        try:
            trigger, details = reasons[0]
            run = training_run_request(project=project, trigger=trigger,
                                       details={**details, "also": [r for r, _ in reasons[1:]]})
        except DomainError as exc:
            log.warning("training.trigger_refused", project=project.slug, reason=exc.message)
            continue
        touched.append(run.pk)
    return touched


def training_watchdog(*, now: datetime | None = None, max_attempts: int = 6) -> list[int]:
    """Find running stages whose heartbeat stopped (their worker died) and queue them again;
    fail a run whose stages keep dying."""
    now = now or timezone.now()
    stale = TrainingRun.objects.filter(status=TrainingStatus.RUNNING, heartbeat_at__lt=now - _stale_after()) \
        .exclude(stage=TrainingStage.WAITING).exclude(token="")
    # A stage nobody claimed: its message was lost (the broker restarted empty, or was away
    # when the stage was queued). A live retry chain touches the run at least once per
    # backoff, so only a run quiet for longer than that is sent again.
    unclaimed = TrainingRun.objects.filter(
        status=TrainingStatus.RUNNING, token="",
        updated_at__lt=now - _stale_after() - timedelta(seconds=STAGE_BACKOFF_MAX_SECONDS),
    ).exclude(stage=TrainingStage.WAITING)
    requeued = []
    for run in unclaimed:
        with transaction.atomic():
            if TrainingRun.objects.filter(pk=run.pk, token="", stage=run.stage).update(updated_at=now):
                _enqueue_stage(run.pk, run.stage)
                requeued.append(run.pk)
                log.warning("training.stage_resent", run=run.pk, stage=run.stage)
    for run in stale:
        if run.attempts >= max_attempts:
            training_run_fail(run_id=run.pk, reason=f"{run.stage}: its worker died {run.attempts} times")
            continue
        with transaction.atomic():
            _enqueue_stage(run.pk, run.stage)
        requeued.append(run.pk)
        log.warning("training.stage_requeued", run=run.pk, stage=run.stage, attempts=run.attempts)
    return requeued

