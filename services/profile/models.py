"""Profile tables. Every table carries family_id, so export, erasure and the
"no row refers to the family" check are one WHERE clause per table.

Ids are string UUIDs the service generates. Enum columns hold the proto enum
numbers (stable by the contract's compatibility rules). Timestamps are UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import UTCDateTime, make_metadata

ID = String(36)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = make_metadata()


def _family_fk() -> Mapped[str]:
    return mapped_column(ID, ForeignKey("families.id", ondelete="CASCADE"), nullable=False)


def _child_fk() -> Mapped[str]:
    return mapped_column(ID, ForeignKey("children.id", ondelete="CASCADE"), nullable=False)


class Family(Base):
    __tablename__ = "families"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Parent(Base):
    __tablename__ = "parents"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    # Case-folded; unique.
    email: Mapped[str] = mapped_column(String(254), nullable=False, unique=True)
    display_name: Mapped[str] = mapped_column(String(80), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # FamilyRole number: 1 owner (exactly one per family), 2 parent.
    role: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))

    __table_args__ = (
        Index(None, "family_id", "created_at", "id"),
        # At most one owner per family.
        Index("uq_parents_family_owner", "family_id", unique=True,
              postgresql_where=text("role = 1"), sqlite_where=text("role = 1")),
    )


class FamilyInvite(Base):
    """An invitation for another adult to join the family; single use, expiring."""

    __tablename__ = "family_invites"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    created_by: Mapped[str] = mapped_column(ID, nullable=False)
    # HMAC-SHA-256 of the normalized code (hex); the code itself is never stored.
    code_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_by: Mapped[str | None] = mapped_column(ID, nullable=True)

    __table_args__ = (Index(None, "family_id", "created_at", "id"),)


class Consent(Base):
    __tablename__ = "consents"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    # Who gave it. Not a foreign key: the record names the parent even after they
    # left the family (and their account was erased).
    parent_id: Mapped[str] = mapped_column(ID, nullable=False)
    scope: Mapped[int] = mapped_column(Integer, nullable=False)
    policy_version: Mapped[str] = mapped_column(String(32), nullable=False)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    withdrawn_by: Mapped[str | None] = mapped_column(ID, nullable=True)

    __table_args__ = (
        Index(None, "family_id", "granted_at", "id"),
        # At most one active consent per family and scope.
        Index(
            "uq_consents_active_scope", "family_id", "scope", unique=True,
            postgresql_where=text("withdrawn_at IS NULL"),
            sqlite_where=text("withdrawn_at IS NULL"),
        ),
    )


class Child(Base):
    __tablename__ = "children"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    nickname: Mapped[str] = mapped_column(String(40), nullable=False)
    birth_year: Mapped[int] = mapped_column(Integer, nullable=False)
    birth_month: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index(None, "family_id", "created_at", "id"),)


class Avatar(Base):
    __tablename__ = "avatars"

    child_id: Mapped[str] = mapped_column(
        ID, ForeignKey("children.id", ondelete="CASCADE"), primary_key=True
    )
    family_id: Mapped[str] = _family_fk()
    xp: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class AvatarEquippedItem(Base):
    __tablename__ = "avatar_equipped_items"

    child_id: Mapped[str] = mapped_column(
        ID, ForeignKey("avatars.child_id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = _family_fk()
    # Position in the request, so the avatar lists items as they were chosen.
    position: Mapped[int] = mapped_column(Integer, nullable=False)


class XpAward(Base):
    __tablename__ = "xp_awards"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    child_id: Mapped[str] = _child_fk()
    source_id: Mapped[str] = mapped_column(String(128), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    awarded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("child_id", "source_id"),
        Index(None, "family_id"),
    )


class PairingCode(Base):
    __tablename__ = "pairing_codes"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    child_id: Mapped[str] = _child_fk()
    created_by: Mapped[str] = mapped_column(ID, nullable=False)
    # HMAC-SHA-256 of the normalized code (hex); the code itself is never stored.
    code_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index(None, "family_id"), Index(None, "child_id"))


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    child_id: Mapped[str] = _child_fk()
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    # HMAC-SHA-256 of the device token (hex).
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    paired_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index(None, "family_id", "paired_at", "id"), Index(None, "child_id"))


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    child_id: Mapped[str] = _child_fk()
    title: Mapped[str] = mapped_column(String(120), nullable=False, default="")
    turn_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The parent who started it; NULL for conversations from before families had
    # several parents (visible to every parent). Not a foreign key: a parent who
    # leaves keeps their id on the conversations they shared.
    owner_parent_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    # Readable by the family's other parents.
    shared: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    __table_args__ = (
        Index(None, "family_id", "created_at", "id"),
        Index(None, "child_id"),
    )


class ChatMessage(Base):
    __tablename__ = "chat_messages"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    conversation_id: Mapped[str] = mapped_column(
        ID, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    turn_id: Mapped[str] = mapped_column(ID, nullable=False)
    # Order within the conversation: 2 * turn index (+1 for the reply).
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    finish_reason: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    complete: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("turn_id", "role"),
        UniqueConstraint("conversation_id", "seq"),
        Index(None, "family_id"),
    )


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family_fk()
    actor: Mapped[str] = mapped_column(String(80), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    # JSON object of short strings; never personal data or secrets.
    details: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index(None, "family_id", "occurred_at", "id"),)


class ErasedFamily(Base):
    """A tombstone per erased family: its id and when it was (last) erased, nothing
    personal. Not part of the family's data (no foreign key, not in ERASE_ORDER): it
    outlives the erasure so an operator can replay erasures after restoring a backup
    that predates them (`python -m services.profile erased-families` / `replay-erasures`)."""

    __tablename__ = "erased_families"

    family_id: Mapped[str] = mapped_column(ID, primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


metadata = Base.metadata

# Delete order for erasure: dependants first (children of FKs before parents).
# ErasedFamily is deliberately absent: the tombstone survives the erasure.
ERASE_ORDER: tuple[type[Base], ...] = (
    ChatMessage, Conversation, Device, PairingCode, XpAward, AvatarEquippedItem, Avatar,
    Consent, Child, AuditEvent, FamilyInvite, Parent, Family,
)

# What erasing one child deletes, dependants first; every one has child_id but
# messages (found through their conversations) and the child row itself (id).
CHILD_ERASE_ORDER: tuple[type[Base], ...] = (
    ChatMessage, Conversation, Device, PairingCode, XpAward, AvatarEquippedItem, Avatar, Child,
)
