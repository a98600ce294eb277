"""The model registry: versions, the champion and challenger aliases, promotion and rollback."""

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.services import audit_record
from common.errors import Conflict
from flywheel.ingest import routing
from flywheel.ingest.profiling import drift_reference_from_dataset_version
from flywheel.models import (
    ModelAlias,
    ModelAliasName,
    ModelPromotion,
    ModelSource,
    ModelVersion,
    Project,
    PromotionAction,
    ShadowModel,
    ShadowState,
    TrainingRun,
)
from flywheel.training.trainers import Artifact
from labeling import services as labeling_services

log = structlog.get_logger(__name__)


def model_version_record(run: TrainingRun, *, artifact_uri: str, artifact: Artifact | None, trainer: str,
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


def champion_get(project: Project) -> ModelVersion | None:
    alias = ModelAlias.objects.filter(project=project, alias=ModelAliasName.CHAMPION).select_related(
        "model_version").first()
    return alias.model_version if alias else None


def rollback_target(project: Project) -> tuple[ModelVersion | None, ModelVersion | None]:
    """The champion, and the version a rollback would put back: the one the champion
    replaced when it was promoted. Rolling back twice walks further back instead of
    toggling between two versions. The console shows it before ops confirm."""
    current = champion_get(project)
    last = ModelPromotion.objects.filter(project=project, model_version=current,
                                         action=PromotionAction.PROMOTE).select_related(
        "previous__dataset_version").first() if current else None
    return current, (last.previous if last is not None else None)


def alias_set(project: Project, alias: str, model_version: ModelVersion) -> None:
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
        alias_set(project, ModelAliasName.CHAMPION, model_version)
        # A model in shadow that becomes the champion, by the live gate or by hand, leaves
        # shadow: it now serves the predictions it would be compared on.
        ShadowModel.objects.filter(project=project, model_version=model_version, state=ShadowState.ACTIVE).update(
            state=ShadowState.PROMOTED, ended_at=timezone.now(), reason=reason or "promoted")
        ModelAlias.objects.filter(project=project, alias=ModelAliasName.CHALLENGER,
                                  model_version=model_version).delete()
        promotion = ModelPromotion.objects.create(
            project=project, action=PromotionAction.PROMOTE, model_version=model_version, previous=previous,
            training_run=run, actor=actor if getattr(actor, "pk", None) else None,
            actor_name=getattr(actor, "username", None) or ("gate" if run else "system"), reason=reason,
        )
        audit_record(actor=actor, action="model.promote", project=project, target=model_version.name,
                     details={"previous": previous.name if previous else None, "reason": reason,
                              "run_number": run.number if run else None, "run_id": run.pk if run else None})
        _reference_follow(project, model_version, actor)
        demoted = _stale_tasks_demote(project, model_version)
    log.info("model.promoted", demoted_tasks=demoted, project=project.slug, model=model_version.name,
             previous=previous.name if previous else None)
    return promotion


def model_rollback(*, project: Project, actor=None, reason: str = "") -> ModelPromotion:
    """Put back the champion the current one replaced: one call."""
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).get()
        current, target = rollback_target(project)
        if target is None:
            raise Conflict("nothing_to_roll_back", "There is no earlier champion to roll back to.")
        alias_set(project, ModelAliasName.CHAMPION, target)
        promotion = ModelPromotion.objects.create(
            project=project, action=PromotionAction.ROLLBACK, model_version=target, previous=current,
            actor=actor if getattr(actor, "pk", None) else None,
            actor_name=getattr(actor, "username", None) or "system", reason=reason,
        )
        audit_record(actor=actor, action="model.rollback", project=project, target=target.name,
                     details={"from": current.name, "reason": reason})
        _reference_follow(project, target, actor)
        demoted = _stale_tasks_demote(project, target)
    log.info("model.rolled_back", demoted_tasks=demoted, project=project.slug, to=target.name, frm=current.name)
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

    drift_reference_from_dataset_version(project=project, dataset_version=model_version.dataset_version.number,
                                         actor=actor)
