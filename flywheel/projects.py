"""Projects: creating one and changing it (its labels, features, slices and policies)."""

import structlog
from django.db import transaction

from accounts.services import audit_record, membership_add
from common.errors import DomainError
from flywheel.ingest import routing
from flywheel.ingest.feedback import FeedbackPolicy
from flywheel.models import Project
from flywheel.retention.policy import RetentionPolicy
from labeling.policy import LabelingPolicy
from monitoring.policy import drift_policy_merge

log = structlog.get_logger(__name__)


@transaction.atomic
def project_create(*, slug: str, name: str, labels: list[str], features: list[dict] | None = None,
                   routing_policy: dict | None = None, retraining: dict | None = None,
                   drift: dict | None = None, feedback: dict | None = None, slices: list[str] | None = None,
                   labeling: dict | None = None, retention: dict | None = None, actor=None) -> Project:
    if Project.objects.filter(slug=slug).exists():
        raise DomainError("project_exists", f"A project with slug '{slug}' already exists.", status_code=409,
                          fields={"slug": ["A project with this slug already exists."]})
    project = Project.objects.create(
        slug=slug, name=name, labels=labels, features=features or [],
        routing=routing.RoutingPolicy.from_dict(routing_policy).as_dict(),
        retraining=retraining or {}, drift=drift_policy_merge(current=None, changes=drift),
        feedback=FeedbackPolicy.from_dict(feedback).as_dict(), slices=slices or [],
        labeling=LabelingPolicy.from_dict(labeling).as_dict(),
        retention=RetentionPolicy.from_dict(retention).as_dict(),
    )
    if actor is not None and getattr(actor, "pk", None):
        membership_add(user=actor, project=project)
    audit_record(actor=actor, action="project.create", project=project, target=slug)
    log.info("project.created", project=slug, labels=len(labels))
    return project


@transaction.atomic
def project_update(*, project: Project, changes: dict, actor=None) -> Project:
    """Apply a PATCH. Labels and features can only grow: removing one would orphan the
    predictions and labels that use it."""
    project = Project.objects.select_for_update().get(pk=project.pk)
    if "labels" in changes:
        removed = [label for label in project.labels if label not in changes["labels"]]
        if removed:
            raise DomainError("labels_removed", f"Labels cannot be removed (missing: {', '.join(removed)}).",
                              fields={"labels": [f"Labels cannot be removed: {', '.join(removed)}."]})
        project.labels = changes["labels"]
    if "features" in changes:
        current = {f["name"]: f["type"] for f in project.features}
        proposed = {f["name"]: f["type"] for f in changes["features"]}
        lost = [name for name in current if name not in proposed]
        retyped = [name for name in current if name in proposed and proposed[name] != current[name]]
        if lost or retyped:
            raise DomainError("features_changed", "Features can be added, not removed or retyped.",
                              fields={"features": [f"Cannot remove or retype: {', '.join(lost + retyped)}."]})
        project.features = changes["features"]
    if "routing" in changes:
        merged = {**project.routing, **changes["routing"]}
        project.routing = routing.RoutingPolicy.from_dict(merged).as_dict()
    if "labeling" in changes:
        merged = {**project.labeling, **changes["labeling"]}
        if "grouping" in changes["labeling"]:
            # One level deeper too: {"grouping": {"enabled": true}} keeps the sizes set before.
            merged["grouping"] = {**project.labeling.get("grouping", {}), **changes["labeling"]["grouping"]}
        project.labeling = LabelingPolicy.from_dict(merged).as_dict()
    if "feedback" in changes:
        project.feedback = FeedbackPolicy.from_dict({**project.feedback, **changes["feedback"]}).as_dict()
    if "retention" in changes:
        project.retention = RetentionPolicy.from_dict({**project.retention, **changes["retention"]}).as_dict()
    if "drift" in changes:
        project.drift = drift_policy_merge(current=project.drift, changes=changes["drift"])
    for key in ("name", "retraining", "slices"):
        if key in changes:
            value = changes[key]
            if isinstance(value, dict):
                current = getattr(project, key)
                if isinstance(value.get("live_gate"), dict):  # a nested policy merges too
                    value = {**value, "live_gate": {**current.get("live_gate", {}), **value["live_gate"]}}
                value = {**current, **value}
            setattr(project, key, value)
    project.save()
    audit_record(actor=actor, action="project.update", project=project, target=project.slug,
                 details={"fields": sorted(changes)})
    return project
