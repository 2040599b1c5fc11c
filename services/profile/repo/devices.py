"""Device pairing: single-use pairing codes and device credentials."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import NotFound, Reason, Unauthenticated
from services.common.pagination import Page, PageRequest, time_page
from services.profile import tokens
from services.profile.domain import rules
from services.profile.models import Device, PairingCode, new_id
from services.profile.repo.base import (
    audit,
    device_actor,
    get_child,
    get_parent,
    get_scoped,
    parent_actor,
    require_consent,
    require_family,
)

# Unknown, expired and used codes answer the same, so codes cannot be probed.
CODE_REJECTED = "pairing code is unknown, expired or already used"


async def create_pairing_code(
    session: AsyncSession, *, family_id: str, child_id: str, parent_id: str,
    hasher: tokens.Hasher, ttl: timedelta, now: datetime,
) -> tuple[str, datetime]:
    """A new code for the child; returns (code, expires_at). Only its hash is stored.

    A hash collision with another live code raises IntegrityError, and the
    transaction retry draws a new code.
    """
    await get_parent(session, family_id, parent_id)
    await get_child(session, family_id, child_id)
    await require_consent(session, family_id, rules.CHILD_DATA_SCOPE)
    code = tokens.new_pairing_code()
    row = PairingCode(
        id=new_id(), family_id=family_id, child_id=child_id, created_by=parent_id,
        code_hash=hasher.code(code), created_at=now, expires_at=now + ttl,
    )
    session.add(row)
    await session.flush()
    audit(session, family_id=family_id, actor=parent_actor(parent_id),
          action="pairing_code.created", target_id=child_id, now=now,
          details={"pairing_code_id": row.id, "expires_at": row.expires_at.isoformat()})
    return code, row.expires_at


async def redeem_pairing_code(
    session: AsyncSession, *, code: str, device_name: str, hasher: tokens.Hasher,
    now: datetime,
) -> tuple[Device, str]:
    """Exchange a live code for a device bound to its child; returns (device, token).

    The code is consumed by one conditional UPDATE, so of two concurrent
    redemptions exactly one succeeds.
    """
    claimed = (await session.execute(
        update(PairingCode)
        .where(PairingCode.code_hash == hasher.code(code), PairingCode.used_at.is_(None),
               PairingCode.expires_at > now)
        .values(used_at=now)
        .returning(PairingCode.family_id, PairingCode.child_id, PairingCode.id)
    )).first()
    if claimed is None:
        raise NotFound("pairing_code", CODE_REJECTED)
    family_id, child_id, code_id = claimed
    await require_consent(session, family_id, rules.CHILD_DATA_SCOPE)
    token = tokens.new_device_token()
    device = Device(
        id=new_id(), family_id=family_id, child_id=child_id, name=device_name,
        token_hash=hasher.device_token(token), paired_at=now,
    )
    session.add(device)
    await session.flush()
    audit(session, family_id=family_id, actor=device_actor(device.id), action="device.paired",
          target_id=device.id, now=now, details={"child_id": child_id, "pairing_code_id": code_id})
    return device, token


async def authenticate_device(
    session: AsyncSession, *, token: str, hasher: tokens.Hasher,
) -> Device:
    if not tokens.looks_like_device_token(token):
        raise Unauthenticated("invalid device credential", reason=Reason.DEVICE_CREDENTIAL_INVALID)
    device = (await session.execute(
        select(Device).where(Device.token_hash == hasher.device_token(token))
    )).scalar_one_or_none()
    if device is None or device.revoked_at is not None:
        raise Unauthenticated("invalid device credential", reason=Reason.DEVICE_CREDENTIAL_INVALID)
    # A device acts for a child: once the family withdraws consent to keep child
    # profiles, no device of the family signs in (FAILED_PRECONDITION, CONSENT_REQUIRED).
    await require_consent(session, device.family_id, rules.CHILD_DATA_SCOPE)
    return device


async def list_devices(session: AsyncSession, family_id: str, page: PageRequest) -> Page:
    await require_family(session, family_id)
    stmt = select(Device).where(Device.family_id == family_id)
    return await time_page(session, stmt, Device.paired_at, Device.id, page)


async def revoke_device(
    session: AsyncSession, *, family_id: str, device_id: str, parent_id: str, now: datetime,
) -> Device:
    """Idempotent: revoking a revoked device returns it unchanged."""
    await get_parent(session, family_id, parent_id)
    device = await get_scoped(session, Device, family_id, device_id, "device", for_update=True)
    if device.revoked_at is None:
        device.revoked_at = now
        audit(session, family_id=family_id, actor=parent_actor(parent_id),
              action="device.revoked", target_id=device.id, now=now,
              details={"child_id": device.child_id})
    return device
