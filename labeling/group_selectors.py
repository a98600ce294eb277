"""Reads for group labeling: groups and their members, the vectors tasks are compared by,
the tasks most similar to one, and how accurate group labels are."""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from django.db.models import Count, Prefetch
from scipy.stats import binomtest

from accounts.models import Role
from accounts.selectors import user_role
from common.errors import NotFound
from labeling import grouping
from labeling.models import UNGROUPABLE_REASONS, Annotation, Group, GroupStatus, Task, TaskReason, TaskStatus

FEATURES = "features"


def representation_of(embedding, features_schema) -> str:
    """What a task is compared by: its embedding (tasks whose embeddings have the same length
    are comparable), else its features."""
    if embedding is not None:
        return f"embedding:{len(bytes(embedding)) // 4}"
    return FEATURES


def vectors_for(rows: list[dict], representation: str, schema: list[dict]) -> np.ndarray:
    """The vectors of rows sharing one representation (rows: `embedding`, `features`)."""
    if representation == FEATURES:
        return grouping.feature_matrix([row["features"] or {} for row in rows], schema)
    return grouping.embedding_matrix([row["embedding"] for row in rows])


def groupable_tasks(*, project_id: int, limit: int):
    """Open tasks nobody holds and no group has, most important first, that may be grouped."""
    return (Task.objects.filter(project_id=project_id, status=TaskStatus.OPEN, group__isnull=True,
                                grouping_excluded=False)
            .exclude(reason__in=UNGROUPABLE_REASONS).exclude(leases__isnull=False)
            .order_by("-priority", "id"))[:limit]


def group_visible_to(*, group_id: int, user) -> bool:
    groups = Group.objects.filter(pk=group_id)
    if user_role(user) != Role.ADMIN:
        groups = groups.filter(project__memberships__user=user)
    return groups.exists()


def group_list(*, project_id: int, status: str | None = None):
    """A project's groups, most valuable first, with their size; the query count does not
    grow with the page."""
    groups = (Group.objects.filter(project_id=project_id).select_related("leased_by", "labeled_by")
              .annotate(size=Count("members")).order_by("-priority", "id"))
    return groups.filter(status=status) if status else groups


def group_with_members(group_id: int) -> Group:
    """A group with its members (least typical first) and what an annotator needs of each,
    in a fixed number of queries."""
    members = (Task.objects.select_related("prediction__model_version")
               .prefetch_related("prediction__ruled_out_labels").order_by("-group_distance", "id"))
    group = (Group.objects.select_related("project").prefetch_related(Prefetch("members", queryset=members))
             .filter(pk=group_id).first())
    if group is None:
        raise NotFound("group_not_found", f"No group {group_id}.")
    return group


@dataclass(frozen=True)
class SimilarTask:
    task: Task
    distance: float


def tasks_similar(*, task: Task, k: int, limit: int = 20_000) -> list[SimilarTask]:
    """The open tasks of the project most similar to `task` by the same representation
    (the embedding when it has one, else the features), nearest first."""
    schema = task.project.features or []
    representation = representation_of(task.prediction.embedding, schema)
    rows = list(Task.objects.filter(project_id=task.project_id, status=TaskStatus.OPEN)
                .exclude(reason=TaskReason.GOLD).exclude(pk=task.pk)
                .order_by("-priority", "id")
                .values("id", "prediction__embedding", "prediction__features")[:limit])
    rows = [{"id": r["id"], "embedding": r["prediction__embedding"], "features": r["prediction__features"]}
            for r in rows]
    rows = [r for r in rows if representation_of(r["embedding"], schema) == representation]
    if not rows:
        return []
    query = {"embedding": task.prediction.embedding, "features": task.prediction.features}
    vectors = vectors_for(rows + [query], representation, schema)
    found = grouping.nearest(vectors[:-1], vectors[-1], k)
    tasks = Task.objects.select_related("prediction__model_version").in_bulk([rows[i]["id"] for i, _ in found])
    return [SimilarTask(task=tasks[rows[i]["id"]], distance=d) for i, d in found]


def group_label_accuracy(*, project_id: int) -> dict:
    """Group labels against the individual checks of the same predictions: accuracy with a
    95% Wilson interval, overall and per group labeler, and items labeled per minute by
    group and by single task (from lead times)."""
    checks = (Annotation.objects.filter(task__project_id=project_id, task__reason=TaskReason.GROUP_CHECK)
              .values_list("task__prediction_id", "label"))
    checked = dict(checks)
    grouped = (Annotation.objects.filter(group__isnull=False, task__project_id=project_id,
                                         task__prediction_id__in=list(checked))
               .values_list("task__prediction_id", "label", "user__username"))
    overall = [0, 0]
    per_annotator: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for prediction_id, label, username in grouped:
        right = int(label == checked[prediction_id])
        for tally in (overall, per_annotator[username]):
            tally[0] += right
            tally[1] += 1
    groups = Group.objects.filter(project_id=project_id, status=GroupStatus.DONE, lead_time_s__gt=0)
    group_seconds = sum(groups.values_list("lead_time_s", flat=True))
    group_items = sum(groups.values_list("labeled_count", flat=True))
    singles = Annotation.objects.filter(task__project_id=project_id, group__isnull=True, lead_time_s__gt=0)
    single_seconds = sum(singles.values_list("lead_time_s", flat=True))
    single_items = singles.count()
    return {
        "accuracy": _accuracy(*overall),
        "by_annotator": [{"annotator": name, **_accuracy(*tally)} for name, tally in sorted(per_annotator.items())],
        "items_per_minute": {
            "group": round(group_items / (group_seconds / 60), 2) if group_seconds else None,
            "single": round(single_items / (single_seconds / 60), 2) if single_seconds else None,
        },
    }


def _accuracy(correct: int, n: int) -> dict:
    if n == 0:
        return {"accuracy": None, "low": None, "high": None, "correct": 0, "n": 0}
    interval = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"accuracy": correct / n, "low": interval.low, "high": interval.high, "correct": correct, "n": n}
