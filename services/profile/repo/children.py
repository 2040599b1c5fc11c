"""Children, avatars and XP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import insert_ignore
from services.common.errors import AlreadyExists
from services.common.pagination import Page, PageRequest, time_page
from services.common.validation import Violations
from services.profile.domain import rules
from services.profile.domain.catalog import DEFAULT_ITEMS
from services.profile.domain.rules import CHILD_DATA_SCOPE
from services.profile.models import Avatar, AvatarEquippedItem, Child, XpAward, new_id
from services.profile.repo.base import (
    audit,
    get_child,
    get_parent,
    parent_actor,
    require_consent,
    require_family,
    service_actor,
)


@dataclass(frozen=True)
class AvatarState:
    avatar: Avatar
    item_ids: list[str]


async def create_child(
    session: AsyncSession, *, family_id: str, parent_id: str, nickname: str, birth_year: int,
    birth_month: int, now: datetime,
) -> Child:
    await get_parent(session, family_id, parent_id)
    await require_consent(session, family_id, CHILD_DATA_SCOPE)
    child = Child(
        id=new_id(), family_id=family_id, nickname=nickname, birth_year=birth_year,
        birth_month=birth_month, created_at=now, updated_at=now,
    )
    session.add(child)
    await session.flush()
    session.add(Avatar(child_id=child.id, family_id=family_id, xp=0, updated_at=now))
    await session.flush()
    session.add_all(
        AvatarEquippedItem(child_id=child.id, item_id=item_id, family_id=family_id, position=i)
        for i, item_id in enumerate(DEFAULT_ITEMS)
    )
    audit(session, family_id=family_id, actor=parent_actor(parent_id), action="child.created",
          target_id=child.id, now=now)
    return child


async def list_children(session: AsyncSession, family_id: str, page: PageRequest) -> Page:
    await require_family(session, family_id)
    stmt = select(Child).where(Child.family_id == family_id)
    return await time_page(session, stmt, Child.created_at, Child.id, page)


async def update_child(
    session: AsyncSession, *, family_id: str, child_id: str, parent_id: str | None, caller: str,
    nickname: str | None, birth_year: int | None, birth_month: int | None, now: datetime,
) -> Child:
    """Audited as the acting parent when one is named (it must belong to the family),
    else as the calling service."""
    if parent_id:
        await get_parent(session, family_id, parent_id)
        actor = parent_actor(parent_id)
    else:
        actor = service_actor(caller)
    child = await get_child(session, family_id, child_id)
    await require_consent(session, family_id, CHILD_DATA_SCOPE)
    changed: list[str] = []
    if birth_year is not None or birth_month is not None:
        year = child.birth_year if birth_year is None else birth_year
        month = child.birth_month if birth_month is None else birth_month
        # The age rule applies at the time the child was added (created_at <= now,
        # so a valid date is never in the future).
        v = Violations()
        rules.check_birth(v, year, month, child.created_at)
        v.raise_if_any()
        if year != child.birth_year:
            changed.append("birth_year")
        if month != child.birth_month:
            changed.append("birth_month")
        child.birth_year, child.birth_month = year, month
    if nickname is not None and nickname != child.nickname:
        child.nickname = nickname
        changed.append("nickname")
    if changed:
        child.updated_at = now
        audit(session, family_id=family_id, actor=actor, action="child.updated",
              target_id=child.id, now=now, details={"fields": ",".join(changed)})
    return child


# -- avatar -------------------------------------------------------------------------


async def load_avatar(session: AsyncSession, family_id: str, child_id: str) -> AvatarState:
    """The child's avatar and what it wears (NOT_FOUND for another family's child)."""
    await get_child(session, family_id, child_id)
    avatar = (await session.execute(
        select(Avatar).where(Avatar.child_id == child_id)
    )).scalar_one()
    return AvatarState(avatar, await equipped_ids(session, child_id))


async def equipped_ids(session: AsyncSession, child_id: str) -> list[str]:
    stmt = (select(AvatarEquippedItem.item_id).where(AvatarEquippedItem.child_id == child_id)
            .order_by(AvatarEquippedItem.position))
    return list((await session.execute(stmt)).scalars().all())


async def lock_avatar(session: AsyncSession, family_id: str, child_id: str) -> Avatar:
    """The child's avatar row, locked so a concurrent customize or award sees a
    settled level (child-data consent required)."""
    await get_child(session, family_id, child_id)
    await require_consent(session, family_id, CHILD_DATA_SCOPE)
    return (await session.execute(
        select(Avatar).where(Avatar.child_id == child_id).with_for_update()
    )).scalar_one()


async def dress(session: AsyncSession, avatar: Avatar, item_ids: list[str],
                now: datetime) -> AvatarState:
    """Replace what the (locked) avatar wears, in this order."""
    await session.execute(delete(AvatarEquippedItem).where(
        AvatarEquippedItem.child_id == avatar.child_id))
    session.add_all(
        AvatarEquippedItem(child_id=avatar.child_id, item_id=item_id,
                           family_id=avatar.family_id, position=i)
        for i, item_id in enumerate(item_ids)
    )
    avatar.updated_at = now
    await session.flush()
    return AvatarState(avatar, list(item_ids))


async def add_xp_once(
    session: AsyncSession, *, family_id: str, child_id: str, amount: int, source_id: str,
    reason: str, now: datetime,
) -> int | None:
    """Add XP once per (child, source_id); the avatar's new XP, or None when the
    source id was already awarded (with the same amount; another is ALREADY_EXISTS).

    The award row is inserted first with ON CONFLICT DO NOTHING: of two
    concurrent awards with one source id exactly one inserts (the other waits
    for it on PostgreSQL and then finds the row), and only the inserter adds
    XP, with an atomic `xp = xp + amount`.
    """
    await get_child(session, family_id, child_id)
    await require_consent(session, family_id, CHILD_DATA_SCOPE)
    inserted = await insert_ignore(session, XpAward, dict(
        id=new_id(), family_id=family_id, child_id=child_id, source_id=source_id,
        amount=amount, reason=reason, awarded_at=now,
    ), ["child_id", "source_id"])
    if not inserted:
        existing = (await session.execute(
            select(XpAward).where(XpAward.child_id == child_id, XpAward.source_id == source_id)
        )).scalar_one()
        if existing.amount != amount:
            raise AlreadyExists(
                f"source_id {source_id!r} was already awarded with a different amount"
            )
        return None
    return (await session.execute(
        update(Avatar).where(Avatar.child_id == child_id)
        .values(xp=Avatar.xp + amount, updated_at=now).returning(Avatar.xp)
    )).scalar_one()


async def list_xp_awards(session: AsyncSession, family_id: str) -> list[XpAward]:
    stmt = (select(XpAward).where(XpAward.family_id == family_id)
            .order_by(XpAward.awarded_at, XpAward.id))
    return list((await session.execute(stmt)).scalars().all())
