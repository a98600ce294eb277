"""Writes for group labeling: building groups from open tasks, claiming one under a lease,
fixing it (split, merge, members taken out), labeling it once, and drawing the individual
checks that measure how good group labels are."""

import random
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import structlog
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from common.errors import Conflict, DomainError, NotFound
from labeling import group_selectors, grouping
from labeling.models import (
    Annotation,
    Group,
    GroupStatus,
    LabelSource,
    Lease,
    RuledOutLabel,
    Task,
    TaskReason,
    TaskStatus,
)
from labeling.policy import LabelingPolicy
from labeling.services import _CAPACITY_SQL, _lease_ends, _resolve_round, labels_resolve_many

log = structlog.get_logger(__name__)
# The advisory lock's first key (an int4): one group build per project at a time.
_BUILD_LOCK = zlib.crc32(b"labeling.groups_build") & 0x7FFFFFFF
# Above every routed task (at most 1) and group check (at most 2): see group_annotate.
EXCLUDED_PRIORITY = 3.0


@dataclass(frozen=True)
class GroupBuildResult:
    groups: int
    grouped_tasks: int
    ungrouped_tasks: int


def groups_build(*, project, now: datetime | None = None) -> GroupBuildResult:
    """Regroup a project's open, unleased tasks by content. Open groups nobody holds are
    dissolved and formed again with the new tasks; leased groups are left alone. Audit,
    gold and group-check tasks are never grouped. Safe to run twice and at the same time
    (one build per project runs, the other waits for it)."""
    now = now or timezone.now()
    policy = LabelingPolicy.from_dict(project.labeling).grouping_policy
    schema = project.features or []
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_BUILD_LOCK, project.pk])
        stale = list(Group.objects.select_for_update(skip_locked=True)
                     .filter(project=project, status=GroupStatus.OPEN).values_list("id", flat=True))
        Task.objects.filter(group_id__in=stale).update(group=None, group_distance=None)
        Group.objects.filter(id__in=stale).delete()
        rows = list(group_selectors.groupable_tasks(project_id=project.pk, limit=policy.max_tasks)
                    .select_for_update(skip_locked=True, of=("self",))
                    .values("id", "priority", "prediction__embedding", "prediction__features", "prediction__label"))
        rows = [{"id": r["id"], "priority": r["priority"], "embedding": r["prediction__embedding"],
                 "features": r["prediction__features"], "label": r["prediction__label"]} for r in rows]
        by_representation = defaultdict(list)
        for row in rows:
            by_representation[group_selectors.representation_of(row["embedding"], schema)].append(row)
        members: list[Task] = []
        groups = 0
        for representation, part in by_representation.items():
            vectors = group_selectors.vectors_for(part, representation, schema)
            for formed in grouping.groups_form(vectors, min_size=policy.min_size, max_size=policy.max_size,
                                               target_size=policy.target_size,
                                               predicted=[row["label"] for row in part]):
                chosen = [part[i] for i in formed.members]
                group = Group.objects.create(
                    project=project, representation=representation,
                    suggested_label=grouping.suggested_label([r["label"] for r in chosen]),
                    priority=grouping.group_worth([r["priority"] for r in chosen]),
                )
                groups += 1
                members += [Task(pk=r["id"], group=group, group_distance=d)
                            for r, d in zip(chosen, formed.distances, strict=True)]
        Task.objects.bulk_update(members, ["group", "group_distance"], batch_size=1000)
    result = GroupBuildResult(groups=groups, grouped_tasks=len(members), ungrouped_tasks=len(rows) - len(members))
    log.info("labeling.groups_built", project=project.slug, groups=result.groups, grouped=result.grouped_tasks,
             ungrouped=result.ungrouped_tasks)
    return result


# --- Claiming and holding -----------------------------------------------------------------------


def group_claim(*, project, user, now: datetime | None = None) -> Group | None:
    """Give the annotator the most valuable open group under a lease; None when there is
    none. Members someone else took meanwhile leave the group; a group left smaller than
    min_size is dissolved and the next one tried. Two annotators never hold the same group,
    and, for tasks that need one annotation, never the same task."""
    now = now or timezone.now()
    policy = LabelingPolicy.from_dict(project.labeling).grouping_policy
    for _ in range(10):
        with transaction.atomic():
            group = (Group.objects.select_for_update(skip_locked=True)
                     .filter(project=project, status=GroupStatus.OPEN).order_by("-priority", "id").first())
            if group is None:
                return None
            usable = _members_claimable(group, user)
            Task.objects.filter(group=group).exclude(pk__in=usable).update(group=None, group_distance=None)
            if len(usable) < policy.min_size:
                Task.objects.filter(group=group).update(group=None, group_distance=None)
                group.delete()
                continue
            expires = _lease_ends(now)
            _members_lease(usable, user, expires, now)
            group.status, group.leased_by, group.lease_expires_at = GroupStatus.LEASED, user, expires
            group.save(update_fields=["status", "leased_by", "lease_expires_at", "updated_at"])
            return group
    return None


def _members_claimable(group: Group, user) -> list[int]:
    """The members this annotator can take now, locked: open, not skipped, leased or
    annotated by them this round, and not a task kept from them. A member another
    transaction is claiming is passed over."""
    return list(Task.objects.select_for_update(skip_locked=True)
                .filter(group=group, status=TaskStatus.OPEN)
                .exclude(leases__user=user).exclude(skips__user=user).exclude(not_for=user)
                .exclude(annotations__user=user, annotations__round=F("round"))
                .values_list("id", flat=True))


def _members_lease(task_ids: list[int], user, expires: datetime, now: datetime) -> None:
    Lease.objects.bulk_create([Lease(task_id=t, user=user, expires_at=expires) for t in task_ids])
    Task.objects.filter(pk__in=task_ids, annotations_required=1).update(status=TaskStatus.LEASED, updated_at=now)
    with connection.cursor() as cursor:
        for task_id in Task.objects.filter(pk__in=task_ids, annotations_required__gt=1).values_list("id", flat=True):
            cursor.execute(_CAPACITY_SQL, {"task": task_id, "now": now})


def _members_unlease(group: Group, user, now: datetime, task_ids=None) -> None:
    """Give the holder's member tasks back to the queue."""
    tasks = Task.objects.filter(group=group) if task_ids is None else Task.objects.filter(pk__in=task_ids)
    Lease.objects.filter(task__in=tasks, user=user).delete()
    tasks.filter(status=TaskStatus.LEASED, annotations_required=1).update(status=TaskStatus.OPEN, updated_at=now)
    with connection.cursor() as cursor:
        for task_id in tasks.filter(annotations_required__gt=1).values_list("id", flat=True):
            cursor.execute(_CAPACITY_SQL, {"task": task_id, "now": now})


def _locked_group(group_id: int) -> Group:
    group = Group.objects.select_for_update().select_related("project").filter(pk=group_id).first()
    if group is None:
        raise NotFound("group_not_found", f"No group {group_id}.")
    return group


def _held(group: Group, user, now: datetime) -> None:
    if group.status != GroupStatus.LEASED or group.leased_by_id != user.pk or group.lease_expires_at <= now:
        raise Conflict("lease_lost", "You no longer hold this group: its lease expired or was released.")


@transaction.atomic
def group_lease_renew(*, group_id: int, user, now: datetime | None = None) -> Group:
    now = now or timezone.now()
    group = _locked_group(group_id)
    _held(group, user, now)
    group.lease_expires_at = _lease_ends(now)
    group.save(update_fields=["lease_expires_at", "updated_at"])
    Lease.objects.filter(task__group=group, user=user).update(expires_at=group.lease_expires_at)
    return group


@transaction.atomic
def group_release(*, group_id: int, user, now: datetime | None = None) -> Group:
    """Hand a held group back unlabeled (the annotator left the page); a group the caller
    does not hold is left as it is."""
    now = now or timezone.now()
    group = _locked_group(group_id)
    if group.status == GroupStatus.LEASED and group.leased_by_id == user.pk:
        _members_unlease(group, user, now)
        group.status, group.leased_by, group.lease_expires_at = GroupStatus.OPEN, None, None
        group.save(update_fields=["status", "leased_by", "lease_expires_at", "updated_at"])
    return group


def groups_sweep(*, now: datetime | None = None) -> int:
    """Return expired groups (and their members) to the queue; returns how many. Safe to run
    twice: a group is acted on only while its lease is still past its time under the lock."""
    now = now or timezone.now()
    expired = 0
    for group_id in list(Group.objects.filter(status=GroupStatus.LEASED, lease_expires_at__lte=now)
                         .values_list("id", flat=True)[:10_000]):
        with transaction.atomic():
            group = Group.objects.select_for_update().filter(pk=group_id, status=GroupStatus.LEASED,
                                                             lease_expires_at__lte=now).first()
            if group is None:
                continue
            _members_unlease(group, group.leased_by, now)
            group.status, group.leased_by, group.lease_expires_at = GroupStatus.OPEN, None, None
            group.save(update_fields=["status", "leased_by", "lease_expires_at", "updated_at"])
            expired += 1
    if expired:
        log.info("labeling.groups_expired", count=expired)
    return expired


# --- Labeling a group ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupLabelOutcome:
    labeled: int
    returned: int
    checks: int


@transaction.atomic
def group_annotate(*, group_id: int, user, label: str, exclude: list[int], lead_time_s: float | None = None,
                   now: datetime | None = None, rng: random.Random | None = None) -> GroupLabelOutcome:
    """Label every member the holder did not exclude; excluded members go back to the queue
    as single tasks, never grouped again. Each labeled member gets one annotation by the
    holder (with overlap it is one annotator's of several); a task needing one annotation
    gets the label with source `group`. At the project's group_check_rate, a labeled member
    is queued again (reason group_check) for another annotator. Any bad input stores nothing."""
    now = now or timezone.now()
    rng = rng or random.Random()
    exclude = sorted(set(exclude))
    group = _locked_group(group_id)
    project = group.project
    if label not in project.labels:
        raise DomainError("invalid", f"'{label}' is not in the project's label set.",
                          fields={"label": ["Not in the project's label set."]})
    _held(group, user, now)
    members = list(Task.objects.select_for_update().select_related("prediction").filter(group=group).order_by("id"))
    member_ids = {m.pk for m in members}
    strangers = sorted(set(exclude) - member_ids)
    if strangers:
        raise DomainError("invalid", "Only the group's members can be excluded.",
                          fields={"exclude": [f"Not members of group {group.pk}: {strangers}."]})
    labeled = [m for m in members if m.pk not in set(exclude)]
    if not labeled:
        raise DomainError("invalid", "Every member is excluded: release the group instead.",
                          fields={"exclude": ["Leaves no member to label."]})
    ruled_out = sorted(RuledOutLabel.objects.filter(prediction_id__in=[m.prediction_id for m in labeled],
                                                    label=label).values_list("prediction__tasks__id", flat=True))
    ruled_out = [t for t in ruled_out if t in member_ids]
    if ruled_out:
        raise DomainError("invalid", f"'{label}' was ruled out by end-user feedback for members {ruled_out}: "
                          "exclude them or choose another label.",
                          fields={"label": [f"Ruled out for members {ruled_out}."]})
    held = Lease.objects.filter(task__in=labeled, user=user, expires_at__gt=now).delete()[0]
    if held != len(labeled):
        raise Conflict("lease_lost", "You no longer hold every member of this group.")
    share = lead_time_s / len(labeled) if lead_time_s is not None else None
    Annotation.objects.bulk_create([
        Annotation(task=m, user=user, label=label, round=m.round, lead_time_s=share, group=group,
                   accepted_suggestion=label == m.prediction.label) for m in labeled])
    policy = LabelingPolicy.from_dict(project.labeling)
    # A task that needs one annotation is done with the group's label: in bulk.
    single = [m for m in labeled if m.annotations_required == 1]
    Task.objects.filter(pk__in=[m.pk for m in single]).update(status=TaskStatus.DONE, updated_at=now)
    labels_resolve_many(project_id=project.pk, resolutions=[(m.prediction_id, m.pk) for m in single], label=label,
                        source=LabelSource.GROUP, user=user)
    # With overlap the group's annotation is one of several: resolved (or not yet) as usual.
    for member in labeled:
        if member.annotations_required == 1:
            member.status = TaskStatus.DONE
            continue
        labels = list(Annotation.objects.filter(task=member, round=member.round).values_list("label", flat=True))
        if len(labels) >= member.annotations_required:
            _resolve_round(member, labels, annotator=user)
        member.save(update_fields=["status", "updated_at"])
        if member.status in (TaskStatus.OPEN, TaskStatus.LEASED):
            with connection.cursor() as cursor:
                cursor.execute(_CAPACITY_SQL, {"task": member.pk, "now": now})
    # Checks go ahead of uncertainty-routed tasks (priorities up to 1), in a random order among
    # themselves, like the audit sample: behind a busy queue they would never be labeled, and
    # served most uncertain first, a partly labeled sample would judge group labels on their
    # hardest members. (The simulation found them starved at the members' own priority.)
    checks = [Task(project=project, prediction_id=m.prediction_id, reason=TaskReason.GROUP_CHECK,
                   priority=1.0 + rng.random(), annotations_required=1, not_for=user)
              for m in labeled if m.status == TaskStatus.DONE and rng.random() < policy.group_check_rate]
    Task.objects.bulk_create(checks)
    if exclude:
        _members_unlease(group, user, now, task_ids=exclude)
        # A member a person took out of its group is most likely one the model got wrong: it
        # goes ahead of every other task (uncertainty up to 1, group checks up to 2), since its
        # label teaches the model most. Left at its own priority it was never labeled again in
        # the simulation, and the model trained on the members that agreed with it.
        Task.objects.filter(pk__in=exclude).update(group=None, group_distance=None, grouping_excluded=True,
                                                   priority=EXCLUDED_PRIORITY)
    group.status, group.leased_by, group.lease_expires_at = GroupStatus.DONE, None, None
    group.label, group.labeled_by, group.labeled_count = label, user, len(labeled)
    group.lead_time_s, group.labeled_at = lead_time_s, now
    group.save()
    log.info("labeling.group_labeled", group=group.pk, label=label, labeled=len(labeled), returned=len(exclude),
             checks=len(checks))
    return GroupLabelOutcome(labeled=len(labeled), returned=len(exclude), checks=len(checks))


# --- Fixing a group ------------------------------------------------------------------------------


def _member_vectors(group: Group) -> tuple[list[Task], np.ndarray]:
    members = list(Task.objects.select_related("prediction").filter(group=group).order_by("id"))
    rows = [{"embedding": m.prediction.embedding, "features": m.prediction.features} for m in members]
    representation = group.representation
    if representation != group_selectors.FEATURES and any(r["embedding"] is None for r in rows):
        representation = group_selectors.FEATURES
    return members, group_selectors.vectors_for(rows, representation, group.project.features or [])


def _regroup(group: Group, members: list[Task], formed: grouping.FormedGroup) -> list[Task]:
    chosen = [members[i] for i in formed.members]
    for member, distance in zip(chosen, formed.distances, strict=True):
        member.group, member.group_distance = group, distance
    group.suggested_label = grouping.suggested_label([m.prediction.label for m in chosen])
    group.priority = grouping.group_worth([m.priority for m in chosen])
    return chosen


@transaction.atomic
def group_split(*, group_id: int, user, now: datetime | None = None) -> list[Group]:
    """The holder cuts their group in two by content; both halves stay theirs."""
    now = now or timezone.now()
    group = _locked_group(group_id)
    _held(group, user, now)
    members, vectors = _member_vectors(group)
    halves = grouping.split_in_two(vectors)
    if halves is None:
        raise Conflict("too_small", "A group of fewer than two members cannot be split.")
    other = Group.objects.create(project=group.project, representation=group.representation, suggested_label="",
                                 priority=0, status=GroupStatus.LEASED, leased_by=user,
                                 lease_expires_at=group.lease_expires_at)
    changed = _regroup(group, members, halves[0]) + _regroup(other, members, halves[1])
    Task.objects.bulk_update(changed, ["group", "group_distance"])
    group.save(update_fields=["suggested_label", "priority", "updated_at"])
    other.save(update_fields=["suggested_label", "priority", "updated_at"])
    return [group, other]


@transaction.atomic
def group_merge(*, group_id: int, other_id: int, user, now: datetime | None = None) -> Group:
    """Fold another group into this one. Each must be open or held by the caller; when the
    caller holds either, they hold the result (an open group's members are leased to them,
    those someone else took meanwhile leave it)."""
    now = now or timezone.now()
    if group_id == other_id:
        raise DomainError("invalid", "A group cannot be merged with itself.", fields={"with": ["Another group."]})
    # Locked in id order, so two merges of the same pair cannot deadlock.
    locked = {g.pk: g for g in Group.objects.select_for_update().select_related("project")
              .filter(pk__in=[group_id, other_id]).order_by("id")}
    if group_id not in locked:
        raise NotFound("group_not_found", f"No group {group_id}.")
    group, other = locked[group_id], locked.get(other_id)
    if other is None or other.project_id != group.project_id:
        raise DomainError("invalid", f"No group {other_id} in this project.", fields={"with": ["No such group."]})
    for g in (group, other):
        held = g.status == GroupStatus.LEASED and g.leased_by_id == user.pk and g.lease_expires_at > now
        if not (g.status == GroupStatus.OPEN or held):
            raise Conflict("not_mergeable", f"Group {g.pk} is {g.status}: only open groups or your own merge.")
    holding = GroupStatus.LEASED in (group.status, other.status)
    if holding:
        expires = _lease_ends(now)
        for g in (group, other):
            if g.status == GroupStatus.OPEN:
                usable = _members_claimable(g, user)
                Task.objects.filter(group=g).exclude(pk__in=usable).update(group=None, group_distance=None)
                _members_lease(usable, user, expires, now)
        Lease.objects.filter(task__group__in=[group, other], user=user).update(expires_at=expires)
        group.status, group.leased_by, group.lease_expires_at = GroupStatus.LEASED, user, expires
    Task.objects.filter(group=other).update(group=group)
    other.delete()
    members, vectors = _member_vectors(group)
    distances = grouping.member_distances(vectors) if members else []
    for member, distance in zip(members, distances, strict=True):
        member.group_distance = distance
    Task.objects.bulk_update(members, ["group_distance"])
    group.suggested_label = grouping.suggested_label([m.prediction.label for m in members]) if members else ""
    group.priority = grouping.group_worth([m.priority for m in members])
    group.save()
    return group



def groups_build_due(*, projects) -> int:
    """The beat's build: regroup each project whose grouping is enabled and that has open
    tasks no group has yet; returns how many projects were rebuilt. A second run with no
    new tasks changes nothing."""
    built = 0
    for project in projects:
        if not LabelingPolicy.from_dict(project.labeling).grouping_policy.enabled:
            continue
        if not group_selectors.groupable_tasks(project_id=project.pk, limit=1).exists():
            continue
        groups_build(project=project)
        built += 1
    return built
