"""API token authentication. Every API request starts here, so the lookup is one prepared
query on the key's indexed prefix that also loads the role, then a constant-time compare of
the key's digest; its answer is kept for FLYWHEEL_ACCESS_CACHE_SECONDS (a revoked token
stops working on other workers within that). Expiry, scope and the note of the key's use
are decided on every request, cached or not, by the DRF views and the gateways alike."""

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied

from accounts import token_use
from accounts.roles import REFUSED
from accounts.selectors import project_get_for_user, user_role
from accounts.tokens import TokenExpired, TokenGrant, digest_matches, key_prefix, scope_check
from common.ttlcache import TTLCache

# In the model's field order, as Model.from_db expects them.
_USER_FIELDS = ("id", "is_superuser", "username", "is_staff", "is_active")
_TOKEN_SQL = """
SELECT u.id, u.is_superuser, u.username, u.is_staff, u.is_active, a.role,
       t.id, t.name, t.digest, t.scopes, t.expires_at
FROM accounts_apitoken t
JOIN auth_user u ON u.id = t.user_id
LEFT JOIN accounts_account a ON a.user_id = u.id
WHERE t.prefix = %s
"""

token_cache = TTLCache(settings.FLYWHEEL_ACCESS_CACHE_SECONDS)


def _candidates(prefix: str) -> list[tuple]:
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            return cursor.execute(_TOKEN_SQL, [prefix], prepare=True).fetchall()
    with connection.cursor() as cursor:
        cursor.execute(_TOKEN_SQL, [prefix])
        return cursor.fetchall()


def token_user(key: str):
    """The active user a key belongs to, with `flywheel_role` and `flywheel_token` (its
    TokenGrant) set; None if there is none. Expired keys are returned: the caller says so."""
    cached = token_cache.get(key)
    if cached is not None:
        return cached
    if "\x00" in key:
        return None  # PostgreSQL cannot even compare it: a query would fail, not miss
    # Several keys may share a prefix (keys made before hashing are plain hex): each
    # candidate's digest is compared, all of them, so the time taken says nothing.
    row = None
    for candidate in _candidates(key_prefix(key)):
        if digest_matches(key, candidate[8]):
            row = candidate
    if row is None or not row[4]:
        return None
    # Only these fields are loaded; any other loads on first access, and save() writes
    # only what was loaded.
    user = get_user_model().from_db(connection.alias, _USER_FIELDS, row[:5])
    user.flywheel_role = row[5]
    expires_at = parse_datetime(row[10]) if isinstance(row[10], str) else row[10]
    user.flywheel_token = TokenGrant(id=row[6], name=row[7], scopes=frozenset(s for s in row[9].split(",") if s),
                                     expires_at=expires_at)
    token_cache.set(key, user)
    return user


def token_in_force(user) -> None:
    """Refuse an expired key, else note its use. For every request, its user cached or not."""
    grant: TokenGrant = user.flywheel_token
    if grant.expires_at is not None and grant.expires_at <= timezone.now():
        raise TokenExpired(f"This token expired at {grant.expires_at.isoformat()}; ask an admin for a new one.")
    token_use.note(grant.id)


def token_user_required(key: str, *, method: str, ingest: bool = False):
    """The user of a key that may make this request (see tokens.scope_allows), or the 401
    (unknown, revoked, expired, inactive user) or 403 (scope) the request gets."""
    user = token_user(key)
    if user is None:
        raise AuthenticationFailed("Invalid or revoked token, or an inactive user.")
    token_in_force(user)
    scope_check(user.flywheel_token, method=method, ingest=ingest)
    return user


def token_user_with_role(*, token: str, allowed_roles: frozenset[str], method: str = "POST",
                         ingest: bool = False):
    """The user of an API token whose role is allowed, checked as the API views check it, in
    the same order and with the same errors. For the ASGI gateways, which answer some
    routes without DRF."""
    user = token_user_required(token, method=method, ingest=ingest)
    if user_role(user) not in allowed_roles:
        raise PermissionDenied(REFUSED)
    return user


def token_project_access(*, token: str, slug: str, allowed_roles: frozenset[str], method: str = "POST",
                         ingest: bool = False):
    """(user, project) for an API token acting on a project: token, scope, role, then project."""
    user = token_user_with_role(token=token, allowed_roles=allowed_roles, method=method, ingest=ingest)
    return user, project_get_for_user(user=user, slug=slug)


class FlywheelTokenAuthentication(TokenAuthentication):
    """DRF's `Authorization: Token <key>`, with the key's expiry and scope. A view whose
    methods log predictions or feedback names them in `token_ingest_methods`."""

    def authenticate(self, request):
        self.request = request  # DRF makes one authenticator per request
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        view = (self.request.parser_context or {}).get("view")
        method = self.request.method
        ingest = method in getattr(view, "token_ingest_methods", ())
        return token_user_required(key, method=method, ingest=ingest), key
