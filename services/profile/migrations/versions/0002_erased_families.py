"""Erased-family tombstones: the id and time of every erasure, nothing personal.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-14

Kept outside the family's data so erasures can be replayed after a restore from
a backup taken before them. Plain CREATE TABLE / CREATE INDEX: valid on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_families",
        sa.Column("family_id", sa.String(36), nullable=False),
        sa.Column("erased_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("family_id", name=op.f("pk_erased_families")),
    )
    op.create_index(op.f("ix_erased_families_erased_at"), "erased_families", ["erased_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_erased_families_erased_at"), table_name="erased_families")
    op.drop_table("erased_families")
