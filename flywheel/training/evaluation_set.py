"""The frozen evaluation set every candidate is judged on: the test split of a pinned dataset
version plus the gold answers, and what a model predicts on it."""

from dataclasses import dataclass

import numpy as np
from django.db import transaction

from accounts.services import audit_record
from flywheel.models import DatasetStatus, DatasetVersion, ModelVersion, Prediction, Project, TrainingRun
from flywheel.training.artifacts import model_load
from flywheel.training.policy import RetrainingPolicy
from flywheel.training.rows import Rows, prediction_rows, version_rows
from labeling import selectors as labeling_selectors


def majority_label(version: DatasetVersion) -> str:
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


def eval_version_pin(run: TrainingRun) -> DatasetVersion:
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


def frozen_evaluation_set(project: Project, version: DatasetVersion) -> EvaluationSet:
    test = version_rows(version, split="test")
    ids = test.prediction_ids
    gold = labeling_selectors.gold_answers(project_id=project.pk)
    in_test = set(ids.tolist())
    extra = {pid: label for pid, label in gold.items() if pid not in in_test}
    rows = test
    labels = test.labels
    if extra:
        gold_rows = prediction_rows(project, list(extra))
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


def predict(model_version: ModelVersion, frozen: EvaluationSet, *, allow_logged: bool = False):
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
