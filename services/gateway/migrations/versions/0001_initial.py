"""Initial gateway schema: sign-ins (refresh-token families) and refresh tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sign_ins",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("parent_id", sa.String(36), nullable=False),
        sa.Column("family_id", sa.String(36), nullable=False),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_ins")),
    )
    op.create_index(op.f("ix_sign_ins_parent_id"), "sign_ins", ["parent_id"])
    op.create_index(op.f("ix_sign_ins_family_id"), "sign_ins", ["family_id"])
    op.create_index(op.f("ix_sign_ins_revoked_at"), "sign_ins", ["revoked_at"])
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("sign_in_id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _ts("issued_at"),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.ForeignKeyConstraint(
            ["sign_in_id"], ["sign_ins.id"], name=op.f("fk_refresh_tokens_sign_in_id_sign_ins"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    op.create_index(op.f("ix_refresh_tokens_expires_at"), "refresh_tokens", ["expires_at"])
    op.create_index(
        op.f("ix_refresh_tokens_sign_in_id"), "refresh_tokens", ["sign_in_id", "issued_at"]
    )


def downgrade() -> None:
    op.drop_table("refresh_tokens")
    op.drop_table("sign_ins")
