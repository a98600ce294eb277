"""Retraining triggers: enough new labels, a drifted report, or the schedule start a run."""

from datetime import datetime, timedelta

import structlog
from django.utils import timezone

from common.errors import DomainError
from flywheel.models import Project, TrainingRun, TrainingStatus
from flywheel.training.policy import RetrainingPolicy
from flywheel.training.runs import training_run_request
from labeling import selectors as labeling_selectors
from monitoring import selectors as monitoring_selectors

log = structlog.get_logger(__name__)


SCHEDULES = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}


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
