"""Idempotent storage of sessions and mood check-ins, with their XP outbox rows.

A submission inserts its row with ON CONFLICT DO NOTHING on the client's id.
If a row was already there, its content hash decides: the same content is a
retry (the stored result is answered, `duplicate`), different content is
ALREADY_EXISTS. On PostgreSQL a concurrent insert of the same id waits for the
first transaction and then finds its row, so exactly one is stored and both
callers answer the same result.

Writes for one child are serialized by locking the child's row first (PostgreSQL;
SQLite has a single writer anyway): the all-time aggregates on `children` (totals,
first and last play, longest streak, current run) never lose an update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
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
from services.common.errors import AlreadyExists, NotFound

PENDING, DONE, ABANDONED = "pending", "done", "abandoned"
# The request path tries profile right after commit; the worker takes a fresh
# award over this long after (sooner would race the inline try).
FIRST_RETRY_DELAY = timedelta(seconds=5)
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
    xp_awarded: int = 0  # what the check-in earned (the same on a retry)
    xp_pending: bool = False  # the award waits for profile


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


# -- prebuilt statements (built once; only parameters change per call) ---------------


def _dialect_insert(dialect: str):
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _child_upsert(dialect: str):
    """Insert the child on first sight; otherwise keep the birth year-month current.
    Either way the row is locked (PostgreSQL) and returned."""
    ins = _dialect_insert(dialect)(Child).values(
        child_id=bindparam("child_id"), family_id=bindparam("family_id"),
        birth_year=bindparam("birth_year"), birth_month=bindparam("birth_month"),
        created_at=bindparam("now"), total_sessions=0, total_play_seconds=0.0,
        longest_streak_days=0, current_run_days=0)
    return ins.on_conflict_do_update(
        index_elements=[Child.child_id],
        set_=dict(birth_year=ins.excluded.birth_year, birth_month=ins.excluded.birth_month),
    ).returning(Child.family_id, Child.total_sessions, Child.total_play_seconds,
                Child.first_played_at, Child.last_played_at, Child.longest_streak_days,
                Child.current_run_days)


def _day_upsert(dialect: str):
    ins = _dialect_insert(dialect)(PlayDay).values(
        child_id=bindparam("child_id"), day=bindparam("day"), family_id=bindparam("family_id"),
        seconds=bindparam("seconds"), sessions=1)
    return ins.on_conflict_do_update(
        index_elements=[PlayDay.child_id, PlayDay.day],
        set_=dict(seconds=PlayDay.seconds + ins.excluded.seconds,
                  sessions=PlayDay.sessions + 1),
    ).returning(PlayDay.sessions)


def _insert_ignore(dialect: str, model, key: str):
    table = model.__table__
    return (_dialect_insert(dialect)(table)
            .values({c.name: bindparam(c.name) for c in table.columns})
            .on_conflict_do_nothing(index_elements=[key])
            .returning(table.c[key]))


_STATEMENTS: dict[str, dict] = {}


def _stmts(session: AsyncSession) -> dict:
    dialect = session.get_bind().dialect.name
    built = _STATEMENTS.get(dialect)
    if built is None:
        built = _STATEMENTS[dialect] = dict(
            child=_child_upsert(dialect), day=_day_upsert(dialect),
            session=_insert_ignore(dialect, GameSession, "session_id"),
            checkin=_insert_ignore(dialect, MoodCheckInRow, "checkin_id"),
        )
    return built


_UPDATE_CHILD = (
    update(Child).where(Child.child_id == bindparam("cid"))
    .values(total_sessions=bindparam("total_sessions"),
            total_play_seconds=bindparam("total_play_seconds"),
            first_played_at=bindparam("first_played_at"),
            last_played_at=bindparam("last_played_at"),
            longest_streak_days=bindparam("longest_streak_days"),
            current_run_days=bindparam("current_run_days"))
)
_INSERT_TRIALS = TrialRow.__table__.insert()
_INSERT_METRICS = SessionMetric.__table__.insert()
_INSERT_OUTBOX = XpOutbox.__table__.insert()


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


async def ensure_child(session: AsyncSession, ref: ChildRefData, now: datetime):
    """Upsert and lock the child's row; its aggregates. NOT_FOUND for another family's id."""
    row = (await session.execute(_stmts(session)["child"], dict(
        child_id=ref.child_id, family_id=ref.family_id, birth_year=ref.birth_year,
        birth_month=ref.birth_month, now=now))).one()
    if row.family_id != ref.family_id:
        raise NotFound("child")
    return row


def run_span(days: Sequence[date], d: date) -> tuple[int, int]:
    """Indices of the first and last day of the run of consecutive days holding d."""
    lo = hi = days.index(d)
    while lo > 0 and (days[lo] - days[lo - 1]).days == 1:
        lo -= 1
    while hi < len(days) - 1 and (days[hi + 1] - days[hi]).days == 1:
        hi += 1
    return lo, hi


def run_through(days: Sequence[date], d: date) -> tuple[int, bool, bool]:
    """Length of the run holding d, and whether it reaches the first / last day given."""
    lo, hi = run_span(days, d)
    return hi - lo + 1, lo == 0, hi == len(days) - 1


async def _run_around(session: AsyncSession, child_id: str, d: date) -> tuple[int, date]:
    """(length, last day) of the run of play days that holds d."""
    lo, hi = d - timedelta(days=_RUN_PROBE_DAYS), d + timedelta(days=_RUN_PROBE_DAYS)
    stmt = select(PlayDay.day).where(PlayDay.child_id == child_id)
    days = list((await session.execute(
        stmt.where(PlayDay.day >= lo, PlayDay.day <= hi).order_by(PlayDay.day))).scalars())
    a, b = run_span(days, d)
    if (a == 0 and days[0] == lo) or (b == len(days) - 1 and days[-1] == hi):
        days = list((await session.execute(stmt.order_by(PlayDay.day))).scalars())
        a, b = run_span(days, d)
    return b - a + 1, days[b]


async def _add_play(session: AsyncSession, ref: ChildRefData, child, result: SessionResult) -> None:
    """Count the session in the child's aggregates and play days (the row is locked)."""
    seconds = result.duration_seconds
    at = result.started_at
    first = at if child.first_played_at is None else min(child.first_played_at, at)
    last = at if child.last_played_at is None else max(child.last_played_at, at)
    longest, current = child.longest_streak_days, child.current_run_days
    day = at.date()
    sessions = (await session.execute(_stmts(session)["day"], dict(
        child_id=ref.child_id, day=day, family_id=ref.family_id, seconds=seconds))).scalar_one()
    if sessions == 1:  # a new play day: runs may have grown or merged
        run, run_end = await _run_around(session, ref.child_id, day)
        longest = max(longest, run)
        if run_end == last.date():
            current = run
    await session.execute(_UPDATE_CHILD, dict(
        cid=ref.child_id, total_sessions=child.total_sessions + 1,
        total_play_seconds=child.total_play_seconds + seconds, first_played_at=first,
        last_played_at=last, longest_streak_days=longest, current_run_days=current))


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
    inserted = (await session.execute(_stmts(session)["session"], dict(
        session_id=result.session_id, child_id=ref.child_id, family_id=ref.family_id,
        game_id=result.game_id, game_version=result.game_version, domain=result.domain.value,
        started_at=result.started_at, ended_at=result.ended_at, received_at=now,
        age_months=age_months, content_hash=content_hash, trial_count=len(raw.trials),
        valid_trials=result.valid_trials, excluded_trials=result.excluded_trials,
        xp_awarded=result.xp_awarded, norms_version=norms_version,
    ))).first() is not None
    if not inserted:
        stored = await stored_session(session, result.session_id)
        assert stored is not None
        if stored[1] != content_hash:
            raise AlreadyExists(f"session.session_id {result.session_id} was already "
                                "submitted with different content")
        return stored[0]
    await _add_play(session, ref, child, result)
    if raw.trials:
        await session.execute(_INSERT_TRIALS, _trial_rows(raw, ref.family_id))
    if result.metrics:
        await session.execute(_INSERT_METRICS, _metric_rows(result, ref.family_id))
    pending = result.xp_awarded > 0
    if pending:
        await session.execute(_INSERT_OUTBOX, _outbox_values(Award(
            session_source(result.session_id), ref.family_id, ref.child_id, result.xp_awarded,
            reason), now))
    return StoredSession(result, now, pending, duplicate=False)


def _outbox_values(award: Award, now: datetime) -> dict:
    return dict(
        source_id=award.source_id, child_id=award.child_id, family_id=award.family_id,
        amount=award.amount, reason=award.reason, status=PENDING, attempts=0,
        next_attempt_at=now + FIRST_RETRY_DELAY, last_error="", created_at=now, done_at=None,
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
    inserted = (await session.execute(_stmts(session)["checkin"], dict(
        checkin_id=checkin.checkin_id, child_id=ref.child_id, family_id=ref.family_id,
        mood=checkin.mood.value, intensity=checkin.intensity, recorded_at=checkin.recorded_at,
        received_at=now, content_hash=content_hash,
    ))).first() is not None
    if not inserted:
        row = (await session.execute(select(MoodCheckInRow).where(
            MoodCheckInRow.checkin_id == checkin.checkin_id))).scalar_one()
        if row.content_hash != content_hash:
            raise AlreadyExists(f"checkin.checkin_id {checkin.checkin_id} was already "
                                "submitted with different content")
        award = (await session.execute(
            select(XpOutbox.amount, XpOutbox.status)
            .where(XpOutbox.source_id == checkin_source(checkin.checkin_id)))).first()
        return StoredCheckIn(checkin_of(row), duplicate=True,
                             xp_awarded=award.amount if award is not None else 0,
                             xp_pending=award is not None and award.status == PENDING)
    if xp > 0:
        await session.execute(_INSERT_OUTBOX, _outbox_values(Award(
            checkin_source(checkin.checkin_id), ref.family_id, ref.child_id, xp,
            "mood check-in"), now))
    return StoredCheckIn(checkin, duplicate=False, xp_awarded=xp, xp_pending=xp > 0)


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
