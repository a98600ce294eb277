"""DRF permissions built from the role table in accounts.roles."""

from rest_framework.permissions import BasePermission

from accounts.roles import REFUSED
from accounts.selectors import user_role


def role_in(roles: frozenset[str], *, safe_roles: frozenset[str] | None = None) -> type[BasePermission]:
    """Allow `roles`; when `safe_roles` is given, those may also use GET/HEAD/OPTIONS."""

    class RoleIn(BasePermission):
        message = REFUSED

        def has_permission(self, request, view):
            role = user_role(request.user)
            if role is None:
                return False
            if safe_roles is not None and request.method in ("GET", "HEAD", "OPTIONS"):
                return role in safe_roles or role in roles
            return role in roles

    RoleIn.__name__ = f"RoleIn_{'_'.join(sorted(roles))}"
    return RoleIn
