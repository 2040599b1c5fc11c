"""Gateway tables: sign-ins (refresh-token families) and their refresh tokens.

A sign-in is one SignUp/SignIn and everything refreshed from it: revoking it
revokes every refresh token descended from that sign-in, and (through the
`sid` claim) every access token issued with them. Refresh tokens are stored as
SHA-256 hashes only (they are 256-bit random values, so a plain hash suffices).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import UTCDateTime, make_metadata

ID = String(36)


class Base(DeclarativeBase):
    metadata = make_metadata()


metadata = Base.metadata


class SignIn(Base):
    __tablename__ = "sign_ins"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    parent_id: Mapped[str] = mapped_column(ID, nullable=False, index=True)
    family_id: Mapped[str] = mapped_column(ID, nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # "sign_out", "reuse_detected", "password_changed", "family_erased", "parent_gone".
    revoked_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    sign_in_id: Mapped[str] = mapped_column(
        ID, ForeignKey("sign_ins.id", ondelete="CASCADE"), nullable=False
    )
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    # Set when the token was exchanged; presenting it again is reuse.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index(None, "sign_in_id", "issued_at"),)
