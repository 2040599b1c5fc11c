"""Audit log listing, family export, family erasure and erased-family tombstones."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import insert_ignore
from services.common.pagination import Page, PageRequest, time_page
from services.common.timeutil import utcnow
from services.profile import models as m
from services.profile.repo import chat
from services.profile.repo.base import (
    audit,
    get_child,
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


# -- export: one page of one kind of record at a time ---------------------------------

# Kind -> (model, time column, id column), read in this order; the family's own
# row comes first, messages follow their conversation.
SECTIONS: dict[str, tuple[type[m.Base], Any, Any]] = {
    "parent": (m.Parent, m.Parent.created_at, m.Parent.id),
    "consent": (m.Consent, m.Consent.granted_at, m.Consent.id),
    "invite": (m.FamilyInvite, m.FamilyInvite.created_at, m.FamilyInvite.id),
    "child": (m.Child, m.Child.created_at, m.Child.id),
    "avatar": (m.Avatar, m.Avatar.updated_at, m.Avatar.child_id),
    "xp_award": (m.XpAward, m.XpAward.awarded_at, m.XpAward.id),
    "pairing": (m.PairingCode, m.PairingCode.created_at, m.PairingCode.id),
    "device": (m.Device, m.Device.paired_at, m.Device.id),
    "conversation": (m.Conversation, m.Conversation.created_at, m.Conversation.id),
    "audit_event": (m.AuditEvent, m.AuditEvent.occurred_at, m.AuditEvent.id),
}


async def begin_export(session: AsyncSession, *, family_id: str, parent_id: str,
                       now: datetime) -> m.Family:
    """Audit the export (before anything is read, so the export holds its own event)."""
    family = await require_family(session, family_id)
    await get_parent(session, family_id, parent_id)
    audit(session, family_id=family_id, actor=parent_actor(parent_id), action="family.exported",
          target_id=family_id, now=now)
    return family


async def export_page(session: AsyncSession, family_id: str, kind: str, page: PageRequest, *,
                      viewer: str) -> Page:
    """One page of the family's records of `kind`, oldest first (keyset on time, id);
    conversations only those `viewer` may read."""
    model, t_col, id_col = SECTIONS[kind]
    stmt = select(model).where(model.family_id == family_id)  # type: ignore[attr-defined]
    if model is m.Conversation:
        stmt = chat.visible_to(stmt, viewer)
    return await time_page(session, stmt, t_col, id_col, page)


async def equipped_items(session: AsyncSession, child_ids: list[str]) -> dict[str, list[str]]:
    stmt = (select(m.AvatarEquippedItem).where(m.AvatarEquippedItem.child_id.in_(child_ids))
            .order_by(m.AvatarEquippedItem.child_id, m.AvatarEquippedItem.position))
    out: dict[str, list[str]] = {}
    for item in (await session.execute(stmt)).scalars():
        out.setdefault(item.child_id, []).append(item.item_id)
    return out


async def messages_after(session: AsyncSession, conversation_id: str, after_seq: int,
                         limit: int) -> list[m.ChatMessage]:
    stmt = (select(m.ChatMessage).where(m.ChatMessage.conversation_id == conversation_id,
                                        m.ChatMessage.seq > after_seq)
            .order_by(m.ChatMessage.seq).limit(limit))
    return list((await session.execute(stmt)).scalars().all())


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


@dataclass
class ChildErasure:
    deleted_rows: dict[str, int] = field(default_factory=dict)
    conversation_ids: list[str] = field(default_factory=list)
    device_ids: list[str] = field(default_factory=list)


async def erase_child(session: AsyncSession, *, family_id: str, child_id: str, parent_id: str,
                      now: datetime) -> ChildErasure:
    """Hard-delete one child and every row that names it (avatar, XP, pairing codes,
    devices, conversations and their messages, and the audit events about the child
    or those objects), counted per table; the rest of the family is untouched.

    The family row is locked first (as for a family erasure), so a concurrent write
    that refers to the child waits and then fails its foreign key. The erasure is
    audited without the child's id: afterwards no row of profile names the child."""
    await require_family(session, family_id, for_update=True)
    await get_parent(session, family_id, parent_id)
    await get_child(session, family_id, child_id)
    out = ChildErasure()

    async def ids(model) -> list[str]:
        return list((await session.execute(
            select(model.id).where(model.child_id == child_id).order_by(model.id)
        )).scalars().all())

    out.conversation_ids = await ids(m.Conversation)
    out.device_ids = await ids(m.Device)
    named = [child_id, *out.conversation_ids, *out.device_ids, *await ids(m.PairingCode)]
    for model in m.CHILD_ERASE_ORDER:
        if model is m.ChatMessage:
            where = m.ChatMessage.conversation_id.in_(out.conversation_ids)
        elif model is m.Child:
            where = m.Child.id == child_id
        else:
            where = model.child_id == child_id  # type: ignore[attr-defined]
        result = await session.execute(
            delete(model).where(where).execution_options(synchronize_session=False))
        out.deleted_rows[model.__tablename__] = result.rowcount
    # Audit events whose target or details name the child or its objects (ids are
    # UUIDs: a substring match on details cannot hit anything else).
    result = await session.execute(
        delete(m.AuditEvent).where(
            m.AuditEvent.family_id == family_id,
            or_(m.AuditEvent.target_id.in_(named),
                *(m.AuditEvent.details.contains(i) for i in named)))
        .execution_options(synchronize_session=False))
    out.deleted_rows[m.AuditEvent.__tablename__] = result.rowcount
    audit(session, family_id=family_id, actor=parent_actor(parent_id), action="child.deleted",
          now=now, details={"rows": str(sum(out.deleted_rows.values()))})
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
