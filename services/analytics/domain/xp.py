"""XP awards through profile: tried at once, retried from the outbox until profile answers.

A valid session (or check-in) writes its award to `xp_outbox` in the same
transaction that stores it, so an award is never lost. After the commit the
request tries profile's AwardXp once with a short deadline; if that fails the
row stays pending and the background worker retries it with exponential
backoff (with jitter) until profile answers. Profile applies a source id
("session:<uuid>") once, so a retry after a lost answer never doubles XP.

Profile's answers that will not change on retry (the child or family is gone,
consent withdrawn, a bad request) mark the award abandoned, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from services.analytics.metrics import AnalyticsMetrics
from services.analytics.repo import outbox as repo
from services.analytics.repo.ingest import ABANDONED, DONE, PENDING, Award, set_xp_status
from services.common.db import Database, in_transaction, read
from services.common.tasks import BackgroundTask

log = structlog.get_logger("avatario.analytics.xp")

PURGE_EVERY_S = 3600.0


class XpReceiver(Protocol):
    """Who takes the awards (clients.profile.ProfileClient)."""

    deadline_s: float

    async def award_xp(self, award: Award) -> tuple[str, str]:
        """(status, error): DONE, PENDING (retry later) or ABANDONED."""
        ...


@dataclass(frozen=True)
class Backoff:
    initial_s: float
    max_s: float

    def delay(self, attempt: int, rng: random.Random) -> timedelta:
        """Delay before attempt `attempt + 1` (attempt >= 1), +-20 % jitter."""
        base = min(self.max_s, self.initial_s * 2 ** min(attempt - 1, 30))
        return timedelta(seconds=base * rng.uniform(0.8, 1.2))


class XpOutbox:
    def __init__(self, db: Database, profile: XpReceiver, metrics: AnalyticsMetrics, *,
                 backoff: Backoff, poll_s: float, batch: int, retention: timedelta,
                 clock: Callable[[], datetime]) -> None:
        self.db = db
        self.profile = profile
        self.metrics = metrics
        self.backoff = backoff
        self.poll_s = poll_s
        self.batch = batch
        self.retention = retention
        self.clock = clock
        self.lease = timedelta(seconds=max(30.0, 4 * profile.deadline_s))
        self._rng = random.Random()
        self._wake = asyncio.Event()
        self._worker = BackgroundTask(self.run, "xp-outbox")

    async def try_now(self, award: Award) -> bool:
        """Try the award once after the commit; True while it is still pending. The
        submission is stored either way, so a failure here only leaves it to the outbox."""
        try:
            return await self.deliver(award, inline=True)
        except Exception as exc:  # noqa: BLE001 - the outbox retries it
            log.warning("xp.inline_failed", source_id=award.source_id, error=type(exc).__name__)
            return True

    async def deliver(self, award: Award, attempts_before: int = 0, *,
                      inline: bool = False) -> bool:
        """Try one award now; record the outcome. True while it is still pending.

        inline: the request path's first try; a failure then records nothing (the
        row's first retry time is already set), which spares a transaction per
        session while profile is down.
        """
        status, error = await self.profile.award_xp(award)
        if inline and status == PENDING:
            self.metrics.xp_deliveries.labels("retry").inc()
            log.debug("xp.retry_later", source_id=award.source_id, reason=error, attempt=1)
            return True
        now = self.clock()
        next_at = now + self.backoff.delay(attempts_before + 1, self._rng) if status == PENDING else None
        await in_transaction(self.db, lambda s: set_xp_status(
            s, award.source_id, status, now, error=error, next_attempt_at=next_at))
        self.metrics.xp_deliveries.labels({DONE: "done", PENDING: "retry",
                                           ABANDONED: "abandoned"}[status]).inc()
        if status == ABANDONED:
            log.warning("xp.abandoned", source_id=award.source_id, reason=error)
        elif status == PENDING:
            attempt = attempts_before + 1
            # Profile being down is visible on the gauge; log every 10th attempt loudly.
            (log.warning if attempt % 10 == 0 else log.debug)(
                "xp.retry_later", source_id=award.source_id, reason=error, attempt=attempt)
        return status == PENDING

    async def drain_once(self) -> int:
        """Send every due award once (a batch at a time); returns how many were tried."""
        now = self.clock()
        claimed = await in_transaction(self.db, lambda s: repo.claim_due(
            s, now, self.batch, self.lease))
        if claimed:
            await asyncio.gather(*(self.deliver(a, a.attempts) for a in claimed))
        await self.refresh_gauge()
        return len(claimed)

    async def refresh_gauge(self) -> None:
        self.metrics.xp_outbox_pending.set(await read(self.db, repo.pending_count))

    async def purge(self) -> int:
        before = self.clock() - self.retention
        return await in_transaction(self.db, lambda s: repo.purge_delivered(s, before))

    def nudge(self) -> None:
        """Look at the outbox now instead of at the next poll (tests, a new pending award)."""
        self._wake.set()

    async def run(self) -> None:
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                while await self.drain_once() >= self.batch:
                    pass
                if loop.time() - last_purge >= PURGE_EVERY_S:
                    purged = await self.purge()
                    last_purge = loop.time()
                    if purged:
                        log.info("xp.purged", rows=purged)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a bad moment
                log.warning("xp.outbox_failed", error=type(exc).__name__, detail=str(exc)[:200])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        await self._worker.stop()
