"""Flywheel's own models in shadow: putting a trained model beside the champion, scoring
every new prediction with it exactly once (off the ingestion path, catching up after an
outage), and the live gate that promotes or retires it."""

from datetime import datetime, timedelta

import numpy as np
import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef
from django.utils import timezone

from accounts.services import audit_record
from common.enqueue import enqueue_on_commit
from common.errors import Conflict, DomainError
from common.jobs import TRANSIENT_ERRORS
from flywheel.ingest.shadow import shadow_scores_store
from flywheel.models import (
    ModelAlias,
    ModelAliasName,
    ModelVersion,
    Prediction,
    Project,
    ShadowModel,
    ShadowPrediction,
    ShadowState,
    TrainingRun,
)
from flywheel.training import selectors
from flywheel.training.artifacts import model_load
from flywheel.training.registry import alias_set, champion_get, model_promote
from flywheel.training.rows import prediction_rows

log = structlog.get_logger(__name__)

SCORE_TASK = "flywheel.shadow.score"
# Predictions are inserted with ids taken from a sequence, and a transaction that took a
# lower id may commit after one that took a higher id. The scored floor only passes
# predictions received this long ago, by which time every ingestion transaction has ended.
SETTLE = timedelta(minutes=5)


def shadow_start(*, project: Project, model_version: ModelVersion, actor=None, run: TrainingRun | None = None,
                 reason: str = "", now: datetime | None = None) -> ShadowModel:
    """Put a model trained here in shadow (alias challenger): from now on every new
    prediction is scored with it too. Starting an active shadow again changes nothing."""
    now = now or timezone.now()
    if not model_version.artifact_sha256:
        raise DomainError("no_artifact", f"Model {model_version.name} was not trained here: Flywheel cannot score "
                                         "with it. An app that runs it logs its answers as shadow predictions.",
                          status_code=409)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).get()
        champion = champion_get(project)
        if champion is not None and champion.pk == model_version.pk:
            raise Conflict("is_champion", f"'{model_version.name}' is the champion; a model is no shadow of itself.")
        shadow = ShadowModel.objects.filter(project=project, model_version=model_version).first()
        if shadow is not None and shadow.state == ShadowState.ACTIVE:
            return shadow
        floor = Prediction.objects.filter(project=project).aggregate(last=Max("id"))["last"] or 0
        fields = dict(state=ShadowState.ACTIVE, training_run=run, scored_floor=floor, started_at=now,
                      started_by=_actor_name(actor, run), ended_at=None, reason=reason, verdict="", reasons=[],
                      evaluated_at=None)
        shadow, _ = ShadowModel.objects.update_or_create(project=project, model_version=model_version,
                                                         defaults=fields)
        alias_set(project, ModelAliasName.CHALLENGER, model_version)
        audit_record(actor=actor, action="model.shadow_start", project=project, target=model_version.name,
                     details={"reason": reason, "run_number": run.number if run else None})
        enqueue_on_commit(SCORE_TASK)
    log.info("shadow.started", project=project.slug, model=model_version.name)
    return shadow


def shadow_stop(*, project: Project, model_version: ModelVersion, actor=None, reason: str = "",
                state: str = ShadowState.STOPPED, now: datetime | None = None) -> ShadowModel:
    """Take a model out of shadow: it is scored no more, and stops being the challenger.
    Its shadow predictions stay, and so does the comparison."""
    with transaction.atomic():
        shadow = ShadowModel.objects.select_for_update().filter(project=project, model_version=model_version).first()
        if shadow is None or shadow.state != ShadowState.ACTIVE:
            raise Conflict("not_in_shadow", f"'{model_version.name}' is not in shadow.")
        shadow.state, shadow.ended_at, shadow.reason = state, now or timezone.now(), reason
        shadow.save(update_fields=["state", "ended_at", "reason", "updated_at"])
        ModelAlias.objects.filter(project=project, alias=ModelAliasName.CHALLENGER,
                                  model_version=model_version).delete()
        audit_record(actor=actor, action="model.shadow_stop", project=project, target=model_version.name,
                     details={"reason": reason, "state": state})
    log.info("shadow.stopped", project=project.slug, model=model_version.name, state=state)
    return shadow


def _actor_name(actor, run) -> str:
    return getattr(actor, "username", None) or ("gate" if run else "system")


# --- Scoring -------------------------------------------------------------------------------------


def shadows_score(*, time_budget: float | None = None) -> int:
    """Score every active shadow's new predictions; returns how many were scored. Safe to
    run twice at once: each shadow is held by one run (its row lock) while it scores."""
    scored = 0
    for shadow_id in ShadowModel.objects.filter(state=ShadowState.ACTIVE).order_by("id").values_list("id", flat=True):
        try:
            scored += shadow_score(shadow_id=shadow_id, time_budget=time_budget)
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - one shadow that cannot score must not stop the others
            # Its batch rolled back: those predictions stay unscored and are tried again.
            log.exception("shadow.score_failed", shadow_id=shadow_id)
    return scored


def shadow_score(*, shadow_id: int, time_budget: float | None = None, now: datetime | None = None) -> int:
    """Score the predictions a shadow has not scored yet, oldest first, in batches of
    FLYWHEEL_SHADOW_BATCH, until none is left or the time budget is spent. Each batch is
    stored in one transaction with the shadow's row locked, and only predictions without
    its answer are taken, so each prediction is scored exactly once; whatever arrived while
    no worker ran is caught up on the next run."""
    started = timezone.now()
    total = 0
    while True:
        done, scored = _score_batch(shadow_id=shadow_id, now=now)
        total += scored
        if done or (time_budget is not None and (timezone.now() - started).total_seconds() > time_budget):
            return total


def _score_batch(*, shadow_id: int, now: datetime | None) -> tuple[bool, int]:
    now = now or timezone.now()
    with transaction.atomic():
        shadow = (ShadowModel.objects.select_for_update(skip_locked=True, of=("self",))
                  .select_related("project", "model_version")
                  .filter(pk=shadow_id, state=ShadowState.ACTIVE).first())
        if shadow is None:
            return True, 0  # stopped, or another run holds it
        project, version = shadow.project, shadow.model_version
        answered = ShadowPrediction.objects.filter(prediction_id=OuterRef("pk"), model_version=version)
        served = list(Prediction.objects.select_for_update(of=("self",))
                      .filter(project=project, id__gt=shadow.scored_floor).exclude(Exists(answered))
                      .exclude(model_version=version)
                      .order_by("id").only("id", "external_id", "label", "model_version_id")
                      [:settings.FLYWHEEL_SHADOW_BATCH])
        scored = 0
        if served:
            model = model_load(version)
            rows = prediction_rows(project, [p.pk for p in served])
            order = {pid: i for i, pid in enumerate(rows.prediction_ids.tolist())}
            probabilities = model.predict_proba(rows.numeric, rows.categorical)
            top = np.argmax(probabilities, axis=1)
            picked = [order[p.pk] for p in served]
            scored = shadow_scores_store(
                project=project, model_version_id=version.pk, served=served,
                labels=[model.classes[top[i]] for i in picked],
                confidences=[float(probabilities[i, top[i]]) for i in picked],
                probabilities=[{c: float(p) for c, p in zip(model.classes, probabilities[i], strict=True) if p > 0}
                               for i in picked],
                now=now)
        done = len(served) < settings.FLYWHEEL_SHADOW_BATCH
        if done:
            # Caught up: whatever was received before the settle time is scored for good.
            settled = (Prediction.objects.filter(project=project, id__gt=shadow.scored_floor,
                                                 received_at__lt=now - SETTLE).aggregate(last=Max("id"))["last"])
            if settled:
                ShadowModel.objects.filter(pk=shadow.pk).update(scored_floor=settled)
    if scored:
        log.info("shadow.scored", project=project.slug, model=version.name, scored=scored)
    return done, scored


# --- The live gate -------------------------------------------------------------------------------


def live_gates_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """The live gate's look at every active shadow: {verdict: count}."""
    counts: dict[str, int] = {}
    for shadow_id in ShadowModel.objects.filter(state=ShadowState.ACTIVE).order_by("id").values_list("id", flat=True):
        verdict = live_gate_evaluate(shadow_id=shadow_id, now=now)
        if verdict:
            counts[verdict] = counts.get(verdict, 0) + 1
    return counts


def live_gate_evaluate(*, shadow_id: int, now: datetime | None = None) -> str | None:
    """Judge a shadow on live traffic and store the verdict with its reasons. When the
    project's live gate is enabled, a better challenger is promoted and a significantly
    worse one is taken out of shadow, each logged like the offline gate's decisions."""
    now = now or timezone.now()
    with transaction.atomic():
        shadow = (ShadowModel.objects.select_for_update(skip_locked=True, of=("self",))
                  .select_related("project", "model_version", "training_run")
                  .filter(pk=shadow_id, state=ShadowState.ACTIVE).first())
        if shadow is None:
            return None
        project, version, run = shadow.project, shadow.model_version, shadow.training_run
        comparison = selectors.shadow_comparison(project=project, name=version.name)
        verdict, reasons = comparison["verdict"], comparison["reasons"]
        ShadowModel.objects.filter(pk=shadow.pk).update(verdict=verdict, reasons=reasons, evaluated_at=now)
        enabled = selectors.live_gate_policy(project).enabled
        decision = {"verdict": verdict, "reasons": reasons, "difference": comparison["difference"],
                    "labeled": comparison["labeled"], "decided_at": now.isoformat()}
        if enabled and verdict == "better":
            # Promotion takes it out of shadow (registry.model_promote).
            model_promote(project=project, model_version=version, actor=None, run=run,
                          reason="the live gate: " + "; ".join(reasons))
            _run_record(run, decision, promoted=True)
        elif enabled and verdict == "worse":
            shadow_stop(project=project, model_version=version, actor=None, state=ShadowState.RETIRED,
                        reason="the live gate: " + "; ".join(reasons), now=now)
            _run_record(run, decision, promoted=False)
        if enabled and verdict in ("better", "worse"):
            audit_record(actor=None, action="model.live_gate", project=project, target=version.name,
                         details={**decision, "run_number": run.number if run else None})
    log.info("shadow.judged", project=project.slug, model=version.name, verdict=verdict, enabled=enabled)
    return verdict


def _run_record(run: TrainingRun | None, decision: dict, *, promoted: bool) -> None:
    """The live gate's decision joins the offline gate's on the run that trained the model."""
    if run is None:
        return
    run.refresh_from_db(fields=["gate", "promoted"])
    TrainingRun.objects.filter(pk=run.pk).update(gate={**run.gate, "live": decision}, promoted=promoted)
