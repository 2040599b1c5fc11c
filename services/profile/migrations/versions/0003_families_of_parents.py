"""Families with several parents: parent roles, family invites, conversation owners.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10

Every existing parent becomes its family's owner (each family had exactly one);
existing conversations get no owner, so every parent of the family keeps seeing
them. Consent records lose their foreign key to parents: a record names the
parent who gave it even after that parent left the family and their account was
erased (the key cascaded, so erasing a former parent's account would have
deleted the family's consent history). On SQLite that one change rebuilds the
consents table (batch mode); its partial unique index is dropped first and made
again after, so it keeps its WHERE clause.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


_ACTIVE_SCOPE = dict(postgresql_where=sa.text("withdrawn_at IS NULL"),
                     sqlite_where=sa.text("withdrawn_at IS NULL"))


def upgrade() -> None:
    op.drop_index("uq_consents_active_scope", table_name="consents")
    with op.batch_alter_table("consents") as batch:
        batch.drop_constraint("fk_consents_parent_id_parents", type_="foreignkey")
    op.create_index("uq_consents_active_scope", "consents", ["family_id", "scope"],
                    unique=True, **_ACTIVE_SCOPE)

    op.add_column("parents", sa.Column("role", sa.Integer(), nullable=False,
                                       server_default=sa.text("1")))
    op.create_index("uq_parents_family_owner", "parents", ["family_id"], unique=True,
                    postgresql_where=sa.text("role = 1"), sqlite_where=sa.text("role = 1"))

    op.add_column("conversations", sa.Column("owner_parent_id", sa.String(36), nullable=True))
    op.add_column("conversations", sa.Column("shared", sa.Boolean(), nullable=False,
                                             server_default=sa.text("false")))

    t = "family_invites"
    op.create_table(
        t,
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("family_id", sa.String(36), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("used_by", sa.String(36), nullable=True),
        sa.ForeignKeyConstraint(["family_id"], ["families.id"],
                                name=op.f("fk_family_invites_family_id_families"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_family_invites")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_family_invites_code_hash")),
    )
    op.create_index(op.f("ix_family_invites_family_id"), t,
                    ["family_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_family_invites_family_id"), table_name="family_invites")
    op.drop_table("family_invites")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("shared")
        batch.drop_column("owner_parent_id")
    op.drop_index("uq_parents_family_owner", table_name="parents")
    with op.batch_alter_table("parents") as batch:
        batch.drop_column("role")
    op.drop_index("uq_consents_active_scope", table_name="consents")
    with op.batch_alter_table("consents") as batch:
        batch.create_foreign_key("fk_consents_parent_id_parents", "parents", ["parent_id"],
                                 ["id"], ondelete="CASCADE")
    op.create_index("uq_consents_active_scope", "consents", ["family_id", "scope"],
                    unique=True, **_ACTIVE_SCOPE)
