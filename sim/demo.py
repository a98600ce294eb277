"""The demo project: scikit-learn's bundled handwritten digits (real 8x8 images, 64
features). A first model is trained here on a small labeled slice, through the same
dataset version, training run and gate as any retraining; it becomes the champion and
serves some production traffic, which is routed, profiled and checked for drift, with a
little end-user feedback and a labeled audit sample, so /label/ and /ops/ have something
to show at once."""

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Role
from accounts.services import account_upsert, token_issue
from flywheel.ingest import profiling
from flywheel.ingest.services import feedback_ingest, predictions_ingest
from flywheel.ingest.validation import FeedbackInput, PredictionInput
from flywheel.models import Prediction, Project
from flywheel.projects import project_create, project_update
from flywheel.training import artifacts, registry, runs
from labeling import services as labeling_services
from monitoring import selectors as monitoring_selectors
from monitoring import services as monitoring_services
from sim.simulation import FEATURES, LABELS, digit_png

DEMO_SLUG = "digits"
DEMO_USERS = [("admin", Role.ADMIN), ("ops", Role.OPS), ("reviewer", Role.REVIEWER),
              ("annotator", Role.ANNOTATOR), ("app", Role.APP)]
TRAFFIC_HOURS = 6
ROUTING = {"uncertainty": "margin", "threshold": 0.75, "audit_rate": 0.05, "daily_budget": 1000,
           "annotations_per_task": 1}

__all__ = ["DemoResult", "demo_setup", "digit_png", "load_digits_split"]


def load_digits_split(seed: int = 0):
    """The 1,797 digits shuffled once: the demo's slices are taken from this order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    return digits.data[order], digits.target[order].astype(str)


@dataclass
class DemoResult:
    project: Project
    credentials: list[tuple[str, str, str, str]]  # username, role, password, token
    logged: int
    routed: int
    champion: str


def _credentials_file() -> Path:
    return Path(settings.BASE_DIR) / "var" / "demo-credentials.txt"


def _passwords() -> dict[str, str]:
    """Demo passwords are random, made once per checkout and kept in var/ (not in git)."""
    path = _credentials_file()
    known = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, password = line.partition(" ")
            known[name] = password
    for name, _ in DEMO_USERS:
        known.setdefault(name, secrets.token_urlsafe(9))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name} {password}\n" for name, password in known.items()))
    path.chmod(0o600)
    return known


def _items(x, ids, *, labels, confidence=None, probabilities=None, version, times=None, metadata=None):
    now = timezone.now()
    return [
        PredictionInput(
            external_id=ids[i], model_version=version, label=str(labels[i]),
            confidence=float(confidence[i]) if confidence is not None else 1.0,
            probabilities=probabilities[i] if probabilities is not None else None,
            features={name: float(v) for name, v in zip(FEATURES, x[i], strict=True)},
            input={"image": digit_png(x[i])}, metadata=metadata or {"source": "demo"},
            created_at=times[i] if times is not None else now,
        )
        for i in range(len(ids))
    ]


def demo_setup(*, initial: int = 150, gold: int = 120, traffic: int = 600, seed: int = 0) -> DemoResult:
    """Create (or top up) the demo project. Idempotent: a second run logs nothing twice
    and trains no second model."""
    x, y = load_digits_split(seed)
    with transaction.atomic():
        project = Project.objects.filter(slug=DEMO_SLUG).first() or project_create(
            slug=DEMO_SLUG, name="Handwritten digits", labels=LABELS,
            features=[{"name": name, "type": "numeric", "min": 0.0, "max": 16.0} for name in FEATURES],
            # The labeled slice the first model learns from is not routed; the demo's routing
            # takes over for production traffic (below).
            routing_policy={"uncertainty": "margin", "threshold": 1.0, "audit_rate": 0.0, "daily_budget": 0},
            labeling={"gold_rate": 0.05, "min_agreement": 0.6},
            retraining={"min_new_labels": 100, "on_drift": True, "schedule": "daily", "min_improvement": 0.0,
                        "require_significance": False, "primary_metric": "accuracy", "feature_scaling": "range"},
        )
        passwords = _passwords()
        credentials = []
        for name, role in DEMO_USERS:
            user, token = account_upsert(username=name, role=role, projects=[project], password=passwords[name])
            # A key is shown once: a demo run again gives its people fresh ones.
            token = token or token_issue(user=user).secret
            credentials.append((name, role, passwords[name], token))
    bot, _ = account_upsert(username="demo-labeler", role=Role.ANNOTATOR, projects=[project])

    champion = registry.champion_get(project)
    if champion is None:
        champion = _first_model(project, x, y, initial=initial, gold=gold, bot=bot)
        project = project_update(project=project, changes={"routing": ROUTING})
    model = artifacts.model_load(champion)

    start = initial + gold
    pixels = x[start:start + traffic]
    labels, confidence = model.predict(pixels, np.empty((len(pixels), 0), dtype=object))
    probabilities = model.predict_proba(pixels, np.empty((len(pixels), 0), dtype=object))
    probabilities = [{c: float(p) / float(row[row >= 1e-4].sum()) for c, p in zip(model.classes, row, strict=True)
                      if p >= 1e-4} for row in probabilities]
    confidence = [probabilities[i].get(labels[i], float(confidence[i])) for i in range(len(labels))]
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    times = [now - timedelta(hours=TRAFFIC_HOURS) + timedelta(hours=TRAFFIC_HOURS * i / len(pixels))
             for i in range(len(pixels))]
    ids = [f"demo-{start + i}" for i in range(len(pixels))]
    result = predictions_ingest(project=project, items=_items(pixels, ids, labels=labels, confidence=confidence,
                                                              probabilities=probabilities, version=champion.name,
                                                              times=times))
    routed = sum(1 for r in result.results if r["routed"] and not r["duplicate"])
    if result.created:
        _end_users_and_audit(project, ids, labels, y[start:start + traffic], bot)
        _drift_history(project, now)
    return DemoResult(project=project, credentials=credentials, logged=result.created, routed=routed,
                      champion=champion.name)


def _first_model(project, x, y, *, initial, gold, bot):
    """Label a small slice, mark gold answers, and train the first model through a
    training run: dataset version, train, evaluate, gate, promote."""
    ids = [f"seed-{i}" for i in range(initial)]
    predictions_ingest(project=project, items=_items(x[:initial], ids, labels=y[:initial], version="seed"))
    stored = dict(Prediction.objects.filter(project=project, external_id__in=ids).values_list("external_id", "id"))
    with transaction.atomic():
        for external_id, truth in zip(ids, y[:initial], strict=True):
            labeling_services.label_resolve(project_id=project.pk, prediction_id=stored[external_id],
                                            label=truth, source="annotation", user=bot)
    gold_ids = [f"gold-{initial + i}" for i in range(gold)]
    predictions_ingest(project=project, items=_items(x[initial:initial + gold], gold_ids,
                                                     labels=y[initial:initial + gold], version="seed"))
    for prediction in Prediction.objects.filter(project=project, external_id__in=gold_ids):
        labeling_services.gold_answer_set(project=project, prediction=prediction,
                                          label=y[int(prediction.external_id.split("-")[1])])
    # Outside a transaction the run's tasks, queued on commit, run here and now (eagerly, the
    # embedded default) or on a worker.
    run = runs.training_run_request(project=project, trigger="manual", details={"note": "the demo"})
    run.refresh_from_db()
    if run.status != "succeeded" or not run.promoted:
        raise RuntimeError(f"The demo's first model did not train: {run.error or run.gate}")
    return registry.champion_get(project)


def _end_users_and_audit(project, ids, predicted, truth, bot) -> None:
    """A few end users correct some of the model's mistakes, and the audit sample gets
    labeled, so feedback rates and production accuracy have figures from the start."""
    rng = np.random.default_rng(1)
    corrections = [FeedbackInput(external_id=f"fb-{ids[i]}", prediction_id=ids[i], kind="correct",
                                 label=str(truth[i]), user=f"user-{i % 40}", created_at=None)
                   for i in range(len(ids)) if predicted[i] != truth[i] and rng.random() < 0.4]
    confirms = [FeedbackInput(external_id=f"ok-{ids[i]}", prediction_id=ids[i], kind="confirm", label="",
                              user=f"user-{i % 40}", created_at=None)
                for i in range(len(ids)) if predicted[i] == truth[i] and rng.random() < 0.1]
    if corrections or confirms:
        feedback_ingest(project=project, items=corrections + confirms, batch=True)
    answers = dict(zip(ids, truth, strict=True))
    while (task := labeling_services.task_claim(project=project, user=bot)) is not None:
        if task.reason == "gold":
            label = task.prediction.gold_answer.label
        elif task.reason == "audit":
            label = answers[task.prediction.external_id]
        else:  # the audit sample is done: the rest is for people
            labeling_services.task_release(task_id=task.pk, user=bot)
            break
        labeling_services.annotation_submit(task_id=task.pk, user=bot, label=label, lead_time_s=3.0)


def _drift_history(project, now) -> None:
    """Profile the traffic and check each of its hours, as the hourly beat would have."""
    profiling.profiles_update(project_id=project.pk, force_grids=True)
    if monitoring_selectors.reports_list(project=project, limit=1):
        return
    for hour in range(TRAFFIC_HOURS, 0, -1):
        end = now - timedelta(hours=hour - 1)
        monitoring_services.drift_check_run(project=project, start=end - timedelta(hours=1), end=end, sync=False)
