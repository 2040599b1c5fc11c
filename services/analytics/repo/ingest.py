"""Idempotent storage of sessions and mood check-ins, with their XP outbox rows.

A submission inserts its row with ON CONFLICT DO NOTHING on the client's id.
If a row was already there, its content hash decides: the same content is a
retry (the stored result is answered, `duplicate`), different content is
ALREADY_EXISTS. On PostgreSQL a concurrent insert of the same id waits for the
first transaction and then finds its row, so exactly one is stored and both
callers answer the same result.

Writes for one child are serialized by locking the child's row first (PostgreSQL;
SQLite has a single writer anyway): the all-time aggregates on `children` and
the longest streak computed from `play_days` never lose an update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.analytics.domain.types import (
    MetricValue,
    Mood,
    MoodCheckIn,
    Session,
    SessionResult,
    SkillDomain,
)
from services.analytics.models import (
    Child,
    GameSession,
    MoodCheckInRow,
    PlayDay,
    SessionMetric,
    TrialRow,
    XpOutbox,
)
from services.common.db import insert_ignore
from services.common.errors import AlreadyExists, NotFound

PENDING, DONE, ABANDONED = "pending", "done", "abandoned"
# The request path tries profile right after commit; the worker waits this long
# before it takes a fresh award over.
FIRST_RETRY_DELAY = timedelta(seconds=10)
_RUN_PROBE_DAYS = 62


@dataclass(frozen=True)
class ChildRefData:
    family_id: str
    child_id: str
    birth_year: int
    birth_month: int


@dataclass(frozen=True)
class StoredSession:
    result: SessionResult
    received_at: datetime
    xp_pending: bool
    duplicate: bool


@dataclass(frozen=True)
class StoredCheckIn:
    checkin: MoodCheckIn
    duplicate: bool


@dataclass(frozen=True)
class Award:
    """An XP award to hand to profile (one outbox row)."""

    source_id: str
    family_id: str
    child_id: str
    amount: int
    reason: str
    attempts: int = 0


def session_source(session_id: str) -> str:
    return f"session:{session_id}"


def checkin_source(checkin_id: str) -> str:
    return f"checkin:{checkin_id}"


# -- children --------------------------------------------------------------------------


async def child_row(session: AsyncSession, family_id: str, child_id: str, *,
                    for_update: bool = False) -> Child | None:
    """The child's row, None if analytics never saw the child; NOT_FOUND when
    the id belongs to another family (no leak of its existence)."""
    stmt = select(Child).where(Child.child_id == child_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is not None and row.family_id != family_id:
        raise NotFound("child")
    return row


async def ensure_child(session: AsyncSession, ref: ChildRefData, now: datetime) -> Child:
    """Insert the child on first sight, lock its row, keep the birth year-month current."""
    await insert_ignore(session, Child, dict(
        child_id=ref.child_id, family_id=ref.family_id, birth_year=ref.birth_year,
        birth_month=ref.birth_month, created_at=now, total_sessions=0, total_play_seconds=0.0,
        longest_streak_days=0,
    ), ["child_id"])
    row = await child_row(session, ref.family_id, ref.child_id, for_update=True)
    assert row is not None
    if (row.birth_year, row.birth_month) != (ref.birth_year, ref.birth_month):
        row.birth_year, row.birth_month = ref.birth_year, ref.birth_month
    return row


def run_through(days: Sequence[date], d: date) -> tuple[int, bool, bool]:
    """Length of the run of consecutive days containing d in sorted `days`, and
    whether it reaches the first / last day given (it may go on beyond)."""
    pos = {x: i for i, x in enumerate(days)}
    i = pos[d]
    lo = hi = i
    while lo > 0 and (days[lo] - days[lo - 1]).days == 1:
        lo -= 1
    while hi < len(days) - 1 and (days[hi + 1] - days[hi]).days == 1:
        hi += 1
    return hi - lo + 1, lo == 0, hi == len(days) - 1


async def _run_length(session: AsyncSession, child_id: str, d: date) -> int:
    lo, hi = d - timedelta(days=_RUN_PROBE_DAYS), d + timedelta(days=_RUN_PROBE_DAYS)
    stmt = select(PlayDay.day).where(PlayDay.child_id == child_id)
    days = list((await session.execute(
        stmt.where(PlayDay.day >= lo, PlayDay.day <= hi).order_by(PlayDay.day))).scalars())
    run, at_first, at_last = run_through(days, d)
    if (at_first and days[0] == lo) or (at_last and days[-1] == hi):
        days = list((await session.execute(stmt.order_by(PlayDay.day))).scalars())
        run = run_through(days, d)[0]
    return run


async def _add_play(session: AsyncSession, child: Child, result: SessionResult) -> None:
    seconds = result.duration_seconds
    child.total_sessions += 1
    child.total_play_seconds += seconds
    if child.first_played_at is None or result.started_at < child.first_played_at:
        child.first_played_at = result.started_at
    if child.last_played_at is None or result.started_at > child.last_played_at:
        child.last_played_at = result.started_at
    day = result.started_at.date()
    existing = await session.get(PlayDay, (child.child_id, day))
    if existing is not None:
        existing.seconds += seconds
        existing.sessions += 1
        return
    session.add(PlayDay(child_id=child.child_id, day=day, family_id=child.family_id,
                        seconds=seconds, sessions=1))
    await session.flush()
    run = await _run_length(session, child.child_id, day)
    child.longest_streak_days = max(child.longest_streak_days, run)


# -- sessions --------------------------------------------------------------------------


def _metric_rows(result: SessionResult, family_id: str) -> list[dict]:
    return [dict(session_id=result.session_id, name=m.name, child_id=result.child_id,
                 family_id=family_id, game_id=result.game_id, started_at=result.started_at,
                 value=m.value, unit=m.unit, normed=m.normed, z_score=m.z_score,
                 percentile=m.percentile, norm_source=m.norm_source) for m in result.metrics]


def _trial_rows(s: Session, family_id: str) -> list[dict]:
    return [dict(session_id=s.session_id, trial_index=t.index, child_id=s.child_id,
                 family_id=family_id, stimulus=dict(t.stimulus), response=dict(t.response),
                 correct=t.correct, responded=t.responded, reaction_time_ms=t.reaction_time_ms,
                 presented_at=t.presented_at, responded_at=t.responded_at) for t in s.trials]


async def store_session(
    session: AsyncSession, *, ref: ChildRefData, raw: Session, result: SessionResult,
    content_hash: str, age_months: int, norms_version: str, reason: str, now: datetime,
) -> StoredSession:
    child = await ensure_child(session, ref, now)
    inserted = await insert_ignore(session, GameSession, dict(
        session_id=result.session_id, child_id=ref.child_id, family_id=ref.family_id,
        game_id=result.game_id, game_version=result.game_version, domain=result.domain.value,
        started_at=result.started_at, ended_at=result.ended_at, received_at=now,
        age_months=age_months, content_hash=content_hash, trial_count=len(raw.trials),
        valid_trials=result.valid_trials, excluded_trials=result.excluded_trials,
        xp_awarded=result.xp_awarded, norms_version=norms_version,
    ), ["session_id"])
    if not inserted:
        stored = await stored_session(session, result.session_id)
        assert stored is not None
        if stored[1] != content_hash:
            raise AlreadyExists(f"session.session_id {result.session_id} was already "
                                "submitted with different content")
        return stored[0]
    await _add_play(session, child, result)
    if raw.trials:
        await session.execute(insert(TrialRow), _trial_rows(raw, ref.family_id))
    if result.metrics:
        await session.execute(insert(SessionMetric), _metric_rows(result, ref.family_id))
    pending = result.xp_awarded > 0
    if pending:
        session.add(_outbox_row(Award(session_source(result.session_id), ref.family_id,
                                      ref.child_id, result.xp_awarded, reason), now))
    return StoredSession(result, now, pending, duplicate=False)


def _outbox_row(award: Award, now: datetime) -> XpOutbox:
    return XpOutbox(
        source_id=award.source_id, child_id=award.child_id, family_id=award.family_id,
        amount=award.amount, reason=award.reason, status=PENDING, attempts=0,
        next_attempt_at=now + FIRST_RETRY_DELAY, last_error="", created_at=now,
    )


async def stored_session(session: AsyncSession, session_id: str) -> tuple[StoredSession, str] | None:
    """A stored session's result (as stored) and its content hash."""
    row = (await session.execute(
        select(GameSession).where(GameSession.session_id == session_id))).scalar_one_or_none()
    if row is None:
        return None
    metrics = (await session.execute(
        select(SessionMetric.name, SessionMetric.value, SessionMetric.unit, SessionMetric.normed,
               SessionMetric.z_score, SessionMetric.percentile, SessionMetric.norm_source)
        .where(SessionMetric.session_id == session_id))).all()
    status = (await session.execute(
        select(XpOutbox.status).where(XpOutbox.source_id == session_source(session_id))
    )).scalar_one_or_none()
    result = result_of(row, [MetricValue(*m) for m in metrics])
    return StoredSession(result, row.received_at, status == PENDING, duplicate=True), row.content_hash


def result_of(row, metrics: Sequence[MetricValue]) -> SessionResult:
    """A SessionResult from a game_sessions row (ORM object or selected columns)."""
    return SessionResult(
        session_id=row.session_id, child_id=row.child_id, game_id=row.game_id,
        game_version=row.game_version, domain=SkillDomain(row.domain),
        started_at=row.started_at, ended_at=row.ended_at,
        metrics=tuple(sorted(metrics, key=lambda m: m.name)), valid_trials=row.valid_trials,
        excluded_trials=row.excluded_trials, xp_awarded=row.xp_awarded,
    )


# -- mood check-ins --------------------------------------------------------------------


async def store_checkin(
    session: AsyncSession, *, ref: ChildRefData, checkin: MoodCheckIn, content_hash: str,
    xp: int, now: datetime,
) -> StoredCheckIn:
    await ensure_child(session, ref, now)
    inserted = await insert_ignore(session, MoodCheckInRow, dict(
        checkin_id=checkin.checkin_id, child_id=ref.child_id, family_id=ref.family_id,
        mood=checkin.mood.value, intensity=checkin.intensity, recorded_at=checkin.recorded_at,
        received_at=now, content_hash=content_hash,
    ), ["checkin_id"])
    if not inserted:
        row = (await session.execute(select(MoodCheckInRow).where(
            MoodCheckInRow.checkin_id == checkin.checkin_id))).scalar_one()
        if row.content_hash != content_hash:
            raise AlreadyExists(f"checkin.checkin_id {checkin.checkin_id} was already "
                                "submitted with different content")
        return StoredCheckIn(checkin_of(row), duplicate=True)
    if xp > 0:
        session.add(_outbox_row(Award(checkin_source(checkin.checkin_id), ref.family_id,
                                      ref.child_id, xp, "mood check-in"), now))
    return StoredCheckIn(checkin, duplicate=False)


def checkin_of(row) -> MoodCheckIn:
    return MoodCheckIn(row.checkin_id, row.child_id, Mood(row.mood), row.intensity, row.recorded_at)


async def set_xp_status(session: AsyncSession, source_id: str, status: str, now: datetime,
                        *, error: str = "", next_attempt_at: datetime | None = None) -> None:
    """Record the outcome of one delivery attempt (see repo.outbox for the worker side)."""
    values: dict = dict(status=status, attempts=XpOutbox.attempts + 1, last_error=error[:300])
    if status != PENDING:
        values["done_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    await session.execute(update(XpOutbox).where(
        XpOutbox.source_id == source_id, XpOutbox.status == PENDING).values(**values))
