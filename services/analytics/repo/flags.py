"""Flag states: what the store remembers between evaluations.

Flags are evaluated from the data on every read; the stored state only keeps a
flag's first_seen_at stable while it stays active (the domain's value moves
with its window) and records when it was resolved. A flag that comes back
after being resolved starts afresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.analytics.domain.types import Flag
from services.analytics.models import FlagState
from services.common.db import insert_ignore


def with_stable_first_seen(flags: Sequence[Flag], states: Mapping[str, FlagState],
                           as_of: datetime) -> tuple[Flag, ...]:
    """Flags whose active stored state began earlier keep that first_seen_at."""
    out = []
    for f in flags:
        s = states.get(f.flag_id)
        if s is not None and s.resolved_at is None and s.first_seen_at <= min(f.first_seen_at, as_of):
            f = replace(f, first_seen_at=s.first_seen_at)
        out.append(f)
    return tuple(out)


def needs_update(flags: Sequence[Flag], states: Mapping[str, FlagState]) -> bool:
    current = {f.flag_id: f for f in flags}
    for f in flags:
        s = states.get(f.flag_id)
        if s is None or s.resolved_at is not None or s.level != f.level.value:
            return True
    return any(s.resolved_at is None and fid not in current for fid, s in states.items())


async def record_flags(session: AsyncSession, family_id: str, child_id: str,
                       flags: Sequence[Flag], now: datetime) -> None:
    """Bring the stored states in line with the current flags (evaluated at now)."""
    states = {s.flag_id: s for s in (await session.execute(
        select(FlagState).where(FlagState.child_id == child_id).with_for_update())).scalars()}
    current = {f.flag_id for f in flags}
    for f in flags:
        s = states.get(f.flag_id)
        if s is None:
            await insert_ignore(session, FlagState, dict(
                flag_id=f.flag_id, child_id=child_id, family_id=family_id, kind=f.kind.value,
                domain=f.domain.value, level=f.level.value, first_seen_at=f.first_seen_at,
                updated_at=now, resolved_at=None), ["flag_id"])
        elif s.resolved_at is not None:
            s.first_seen_at, s.resolved_at, s.level, s.updated_at = (
                f.first_seen_at, None, f.level.value, now)
        elif s.level != f.level.value:
            s.level, s.updated_at = f.level.value, now
    for fid, s in states.items():
        if fid not in current and s.resolved_at is None:
            s.resolved_at, s.updated_at = now, now
