"""Writes about users: accounts, memberships, tokens, and the audit log."""

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from accounts import roles, tokens
from accounts.models import Account, ApiToken, AuditEvent, LoginFailure, Membership, Role
from accounts.selectors import login_lockout_seconds, user_role
from common.errors import Conflict, DomainError, NotFound

log = structlog.get_logger(__name__)


@transaction.atomic
def account_upsert(*, username: str, role: str, projects=(), password: str | None = None,
                   actor=None, issue_key: bool = True) -> tuple[object, str | None]:
    """Create or update a user with this role and these project memberships; return the
    user and, when this call made them their first key (a new account, or one whose keys
    were all revoked), that key. Keys are shown once: an account that has one gets None.
    `issue_key=False` makes no key (for callers who may not hold one: ops adding a member)."""
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
    if not issue_key or ApiToken.objects.filter(user=user).exists():
        return user, None
    # A new user's key is part of account.create; a returning one's is worth a line.
    token = _token_create(user=user, name=ApiToken.DEFAULT_NAME, expires_at=None, scopes=(),
                          actor=actor if not created else None, audit=not created)
    return user, token.secret


def _token_create(*, user, name: str, expires_at: datetime | None, scopes, actor, audit: bool,
                  action: str = "token.create") -> ApiToken:
    secret = tokens.key_generate()
    token = ApiToken.objects.create(user=user, name=name, prefix=tokens.key_prefix(secret),
                                    digest=tokens.key_digest(secret), expires_at=expires_at,
                                    scopes=",".join(sorted(set(scopes))))
    token.secret = secret  # on this object only, for the one answer that shows it
    if audit:
        audit_record(actor=actor, action=action, target=user.username, details=_token_details(token))
    return token


def _token_details(token: ApiToken) -> dict:
    return {"token_id": token.pk, "name": token.name, "prefix": token.prefix, "scopes": token.scope_list,
            "expires_at": token.expires_at.isoformat() if token.expires_at else None}


@transaction.atomic
def token_issue(*, user, actor=None, name: str | None = None, expires_at: datetime | None = None,
                scopes=()) -> ApiToken:
    """Make a new API key for a user; its secret is on the returned object (`secret`) and
    nowhere else. Without a name it replaces the account's default key, which stops working
    at once on this worker, within FLYWHEEL_ACCESS_CACHE_SECONDS on the others. With a name
    it is added beside the account's other keys: how an app rotates without an outage."""
    if expires_at is not None and expires_at <= timezone.now():
        raise DomainError("invalid", "Invalid expires_at: it is in the past.",
                          fields={"expires_at": ["It is in the past."]})
    if name is None or name == ApiToken.DEFAULT_NAME:
        rotated = ApiToken.objects.filter(user=user, name=ApiToken.DEFAULT_NAME).delete()[0] > 0
        return _token_create(user=user, name=ApiToken.DEFAULT_NAME, expires_at=expires_at, scopes=scopes,
                             actor=actor, audit=True, action="token.rotate" if rotated else "token.create")
    try:
        with transaction.atomic():  # two requests for the same name: the constraint decides
            return _token_create(user=user, name=name, expires_at=expires_at, scopes=scopes, actor=actor,
                                 audit=True)
    except IntegrityError:
        raise DomainError("invalid", f"Invalid name: '{user.username}' already has a token named '{name}'.",
                          fields={"name": [f"'{user.username}' already has a token with this name."]}) from None


@transaction.atomic
def token_revoke(*, user, actor=None) -> bool:
    """Revoke all of a user's API keys; a later token_issue or account_upsert makes a new
    one. False when there was none."""
    revoked = list(ApiToken.objects.filter(user=user).order_by("name"))
    if not revoked:
        return False
    ApiToken.objects.filter(pk__in=[t.pk for t in revoked]).delete()
    audit_record(actor=actor, action="token.revoke", target=user.username,
                 details={"tokens": [_token_details(t) for t in revoked]})
    return True


@transaction.atomic
def token_revoke_one(*, token: ApiToken, actor=None) -> None:
    """Revoke one key, leaving the account's others working."""
    details = _token_details(token)
    token.delete()
    audit_record(actor=actor, action="token.revoke", target=token.user.username, details=details)


@transaction.atomic
def token_uses_record(*, uses: dict[int, datetime], min_interval: float) -> list[int]:
    """Write when keys were last used (from token_use, once a minute): one UPDATE for all
    of them, skipping a key another process wrote less than `min_interval` seconds ago.
    A key's first use goes to the audit log. Returns the ids of first uses."""
    if not uses:
        return []
    firsts = list(ApiToken.objects.select_for_update().select_related("user")
                  .filter(pk__in=uses, last_used_at__isnull=True).order_by("pk"))
    oldest_kept = timezone.now() - timedelta(seconds=min_interval)
    ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=oldest_kept), pk__in=uses).update(
        last_used_at=Case(*(When(pk=pk, then=Value(at)) for pk, at in uses.items())))
    for token in firsts:
        audit_record(actor=token.user, action="token.first_use", target=token.user.username,
                     details=_token_details(token))
    return [t.pk for t in firsts]


@transaction.atomic
def tokens_expired_record(*, now: datetime | None = None) -> int:
    """Put each key that has expired since the last call in the audit log, once."""
    now = now or timezone.now()
    expired = list(ApiToken.objects.select_for_update(skip_locked=True).select_related("user")
                   .filter(expires_at__lte=now, expiry_recorded=False).order_by("expires_at"))
    for token in expired:
        audit_record(actor=None, action="token.expire", target=token.user.username, details=_token_details(token))
    ApiToken.objects.filter(pk__in=[t.pk for t in expired]).update(expiry_recorded=True)
    return len(expired)


def membership_add(*, user, project, actor=None) -> None:
    _, created = Membership.objects.get_or_create(user=user, project=project)
    if created:
        audit_record(actor=actor, action="account.membership_add", project=project, target=user.username)


def _member_role_check(*, actor, user, role: str) -> None:
    """Ops may staff their projects but not touch an admin: an account's role is the same in
    every project, so demoting an admin from one project would demote them everywhere."""
    if role not in roles.MEMBER_ROLES:
        raise DomainError("invalid", f"Invalid role: '{role}' is not a member's role.",
                          fields={"role": [f"One of {', '.join(roles.MEMBER_ROLES)}."]})
    if user is not None and user_role(actor) != Role.ADMIN and user_role(user) == Role.ADMIN:
        raise DomainError("forbidden", f"Only admins may change the role of '{user.username}', an admin.",
                          status_code=403)


@transaction.atomic
def member_add(*, project, username: str, role: str, actor) -> tuple[object, bool]:
    """Add an account to a project with this role, making the account if it is new (without
    an API key: an admin issues an app's key). Returns the user and whether the account is
    new. An existing account takes the role everywhere: a role is the account's."""
    existing = get_user_model().objects.filter(username=username).first()
    _member_role_check(actor=actor, user=existing, role=role)
    user, _ = account_upsert(username=username, role=role, projects=[project], actor=actor, issue_key=False)
    return user, existing is None


@transaction.atomic
def member_role_set(*, project, username: str, role: str, actor):
    """Change a project member's role (in every project: a role is the account's)."""
    membership = Membership.objects.select_related("user").filter(project=project, user__username=username).first()
    if membership is None:
        raise NotFound("user_not_found", f"'{username}' is not a member of '{project.slug}'.")
    _member_role_check(actor=actor, user=membership.user, role=role)
    user, _ = account_upsert(username=username, role=role, actor=actor, issue_key=False)
    return user


@transaction.atomic
def member_remove(*, project, username: str, actor) -> None:
    """Take an account off a project. The account, its role and its keys stay (it may work
    on other projects); it loses this project at once on this worker, on the others within
    FLYWHEEL_ACCESS_CACHE_SECONDS. A task it holds here goes back to the queue when its
    lease runs out, as any abandoned lease does."""
    membership = (Membership.objects.select_for_update(of=("self",)).select_related("user", "user__account")
                  .filter(project=project, user__username=username).first())
    if membership is None:
        raise NotFound("user_not_found", f"'{username}' is not a member of '{project.slug}'.")
    if membership.user_id == getattr(actor, "pk", None):
        # An ops person who removed themselves would lose the project and could not undo it.
        raise Conflict("cannot_remove_self", f"You cannot remove yourself from '{project.slug}': "
                                             "ask another ops person or an admin.")
    role = user_role(membership.user)
    if user_role(actor) != Role.ADMIN and role == Role.ADMIN:
        raise DomainError("forbidden", f"Only admins may remove '{username}', an admin.", status_code=403)
    membership.delete()
    audit_record(actor=actor, action="account.membership_remove", project=project, target=username,
                 details={"role": role})


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
