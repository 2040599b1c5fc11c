"""Rate limits on the `limits` library, and a cap on concurrent streams per key.

`RateLimits` counts hits in a moving window (`limits.aio.strategies.
MovingWindowRateLimiter`): in process memory by default, or in Redis when
`rate_limit_url` names one, so that every gateway replica shares the counts.
A refusal is RESOURCE_EXHAUSTED with RetryInfo: the time until the oldest hit
of the full window leaves it (from the window stats).

When the shared storage fails (Redis down, timing out, refusing), the call is
counted in a per-replica in-memory window instead: the limits stay in force (each
replica enforces the full limit on its own, so N replicas admit at most N times
the limit) and no call fails because of the limiter. Every failure is counted in
`avatario_gateway_rate_limit_storage_errors_total`, the gauge
`avatario_gateway_rate_limit_degraded` is 1 while in fallback, and a warning is
logged when the fallback starts (and an info line when the shared storage is
back). Redis is tried again `retry_s` after the last failure, not on every call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common.errors import Reason, ResourceExhausted

log = structlog.get_logger("avatario.gateway.ratelimit")

SHARED_SCHEMES = ("redis", "rediss", "redis+unix")
MIN_RETRY_S = 0.05


def storage_uri(url: str) -> str | None:
    """The `limits` async storage URI for a configured URL; None for in-process memory.

    redis://host:port/db, rediss://... (TLS) and redis+unix:///path?db=0 are accepted,
    with or without the `async+` prefix; memory:// (or nothing) means no sharing."""
    url = url.strip()
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower().removeprefix("async+")
    if sep and scheme == "memory":
        return None
    if not sep or scheme not in SHARED_SCHEMES or not rest:
        raise ValueError("the rate limit storage URL must be memory:// or "
                         + ", ".join(f"{s}://..." for s in SHARED_SCHEMES))
    return f"async+{scheme}://{rest}"


def token_bucket_window(rate_per_s: float, burst: int) -> RateLimitItem:
    """`burst` hits per `burst / rate_per_s` seconds (at least 1 s): the long-run rate and
    the burst of a token bucket with that rate and size, as a moving window."""
    return RateLimitItemPerSecond(burst, max(1, round(burst / rate_per_s)))


def parse_limits(text: str) -> list[RateLimitItem]:
    """"5/minute;20/hour" -> its items (ValueError when the notation is wrong)."""
    items = parse_many(text)
    if not items:
        raise ValueError(f"no rate limit in {text!r}")
    return items


@dataclass(frozen=True)
class Limit:
    """A named limit: each of its items must admit a hit for the call to go on."""

    kind: str
    items: tuple[RateLimitItem, ...]
    what: str = "requests"

    @classmethod
    def of(cls, kind: str, items: Sequence[RateLimitItem], what: str = "requests") -> Limit:
        if not items:
            raise ValueError(f"limit {kind!r} has no items")
        return cls(kind, tuple(items), what)


class RateLimits:
    """Moving-window limits in memory or Redis, with a per-replica fallback (see above)."""

    def __init__(self, url: str | None = None, *, key_prefix: str = "avatario-gateway",
                 timeout_s: float = 0.5, retry_s: float = 5.0,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        uri = storage_uri(url or "")
        self._shared = None
        if uri is not None:
            storage = storage_from_string(
                uri, key_prefix=key_prefix, wrap_exceptions=True,
                connect_timeout=timeout_s, stream_timeout=timeout_s)
            self._shared = MovingWindowRateLimiter(storage)
        self.retry_s = retry_s
        self.clock = clock
        self._down_until: float | None = None
        self.errors = Counter(
            "avatario_gateway_rate_limit_storage_errors_total",
            "Rate limit checks the shared storage (Redis) failed; counted in memory instead.",
            registry=registry)
        self.degraded = Gauge(
            "avatario_gateway_rate_limit_degraded",
            "1 while rate limits are counted per replica because the shared storage failed.",
            registry=registry)

    @property
    def shared(self) -> bool:
        return self._shared is not None

    @property
    def in_fallback(self) -> bool:
        return self._down_until is not None

    async def hit(self, limit: Limit, key: str) -> None:
        """Count one call under `key`; RESOURCE_EXHAUSTED (with RetryInfo) when over."""
        if self._shared is None or (
                self._down_until is not None and self.clock() < self._down_until):
            await self._hit(self._memory, limit, key)
            return
        try:
            await self._hit(self._shared, limit, key)
        except ResourceExhausted:
            self._recovered()
            raise
        except Exception as exc:  # noqa: BLE001 - any storage failure: fall back, never INTERNAL
            self._failed(exc)
            await self._hit(self._memory, limit, key)
        else:
            self._recovered()

    @staticmethod
    async def _hit(limiter: MovingWindowRateLimiter, limit: Limit, key: str) -> None:
        for item in limit.items:
            if not await limiter.hit(item, limit.kind, key):
                stats = await limiter.get_window_stats(item, limit.kind, key)
                wait = max(stats.reset_time - time.time(), MIN_RETRY_S)
                raise ResourceExhausted(
                    f"too many {limit.what} (at most {item.amount} per {_window(item)}); "
                    f"retry in {math.ceil(wait)} s", retry_after_s=wait, reason=Reason.RATE_LIMITED,
                    metadata={"limit": limit.kind})

    def _failed(self, exc: Exception) -> None:
        self.errors.inc()
        if self._down_until is None:
            log.warning("ratelimit.storage_failed", error=type(exc).__name__,
                        fallback="per-replica memory", retry_in_s=self.retry_s)
        self._down_until = self.clock() + self.retry_s
        self.degraded.set(1)

    def _recovered(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            self.degraded.set(0)
            log.info("ratelimit.storage_recovered")

    async def close(self) -> None:
        """Drop the shared storage's connections (the server's on_stop hook)."""
        if self._shared is None:
            return
        try:
            pool = self._shared.storage.bridge.storage.connection_pool  # type: ignore[attr-defined]
            pool.disconnect()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.multiples} {unit}s" if item.multiples != 1 else unit


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
                retry_after_s=self.retry_after_s, reason=Reason.RATE_LIMITED,
                metadata={"limit": "chat_streams"},
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
