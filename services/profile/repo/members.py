"""The parents of a family: invites, joining, leaving, roles.

SQL only; the rules (who may do what) are in services.profile.domain.members,
which calls these in one transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import NotFound
from services.profile.domain.enums import FamilyRole
from services.profile.models import (
    ChatMessage,
    Child,
    Conversation,
    Family,
    FamilyInvite,
    Parent,
    new_id,
)

# Unknown, expired and used codes answer the same, so codes cannot be probed.
INVITE_REJECTED = "family invite code is unknown, expired or already used"


async def list_parents(session: AsyncSession, family_id: str) -> list[Parent]:
    """Oldest first."""
    stmt = (select(Parent).where(Parent.family_id == family_id)
            .order_by(Parent.created_at, Parent.id))
    return list((await session.execute(stmt)).scalars().all())


async def count_parents(session: AsyncSession, family_id: str) -> int:
    return (await session.execute(
        select(func.count()).select_from(Parent).where(Parent.family_id == family_id)
    )).scalar_one()


async def count_children(session: AsyncSession, family_id: str) -> int:
    return (await session.execute(
        select(func.count()).select_from(Child).where(Child.family_id == family_id)
    )).scalar_one()


async def add_invite(
    session: AsyncSession, *, family_id: str, parent_id: str, code_hash: str, now: datetime,
    expires_at: datetime,
) -> FamilyInvite:
    invite = FamilyInvite(id=new_id(), family_id=family_id, created_by=parent_id,
                          code_hash=code_hash, created_at=now, expires_at=expires_at)
    session.add(invite)
    await session.flush()
    return invite


async def claim_invite(session: AsyncSession, *, code_hash: str, now: datetime) -> FamilyInvite:
    """Use a live invite up: one conditional UPDATE, so of two concurrent joins with
    one code exactly one gets it (the caller sets used_by). NOT_FOUND, the same for
    unknown, expired and used codes."""
    claimed = (await session.execute(
        update(FamilyInvite)
        .where(FamilyInvite.code_hash == code_hash, FamilyInvite.used_at.is_(None),
               FamilyInvite.expires_at > now)
        .values(used_at=now)
        .returning(FamilyInvite.id)
    )).scalar_one_or_none()
    if claimed is None:
        raise NotFound("family_invite", INVITE_REJECTED)
    return await session.get(FamilyInvite, claimed, populate_existing=True)


async def lock_family(session: AsyncSession, family_id: str) -> Family:
    """The family row, locked: membership changes of one family are serialized."""
    family = await session.get(Family, family_id, with_for_update=True)
    if family is None:
        raise NotFound("family")
    return family


async def move_parent(session: AsyncSession, parent: Parent, *, family_id: str,
                      role: FamilyRole) -> Parent:
    await session.execute(update(Parent).where(Parent.id == parent.id)
                          .values(family_id=family_id, role=int(role)))
    await session.refresh(parent)
    return parent


async def set_role(session: AsyncSession, parent_id: str, role: FamilyRole) -> None:
    await session.execute(update(Parent).where(Parent.id == parent_id).values(role=int(role)))
    await session.flush()


async def new_family(session: AsyncSession, now: datetime) -> Family:
    family = Family(id=new_id(), created_at=now)
    session.add(family)
    await session.flush()
    return family


async def erase_private_conversations(session: AsyncSession, family_id: str,
                                      parent_id: str) -> list[str]:
    """Delete the parent's private conversations in the family (and their messages);
    their ids. Shared ones stay with the family."""
    ids = list((await session.execute(
        select(Conversation.id).where(Conversation.family_id == family_id,
                                      Conversation.owner_parent_id == parent_id,
                                      Conversation.shared.is_(False))
        .order_by(Conversation.id)
    )).scalars().all())
    if ids:
        await session.execute(delete(ChatMessage).where(ChatMessage.conversation_id.in_(ids))
                              .execution_options(synchronize_session=False))
        await session.execute(delete(Conversation).where(Conversation.id.in_(ids))
                              .execution_options(synchronize_session=False))
    return ids
