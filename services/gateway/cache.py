"""A small time-bounded cache for derived context (the chat assistant's child
summary): entries live `ttl_s` seconds, at most `max_entries` of them; callers
evict what they know changed (new play data, erasure)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class TtlCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._items: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[1] <= self.clock():
            del self._items[key]
            return None
        return hit[0]

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        self._items[key] = (value, self.clock() + self.ttl_s)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def evict(self, match: Callable[[Hashable], bool]) -> None:
        for key in [k for k in self._items if match(k)]:
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)
