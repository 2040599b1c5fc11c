"""Stored norm tables (recomputed from the population) and the population query."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.analytics.models import GameSession, NormVersion, SessionMetric


async def latest_norms(session: AsyncSession) -> NormVersion | None:
    return (await session.execute(
        select(NormVersion).order_by(NormVersion.created_at.desc(), NormVersion.version.desc())
        .limit(1))).scalar_one_or_none()


async def store_norms(session: AsyncSession, *, version: str, base_version: str,
                      platform_bands: int, table_json: str, now: datetime) -> None:
    session.add(NormVersion(version=version, base_version=base_version, created_at=now,
                            platform_bands=platform_bands, table_json=table_json))


async def population(session: AsyncSession, since: datetime,
                     batch: int = 5000) -> AsyncIterator[tuple[str, str, int, str, float]]:
    """(game_id, metric, age_months, child_id, value) of every session since `since`."""
    stmt = (select(SessionMetric.game_id, SessionMetric.name, GameSession.age_months,
                   SessionMetric.child_id, SessionMetric.value)
            .join(GameSession, GameSession.session_id == SessionMetric.session_id)
            .where(SessionMetric.started_at > since)
            .execution_options(yield_per=batch))
    result = await session.stream(stmt)
    async for row in result:
        yield row.game_id, row.name, row.age_months, row.child_id, row.value
