"""Reads about users: their role and the projects they may see."""

import copy
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch
from django.utils import timezone

from accounts.models import Account, ApiToken, AuditEvent, LoginFailure, Membership, Role
from common.errors import NotFound
from common.ttlcache import TTLCache


def user_role(user: AbstractBaseUser | AnonymousUser) -> str | None:
    if not user.is_authenticated:
        return None
    loaded = getattr(user, "flywheel_role", None)  # set by token authentication
    if loaded:
        return loaded
    try:
        return user.account.role
    except Account.DoesNotExist:
        # A Django superuser made with createsuperuser has no account row yet.
        return Role.ADMIN if user.is_superuser else None


def _project_model():
    # Projects belong to the flywheel app above this one; reach them through the relation.
    return Membership._meta.get_field("project").related_model


def projects_for_user(user):
    projects = _project_model().objects.all()
    if user_role(user) == Role.ADMIN:
        return projects
    return projects.filter(memberships__user=user)


project_cache = TTLCache(settings.FLYWHEEL_ACCESS_CACHE_SECONDS)


def project_get_for_user(*, user, slug: str):
    """The project with this slug if the user may see it. Another project, or one that does
    not exist, is the same 404: the caller learns nothing about projects it cannot see.
    One raw query: every project-scoped request starts here."""
    is_admin = user_role(user) == Role.ADMIN
    cached = project_cache.get((user.pk, is_admin, slug))
    if cached is not None:
        return copy.copy(cached)  # callers may change their copy
    Project = _project_model()
    table = Project._meta.db_table
    project = next(iter(Project.objects.raw(
        f"SELECT p.* FROM {table} p WHERE p.slug = %s AND (%s OR EXISTS ("
        f"SELECT 1 FROM {Membership._meta.db_table} m WHERE m.project_id = p.id AND m.user_id = %s))",
        [slug, is_admin, user.pk],
    )), None)
    if project is None:
        raise NotFound("project_not_found", f"No project '{slug}' is visible to you.")
    project_cache.set((user.pk, is_admin, slug), copy.copy(project))
    return project


def user_is_member(*, user, project_id: int) -> bool:
    if user_role(user) == Role.ADMIN:
        return True
    return Membership.objects.filter(user=user, project_id=project_id).exists()


def user_get_by_username(username: str):
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise NotFound("user_not_found", f"No user '{username}'.") from None


def tokens_list(*, username: str | None = None):
    """API keys, by account and name (never the keys: they are not kept)."""
    tokens = ApiToken.objects.select_related("user", "user__account")
    if username is not None:
        tokens = tokens.filter(user__username=username)
    return tokens.order_by("user__username", "name")


def token_get(*, token_id: int) -> ApiToken:
    try:
        return ApiToken.objects.select_related("user").get(pk=token_id)
    except ApiToken.DoesNotExist:
        raise NotFound("token_not_found", f"No API token {token_id}.") from None


def project_members(*, project):
    """A project's members by username, each with their account and API keys prefetched
    (never the keys: they are not kept)."""
    keys = Prefetch("user__api_tokens", queryset=ApiToken.objects.order_by("name"))
    return (Membership.objects.filter(project=project).select_related("user", "user__account")
            .prefetch_related(keys).order_by("user__username"))


def tokens_expiring(*, within: timedelta = timedelta(days=7), project_id: int | None = None,
                    now: datetime | None = None):
    """Keys that stop working within `within` (and have not yet): what ops must replace.
    With `project_id`, only the keys of that project's members."""
    now = now or timezone.now()
    tokens = ApiToken.objects.select_related("user", "user__account").filter(
        expires_at__gt=now, expires_at__lte=now + within)
    if project_id is not None:
        tokens = tokens.filter(user__memberships__project_id=project_id)
    return tokens.order_by("expires_at", "pk")


def audit_events(*, project_id: int | None, action: str | None = None, target: str | None = None):
    """Audit events, newest first: one project's, or with project_id None all of them
    (including those of no project: accounts, tokens, sign-in lockouts)."""
    events = AuditEvent.objects.select_related("project")
    if project_id is not None:
        events = events.filter(project_id=project_id)
    if action:
        # "label." matches every label.* action.
        events = events.filter(action__startswith=action) if action.endswith(".") else events.filter(action=action)
    if target:
        events = events.filter(target=target)
    return events.order_by("-created_at", "-id")


def login_lockout_seconds(*, username: str | None, ip: str | None, now: datetime | None = None) -> int:
    """Seconds until a sign-in for this username from this address may be tried again; 0 if
    it may now. A lock ends when enough of the failures that caused it leave the window."""
    now = now or timezone.now()
    window = timedelta(seconds=settings.FLYWHEEL_LOGIN_LOCKOUT_SECONDS)
    recent = LoginFailure.objects.filter(created_at__gt=now - window).order_by("-created_at")
    waits = [0.0]
    for field, value, limit in (("username", (username or "").lower()[:150], settings.FLYWHEEL_LOGIN_MAX_FAILURES),
                                ("ip", ip, settings.FLYWHEEL_LOGIN_MAX_FAILURES_PER_IP)):
        if not value or limit <= 0:
            continue
        # The limit-th newest failure: while it is inside the window, there are `limit` of them.
        oldest_counted = recent.filter(**{field: value}).values_list("created_at", flat=True)[limit - 1:limit]
        for created_at in oldest_counted:
            waits.append((created_at + window - now).total_seconds())
    return max(0, math.ceil(max(waits)))
