"""What an API key is: how one is made, how it is stored (prefix and digest), and what a
scoped key may do. No database here: the lookup is in accounts.authentication."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from rest_framework.exceptions import AuthenticationFailed, PermissionDenied

# New keys carry a marker (secret scanners and people can tell a Flywheel key from other
# hex); keys made before hashing are 40 hex characters and keep working as they are.
KEY_MARKER = "fw_"
PREFIX_LENGTH = 12
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INGEST = "ingest"
READ = "read"


def key_generate() -> str:
    return KEY_MARKER + secrets.token_urlsafe(30)


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def digest_matches(key: str, digest: str) -> bool:
    return secrets.compare_digest(key_digest(key), digest)


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """The key a request came with, as far as deciding on the request needs it."""

    id: int
    name: str
    scopes: frozenset[str]
    expires_at: datetime | None


class TokenExpired(AuthenticationFailed):
    api_code = "token_expired"


class ScopeRefused(PermissionDenied):
    api_code = "scope"


def scope_allows(scopes: frozenset[str], *, method: str, ingest: bool) -> bool:
    """Whether a key with these scopes may make this request. `ingest`: the request logs
    predictions, shadow predictions or feedback. A key without scopes has its account's
    rights (the roles decide); scopes only ever narrow them."""
    if not scopes:
        return True
    if READ in scopes and method.upper() in SAFE_METHODS:
        return True
    return INGEST in scopes and ingest


def scope_check(grant: TokenGrant | None, *, method: str, ingest: bool) -> None:
    """The one decision on scopes, for the API views and both gateways alike."""
    if grant is not None and not scope_allows(grant.scopes, method=method, ingest=ingest):
        allowed = " and ".join(sorted(grant.scopes))
        raise ScopeRefused(f"This token's scope ({allowed}) does not allow this request.")
