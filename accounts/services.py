"""Writes about users: accounts, memberships, tokens, and the audit log."""

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import Account, AuditEvent, LoginFailure, Membership, Role
from accounts.selectors import login_lockout_seconds
from common.errors import DomainError

log = structlog.get_logger(__name__)


@transaction.atomic
def account_upsert(*, username: str, role: str, projects=(), password: str | None = None,
                   actor=None) -> tuple[object, str]:
    """Create or update a user with this role and these project memberships; return the
    user and their API token (the same token on every call, until it is revoked)."""
    if role not in Role.values:
        raise DomainError("invalid_role", f"Unknown role '{role}'; one of {', '.join(Role.values)}.")
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username)
    user.is_staff = role == Role.ADMIN
    user.is_superuser = role == Role.ADMIN
    if password:
        user.set_password(password)
    elif created:
        user.set_unusable_password()
    user.save()
    account, account_created = Account.objects.get_or_create(user=user, defaults={"role": role})
    if not account_created and account.role != role:
        audit_record(actor=actor, action="account.role_change", target=username,
                     details={"from": account.role, "to": role})
        account.role = role
        account.save(update_fields=["role", "updated_at"])
    elif account_created:
        audit_record(actor=actor, action="account.create", target=username, details={"role": role})
    for project in projects:
        membership_add(user=user, project=project, actor=actor)
    token, token_created = Token.objects.get_or_create(user=user)
    if token_created and not created:
        # A new user's token is part of account.create; a returning one's is worth a line.
        audit_record(actor=actor, action="token.create", target=username)
    return user, token.key


@transaction.atomic
def token_issue(*, user, actor=None) -> Token:
    """Give a user a new API token, revoking the one they had: the old key stops working at
    once on this worker, within FLYWHEEL_ACCESS_CACHE_SECONDS on the others."""
    rotated = Token.objects.filter(user=user).delete()[0] > 0
    token = Token.objects.create(user=user)
    audit_record(actor=actor, action="token.rotate" if rotated else "token.create", target=user.username)
    return token


def token_revoke(*, user, actor=None) -> bool:
    """Revoke a user's API token; a later token_issue or account_upsert makes a new one.
    False when there was none."""
    deleted, _ = Token.objects.filter(user=user).delete()
    if deleted:
        audit_record(actor=actor, action="token.revoke", target=user.username)
    return bool(deleted)


def membership_add(*, user, project, actor=None) -> None:
    _, created = Membership.objects.get_or_create(user=user, project=project)
    if created:
        audit_record(actor=actor, action="account.membership_add", project=project, target=user.username)


# --- Sign-in lockout ----------------------------------------------------------------------


def login_failure_record(*, username: str, ip: str | None, now: datetime | None = None) -> int:
    """Count a failed web sign-in. Returns the seconds of lockout it started (0 if none);
    the start of a lockout goes to the audit log, each failure to the log only (an attacker
    must not be able to flood the audit log)."""
    now = now or timezone.now()
    username = username.lower()[:150]
    window = timedelta(seconds=settings.FLYWHEEL_LOGIN_LOCKOUT_SECONDS)
    # Failures older than the window no longer count for anything.
    LoginFailure.objects.filter(created_at__lt=now - window).delete()
    LoginFailure.objects.create(username=username, ip=ip)
    log.warning("account.login_failed", username=username, ip=ip)
    locked_for = login_lockout_seconds(username=username, ip=ip, now=now)
    if locked_for:
        audit_record(actor=None, action="account.login_locked", target=username,
                     details={"ip": ip, "seconds": locked_for})
        log.warning("account.login_locked", username=username, ip=ip, seconds=locked_for)
    return locked_for


def login_failures_clear(*, username: str) -> None:
    """A successful sign-in forgives the username's earlier typos (not the address's)."""
    LoginFailure.objects.filter(username=username.lower()[:150]).delete()


def audit_record(*, actor, action: str, project=None, project_id: int | None = None, target: str = "",
                 details: dict | None = None) -> AuditEvent:
    name = getattr(actor, "username", None) or "system"
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None, actor_name=name, action=action,
        project=project, project_id=project_id if project is None else project.pk, target=target[:200],
        details=details or {},
    )
