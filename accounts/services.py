"""Writes about users: accounts, memberships, tokens, and the audit log."""

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from accounts.models import Account, AuditEvent, Membership, Role
from common.errors import DomainError


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
        Membership.objects.get_or_create(user=user, project=project)
    token, _ = Token.objects.get_or_create(user=user)
    return user, token.key


def token_revoke(*, user, actor=None) -> None:
    """Revoke a user's API token; the next account_upsert issues a new one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    if deleted:
        audit_record(actor=actor, action="token.revoke", target=user.username)


def membership_add(*, user, project) -> None:
    Membership.objects.get_or_create(user=user, project=project)


def audit_record(*, actor, action: str, project=None, project_id: int | None = None, target: str = "",
                 details: dict | None = None) -> AuditEvent:
    name = getattr(actor, "username", None) or "system"
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None, actor_name=name, action=action,
        project=project, project_id=project_id if project is None else project.pk, target=target[:200],
        details=details or {},
    )
