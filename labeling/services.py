"""Writes on the annotation queue: creating tasks, claiming them under a lease, annotating,
skipping, reviewing, gold answers, and resolving the label a prediction ends up with."""

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.services import audit_record
from common.errors import Conflict, DomainError, NotFound
from labeling.models import (
    ACTIVE_TASK_STATUSES,
    Annotation,
    GoldAnswer,
    Label,
    LabelSource,
    Lease,
    Review,
    RuledOutLabel,
    Skip,
    Task,
    TaskReason,
    TaskStatus,
    Verdict,
)
from labeling.policy import LABEL_WEIGHTS, LabelingPolicy

log = structlog.get_logger(__name__)


def _lease_ends(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.FLYWHEEL_LEASE_SECONDS)


# --- Creating tasks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskSpec:
    prediction_id: int
    reason: str
    priority: float


def tasks_create(*, project_id: int, specs: Sequence[TaskSpec], annotations_required: int) -> list[int]:
    """Put predictions in the queue, in bulk; returns the task ids in the order of `specs`.
    Runs inside the caller's transaction, so tasks exist exactly when their predictions do."""
    if not specs:
        return []
    tasks = Task.objects.bulk_create(
        Task(project_id=project_id, prediction_id=spec.prediction_id, reason=spec.reason,
             priority=spec.priority, annotations_required=annotations_required)
        for spec in specs
    )
    return [task.pk for task in tasks]


def tasks_demote_stale(*, project_id: int, champion_id: int, demotion: float) -> int:
    """Lower by `demotion` the priority of open uncertainty-routed tasks whose prediction
    another model than the champion made; returns how many. One UPDATE, in the caller's
    transaction. Tasks someone holds or reviews, audit and feedback tasks keep their place."""
    return (Task.objects.filter(project_id=project_id, status=TaskStatus.OPEN, reason=TaskReason.LOW_CONFIDENCE)
            .exclude(prediction__model_version_id=champion_id)
            .update(priority=F("priority") - demotion))


def tasks_cancel_resolved(*, prediction_ids: Sequence[int]) -> int:
    """Cancel the open uncertainty-routed tasks of these predictions, whose labels are now
    resolved without a person; returns how many. Tasks someone holds, has annotated or
    reviews, and audit and feedback tasks, are left alone."""
    if not prediction_ids:
        return 0
    return (Task.objects.filter(prediction_id__in=list(prediction_ids), status=TaskStatus.OPEN,
                                reason=TaskReason.LOW_CONFIDENCE)
            .exclude(leases__isnull=False).exclude(annotations__isnull=False)
            .update(status=TaskStatus.CANCELED, updated_at=timezone.now()))


# --- Claiming ---------------------------------------------------------------------------------


def task_claim(*, project, user, now: datetime | None = None) -> Task | None:
    """Give the annotator the most important open task (or, at the project's gold rate, a
    gold task they have not seen) under a fresh lease; None when there is nothing to do.
    Two annotators never hold the same task unless it asks for overlap, and one annotator
    never gets the same task twice in a round."""
    now = now or timezone.now()
    policy = LabelingPolicy.from_dict(project.labeling)
    if policy.gold_rate > 0 and random.random() < policy.gold_rate:
        task = _gold_claim(project=project, user=user, now=now)
        if task is not None:
            return task
    return _queue_claim(project=project, user=user, now=now)


_CLAIM_FILTER = """
    t.project_id = %(project)s AND t.status = 'open'
    AND NOT EXISTS (SELECT 1 FROM labeling_lease l WHERE l.task_id = t.id AND l.user_id = %(user)s)
    AND NOT EXISTS (SELECT 1 FROM labeling_annotation a
                    WHERE a.task_id = t.id AND a.user_id = %(user)s AND a.round = t.round)
    AND NOT EXISTS (SELECT 1 FROM labeling_skip s WHERE s.task_id = t.id AND s.user_id = %(user)s)
    AND (t.not_for_id IS NULL OR t.not_for_id <> %(user)s)
"""

# PostgreSQL: SKIP LOCKED lets concurrent claimers pass over the rows others are claiming
# instead of queueing behind them. The statement picks the task, inserts the lease, marks
# a task that needs one annotation leased (one round trip fewer on the common path) and
# returns what the claim needs to finish.
_CLAIM_POSTGRES = f"""
WITH candidate AS (
    SELECT t.id, t.annotations_required FROM labeling_task t WHERE {_CLAIM_FILTER}
    ORDER BY t.priority DESC, t.id LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
), lease AS (
    INSERT INTO labeling_lease (task_id, user_id, expires_at, created_at)
    SELECT id, %(user)s, %(expires)s, %(now)s FROM candidate
), single AS (
    UPDATE labeling_task SET status = 'leased', updated_at = %(now)s
    WHERE id = (SELECT id FROM candidate WHERE annotations_required = 1)
)
SELECT id, annotations_required FROM candidate
"""

# Elsewhere (SQLite): one conditional UPDATE picks and takes the task (leased, as above,
# when it needs one annotation). It is the first statement of the transaction, so it holds
# the database's write lock before it reads.
_CLAIM_PORTABLE = f"""
UPDATE labeling_task SET updated_at = %(now)s,
    status = CASE WHEN annotations_required = 1 THEN 'leased' ELSE status END
WHERE id = (SELECT t.id FROM labeling_task t WHERE {_CLAIM_FILTER} ORDER BY t.priority DESC, t.id LIMIT 1)
RETURNING id, annotations_required
"""

# Leased when every slot is taken. Run in the claim's transaction while it holds the task's
# row lock, as a statement of its own so that it sees every committed lease.
_CAPACITY_SQL = """
UPDATE labeling_task SET status = CASE
    WHEN (SELECT count(*) FROM labeling_lease l WHERE l.task_id = labeling_task.id)
       + (SELECT count(*) FROM labeling_annotation a
          WHERE a.task_id = labeling_task.id AND a.round = labeling_task.round) >= annotations_required
    THEN 'leased' ELSE 'open' END,
    updated_at = %(now)s
WHERE id = %(task)s AND status IN ('open', 'leased')
"""


def _queue_claim(*, project, user, now) -> Task | None:
    params = {"project": project.pk, "user": user.pk, "now": now, "expires": _lease_ends(now)}
    postgres = connection.vendor == "postgresql"
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            # Prepared on each pooled connection once: planning the statement cost PostgreSQL
            # about as much as running it.
            with psycopg.Cursor(connection.connection) as prepared:
                row = prepared.execute(_CLAIM_POSTGRES, params, prepare=True).fetchone()
        else:
            cursor.execute(_CLAIM_PORTABLE, params)
            row = cursor.fetchone()
        if row is None:
            return None
        task_id, required = row
        if not postgres:
            Lease.objects.create(task_id=task_id, user=user, expires_at=params["expires"])
        if required > 1:
            cursor.execute(_CAPACITY_SQL, {"task": task_id, "now": now})
    task = Task.objects.select_related("prediction__model_version").get(pk=task_id)
    task.lease = Lease(task=task, user=user, expires_at=params["expires"])
    return task


def _gold_claim(*, project, user, now) -> Task | None:
    """A gold task for this annotator, made on demand from a gold answer they have not
    been served yet."""
    unseen = GoldAnswer.objects.filter(project=project).exclude(
        prediction__tasks__reason=TaskReason.GOLD, prediction__tasks__gold_for=user
    )
    count = unseen.count()
    if count == 0:
        return None
    gold = unseen.order_by("id")[random.randrange(count)]
    try:
        with transaction.atomic():
            task = Task.objects.create(
                project=project, prediction_id=gold.prediction_id, reason=TaskReason.GOLD, priority=0.0,
                annotations_required=1, status=TaskStatus.LEASED, gold_for=user,
            )
            Lease.objects.create(task=task, user=user, expires_at=_lease_ends(now))
    except IntegrityError:
        return None  # the same annotator claimed this gold answer a moment ago
    return _with_lease(Task.objects.select_related("prediction__model_version").get(pk=task.pk), user)


def _with_lease(task: Task, user) -> Task:
    task.lease = Lease.objects.get(task=task, user=user)
    return task


# --- Working a task ---------------------------------------------------------------------------


def _locked_task(task_id: int) -> Task:
    task = Task.objects.select_for_update().select_related("project", "prediction").filter(pk=task_id).first()
    if task is None:
        raise NotFound("task_not_found", f"No task {task_id}.")
    return task


def _live_lease(task: Task, user, now: datetime) -> Lease:
    lease = Lease.objects.filter(task=task, user=user).first()
    if lease is None or lease.expires_at <= now:
        raise Conflict("lease_lost", "You no longer hold this task: its lease expired or was released.")
    return lease


@transaction.atomic
def lease_renew(*, task_id: int, user, now: datetime | None = None) -> Lease:
    now = now or timezone.now()
    task = _locked_task(task_id)
    lease = _live_lease(task, user, now)
    lease.expires_at = _lease_ends(now)
    lease.save(update_fields=["expires_at"])
    return lease


@dataclass
class AnnotationOutcome:
    annotation: Annotation
    task: Task
    label: Label | None


@transaction.atomic
def annotation_submit(*, task_id: int, user, label: str, lead_time_s: float | None = None,
                      now: datetime | None = None) -> AnnotationOutcome:
    """Record the lease holder's label; when the task has all the annotations it needs,
    resolve its label (or send it to review)."""
    now = now or timezone.now()
    task = _locked_task(task_id)
    if task.status == TaskStatus.CANCELED:
        # Taken off the queue while held (its label was settled meanwhile, e.g. by end-user
        # feedback racing an overlap claim): the same answer as a lost lease, to move on.
        raise Conflict("lease_lost", "This task was taken off the queue: its label was settled meanwhile.")
    if label not in task.project.labels:
        raise DomainError("invalid", f"'{label}' is not in the project's label set.",
                          fields={"label": ["Not in the project's label set."]})
    if RuledOutLabel.objects.filter(prediction_id=task.prediction_id, label=label).exists():
        raise DomainError("invalid", f"'{label}' was ruled out for this prediction by end-user feedback.",
                          fields={"label": ["Ruled out by end-user feedback."]})
    # Only a live lease counts; taking it and checking it is one statement.
    if not Lease.objects.filter(task=task, user=user, expires_at__gt=now).delete()[0]:
        raise Conflict("lease_lost", "You no longer hold this task: its lease expired or was released.")
    annotation = Annotation.objects.create(
        task=task, user=user, label=label, round=task.round, lead_time_s=lead_time_s,
        accepted_suggestion=label == task.prediction.label,
    )
    resolved = None
    if task.reason == TaskReason.GOLD:
        task.status = TaskStatus.DONE
    else:
        labels = [label] if task.annotations_required == 1 else list(
            Annotation.objects.filter(task=task, round=task.round).values_list("label", flat=True))
        if len(labels) >= task.annotations_required:
            resolved = _resolve_round(task, labels, annotator=user)
    task.save(update_fields=["status", "updated_at"])
    if task.status in (TaskStatus.OPEN, TaskStatus.LEASED):
        _refresh_capacity(task, now)  # others may still hold the remaining slots
    return AnnotationOutcome(annotation=annotation, task=task, label=resolved)


def _resolve_round(task: Task, labels: list[str], *, annotator) -> Label | None:
    """One annotation resolves the label; with overlap the majority does, unless it ties
    or falls short of the project's min_agreement, which sends the task to review."""
    if task.annotations_required == 1:
        task.status = TaskStatus.DONE
        return label_resolve(project_id=task.project_id, prediction_id=task.prediction_id, label=labels[0],
                             source=LabelSource.ANNOTATION, task=task, user=annotator)
    (top, top_count), *rest = Counter(labels).most_common() + [(None, 0)]
    runner_up = rest[0][1]
    policy = LabelingPolicy.from_dict(task.project.labeling)
    if top_count > runner_up and top_count / len(labels) >= policy.min_agreement:
        task.status = TaskStatus.DONE
        return label_resolve(project_id=task.project_id, prediction_id=task.prediction_id, label=top,
                             source=LabelSource.CONSENSUS, task=task)
    task.status = TaskStatus.REVIEW
    log.info("labeling.sent_to_review", task=task.pk, labels=dict(Counter(labels)))
    return None


@transaction.atomic
def task_skip(*, task_id: int, user, now: datetime | None = None) -> Task:
    """Pass on a task: it goes back to the others and is not served to this annotator again."""
    now = now or timezone.now()
    task = _locked_task(task_id)
    _live_lease(task, user, now).delete()
    Skip.objects.get_or_create(task=task, user=user)
    _reopen_slot(task)
    return task


@transaction.atomic
def task_release(*, task_id: int, user, now: datetime | None = None) -> Task:
    """Hand a held task back without judging it (the annotator left the page)."""
    now = now or timezone.now()
    task = _locked_task(task_id)
    Lease.objects.filter(task=task, user=user).delete()
    if task.reason == TaskReason.GOLD and task.status == TaskStatus.LEASED:
        task.delete()  # made for this annotator only; the gold answer can be served again
        return task
    _reopen_slot(task)
    return task


def _reopen_slot(task: Task) -> None:
    if task.status == TaskStatus.LEASED:
        task.status = TaskStatus.OPEN
        task.save(update_fields=["status", "updated_at"])


@transaction.atomic
def annotation_undo(*, task_id: int, user, now: datetime | None = None) -> Task:
    """Take back one's last annotation while the task is still one's own: nobody has
    annotated or reviewed it since, and not longer ago than a lease lasts. The task is
    leased back to the annotator to label again."""
    now = now or timezone.now()
    task = _locked_task(task_id)
    annotation = Annotation.objects.filter(task=task, user=user, round=task.round).order_by("-id").first()
    if annotation is None:
        raise Conflict("nothing_to_undo", "You have no annotation on this task to undo.")
    if now - annotation.created_at > timedelta(seconds=settings.FLYWHEEL_LEASE_SECONDS):
        raise Conflict("undo_too_late", "This annotation is too old to undo.")
    if (Annotation.objects.filter(task=task, round=task.round, id__gt=annotation.id).exists()
            or Review.objects.filter(task=task, created_at__gte=annotation.created_at).exists()):
        raise Conflict("no_longer_yours", "Someone has worked on this task since your annotation.")
    if task.status in (TaskStatus.REVIEW, TaskStatus.CANCELED):
        raise Conflict("no_longer_yours", "This task has moved on to review.")
    current = Label.objects.filter(task=task, is_current=True).first()
    if current is not None:
        if current.source != LabelSource.ANNOTATION or current.resolved_by_id != user.pk:
            raise Conflict("no_longer_yours", "This task's label was resolved from several annotations.")
        # Undone as if never made: the label goes, the one it had replaced is current again.
        current.delete()
        restored = None
        if current.previous_id:
            Label.objects.filter(pk=current.previous_id).update(is_current=True)
            restored = Label.objects.filter(pk=current.previous_id).values_list("label", flat=True).first()
        audit_record(actor=user, action="label.undo", project_id=task.project_id, target=str(task.prediction_id),
                     details={"task": task.pk, "from": current.label, "to": restored})
    annotation.delete()
    Lease.objects.update_or_create(task=task, user=user, defaults={"expires_at": _lease_ends(now)})
    task.status = TaskStatus.LEASED if task.reason == TaskReason.GOLD else TaskStatus.OPEN
    task.save(update_fields=["status", "updated_at"])
    _refresh_capacity(task, now)
    return _with_lease(task, user)


def _refresh_capacity(task: Task, now: datetime) -> None:
    if task.reason == TaskReason.GOLD:
        return
    with connection.cursor() as cursor:
        cursor.execute(_CAPACITY_SQL, {"task": task.pk, "now": now})
    task.refresh_from_db(fields=["status"])


@transaction.atomic
def task_review(*, task_id: int, reviewer, verdict: str, label: str | None = None, reason: str = "") -> Task:
    """A reviewer settles a task. Accept resolves its label (the one given, else the
    annotators' majority); reject puts it back in the queue for a new round of annotations
    and withdraws any label it had resolved. `reason` is kept with the review and in the
    audit log: a rejected round is traced back to why."""
    task = _locked_task(task_id)
    if task.reason == TaskReason.GOLD:
        raise Conflict("not_reviewable", "Gold tasks measure annotators; they are not reviewed.")
    if task.status not in (TaskStatus.REVIEW, TaskStatus.DONE):
        raise Conflict("not_reviewable", f"Task {task.pk} is {task.status}; only tasks in review or done are.")
    if label is not None and label not in task.project.labels:
        raise DomainError("invalid", f"'{label}' is not in the project's label set.",
                          fields={"label": ["Not in the project's label set."]})
    # A reject settles no label, whatever label came with it (the review page's form always
    # sends the one its dropdown shows).
    Review.objects.create(task=task, reviewer=reviewer, round=task.round, verdict=verdict,
                          label=(label or "") if verdict == Verdict.ACCEPT else "", reason=reason)
    before = Label.objects.filter(prediction_id=task.prediction_id, is_current=True).values_list(
        "label", flat=True).first()
    if verdict == Verdict.ACCEPT:
        if label is None:
            counts = Counter(Annotation.objects.filter(task=task, round=task.round).values_list("label", flat=True))
            ranked = counts.most_common(2)
            if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
                raise DomainError("invalid", "The annotators tie: say which label to accept.",
                                  fields={"label": ["Required when the annotators do not agree."]})
            label = ranked[0][0]
        label_resolve(project_id=task.project_id, prediction_id=task.prediction_id, label=label,
                      source=LabelSource.REVIEW, task=task, user=reviewer)
        task.status = TaskStatus.DONE
    else:
        current = Label.objects.filter(task=task, is_current=True).first()
        if current is not None:
            _label_withdraw(current, actor=reviewer)
        Lease.objects.filter(task=task).delete()
        task.round += 1
        task.status = TaskStatus.OPEN
    task.save(update_fields=["status", "round", "updated_at"])
    # Every verdict, also one that keeps the label: a reviewer's decision is what a wrong
    # training label is traced back to.
    audit_record(actor=reviewer, action="label.review", project_id=task.project_id, target=str(task.prediction_id),
                 details={"task": task.pk, "verdict": verdict, "from": before,
                          "to": label if verdict == Verdict.ACCEPT else None, "reason": reason})
    log.info("labeling.reviewed", task=task.pk, verdict=verdict, label=label)
    return task


# --- Gold answers ---------------------------------------------------------------------------


@transaction.atomic
def gold_answer_set(*, project, prediction, label: str, actor=None) -> GoldAnswer:
    """Mark a prediction's right answer as known. It becomes its resolved label (source
    gold), it leaves the queue, and annotators are measured against it from now on."""
    if label not in project.labels:
        raise DomainError("invalid", f"'{label}' is not in the project's label set.",
                          fields={"label": ["Not in the project's label set."]})
    before = GoldAnswer.objects.filter(prediction=prediction).values_list("label", flat=True).first()
    gold, _ = GoldAnswer.objects.update_or_create(
        prediction=prediction, defaults={"project": project, "label": label, "created_by": actor}
    )
    label_resolve(project_id=project.pk, prediction_id=prediction.pk, label=label, source=LabelSource.GOLD,
                  user=actor)
    queued = Task.objects.filter(prediction=prediction, status__in=ACTIVE_TASK_STATUSES).exclude(
        reason=TaskReason.GOLD)
    Lease.objects.filter(task__in=queued).delete()
    queued.update(status=TaskStatus.CANCELED, updated_at=timezone.now())
    audit_record(actor=actor, action="gold.set", project=project, target=prediction.external_id,
                 details={"label": label, "from": before})
    return gold


# --- Resolved labels ----------------------------------------------------------------------------


def label_resolve(*, project_id: int, prediction_id: int, label: str, source: str, task: Task | None = None,
                  user=None, weight: float | None = None) -> Label:
    """Make `label` the prediction's current label. The previous one is kept, superseded;
    a change of value is written to the audit log."""
    previous = Label.objects.select_for_update().filter(prediction_id=prediction_id, is_current=True).first()
    if previous is not None:
        previous.is_current = False
        previous.save(update_fields=["is_current"])
    resolved = Label.objects.create(
        project_id=project_id, prediction_id=prediction_id, label=label, source=source,
        weight=LABEL_WEIGHTS[source] if weight is None else weight, task=task, resolved_by=user,
        previous=previous,
    )
    if previous is not None and previous.label != label:
        audit_record(actor=user, action="label.change", project_id=project_id, target=str(prediction_id),
                     details={"from": previous.label, "to": label, "from_source": previous.source, "source": source})
    return resolved


def labels_resolve_many(*, project_id: int, resolutions: Sequence[tuple[int, int]], label: str, source: str,
                        user=None) -> list[Label]:
    """label_resolve for many predictions given the same label at once (a group): the same
    rows, history and audit entries, in a number of queries that does not grow with them.
    `resolutions` holds (prediction id, task id) pairs."""
    prediction_ids = [p for p, _ in resolutions]
    previous = {row.prediction_id: row for row in
                Label.objects.select_for_update().filter(prediction_id__in=prediction_ids, is_current=True)}
    Label.objects.filter(pk__in=[row.pk for row in previous.values()]).update(is_current=False)
    resolved = Label.objects.bulk_create([
        Label(project_id=project_id, prediction_id=p, label=label, source=source, weight=LABEL_WEIGHTS[source],
              task_id=t, resolved_by=user, previous=previous.get(p)) for p, t in resolutions])
    for p, old in previous.items():
        if old.label != label:
            audit_record(actor=user, action="label.change", project_id=project_id, target=str(p),
                         details={"from": old.label, "to": label, "from_source": old.source, "source": source})
    return resolved


def _label_withdraw(label: Label, *, actor=None) -> None:
    """Take a resolved label back, making the one it superseded current again (if any)."""
    label.is_current = False
    label.save(update_fields=["is_current"])
    if label.previous_id:
        Label.objects.filter(pk=label.previous_id).update(is_current=True)
    audit_record(actor=actor, action="label.withdraw", project_id=label.project_id, target=str(label.prediction_id),
                 details={"label": label.label, "source": label.source})


# --- Leases that ran out --------------------------------------------------------------------------


def leases_sweep(*, now: datetime | None = None) -> int:
    """Return the tasks of expired leases to the queue; returns how many leases expired.
    Safe to run at any time and twice: it only acts on leases still past their time once
    their task is locked, so a heartbeat that lands first wins."""
    now = now or timezone.now()
    expired = 0
    for lease_id, task_id in list(Lease.objects.filter(expires_at__lte=now).values_list("id", "task_id")[:10_000]):
        with transaction.atomic():
            task = Task.objects.select_for_update().filter(pk=task_id).first()
            if task is None or not Lease.objects.filter(pk=lease_id, expires_at__lte=now).delete()[0]:
                continue
            expired += 1
            if task.reason == TaskReason.GOLD and task.status == TaskStatus.LEASED:
                task.delete()  # made for that annotator only; the gold answer can be served again
            elif task.status == TaskStatus.LEASED:
                task.status = TaskStatus.OPEN
                task.save(update_fields=["status", "updated_at"])
    if expired:
        log.info("labeling.leases_expired", count=expired)
    return expired


def labels_rule_out(*, pairs: Sequence[tuple[int, str]]) -> None:
    """Record labels predictions cannot have; recording one twice is harmless."""
    RuledOutLabel.objects.bulk_create([RuledOutLabel(prediction_id=p, label=label) for p, label in pairs],
                                      ignore_conflicts=True)
