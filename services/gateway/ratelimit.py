"""Token buckets per key, and a cap on concurrent streams per key.

In-process state: one gateway instance enforces its own share. Behind N
replicas, divide the configured rates by N (or accept N times the burst).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from services.common.errors import ResourceExhausted


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """`rate` tokens per second, at most `burst` saved up, one bucket per key.

    The least recently used buckets are dropped beyond `max_keys` (a dropped
    bucket comes back full, so memory stays bounded at the cost of a little
    leniency towards very many distinct keys).
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def try_acquire(self, key: str, cost: float = 1.0) -> float:
        """0.0 when allowed; otherwise the seconds until `cost` tokens are there."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def acquire(self, key: str, what: str = "requests") -> None:
        """Raise RESOURCE_EXHAUSTED (with RetryInfo) when over the limit."""
        wait = self.try_acquire(key)
        if wait > 0:
            raise ResourceExhausted(f"too many {what}; retry later", retry_after_s=wait)

    def __len__(self) -> int:
        return len(self._buckets)


class StreamLimiter:
    """At most `limit` concurrent streams per key."""

    def __init__(self, limit: int, *, retry_after_s: float = 2.0) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._active: dict[str, int] = {}

    def active(self, key: str | None = None) -> int:
        if key is None:
            return sum(self._active.values())
        return self._active.get(key, 0)

    @contextmanager
    def slot(self, key: str) -> Iterator[None]:
        n = self._active.get(key, 0)
        if n >= self.limit:
            raise ResourceExhausted(
                f"at most {self.limit} chat streams at a time; retry when one ends",
                retry_after_s=self.retry_after_s,
            )
        self._active[key] = n + 1
        try:
            yield
        finally:
            left = self._active[key] - 1
            if left:
                self._active[key] = left
            else:
                del self._active[key]
