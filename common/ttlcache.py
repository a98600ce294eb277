"""A small per-process cache whose entries expire after a few seconds."""

import threading
import time
from collections.abc import Hashable


class TTLCache:
    """Remembers values for `ttl` seconds, at most `max_entries` of them. Used for reads
    that every API request repeats (token, project) and that may be this much out of date
    on other workers; the writing worker clears its own entries at once."""

    def __init__(self, ttl: float, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: dict[Hashable, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable):
        entry = self._data.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def set(self, key: Hashable, value) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
