"""Initial profile schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Plain CREATE TABLE / CREATE INDEX statements, valid on both SQLite and
PostgreSQL (later revisions that alter tables use op.batch_alter_table, which
env.py enables for SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id(name: str = "id", **kw) -> sa.Column:
    return sa.Column(name, sa.String(36), nullable=False, **kw)


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, ref: str) -> sa.ForeignKeyConstraint:
    ref_table, ref_col = ref.split(".")
    return sa.ForeignKeyConstraint(
        [column], [ref], name=op.f(f"fk_{table}_{column}_{ref_table}"), ondelete="CASCADE"
    )


def _family(table: str) -> tuple[sa.Column, sa.ForeignKeyConstraint]:
    return _id("family_id"), _fk(table, "family_id", "families.id")


def _pk(table: str, *cols: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*(cols or ("id",)), name=op.f(f"pk_{table}"))


def _uq(table: str, *cols: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*cols, name=op.f(f"uq_{table}_{'_'.join(cols)}"))


def _ix(table: str, *cols: str) -> None:
    op.create_index(op.f(f"ix_{table}_{cols[0]}"), table, list(cols), unique=False)


def upgrade() -> None:
    op.create_table("families", _id(), _ts("created_at"), _pk("families"))

    t = "audit_events"
    op.create_table(
        t, _id(), *_family(t),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        _ts("occurred_at"), _pk(t),
    )
    _ix(t, "family_id", "occurred_at", "id")

    t = "children"
    op.create_table(
        t, _id(), *_family(t),
        sa.Column("nickname", sa.String(40), nullable=False),
        sa.Column("birth_year", sa.Integer(), nullable=False),
        sa.Column("birth_month", sa.Integer(), nullable=False),
        _ts("created_at"), _ts("updated_at"), _pk(t),
    )
    _ix(t, "family_id", "created_at", "id")

    t = "parents"
    op.create_table(
        t, _id(), *_family(t),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("display_name", sa.String(80), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _ts("created_at"), _ts("password_changed_at"), _pk(t), _uq(t, "email"),
    )
    _ix(t, "family_id", "created_at", "id")

    t = "avatars"
    op.create_table(
        t, _id("child_id"), *_family(t),
        sa.Column("xp", sa.BigInteger(), nullable=False),
        _ts("updated_at"), _fk(t, "child_id", "children.id"), _pk(t, "child_id"),
    )

    t = "consents"
    op.create_table(
        t, _id(), *_family(t), _id("parent_id"),
        sa.Column("scope", sa.Integer(), nullable=False),
        sa.Column("policy_version", sa.String(32), nullable=False),
        _ts("granted_at"), _ts("withdrawn_at", nullable=True),
        sa.Column("withdrawn_by", sa.String(36), nullable=True),
        _fk(t, "parent_id", "parents.id"), _pk(t),
    )
    _ix(t, "family_id", "granted_at", "id")
    op.create_index(
        "uq_consents_active_scope", t, ["family_id", "scope"], unique=True,
        postgresql_where=sa.text("withdrawn_at IS NULL"),
        sqlite_where=sa.text("withdrawn_at IS NULL"),
    )

    t = "conversations"
    op.create_table(
        t, _id(), *_family(t), _id("child_id"),
        sa.Column("title", sa.String(120), nullable=False),
        sa.Column("turn_count", sa.Integer(), nullable=False),
        _ts("created_at"), _ts("updated_at"), _fk(t, "child_id", "children.id"), _pk(t),
    )
    _ix(t, "child_id")
    _ix(t, "family_id", "created_at", "id")

    t = "devices"
    op.create_table(
        t, _id(), *_family(t), _id("child_id"),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _ts("paired_at"), _ts("revoked_at", nullable=True),
        _fk(t, "child_id", "children.id"), _pk(t), _uq(t, "token_hash"),
    )
    _ix(t, "child_id")
    _ix(t, "family_id", "paired_at", "id")

    t = "pairing_codes"
    op.create_table(
        t, _id(), *_family(t), _id("child_id"), _id("created_by"),
        sa.Column("code_hash", sa.String(64), nullable=False),
        _ts("created_at"), _ts("expires_at"), _ts("used_at", nullable=True),
        _fk(t, "child_id", "children.id"), _pk(t), _uq(t, "code_hash"),
    )
    _ix(t, "child_id")
    _ix(t, "family_id")

    t = "xp_awards"
    op.create_table(
        t, _id(), *_family(t), _id("child_id"),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        _ts("awarded_at"), _fk(t, "child_id", "children.id"), _pk(t),
        _uq(t, "child_id", "source_id"),
    )
    _ix(t, "family_id")

    t = "avatar_equipped_items"
    op.create_table(
        t, _id("child_id"),
        sa.Column("item_id", sa.String(64), nullable=False),
        *_family(t),
        sa.Column("position", sa.Integer(), nullable=False),
        _fk(t, "child_id", "avatars.child_id"), _pk(t, "child_id", "item_id"),
    )

    t = "chat_messages"
    op.create_table(
        t, _id(), *_family(t), _id("conversation_id"), _id("turn_id"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("finish_reason", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        _ts("created_at"), _fk(t, "conversation_id", "conversations.id"), _pk(t),
        _uq(t, "conversation_id", "seq"), _uq(t, "turn_id", "role"),
    )
    _ix(t, "family_id")


def downgrade() -> None:
    for table in (
        "chat_messages", "avatar_equipped_items", "xp_awards", "pairing_codes", "devices",
        "conversations", "consents", "avatars", "parents", "children", "audit_events",
        "families",
    ):
        op.drop_table(table)
