"""Sign-ins and their refresh tokens (each function takes the session; the caller
owns the transaction)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from services.gateway.models import RefreshToken, SignIn


async def add_sign_in(session: AsyncSession, parent_id: str, family_id: str,
                      now: datetime) -> SignIn:
    sign_in = SignIn(id=str(uuid.uuid4()), parent_id=parent_id, family_id=family_id,
                     created_at=now)
    session.add(sign_in)
    await session.flush()
    return sign_in


def add_refresh(session: AsyncSession, sign_in_id: str, token_hash: str, now: datetime,
                expires_at: datetime) -> None:
    session.add(RefreshToken(id=str(uuid.uuid4()), sign_in_id=sign_in_id,
                             token_hash=token_hash, issued_at=now, expires_at=expires_at))


async def find_refresh(session: AsyncSession, token_hash: str) -> tuple[RefreshToken, SignIn] | None:
    row = (await session.execute(
        select(RefreshToken, SignIn).join(SignIn, SignIn.id == RefreshToken.sign_in_id)
        .where(RefreshToken.token_hash == token_hash)
    )).first()
    return None if row is None else (row[0], row[1])


async def claim_refresh(session: AsyncSession, token_id: str, now: datetime) -> bool:
    """Mark an unused refresh token used; False when it already was (a race)."""
    return (await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )).rowcount == 1


async def live_sign_in(session: AsyncSession, sign_in_id: str) -> SignIn | None:
    return (await session.execute(
        select(SignIn).where(SignIn.id == sign_in_id, SignIn.revoked_at.is_(None))
    )).scalar_one_or_none()


# Which sign-ins a revocation covers.
def sign_in_is(sign_in_id: str) -> ColumnElement[bool]:
    return SignIn.id == sign_in_id


def parents_sign_ins(parent_id: str, among: list[str] | None = None) -> ColumnElement[bool]:
    where = SignIn.parent_id == parent_id
    return where if among is None else SignIn.id.in_(among) & where


def family_sign_ins(family_id: str) -> ColumnElement[bool]:
    return SignIn.family_id == family_id


async def revoke_sign_ins(session: AsyncSession, where: ColumnElement[bool], reason: str,
                          now: datetime) -> list[str]:
    ids = list((await session.execute(
        select(SignIn.id).where(where, SignIn.revoked_at.is_(None))
    )).scalars().all())
    if ids:
        await session.execute(
            update(SignIn).where(SignIn.id.in_(ids)).values(revoked_at=now, revoked_reason=reason)
        )
    return ids


async def revoked_since(session: AsyncSession, since: datetime) -> list[str]:
    return list((await session.execute(
        select(SignIn.id).where(SignIn.revoked_at.is_not(None), SignIn.revoked_at >= since)
    )).scalars().all())


async def purge(session: AsyncSession, now: datetime, keep_revoked: timedelta) -> int:
    """Drop expired refresh tokens and sign-ins nothing can use any more."""
    n = (await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < now))).rowcount
    live = select(RefreshToken.sign_in_id)
    n += (await session.execute(delete(SignIn).where(
        SignIn.id.not_in(live),
        (SignIn.revoked_at < now - keep_revoked) | SignIn.revoked_at.is_(None),
        SignIn.created_at < now - keep_revoked,
    ))).rowcount
    return n or 0
