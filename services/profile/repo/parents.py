"""Families, parents and consent records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import insert_ignore
from services.common.errors import Aborted, AlreadyExists, NotFound
from services.profile.domain.enums import ConsentScope, FamilyRole
from services.profile.models import Consent, Family, Parent, new_id
from services.profile.repo.base import (
    audit,
    get_parent,
    parent_actor,
    require_family,
)


async def create_parent(
    session: AsyncSession, *, email: str, display_name: str, password_hash: str, now: datetime,
    family_id: str | None = None, role: FamilyRole = FamilyRole.FAMILY_ROLE_OWNER,
) -> Parent:
    """A parent with a new family of their own (the owner), or, with `family_id`, a
    parent joining that (existing, locked) family. `email` is already normalized
    (case-folded)."""
    parent_id = new_id()
    if family_id is None:
        family_id = new_id()
        session.add(Family(id=family_id, created_at=now))
        await session.flush()
    inserted = await insert_ignore(session, Parent, dict(
        id=parent_id, family_id=family_id, email=email, display_name=display_name,
        password_hash=password_hash, created_at=now, password_changed_at=now, role=int(role),
    ), ["email"])
    if not inserted:
        # The transaction rolls back, family included.
        raise AlreadyExists("a parent with this email already exists")
    action = "parent.created" if role == FamilyRole.FAMILY_ROLE_OWNER else "parent.joined"
    audit(session, family_id=family_id, actor=parent_actor(parent_id), action=action,
          target_id=parent_id, now=now)
    return await get_parent(session, family_id, parent_id)


async def find_by_email(session: AsyncSession, email: str) -> Parent | None:
    return (await session.execute(select(Parent).where(Parent.email == email))).scalar_one_or_none()


async def store_rehash(session: AsyncSession, parent_id: str, old_hash: str, new_hash: str) -> None:
    """Replace a hash made with old parameters, unless it changed meanwhile."""
    await session.execute(
        update(Parent).where(Parent.id == parent_id, Parent.password_hash == old_hash)
        .values(password_hash=new_hash)
    )


async def set_password(
    session: AsyncSession, parent: Parent, *, old_hash: str, new_hash: str, now: datetime,
) -> None:
    """Store a new hash if the verified one is still current (no lost update)."""
    result = await session.execute(
        update(Parent).where(Parent.id == parent.id, Parent.password_hash == old_hash)
        .values(password_hash=new_hash, password_changed_at=now)
    )
    if result.rowcount != 1:
        raise Aborted("the password changed meanwhile; retry")
    audit(session, family_id=parent.family_id, actor=parent_actor(parent.id),
          action="parent.password_changed", target_id=parent.id, now=now)


# -- consent ----------------------------------------------------------------------


async def record_consent(
    session: AsyncSession, *, family_id: str, parent_id: str, scopes: list[int],
    policy_version: str, now: datetime,
) -> list[Consent]:
    """Record consent for each scope. Already active under the same policy
    version: kept as is (idempotent). Active under another version: withdrawn
    and replaced by a new record, so the history shows which version applied."""
    await get_parent(session, family_id, parent_id)
    out: list[Consent] = []
    for scope in scopes:
        current = (await session.execute(
            select(Consent).where(Consent.family_id == family_id, Consent.scope == scope,
                                  Consent.withdrawn_at.is_(None)).with_for_update()
        )).scalar_one_or_none()
        if current is not None and current.policy_version == policy_version:
            out.append(current)
            continue
        if current is not None:
            current.withdrawn_at = now
            current.withdrawn_by = parent_id
            await session.flush()
        consent = Consent(
            id=new_id(), family_id=family_id, parent_id=parent_id, scope=scope,
            policy_version=policy_version, granted_at=now,
        )
        session.add(consent)
        await session.flush()
        audit(session, family_id=family_id, actor=parent_actor(parent_id),
              action="consent.recorded", target_id=consent.id, now=now,
              details={"scope": ConsentScope(scope).name,
                       "policy_version": policy_version})
        out.append(consent)
    return out


async def withdraw_consent(
    session: AsyncSession, *, family_id: str, parent_id: str, scope: int, now: datetime,
) -> Consent:
    await get_parent(session, family_id, parent_id)
    current = (await session.execute(
        select(Consent).where(Consent.family_id == family_id, Consent.scope == scope,
                              Consent.withdrawn_at.is_(None)).with_for_update()
    )).scalar_one_or_none()
    if current is None:
        raise NotFound("consent", f"no active consent for {ConsentScope(scope).name}")
    current.withdrawn_at = now
    current.withdrawn_by = parent_id
    audit(session, family_id=family_id, actor=parent_actor(parent_id),
          action="consent.withdrawn", target_id=current.id, now=now,
          details={"scope": ConsentScope(scope).name})
    return current


async def list_consents(
    session: AsyncSession, family_id: str, *, include_withdrawn: bool,
) -> list[Consent]:
    await require_family(session, family_id)
    stmt = select(Consent).where(Consent.family_id == family_id)
    if not include_withdrawn:
        stmt = stmt.where(Consent.withdrawn_at.is_(None))
    stmt = stmt.order_by(Consent.granted_at, Consent.id)
    return list((await session.execute(stmt)).scalars().all())
