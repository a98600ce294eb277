"""Models and traffic for the shadow-mode tests: the digits project's predictions logged by
an app's champion (v1), and candidates trained here on some of the digits."""

import numpy as np

from flywheel.ingest.services import predictions_ingest
from flywheel.ingest.validation import PredictionInput
from flywheel.models import ModelAliasName, ModelSource, ModelVersion, Prediction, Project
from flywheel.training.artifacts import artifact_store
from flywheel.training.registry import alias_set
from flywheel.training.trainers import SklearnTrainer, TrainingData
from labeling.models import Label
from tests.flywheel.training.training_data import FEATURES, digits


def log(project: Project, *, start: int, count: int, right_share: float = 0.7, seed: int = 1) -> dict[str, str]:
    """Log digits start..start+count as predictions of v1, right `right_share` of the time;
    returns {external id: true label}. v1 becomes the champion."""
    rng = np.random.default_rng(seed + start)
    x, y, order = digits(start, count)
    items, truth = [], {}
    for pixels, label, index in zip(x, y, order, strict=True):
        said = label if rng.random() < right_share else str((int(label) + 3) % 10)
        items.append(PredictionInput(
            external_id=f"d-{index}", model_version="v1", label=said, confidence=0.9, probabilities=None,
            features={name: float(v) for name, v in zip(FEATURES, pixels, strict=True)}, input={}, metadata={},
            created_at=None))
        truth[f"d-{index}"] = label
    predictions_ingest(project=project, items=items)
    alias_set(project, ModelAliasName.CHAMPION, ModelVersion.objects.get(project=project, name="v1"))
    return truth


def trained(project: Project, name: str, *, start: int, count: int) -> ModelVersion:
    """A candidate trained here on digits start..start+count (more rows, a better model)."""
    x, y, _ = digits(start, count)
    data = TrainingData(numeric=x, categorical=np.empty((len(y), 0), dtype=object), labels=y.astype(object),
                        weights=np.ones(len(y)))
    _model, artifact = SklearnTrainer().train(data)
    return ModelVersion.objects.create(project=project, name=name, source=ModelSource.TRAINED,
                                       artifact_uri=artifact_store(project, artifact), trainer="sklearn",
                                       artifact_sha256=artifact.sha256, libraries=artifact.libraries)


def label_routed(project: Project, truth: dict[str, str], *, reason: str = "disagreement") -> int:
    """People label every open task of `reason` with the true digit; returns how many."""
    from labeling.models import Task

    tasks = list(Task.objects.filter(project=project, reason=reason, status="open").values_list(
        "id", "prediction_id", "prediction__external_id"))
    Label.objects.bulk_create([Label(project=project, prediction_id=pid, label=truth[external], source="annotation")
                               for _, pid, external in tasks if external in truth])
    Task.objects.filter(pk__in=[t for t, _, _ in tasks]).update(status="done")
    return len(tasks)


def predictions_of(project: Project, truth: dict[str, str]) -> list[int]:
    return list(Prediction.objects.filter(project=project, external_id__in=list(truth)).values_list("id", flat=True))
