"""Audit log listing, family export, family erasure and erased-family tombstones."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import insert_ignore
from services.common.pagination import Page, PageRequest, time_page
from services.common.timeutil import utcnow
from services.profile import models as m
from services.profile.repo.base import (
    audit,
    get_parent,
    parent_actor,
    require_family,
)


async def list_audit_events(session: AsyncSession, family_id: str, page: PageRequest) -> Page:
    """Newest first."""
    await require_family(session, family_id)
    stmt = select(m.AuditEvent).where(m.AuditEvent.family_id == family_id)
    return await time_page(session, stmt, m.AuditEvent.occurred_at, m.AuditEvent.id, page,
                           desc=True)


@dataclass
class FamilyData:
    family: m.Family
    parents: list[m.Parent]
    consents: list[m.Consent]
    children: list[m.Child]
    avatars: list[m.Avatar]
    equipped: dict[str, list[str]]
    xp_awards: list[m.XpAward]
    devices: list[m.Device]
    conversations: list[m.Conversation]
    messages: list[m.ChatMessage]
    audit_events: list[m.AuditEvent]


async def export_family(
    session: AsyncSession, *, family_id: str, parent_id: str, now: datetime,
) -> FamilyData:
    """Everything profile holds about the family. The export itself is audited
    first, so the export contains its own audit event."""
    family = await require_family(session, family_id)
    await get_parent(session, family_id, parent_id)
    audit(session, family_id=family_id, actor=parent_actor(parent_id), action="family.exported",
          target_id=family_id, now=now)
    await session.flush()

    async def rows(model, *order) -> list:
        stmt = select(model).where(model.family_id == family_id).order_by(*order)
        return list((await session.execute(stmt)).scalars().all())

    equipped: dict[str, list[str]] = {}
    for item in await rows(m.AvatarEquippedItem, m.AvatarEquippedItem.child_id,
                           m.AvatarEquippedItem.position):
        equipped.setdefault(item.child_id, []).append(item.item_id)
    return FamilyData(
        family=family,
        parents=await rows(m.Parent, m.Parent.created_at, m.Parent.id),
        consents=await rows(m.Consent, m.Consent.granted_at, m.Consent.id),
        children=await rows(m.Child, m.Child.created_at, m.Child.id),
        avatars=await rows(m.Avatar, m.Avatar.child_id),
        equipped=equipped,
        xp_awards=await rows(m.XpAward, m.XpAward.awarded_at, m.XpAward.id),
        devices=await rows(m.Device, m.Device.paired_at, m.Device.id),
        conversations=await rows(m.Conversation, m.Conversation.created_at, m.Conversation.id),
        messages=await rows(m.ChatMessage, m.ChatMessage.conversation_id, m.ChatMessage.seq),
        audit_events=await rows(m.AuditEvent, m.AuditEvent.occurred_at, m.AuditEvent.id),
    )


@dataclass
class Erasure:
    deleted_rows: dict[str, int] = field(default_factory=dict)
    child_ids: list[str] = field(default_factory=list)
    conversation_ids: list[str] = field(default_factory=list)


async def erase_family(session: AsyncSession, family_id: str, *,
                       now: datetime | None = None) -> Erasure:
    """Hard-delete every row of the family, table by table (dependants first),
    in the caller's transaction. Counts are exact; nothing relies on cascades.

    The family row is locked first: a concurrent insert that refers to the
    family waits, then fails its foreign key once the family is gone.

    In the same transaction the family's tombstone (id and time, nothing
    personal) is written, or its time updated when a restored backup brought
    an erased family back and it is erased again."""
    await require_family(session, family_id, for_update=True)
    await session.merge(m.ErasedFamily(family_id=family_id, erased_at=now or utcnow()))
    out = Erasure()
    out.child_ids = list((await session.execute(
        select(m.Child.id).where(m.Child.family_id == family_id).order_by(m.Child.id)
    )).scalars().all())
    out.conversation_ids = list((await session.execute(
        select(m.Conversation.id).where(m.Conversation.family_id == family_id)
        .order_by(m.Conversation.id)
    )).scalars().all())
    for model in m.ERASE_ORDER:
        column = model.id if model is m.Family else model.family_id  # type: ignore[attr-defined]
        result = await session.execute(
            delete(model).where(column == family_id).execution_options(synchronize_session=False)
        )
        out.deleted_rows[model.__tablename__] = result.rowcount
    return out


# -- tombstones -------------------------------------------------------------------


async def list_erased_families(session: AsyncSession, *,
                               since: datetime | None = None) -> list[m.ErasedFamily]:
    """Tombstones, oldest erasure first; `since` keeps those erased at or after it."""
    stmt = select(m.ErasedFamily).order_by(m.ErasedFamily.erased_at, m.ErasedFamily.family_id)
    if since is not None:
        stmt = stmt.where(m.ErasedFamily.erased_at >= since)
    return list((await session.execute(stmt)).scalars().all())


async def keep_tombstone(session: AsyncSession, family_id: str, now: datetime) -> bool:
    """Record that `family_id` was erased unless already recorded (a restore can
    lose tombstones written after its backup); True if it was missing."""
    return await insert_ignore(session, m.ErasedFamily,
                               {"family_id": family_id, "erased_at": now}, ["family_id"])


async def family_exists(session: AsyncSession, family_id: str) -> bool:
    return await session.get(m.Family, family_id) is not None
