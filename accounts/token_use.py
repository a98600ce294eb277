"""When each API key was last used: noted in memory on every request, written at most once
a minute per process on a thread of its own, so no request waits on (or pays for) a write."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import structlog
from django.conf import settings
from django.db import connection

from accounts.services import token_uses_record

log = structlog.get_logger(__name__)

_pending: dict[int, float] = {}
_lock = threading.Lock()
_writer = ThreadPoolExecutor(1, thread_name_prefix="token-use")
_next_write = time.monotonic() + settings.FLYWHEEL_TOKEN_LAST_USED_SECONDS


def note(token_id: int) -> None:
    """Remember that a key was used now; hand the remembered uses to the writer when due."""
    global _next_write
    _pending[token_id] = time.time()
    if time.monotonic() < _next_write:
        return
    with _lock:
        if time.monotonic() < _next_write:
            return
        _next_write = time.monotonic() + settings.FLYWHEEL_TOKEN_LAST_USED_SECONDS
    _writer.submit(_write_in_background)


def pending() -> dict[int, datetime]:
    """The uses noted and not yet written, taken (they will not be written twice)."""
    with _lock:
        taken = dict(_pending)
        _pending.clear()
    return {token_id: datetime.fromtimestamp(at, UTC) for token_id, at in taken.items()}


def flush() -> list[int]:
    """Write the noted uses now; the ids of keys used for the first time."""
    return token_uses_record(uses=pending(), min_interval=settings.FLYWHEEL_TOKEN_LAST_USED_SECONDS)


def _write_in_background() -> None:
    try:
        flush()
    except Exception:  # noqa: BLE001 - a lost last-used time must not take the process down
        log.exception("token.last_used_write_failed")
    finally:
        connection.close()  # this thread's own connection; the next write opens another
