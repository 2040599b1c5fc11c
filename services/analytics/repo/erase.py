"""Erasure: every row about a child (or every child of a family), counted per table.

Rows are found by child id (each table has it indexed, trials through their
session), so erasure does not scan the large tables. Erasing an unknown child
or family deletes nothing and succeeds (a retried erasure is harmless).
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.analytics.models import CHILD_TABLES, Child, GameSession, TrialRow


async def _erase(session: AsyncSession, child_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {m.__tablename__: 0 for m in CHILD_TABLES}
    if not child_ids:
        return counts
    for model in CHILD_TABLES:
        if model is TrialRow:
            sessions = select(GameSession.session_id).where(GameSession.child_id.in_(child_ids))
            stmt = delete(TrialRow).where(TrialRow.session_id.in_(sessions))
        else:
            stmt = delete(model).where(model.child_id.in_(child_ids))  # type: ignore[attr-defined]
        counts[model.__tablename__] = (await session.execute(stmt)).rowcount or 0
    return counts


async def erase_child(session: AsyncSession, child_id: str) -> dict[str, int]:
    return await _erase(session, [child_id])


async def erase_family(session: AsyncSession, family_id: str) -> dict[str, int]:
    ids = list((await session.execute(
        select(Child.child_id).where(Child.family_id == family_id))).scalars())
    return await _erase(session, ids)
