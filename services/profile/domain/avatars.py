"""The avatar use cases: what a child may wear at its level, and XP awarded once
with the level-up it causes. Rules from catalog and progression; rows through
repo/children (in the caller's transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.profile.domain import catalog, progression
from services.profile.repo import children as repo
from services.profile.repo.children import AvatarState


@dataclass(frozen=True)
class AwardResult:
    state: AvatarState
    applied: bool
    leveled_up: bool


def leveled_up(xp_after: int, amount: int) -> bool:
    return progression.level_for_xp(xp_after) > progression.level_for_xp(xp_after - amount)


async def customize_avatar(
    session: AsyncSession, *, family_id: str, child_id: str, item_ids: list[str], now: datetime,
) -> AvatarState:
    """Dress the avatar in `item_ids`: each unlocked at the avatar's level, slots
    within their limits (FAILED_PRECONDITION / INVALID_ARGUMENT otherwise)."""
    avatar = await repo.lock_avatar(session, family_id, child_id)
    items = catalog.check_outfit(item_ids, progression.level_for_xp(avatar.xp))
    return await repo.dress(session, avatar, [item.item_id for item in items], now)


async def award_xp(
    session: AsyncSession, *, family_id: str, child_id: str, amount: int, source_id: str,
    reason: str, now: datetime,
) -> AwardResult:
    """Add XP once per (child, source_id); a repeat applies nothing."""
    new_xp = await repo.add_xp_once(session, family_id=family_id, child_id=child_id,
                                    amount=amount, source_id=source_id, reason=reason, now=now)
    state = await repo.load_avatar(session, family_id, child_id)
    if new_xp is None:
        return AwardResult(state, False, False)
    return AwardResult(state, True, leveled_up(new_xp, amount))
