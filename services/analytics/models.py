"""Analytics tables. Every row that is about a child carries child_id and
family_id, so export and erasure are a WHERE clause per table (norm_versions
holds population statistics only, never an id).

Reads for a report touch a bounded window: sessions and metrics are indexed by
(child_id, started_at), check-ins by (child_id, recorded_at), and all-time
numbers (totals, first play, longest streak) are maintained on `children` as
sessions arrive; `play_days` keeps one row per child and UTC day played.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import UTCDateTime, make_metadata

ID = String(36)


class Base(DeclarativeBase):
    metadata = make_metadata()


metadata = Base.metadata


def _child_fk() -> Mapped[str]:
    return mapped_column(ID, ForeignKey("children.child_id", ondelete="CASCADE"), nullable=False)


def _family() -> Mapped[str]:
    return mapped_column(ID, nullable=False)


class Child(Base):
    """A child as profile described it on the latest call, plus all-time aggregates."""

    __tablename__ = "children"

    child_id: Mapped[str] = mapped_column(ID, primary_key=True)
    family_id: Mapped[str] = _family()
    birth_year: Mapped[int] = mapped_column(Integer, nullable=False)
    birth_month: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    total_sessions: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    total_play_seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    first_played_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_played_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    longest_streak_days: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Length of the run of consecutive play days that ends on the latest play day.
    current_run_days: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (Index(None, "family_id"),)


class GameSession(Base):
    """A stored session; session_id is the client's UUID (the idempotency key)."""

    __tablename__ = "game_sessions"

    session_id: Mapped[str] = mapped_column(ID, primary_key=True)
    child_id: Mapped[str] = _child_fk()
    family_id: Mapped[str] = _family()
    game_id: Mapped[str] = mapped_column(String(64), nullable=False)
    game_version: Mapped[int] = mapped_column(Integer, nullable=False)
    domain: Mapped[str] = mapped_column(String(32), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Age in completed months when the session started (norm band; population norms).
    age_months: Mapped[int] = mapped_column(Integer, nullable=False)
    # sha256 of the canonical request content: a retry must match it.
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    trial_count: Mapped[int] = mapped_column(Integer, nullable=False)
    valid_trials: Mapped[int] = mapped_column(Integer, nullable=False)
    excluded_trials: Mapped[int] = mapped_column(Integer, nullable=False)
    xp_awarded: Mapped[int] = mapped_column(Integer, nullable=False)
    # The norms the stored z-scores were computed with.
    norms_version: Mapped[str] = mapped_column(String(128), nullable=False)

    __table_args__ = (Index(None, "child_id", "started_at"), Index(None, "family_id"))


class TrialRow(Base):
    """A raw trial, kept so scores can be recomputed."""

    __tablename__ = "trials"

    session_id: Mapped[str] = mapped_column(
        ID, ForeignKey("game_sessions.session_id", ondelete="CASCADE"), primary_key=True
    )
    trial_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    child_id: Mapped[str] = mapped_column(ID, nullable=False)
    family_id: Mapped[str] = _family()
    stimulus: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    response: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    correct: Mapped[bool] = mapped_column(Boolean, nullable=False)
    responded: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reaction_time_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    presented_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SessionMetric(Base):
    """A derived metric of a session with its norm comparison at ingestion."""

    __tablename__ = "session_metrics"

    session_id: Mapped[str] = mapped_column(
        ID, ForeignKey("game_sessions.session_id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    child_id: Mapped[str] = mapped_column(ID, nullable=False)
    family_id: Mapped[str] = _family()
    game_id: Mapped[str] = mapped_column(String(64), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    unit: Mapped[str] = mapped_column(String(32), nullable=False)
    normed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    z_score: Mapped[float] = mapped_column(Float, nullable=False)
    percentile: Mapped[float] = mapped_column(Float, nullable=False)
    norm_source: Mapped[str] = mapped_column(String(16), nullable=False)

    __table_args__ = (Index(None, "child_id", "started_at"),)


class MoodCheckInRow(Base):
    __tablename__ = "mood_checkins"

    checkin_id: Mapped[str] = mapped_column(ID, primary_key=True)
    child_id: Mapped[str] = _child_fk()
    family_id: Mapped[str] = _family()
    mood: Mapped[str] = mapped_column(String(16), nullable=False)
    intensity: Mapped[int] = mapped_column(Integer, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)

    __table_args__ = (Index(None, "child_id", "recorded_at"), Index(None, "family_id"))


class PlayDay(Base):
    """One row per child and UTC day with play (streaks without reading sessions)."""

    __tablename__ = "play_days"

    child_id: Mapped[str] = mapped_column(
        ID, ForeignKey("children.child_id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    family_id: Mapped[str] = _family()
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
    sessions: Mapped[int] = mapped_column(Integer, nullable=False)


class XpOutbox(Base):
    """An XP award for profile, written in the transaction that stored its source.

    status: pending -> done (profile applied it, or had already) | abandoned
    (profile refused it for good, e.g. the child no longer exists there).
    """

    __tablename__ = "xp_outbox"

    source_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    child_id: Mapped[str] = _child_fk()
    family_id: Mapped[str] = _family()
    amount: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_error: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index(None, "status", "next_attempt_at"), Index(None, "child_id"))


class FlagState(Base):
    """What the store remembers of a flag: when it was first seen (kept stable
    while the flag stays active) and when it was resolved."""

    __tablename__ = "flag_states"

    flag_id: Mapped[str] = mapped_column(ID, primary_key=True)
    child_id: Mapped[str] = _child_fk()
    family_id: Mapped[str] = _family()
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    domain: Mapped[str] = mapped_column(String(32), nullable=False)
    level: Mapped[str] = mapped_column(String(32), nullable=False)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # When the stored state last changed (new, level change, resolved, back again).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index(None, "child_id"),)


class NormVersion(Base):
    """A norm table recomputed from the population (no child ids, only moments)."""

    __tablename__ = "norm_versions"

    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    base_version: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    platform_bands: Mapped[int] = mapped_column(Integer, nullable=False)
    table_json: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (Index(None, "created_at"),)


# Tables about children, in an order that respects foreign keys on delete.
CHILD_TABLES: tuple[type[Base], ...] = (
    TrialRow, SessionMetric, XpOutbox, FlagState, MoodCheckInRow, PlayDay, GameSession, Child,
)
