"""Families with several parents: the rules of who may do what, and the use cases
(invite, join, leave or remove, hand ownership on) over repo/members in the
caller's transaction.

Roles: one owner per family, any number of parents up to rules.MAX_PARENTS.
Every parent sees the children, their reports, the consents and the audit log;
a parent's conversations are private unless shared (repo/chat). Only the owner
erases the family, removes another parent or hands ownership on; a parent who
is not the owner may leave. docs/families.md tells it for parents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from services.profile import tokens
from services.profile.domain import rules
from services.profile.domain.enums import FamilyRole
from services.profile.models import FamilyInvite, Parent
from services.profile.repo import family as family_repo
from services.profile.repo import members as repo
from services.profile.repo import parents as parents_repo
from services.profile.repo.base import audit, get_parent, parent_actor

OWNER = FamilyRole.FAMILY_ROLE_OWNER
PARENT = FamilyRole.FAMILY_ROLE_PARENT

FAMILY_FULL = "FAMILY_FULL"
FAMILY_NOT_EMPTY = "FAMILY_NOT_EMPTY"
OWNER_CANNOT_LEAVE = "OWNER_CANNOT_LEAVE"


# -- rules (pure) -------------------------------------------------------------------


def is_owner(parent: Parent) -> bool:
    return parent.role == OWNER


def check_owner(actor: Parent, action: str) -> None:
    if not is_owner(actor):
        raise PermissionDenied(f"only the family's owner may {action}")


def check_room(parents: int) -> None:
    if parents >= rules.MAX_PARENTS:
        raise FailedPrecondition(
            f"a family has at most {rules.MAX_PARENTS} parents",
            violation_type=FAMILY_FULL, subject="family",
            metadata={"max_parents": str(rules.MAX_PARENTS)})


def check_remove(actor: Parent, target: Parent) -> None:
    """The owner removes anyone but themselves; any other parent only themselves."""
    if actor.id == target.id:
        if is_owner(actor):
            raise FailedPrecondition(
                "the owner cannot leave the family; hand ownership on first, or erase the family",
                violation_type=OWNER_CANNOT_LEAVE, subject="parent")
        return
    check_owner(actor, "remove another parent")


def check_transfer(actor: Parent, target: Parent) -> None:
    check_owner(actor, "hand ownership on")
    if target.id == actor.id:
        raise InvalidArgument.field("new_owner_parent_id", "is already the owner")


# -- use cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class NewInvite:
    code: str
    invite: FamilyInvite


async def create_invite(
    session: AsyncSession, *, family_id: str, parent_id: str, hasher: tokens.Hasher,
    ttl: timedelta, now: datetime,
) -> NewInvite:
    """A single-use code another adult joins the family with; only its hash is kept.
    A hash collision with another code raises IntegrityError and the transaction
    retry draws a new code."""
    await get_parent(session, family_id, parent_id)
    check_room(await repo.count_parents(session, family_id))
    code = tokens.new_pairing_code()
    invite = await repo.add_invite(session, family_id=family_id, parent_id=parent_id,
                                   code_hash=hasher.invite(code), now=now, expires_at=now + ttl)
    audit(session, family_id=family_id, actor=parent_actor(parent_id),
          action="family.invite_created", target_id=invite.id, now=now,
          details={"expires_at": invite.expires_at.isoformat()})
    return NewInvite(code, invite)


async def _claim(session: AsyncSession, code: str, hasher: tokens.Hasher,
                 now: datetime) -> FamilyInvite:
    invite = await repo.claim_invite(session, code_hash=hasher.invite(code), now=now)
    await repo.lock_family(session, invite.family_id)
    check_room(await repo.count_parents(session, invite.family_id))
    return invite


async def sign_up_with_invite(
    session: AsyncSession, *, code: str, hasher: tokens.Hasher, email: str, display_name: str,
    password_hash: str, now: datetime,
) -> Parent:
    """A new account that joins the inviting family as a parent (no family of its own)."""
    invite = await _claim(session, code, hasher, now)
    parent = await parents_repo.create_parent(
        session, email=email, display_name=display_name, password_hash=password_hash, now=now,
        family_id=invite.family_id, role=PARENT)
    invite.used_by = parent.id
    return parent


async def join_family(
    session: AsyncSession, *, family_id: str, parent_id: str, code: str,
    hasher: tokens.Hasher, now: datetime,
) -> tuple[Parent, str]:
    """An existing account joins the inviting family; its own family must be empty (no
    children, no other parent) and is erased. Returns (parent, the family left)."""
    parent = await get_parent(session, family_id, parent_id)
    invite = await _claim(session, code, hasher, now)
    if invite.family_id == family_id:
        raise AlreadyExists("you are already a parent of this family")
    await repo.lock_family(session, family_id)
    if await repo.count_children(session, family_id) or \
            await repo.count_parents(session, family_id) > 1:
        raise FailedPrecondition(
            "only an account whose family has no children and no other parent can join "
            "another family; erase it first",
            violation_type=FAMILY_NOT_EMPTY, subject="family")
    await repo.move_parent(session, parent, family_id=invite.family_id, role=PARENT)
    invite.used_by = parent.id
    audit(session, family_id=invite.family_id, actor=parent_actor(parent.id),
          action="parent.joined", target_id=parent.id, now=now,
          details={"invite_id": invite.id})
    await family_repo.erase_family(session, family_id, now=now)
    return parent, family_id


async def remove_parent(
    session: AsyncSession, *, family_id: str, parent_id: str, removed_parent_id: str,
    now: datetime,
) -> tuple[Parent, list[str]]:
    """The removed parent leaves with their account, into a new family of their own;
    their private conversations here are erased (their ids returned), the ones they
    shared stay. Consent records they gave keep naming them."""
    await repo.lock_family(session, family_id)
    actor = await get_parent(session, family_id, parent_id)
    target = await get_parent(session, family_id, removed_parent_id)
    check_remove(actor, target)
    erased = await repo.erase_private_conversations(session, family_id, target.id)
    own = await repo.new_family(session, now)
    await repo.move_parent(session, target, family_id=own.id, role=OWNER)
    audit(session, family_id=family_id, actor=parent_actor(actor.id),
          action="parent.left" if actor.id == target.id else "parent.removed",
          target_id=target.id, now=now, details={"conversations_erased": str(len(erased))})
    audit(session, family_id=own.id, actor=parent_actor(target.id), action="parent.created",
          target_id=target.id, now=now)
    return target, erased


async def transfer_ownership(
    session: AsyncSession, *, family_id: str, parent_id: str, new_owner_parent_id: str,
    now: datetime,
) -> list[Parent]:
    await repo.lock_family(session, family_id)
    actor = await get_parent(session, family_id, parent_id)
    target = await get_parent(session, family_id, new_owner_parent_id)
    check_transfer(actor, target)
    # One owner at any time (a unique index): step down first.
    await repo.set_role(session, actor.id, PARENT)
    await repo.set_role(session, target.id, OWNER)
    audit(session, family_id=family_id, actor=parent_actor(actor.id),
          action="family.ownership_transferred", target_id=target.id, now=now)
    parents = await repo.list_parents(session, family_id)
    for p in parents:
        await session.refresh(p)
    return parents


async def require_owner(session: AsyncSession, family_id: str, parent_id: str,
                        action: str) -> Parent:
    actor = await get_parent(session, family_id, parent_id)
    check_owner(actor, action)
    return actor
