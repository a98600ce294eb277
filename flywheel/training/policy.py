"""The retraining policy a project sets, and the trainer plug-in it names."""

from dataclasses import dataclass

from django.conf import settings
from django.utils.module_loading import import_string

from common.errors import DomainError
from common.policy import Policy


@dataclass(frozen=True)
class RetrainingPolicy(Policy):
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



def trainer_for(name: str, *, policy: RetrainingPolicy | None = None):
    paths = settings.FLYWHEEL_TRAINERS
    if name not in paths:
        raise DomainError("unknown_trainer", f"No trainer '{name}'; configured: {', '.join(sorted(paths))}.")
    trainer = import_string(paths[name])()
    # A policy option reaches a trainer that declares it (the built-in one: feature_scaling).
    if policy is not None and hasattr(trainer, "feature_scaling"):
        trainer.feature_scaling = policy.feature_scaling
    return trainer
