"""Shared repository helpers: scoped lookups, the consent rule, audit events,
keyset pages, conflict-tolerant inserts and transaction retries.

Every function takes the AsyncSession it works in; callers own transactions.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import NotFound, consent_required
from services.profile.domain.enums import ConsentScope
from services.profile.models import AuditEvent, Base, Child, Consent, Family, Parent, new_id

T = TypeVar("T")
M = TypeVar("M", bound=Base)


# -- scoped lookups: an id from another family is NOT_FOUND ---------------------


async def get_scoped(
    session: AsyncSession, model: type[M], family_id: str, obj_id: str, what: str,
    *, for_update: bool = False,
) -> M:
    stmt = select(model).where(model.id == obj_id, model.family_id == family_id)  # type: ignore[attr-defined]
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound(what)
    return row


async def require_family(
    session: AsyncSession, family_id: str, *, for_update: bool = False,
) -> Family:
    """The family row; for_update locks it, so (on PostgreSQL) no concurrent
    transaction can add rows that refer to it until this one ends."""
    family = await session.get(Family, family_id, with_for_update=for_update)
    if family is None:
        raise NotFound("family")
    return family


async def get_parent(session: AsyncSession, family_id: str, parent_id: str) -> Parent:
    return await get_scoped(session, Parent, family_id, parent_id, "parent")


async def get_child(session: AsyncSession, family_id: str, child_id: str) -> Child:
    return await get_scoped(session, Child, family_id, child_id, "child")


# -- consent --------------------------------------------------------------------


async def active_consent(session: AsyncSession, family_id: str, scope: int) -> Consent | None:
    stmt = select(Consent).where(
        Consent.family_id == family_id, Consent.scope == scope, Consent.withdrawn_at.is_(None)
    )
    return (await session.execute(stmt)).scalars().first()


async def require_consent(session: AsyncSession, family_id: str, scope: int) -> None:
    if await active_consent(session, family_id, scope) is None:
        raise consent_required(ConsentScope(scope).name)


# -- audit ----------------------------------------------------------------------


def parent_actor(parent_id: str) -> str:
    return f"parent:{parent_id}"


def device_actor(device_id: str) -> str:
    return f"device:{device_id}"


def service_actor(caller: str) -> str:
    return f"service:{caller or 'unknown'}"


def audit(
    session: AsyncSession, *, family_id: str, actor: str, action: str, target_id: str = "",
    now: datetime, details: dict[str, str] | None = None,
) -> AuditEvent:
    """Add an audit event to the session (same transaction as the action).

    Details are short strings that identify nothing personal: ids, counts,
    field names, enum names. Never emails, nicknames, messages or secrets.
    """
    event = AuditEvent(
        id=new_id(), family_id=family_id, actor=actor, action=action, target_id=target_id,
        details=json.dumps(details or {}, sort_keys=True), occurred_at=now,
    )
    session.add(event)
    return event


