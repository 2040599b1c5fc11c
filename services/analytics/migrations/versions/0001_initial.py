"""Initial analytics schema.

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


def _id(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(36), nullable=nullable)


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def _int(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=False)


def _fk(table: str, column: str, ref: str) -> sa.ForeignKeyConstraint:
    ref_table = ref.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column], [ref], name=op.f(f"fk_{table}_{column}_{ref_table}"), ondelete="CASCADE"
    )


def _pk(table: str, *cols: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*cols, name=op.f(f"pk_{table}"))


def _child_of(table: str) -> list:
    return [_id("child_id"), _id("family_id"), _fk(table, "child_id", "children.child_id")]


def upgrade() -> None:
    op.create_table(
        "children",
        _id("child_id"), _id("family_id"), _int("birth_year"), _int("birth_month"),
        _ts("created_at"), _int("total_sessions"),
        sa.Column("total_play_seconds", sa.Float(), nullable=False),
        _ts("first_played_at", True), _ts("last_played_at", True), _int("longest_streak_days"),
        _int("current_run_days"),
        _pk("children", "child_id"),
    )
    op.create_index(op.f("ix_children_family_id"), "children", ["family_id"])

    op.create_table(
        "game_sessions",
        _id("session_id"), *_child_of("game_sessions"),
        sa.Column("game_id", sa.String(64), nullable=False), _int("game_version"),
        sa.Column("domain", sa.String(32), nullable=False),
        _ts("started_at"), _ts("ended_at"), _ts("received_at"), _int("age_months"),
        sa.Column("content_hash", sa.String(64), nullable=False),
        _int("trial_count"), _int("valid_trials"), _int("excluded_trials"), _int("xp_awarded"),
        sa.Column("norms_version", sa.String(128), nullable=False),
        _pk("game_sessions", "session_id"),
    )
    op.create_index(op.f("ix_game_sessions_child_id"), "game_sessions", ["child_id", "started_at"])
    op.create_index(op.f("ix_game_sessions_family_id"), "game_sessions", ["family_id"])

    op.create_table(
        "trials",
        _id("session_id"), _int("trial_index"), _id("child_id"), _id("family_id"),
        sa.Column("stimulus", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("responded", sa.Boolean(), nullable=False),
        _int("reaction_time_ms"), _ts("presented_at"), _ts("responded_at", True),
        _fk("trials", "session_id", "game_sessions.session_id"),
        _pk("trials", "session_id", "trial_index"),
    )

    op.create_table(
        "session_metrics",
        _id("session_id"), sa.Column("name", sa.String(64), nullable=False),
        _id("child_id"), _id("family_id"),
        sa.Column("game_id", sa.String(64), nullable=False), _ts("started_at"),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("normed", sa.Boolean(), nullable=False),
        sa.Column("z_score", sa.Float(), nullable=False),
        sa.Column("percentile", sa.Float(), nullable=False),
        sa.Column("norm_source", sa.String(16), nullable=False),
        _fk("session_metrics", "session_id", "game_sessions.session_id"),
        _pk("session_metrics", "session_id", "name"),
    )
    op.create_index(op.f("ix_session_metrics_child_id"), "session_metrics",
                    ["child_id", "started_at"])

    op.create_table(
        "mood_checkins",
        _id("checkin_id"), *_child_of("mood_checkins"),
        sa.Column("mood", sa.String(16), nullable=False), _int("intensity"),
        _ts("recorded_at"), _ts("received_at"),
        sa.Column("content_hash", sa.String(64), nullable=False),
        _pk("mood_checkins", "checkin_id"),
    )
    op.create_index(op.f("ix_mood_checkins_child_id"), "mood_checkins",
                    ["child_id", "recorded_at"])
    op.create_index(op.f("ix_mood_checkins_family_id"), "mood_checkins", ["family_id"])

    op.create_table(
        "play_days",
        *_child_of("play_days"), sa.Column("day", sa.Date(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False), _int("sessions"),
        _pk("play_days", "child_id", "day"),
    )

    op.create_table(
        "xp_outbox",
        sa.Column("source_id", sa.String(80), nullable=False), *_child_of("xp_outbox"),
        _int("amount"), sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False), _int("attempts"),
        _ts("next_attempt_at"), sa.Column("last_error", sa.String(300), nullable=False),
        _ts("created_at"), _ts("done_at", True),
        _pk("xp_outbox", "source_id"),
    )
    op.create_index(op.f("ix_xp_outbox_status"), "xp_outbox", ["status", "next_attempt_at"])
    op.create_index(op.f("ix_xp_outbox_child_id"), "xp_outbox", ["child_id"])

    op.create_table(
        "flag_states",
        _id("flag_id"), *_child_of("flag_states"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        _ts("first_seen_at"), _ts("updated_at"), _ts("resolved_at", True),
        _pk("flag_states", "flag_id"),
    )
    op.create_index(op.f("ix_flag_states_child_id"), "flag_states", ["child_id"])

    op.create_table(
        "norm_versions",
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("base_version", sa.String(64), nullable=False),
        _ts("created_at"), _int("platform_bands"),
        sa.Column("table_json", sa.Text(), nullable=False),
        _pk("norm_versions", "version"),
    )
    op.create_index(op.f("ix_norm_versions_created_at"), "norm_versions", ["created_at"])


def downgrade() -> None:
    for table in ("norm_versions", "flag_states", "xp_outbox", "play_days", "mood_checkins",
                  "session_metrics", "trials", "game_sessions", "children"):
        op.drop_table(table)
