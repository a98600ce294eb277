"""Cache invalidation (the one use of signals here): a change to a token, a role, a
membership or a project clears this worker's cached answers at once."""

from django.db.models.signals import post_delete, post_save

from accounts.authentication import token_cache
from accounts.models import Account, ApiToken, Membership
from accounts.selectors import project_cache
from common.ttlcache import TTLCache

_caches: list[TTLCache] = [token_cache, project_cache]


def register_access_cache(cache: TTLCache) -> TTLCache:
    """Have another cache of who-may-see-what cleared with these (e.g. the ingestion gateway's)."""
    _caches.append(cache)
    return cache


def clear_access_caches(**kwargs) -> None:
    for cache in _caches:
        cache.clear()


def connect() -> None:
    for sender in (ApiToken, Account, Membership, "auth.User", "flywheel.Project"):
        post_save.connect(clear_access_caches, sender=sender, dispatch_uid=f"access-cache-save-{sender}")
        post_delete.connect(clear_access_caches, sender=sender, dispatch_uid=f"access-cache-delete-{sender}")
