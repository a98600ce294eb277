"""Reads on the annotation queue, resolved labels, annotators and their agreement."""

import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, F, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import Role
from accounts.selectors import user_role
from common.csvrows import csv_chunks
from common.errors import NotFound
from labeling import agreement
from labeling.models import (
    ACTIVE_TASK_STATUSES,
    Annotation,
    GoldAnswer,
    Label,
    Review,
    RuledOutLabel,
    Task,
    TaskReason,
    TaskStatus,
)

QUEUE_STATUSES = (TaskStatus.OPEN, TaskStatus.LEASED)


def routing_tasks_for_predictions(prediction_ids: Iterable[int], *, reasons: Iterable[str]) -> dict[int, Task]:
    """The task each prediction was routed to at ingestion (the first with one of `reasons`)."""
    found: dict[int, Task] = {}
    for task in Task.objects.filter(prediction_id__in=list(prediction_ids), reason__in=list(reasons)).order_by("id"):
        found.setdefault(task.prediction_id, task)
    return found


def tasks_for_prediction(prediction_id: int) -> list[Task]:
    return list(Task.objects.filter(prediction_id=prediction_id).exclude(reason=TaskReason.GOLD).order_by("id"))


def current_label(prediction_id: int) -> Label | None:
    return Label.objects.filter(prediction_id=prediction_id, is_current=True).first()


def task_visible_to(*, task_id: int, user) -> bool:
    """Whether the task exists in a project the user may see (admins see every project)."""
    tasks = Task.objects.filter(pk=task_id)
    if user_role(user) != Role.ADMIN:
        tasks = tasks.filter(project__memberships__user=user)
    return tasks.exists()


def task_get(task_id: int) -> Task:
    task = Task.objects.select_related("project", "prediction__model_version").filter(pk=task_id).first()
    if task is None:
        raise NotFound("task_not_found", f"No task {task_id}.")
    return task


def task_list(*, project_id: int, status: str | None = None, reason: str | None = None):
    """Queue tasks of a project, most important first, with what a list shows of each;
    the number of queries does not grow with the page."""
    tasks = (Task.objects.filter(project_id=project_id).exclude(reason=TaskReason.GOLD)
             .select_related("prediction__model_version")
             .annotate(annotation_count=Count("annotations", filter=Q(annotations__round=F("round"))))
             .order_by("-priority", "id"))
    if status:
        tasks = tasks.filter(status=status)
    if reason:
        tasks = tasks.filter(reason=reason)
    return tasks


def tasks_for_review(*, project_id: int, limit: int = 50) -> list[Task]:
    """Tasks waiting for a reviewer, oldest first, each with its current round's annotations."""
    tasks = list(Task.objects.filter(project_id=project_id, status=TaskStatus.REVIEW)
                 .select_related("prediction__model_version").order_by("updated_at", "id")[:limit])
    by_task = defaultdict(list)
    for annotation in (Annotation.objects.filter(task__in=tasks).select_related("user")
                       .order_by("created_at")):
        by_task[annotation.task_id].append(annotation)
    for task in tasks:
        task.round_annotations = [a for a in by_task[task.pk] if a.round == task.round]
    return tasks


def queue_depth(*, project_id: int) -> dict:
    """Tasks waiting for a person, by reason, plus those waiting for a reviewer."""
    rows = (Task.objects.filter(project_id=project_id, status__in=QUEUE_STATUSES).exclude(reason=TaskReason.GOLD)
            .values("reason").annotate(n=Count("id")))
    by_reason = {row["reason"]: row["n"] for row in rows}
    return {
        "total": sum(by_reason.values()),
        "by_reason": by_reason,
        "review": Task.objects.filter(project_id=project_id, status=TaskStatus.REVIEW).count(),
    }


def labels_per_day(*, project_id: int, days: int = 30, now: datetime | None = None) -> list[dict]:
    """Labels resolved per day (current ones), by source, for the last `days` days."""
    since = (now or timezone.now()) - timedelta(days=days)
    rows = (Label.objects.filter(project_id=project_id, created_at__gte=since)
            .annotate(day=TruncDate("created_at")).values("day", "source").annotate(n=Count("id")).order_by("day"))
    out: dict = {}
    for row in rows:
        entry = out.setdefault(row["day"].isoformat(), {"day": row["day"].isoformat(), "total": 0, "by_source": {}})
        entry["by_source"][row["source"]] = row["n"]
        entry["total"] += row["n"]
    return list(out.values())


def annotator_summary(*, project_id: int, user, now: datetime | None = None) -> dict:
    """What the annotator's counter shows: done today, queue depth, accuracy on gold."""
    now = now or timezone.now()
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    done_today = Annotation.objects.filter(task__project_id=project_id, user=user, created_at__gte=start_of_day).count()
    gold = _gold_results(project_id=project_id).get(user.pk, (0, 0))
    return {
        "done_today": done_today,
        "queue_depth": queue_depth(project_id=project_id)["total"],
        "gold": {"answered": gold[0], "correct": gold[1], "accuracy": gold[1] / gold[0] if gold[0] else None},
    }


def _gold_results(*, project_id: int) -> dict[int, tuple[int, int]]:
    """{annotator id: (gold tasks answered, answered correctly)}."""
    answers = dict(GoldAnswer.objects.filter(project_id=project_id).values_list("prediction_id", "label"))
    results: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for user_id, prediction_id, label in Annotation.objects.filter(
        task__project_id=project_id, task__reason=TaskReason.GOLD
    ).values_list("user_id", "task__prediction_id", "label"):
        results[user_id][0] += 1
        results[user_id][1] += int(answers.get(prediction_id) == label)
    return {user_id: (answered, correct) for user_id, (answered, correct) in results.items()}


def annotator_stats(*, project_id: int) -> list[dict]:
    """Per annotator: tasks done, median lead time, gold accuracy, agreement with peers
    (mean Cohen's kappa with each annotator they overlapped with) and how often they
    accepted the model's suggestion."""
    rows = list(Annotation.objects.filter(task__project_id=project_id)
                .values_list("user_id", "user__username", "task__reason", "lead_time_s", "accepted_suggestion"))
    gold = _gold_results(project_id=project_id)
    kappas = agreement.pairwise_kappa(_overlap_labels(project_id=project_id))
    per_user_kappa: dict = defaultdict(list)
    for (a, b), result in kappas.items():
        if result["kappa"] is not None:
            per_user_kappa[a].append(result["kappa"])
            per_user_kappa[b].append(result["kappa"])
    users: dict = {}
    for user_id, username, reason, lead_time, accepted in rows:
        entry = users.setdefault(user_id, {"annotator": username, "done": 0, "lead_times": [], "accepted": 0})
        if reason == TaskReason.GOLD:
            continue
        entry["done"] += 1
        entry["accepted"] += int(accepted)
        if lead_time is not None:
            entry["lead_times"].append(lead_time)
    out = []
    for user_id, entry in sorted(users.items(), key=lambda item: item[1]["annotator"]):
        answered, correct = gold.get(user_id, (0, 0))
        peers = per_user_kappa.get(user_id, [])
        out.append({
            "annotator": entry["annotator"],
            "tasks_done": entry["done"],
            "median_lead_time_s": statistics.median(entry["lead_times"]) if entry["lead_times"] else None,
            "gold_answered": answered,
            "gold_accuracy": correct / answered if answered else None,
            "peer_kappa": sum(peers) / len(peers) if peers else None,
            "suggestion_accepted_rate": entry["accepted"] / entry["done"] if entry["done"] else None,
        })
    return out


def _overlap_labels(*, project_id: int) -> dict[int, dict[tuple, str]]:
    """{annotator: {(task, round): label}} over the rounds that have several annotators."""
    by_annotator: dict = defaultdict(dict)
    for user_id, task_id, round_, label in Annotation.objects.filter(
        task__project_id=project_id, task__annotations_required__gt=1
    ).exclude(task__reason=TaskReason.GOLD).values_list("user_id", "task_id", "round", "label"):
        by_annotator[user_id][(task_id, round_)] = label
    return by_annotator


def project_agreement(*, project_id: int, labels: list[str]) -> dict:
    """Krippendorff's alpha over every multiply-annotated round, overall and per label,
    and Cohen's kappa for each pair of annotators that overlapped."""
    units: dict = defaultdict(list)
    for task_id, round_, label in Annotation.objects.filter(task__project_id=project_id).exclude(
        task__reason=TaskReason.GOLD
    ).values_list("task_id", "round", "label"):
        units[(task_id, round_)].append(label)
    pairable = [values for values in units.values() if len(values) > 1]
    names = dict(Annotation.objects.filter(task__project_id=project_id).values_list("user_id", "user__username")
                 .distinct())
    pairs = agreement.pairwise_kappa(_overlap_labels(project_id=project_id))
    return {
        "units": len(pairable),
        "alpha": agreement.krippendorff_alpha(pairable),
        "alpha_per_label": agreement.alpha_per_label(pairable, labels),
        "pairs": [{"annotators": [names.get(a), names.get(b)], "kappa": r["kappa"], "items": r["items"]}
                  for (a, b), r in pairs.items()],
    }


def reviews_for_task(task_id: int) -> list[Review]:
    return list(Review.objects.filter(task_id=task_id).order_by("created_at"))


def current_labels(prediction_ids: Iterable[int]) -> dict[int, Label]:
    return {label.prediction_id: label
            for label in Label.objects.filter(prediction_id__in=list(prediction_ids), is_current=True)}


def ruled_out_labels(prediction_ids: Iterable[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for prediction_id, label in RuledOutLabel.objects.filter(prediction_id__in=list(prediction_ids)).values_list(
            "prediction_id", "label"):
        out[prediction_id].add(label)
    return out


def predictions_in_queue(prediction_ids: Iterable[int]) -> set[int]:
    """Those of the predictions that have a task waiting or in progress."""
    return set(Task.objects.filter(prediction_id__in=list(prediction_ids), status__in=ACTIVE_TASK_STATUSES)
               .exclude(reason=TaskReason.GOLD).values_list("prediction_id", flat=True))


def active_tasks_for_predictions(prediction_ids: Iterable[int]) -> dict[int, Task]:
    """The task each of the predictions has waiting or in progress, if any."""
    return {task.prediction_id: task for task in Task.objects.filter(
        prediction_id__in=list(prediction_ids), status__in=ACTIVE_TASK_STATUSES).exclude(reason=TaskReason.GOLD)}


def labeled_predictions(prediction_ids: Iterable[int], *, sources: Iterable[str]) -> set[int]:
    """Those of the predictions whose current resolved label came from one of `sources`."""
    return set(Label.objects.filter(prediction_id__in=list(prediction_ids), is_current=True,
                                    source__in=list(sources)).values_list("prediction_id", flat=True))


def audit_labels(*, project_id: int, human_sources: Iterable[str]) -> list[tuple[int, str]]:
    """(prediction id, resolved label) of the project's audit sample, labeled by people."""
    return list(Label.objects.filter(project_id=project_id, is_current=True, prediction__audit=True,
                                     source__in=list(human_sources)).values_list("prediction_id", "label"))


def current_labels_csv(*, project_id: int, chunk_bytes: int = 4 << 20) -> Iterator[bytes]:
    """Every current resolved label of a project as CSV rows (prediction_id, label, source,
    weight) in prediction-id order, in chunks of about `chunk_bytes` that end at a row
    boundary. For bulk readers: dataset builds read a million labels this way in about a
    second, with PostgreSQL's COPY (other databases go through the ORM, same bytes).
    Consume it to the end before using the database connection again: the COPY holds it."""
    if connection.vendor == "postgresql":
        return _current_labels_copy(project_id, chunk_bytes)
    return _current_labels_orm(project_id, chunk_bytes)


def _current_labels_orm(project_id: int, chunk_bytes: int) -> Iterator[bytes]:
    rows = (Label.objects.filter(project_id=project_id, is_current=True).order_by("prediction_id")
            .values_list("prediction_id", "label", "source", "weight").iterator(chunk_size=10_000))
    yield from csv_chunks(rows, chunk_bytes=chunk_bytes)


def _current_labels_copy(project_id: int, chunk_bytes: int) -> Iterator[bytes]:
    query = (f"COPY (SELECT prediction_id, label, source, weight FROM {Label._meta.db_table} "
             f"WHERE project_id = {int(project_id)} AND is_current ORDER BY prediction_id) TO STDOUT WITH (FORMAT csv)")
    buffer = bytearray()
    with connection.cursor() as cursor, cursor.copy(query) as copy:
        for row in copy:
            buffer += row
            if len(buffer) >= chunk_bytes:
                yield buffer
                buffer = bytearray()
    if buffer:
        yield buffer


# --- Figures for the ops dashboard -------------------------------------------------------------------

PANEL_QUEUE_STATUSES = ("open", "leased", "review")


def queue_depth_by_reason(*, project_id: int) -> dict[str, dict[str, int]]:
    """Tasks waiting for a person, {reason: {status: count}}, for statuses open/leased/review."""
    from django.db.models import Count

    depth: dict[str, dict[str, int]] = {}
    rows = (Task.objects.filter(project_id=project_id, status__in=PANEL_QUEUE_STATUSES)
            .values_list("reason", "status").annotate(n=Count("id")).order_by())
    for reason, status, n in rows:
        depth.setdefault(reason, {})[status] = n
    return depth


def labels_per_day_series(*, project_id: int, days: int = 30) -> list[tuple[str, int]]:
    """Resolved labels (current ones) by the UTC day they were resolved, oldest first,
    every day of the span present."""
    from datetime import timedelta

    from django.db.models import Count
    from django.db.models.functions import TruncDate
    from django.utils import timezone

    today = timezone.now().date()
    first = today - timedelta(days=days - 1)
    counts = dict(
        Label.objects.filter(project_id=project_id, is_current=True, created_at__date__gte=first)
        .annotate(day=TruncDate("created_at")).values_list("day").annotate(n=Count("id")).order_by()
    )
    return [((first + timedelta(days=i)).isoformat(), counts.get(first + timedelta(days=i), 0)) for i in range(days)]


def gold_answers(*, project_id: int) -> dict[int, str]:
    """{prediction id: the known right label} of the project's gold answers."""
    return dict(GoldAnswer.objects.filter(project_id=project_id).values_list("prediction_id", "label"))


def labels_resolved_since(*, project_id: int, since: datetime | None) -> int:
    """Current labels resolved after `since` (all of them when None)."""
    labels = Label.objects.filter(project_id=project_id, is_current=True)
    if since is not None:
        labels = labels.filter(created_at__gt=since)
    return labels.count()


def queue_age_by_reason(*, project_id: int, now: datetime | None = None) -> list[dict]:
    """Per reason, the tasks waiting for a person (open or leased, gold aside) and how long
    the oldest has waited, in seconds: a queue that grows old is a queue nobody works."""
    from django.db.models import Count, Min

    now = now or timezone.now()
    rows = (Task.objects.filter(project_id=project_id, status__in=QUEUE_STATUSES).exclude(reason=TaskReason.GOLD)
            .values("reason").annotate(n=Count("id"), oldest=Min("created_at")).order_by("reason"))
    return [{"reason": row["reason"], "label": TaskReason(row["reason"]).label, "waiting": row["n"],
             "oldest_age_s": (now - row["oldest"]).total_seconds()} for row in rows]
