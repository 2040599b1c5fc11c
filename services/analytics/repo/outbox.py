"""The worker's side of the XP outbox: claim due awards, count, purge.

Claiming pushes `next_attempt_at` forward by a lease, so another replica (or
the next poll) does not send the same award while this one is in flight; on
PostgreSQL the claim skips rows another worker has locked. Sending twice would
still be harmless (profile applies a source id once), it only costs a call.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.analytics.models import XpOutbox
from services.analytics.repo.ingest import DONE, PENDING, Award


async def claim_due(session: AsyncSession, now: datetime, limit: int,
                    lease: timedelta) -> list[Award]:
    stmt = (select(XpOutbox.source_id, XpOutbox.family_id, XpOutbox.child_id, XpOutbox.amount,
                   XpOutbox.reason, XpOutbox.attempts)
            .where(XpOutbox.status == PENDING, XpOutbox.next_attempt_at <= now)
            .order_by(XpOutbox.next_attempt_at).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    awards = [Award(*row) for row in (await session.execute(stmt)).all()]
    if awards:
        await session.execute(update(XpOutbox).where(
            XpOutbox.source_id.in_([a.source_id for a in awards]))
            .values(next_attempt_at=now + lease))
    return awards


async def pending_count(session: AsyncSession) -> int:
    return (await session.execute(
        select(func.count()).select_from(XpOutbox).where(XpOutbox.status == PENDING)
    )).scalar_one()


async def purge_delivered(session: AsyncSession, before: datetime) -> int:
    """Forget delivered awards older than `before` (abandoned ones stay for operators)."""
    result = await session.execute(delete(XpOutbox).where(
        XpOutbox.status == DONE, XpOutbox.done_at < before))
    return result.rowcount or 0
