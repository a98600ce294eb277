"""Reads about users: their role and the projects they may see."""

import copy

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from accounts.models import Account, Membership, Role
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
