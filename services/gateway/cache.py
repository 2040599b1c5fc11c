"""The gateway's small time-bounded caches, on `cachetools.TTLCache`: entries live `ttl_s`
seconds, at most `max_entries` of them (the least recently used goes first); callers evict what
they know changed (new play data, erasure, a revoked device). A TTL of 0 or less disables caching.
The clock is injectable (tests); it is monotonic by default."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import TTLCache


class TtlCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._items: TTLCache[Hashable, Any] = TTLCache(max_entries, max(ttl_s, 0.0), timer=clock)

    def get(self, key: Hashable) -> Any | None:
        return self._items.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl_s > 0:
            self._items[key] = value

    def evict(self, match: Callable[[Hashable], bool]) -> None:
        """Drop the entries whose key matches."""
        self.evict_where(lambda key, _value: match(key))

    def evict_where(self, match: Callable[[Hashable, Any], bool]) -> None:
        """Drop the entries whose (key, value) matches."""
        for key, value in list(self._items.items()):
            if match(key, value):
                self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)
