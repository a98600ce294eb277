"""API token authentication (DRF tokens). Every API request starts here, so the lookup is
one prepared query that also loads the role, and its answer is kept for
FLYWHEEL_ACCESS_CACHE_SECONDS (a revoked token stops working on other workers within that)."""

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from common.ttlcache import TTLCache

# In the model's field order, as Model.from_db expects them.
_USER_FIELDS = ("id", "is_superuser", "username", "is_staff", "is_active")
_TOKEN_SQL = """
SELECT u.id, u.is_superuser, u.username, u.is_staff, u.is_active, a.role
FROM authtoken_token t
JOIN auth_user u ON u.id = t.user_id
LEFT JOIN accounts_account a ON a.user_id = u.id
WHERE t.key = %s
"""

token_cache = TTLCache(settings.FLYWHEEL_ACCESS_CACHE_SECONDS)


def token_user(key: str):
    """The active user a token belongs to, with `flywheel_role` set; None if there is none."""
    cached = token_cache.get(key)
    if cached is not None:
        return cached
    if "\x00" in key:
        return None  # PostgreSQL cannot even compare it: a query would fail, not miss
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            row = cursor.execute(_TOKEN_SQL, [key], prepare=True).fetchone()
    else:
        with connection.cursor() as cursor:
            cursor.execute(_TOKEN_SQL, [key])
            row = cursor.fetchone()
    if row is None or not row[4]:
        return None
    # Only these fields are loaded; any other loads on first access, and save() writes
    # only what was loaded.
    user = get_user_model().from_db(connection.alias, _USER_FIELDS, row[:5])
    user.flywheel_role = row[5]
    token_cache.set(key, user)
    return user


def token_user_required(key: str):
    """token_user, or the 401 every API request with a bad token gets."""
    user = token_user(key)
    if user is None:
        raise AuthenticationFailed("Invalid or revoked token, or an inactive user.")
    return user


class FlywheelTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        return token_user_required(key), key
