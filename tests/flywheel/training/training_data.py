"""A project of real data for the retraining tests: scikit-learn's handwritten digits (64
pixel features), logged as predictions and labeled with their true digits."""

import numpy as np
from sklearn.datasets import load_digits

from flywheel.ingest.services import predictions_ingest
from flywheel.ingest.validation import PredictionInput
from flywheel.models import Prediction, Project
from flywheel.projects import project_create
from labeling.models import Label

FEATURES = [f"px{i}" for i in range(64)]


def digits_project(*, slug: str = "digits", retraining: dict | None = None, slices: list[str] | None = None) -> Project:
    return project_create(
        slug=slug, name="Digits", labels=[str(i) for i in range(10)],
        features=[{"name": name, "type": "numeric"} for name in FEATURES],
        routing_policy={"threshold": 1.0, "audit_rate": 0.0, "daily_budget": 0},
        retraining={"min_new_labels": 0, "on_drift": False, "schedule": "none", "require_significance": False,
                    **(retraining or {})},
        labeling={"gold_rate": 0.0}, slices=slices or [],
    )


def digits(start: int, count: int):
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))[start:start + count]
    return data.data[order], data.target[order].astype(str), order


def log_and_label(project: Project, *, start: int, count: int, wrong_share: float = 0.0, seed: int = 1,
                  region: bool = False) -> list[int]:
    """Log `count` digits as predictions of model v1 (right 70% of the time) and resolve
    each with its true label, except a `wrong_share` of them given a wrong one."""
    rng = np.random.default_rng(seed)
    x, y, order = digits(start, count)
    items = []
    for pixels, truth, index in zip(x, y, order, strict=True):
        said = truth if rng.random() < 0.7 else str((int(truth) + 3) % 10)
        items.append(PredictionInput(
            external_id=f"d-{index}", model_version="v1", label=said, confidence=0.9, probabilities=None,
            features={name: float(v) for name, v in zip(FEATURES, pixels, strict=True)}, input={},
            metadata={"region": "eu" if index % 2 else "us"} if region else {}, created_at=None,
        ))
    predictions_ingest(project=project, items=items)
    ids = dict(Prediction.objects.filter(project=project, external_id__in=[i.external_id for i in items])
               .values_list("external_id", "id"))
    wrong = rng.random(count) < wrong_share
    Label.objects.filter(prediction_id__in=ids.values(), is_current=True).update(is_current=False)
    Label.objects.bulk_create([
        Label(project=project, prediction_id=ids[item.external_id], source="annotation",
              label=str((int(truth) + 1) % 10) if bad else truth)
        for item, truth, bad in zip(items, y, wrong, strict=True)
    ])
    return list(ids.values())
