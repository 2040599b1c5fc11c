"""The norm table in use, and platform norms recomputed from the population.

Norms live in three layers: the table and its arithmetic (`domain/norms.py`,
pure), the stored tables and the population query (`repo/norms.py`, SQL), and
this use case: which table is in use, adopting tables other replicas stored and
recomputing on a schedule.

The service starts from the versioned norms file. `recompute` gathers one value
per session and metric from the last `lookback` (age at the session, child),
lets `norms.platform_norms` replace provisional bands that enough distinct
children played, and stores the resulting table as a new version when it
differs from the one in use. Every replica picks the newest stored table up
within `norms_refresh_s`. Stored session results keep the z-scores of their
ingestion; reads re-norm them on the fly when the table version differs
(`norms.renorm_result`), so a new table applies to all history at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from services.analytics.domain.norms import (
    NormTable,
    accumulate_population,
    platform_band_count,
    platform_norms,
    table_from_json,
)
from services.analytics.metrics import AnalyticsMetrics
from services.analytics.repo import norms as repo
from services.common.db import Database, in_transaction
from services.common.tasks import BackgroundTask

log = structlog.get_logger("avatario.analytics.norms")


@dataclass(frozen=True)
class RenormResult:
    stored: bool
    version: str
    platform_bands: int
    children: int


class Norms:
    """Holds the current table; replaced atomically (readers take `.table` once)."""

    def __init__(self, base: NormTable) -> None:
        self.base = base
        self.table = base

    @property
    def version(self) -> str:
        return self.table.version

    async def refresh(self, db: Database) -> bool:
        """Adopt the newest stored table built on the same file norms; True if it changed."""
        async with db.session() as s:
            latest = await repo.latest_norms(s)
        if latest is None or latest.base_version != self.base.version:
            return False
        if latest.version == self.table.version:
            return False
        self.table = table_from_json(latest.table_json)
        log.info("norms.adopted", version=self.table.version,
                 platform_bands=latest.platform_bands)
        return True

    async def recompute(self, db: Database, *, min_children: int, lookback: timedelta,
                        now: datetime) -> RenormResult:
        since = now - lookback
        rows = []
        children: set[str] = set()
        async with db.session() as s:
            async for game_id, metric, age, child_id, value in repo.population(s, since):
                if self.base.has(game_id, metric):
                    rows.append((game_id, metric, age, child_id, value))
                    children.add(child_id)
        table = platform_norms(accumulate_population(rows), self.base, min_children=min_children,
                               version=f"{self.base.version}+platform.{now:%Y%m%dT%H%M%S%fZ}")
        bands = platform_band_count(table)
        current = self.table
        unchanged = table.entries == current.entries or (bands == 0 and current is self.base)
        if unchanged:
            return RenormResult(False, current.version, bands, len(children))
        text = json.dumps(table.to_json(), separators=(",", ":"))
        await in_transaction(db, lambda s: repo.store_norms(
            s, version=table.version, base_version=self.base.version, platform_bands=bands,
            table_json=text, now=now))
        self.table = table
        log.info("norms.stored", version=table.version, platform_bands=bands,
                 children=len(children))
        return RenormResult(True, table.version, bands, len(children))


class NormsKeeper:
    """Background task: adopt tables other replicas stored; recompute on a schedule."""

    def __init__(self, norms: Norms, db: Database, metrics: AnalyticsMetrics, *,
                 refresh_s: float, renorm_s: float, min_children: int, lookback: timedelta,
                 clock: Callable[[], datetime]) -> None:
        self.norms, self.db, self.metrics = norms, db, metrics
        self.refresh_s, self.renorm_s = refresh_s, renorm_s
        self.min_children, self.lookback, self.clock = min_children, lookback, clock
        self._worker = BackgroundTask(self.run, "norms-keeper")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_renorm = loop.time() + self.renorm_s
        while True:
            await asyncio.sleep(self.refresh_s if not self.renorm_s
                                else max(0.0, min(self.refresh_s, next_renorm - loop.time())))
            try:
                await self.norms.refresh(self.db)
                if self.renorm_s and loop.time() >= next_renorm:
                    next_renorm = loop.time() + self.renorm_s
                    result = await self.norms.recompute(
                        self.db, min_children=self.min_children, lookback=self.lookback,
                        now=self.clock())
                    self.metrics.renorms.labels("stored" if result.stored else "unchanged").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving with the current table
                log.warning("norms.refresh_failed", error=type(exc).__name__,
                            detail=str(exc)[:200])

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        await self._worker.stop()
