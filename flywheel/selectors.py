"""Reads of a project as a whole: the flywheel at a glance, from each wing's selectors."""

from flywheel.ingest.selectors import feedback_rates
from flywheel.models import Project
from flywheel.retention.selectors import retention_stats
from flywheel.training.selectors import estimated_accuracy_series, production_accuracy
from labeling import group_selectors
from labeling import selectors as labeling_selectors


def project_stats(*, project: Project, accuracy_by: str | None = None) -> dict:
    """The flywheel at a glance (docs/api.md: stats/), from each app's selectors; with
    each model version's label-free accuracy per hour or day when `accuracy_by` asks."""
    stats = {
        "queue": labeling_selectors.queue_depth(project_id=project.pk),
        "labels_per_day": labeling_selectors.labels_per_day(project_id=project.pk),
        "annotators": labeling_selectors.annotator_stats(project_id=project.pk),
        "agreement": labeling_selectors.project_agreement(project_id=project.pk, labels=project.labels),
        "feedback": feedback_rates(project=project),
        "accuracy": production_accuracy(project=project),
        "group_labels": group_selectors.group_label_accuracy(project_id=project.pk),
        "retention": retention_stats(project=project),
    }
    if accuracy_by is not None:
        stats["accuracy_series"] = estimated_accuracy_series(project=project, by=accuracy_by)
    return stats
