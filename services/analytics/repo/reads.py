"""Reads for reports (a bounded window) and for export (everything).

A report needs the last 10 weeks of scored sessions, the check-ins of that
window, the play dates behind the streaks and the flag states. Each is one
indexed range read; all-time numbers come from the child's row, so the cost
does not grow with the child's history.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.analytics.domain.types import MetricValue, MoodCheckIn, SessionResult, Trial
from services.analytics.models import (
    Child,
    FlagState,
    GameSession,
    MoodCheckInRow,
    PlayDay,
    SessionMetric,
    TrialRow,
)
from services.analytics.repo.ingest import checkin_of, child_row, result_of

# build_report needs 10 weeks: 8 weeks of trends, drop signals over 2 + 6 weeks.
WINDOW = timedelta(days=70)

_SESSION_COLS = (
    GameSession.session_id, GameSession.child_id, GameSession.game_id, GameSession.game_version,
    GameSession.domain, GameSession.started_at, GameSession.ended_at, GameSession.valid_trials,
    GameSession.excluded_trials, GameSession.xp_awarded, GameSession.age_months,
    GameSession.norms_version,
)
_METRIC_COLS = (
    SessionMetric.session_id, SessionMetric.name, SessionMetric.value, SessionMetric.unit,
    SessionMetric.normed, SessionMetric.z_score, SessionMetric.percentile,
    SessionMetric.norm_source,
)


@dataclass(frozen=True)
class Scored:
    """A stored result with what re-norming it needs."""

    result: SessionResult
    age_months: int
    norms_version: str


@dataclass
class ChildWindow:
    known: bool
    results: list[Scored] = field(default_factory=list)
    # The newest session before the window, if any (without metrics): tells the
    # engagement rule that the child played before the window.
    before: SessionResult | None = None
    checkins: list[MoodCheckIn] = field(default_factory=list)
    play_dates: list[date] = field(default_factory=list)
    # (current, longest) streak from the aggregates when they are exact for as_of;
    # otherwise None and the domain computes them from play_dates.
    streaks: tuple[int, int] | None = (0, 0)
    flag_states: dict[str, FlagState] = field(default_factory=dict)


def _scored(rows: Sequence, metrics: dict[str, list[MetricValue]]) -> list[Scored]:
    return [Scored(result_of(r, metrics.get(r.session_id, ())), r.age_months, r.norms_version)
            for r in rows]


async def _metrics_between(session: AsyncSession, child_id: str, since: datetime | None,
                           until: datetime | None) -> dict[str, list[MetricValue]]:
    stmt = select(*_METRIC_COLS).where(SessionMetric.child_id == child_id)
    if since is not None:
        stmt = stmt.where(SessionMetric.started_at > since)
    if until is not None:
        stmt = stmt.where(SessionMetric.started_at <= until)
    out: dict[str, list[MetricValue]] = defaultdict(list)
    for sid, *values in (await session.execute(stmt)).all():
        out[sid].append(MetricValue(*values))
    return out


async def scored_sessions(session: AsyncSession, child_id: str, *, since: datetime | None = None,
                          until: datetime | None = None) -> list[Scored]:
    """Sessions started in (since, until], oldest first, with their stored metrics."""
    stmt = select(*_SESSION_COLS).where(GameSession.child_id == child_id)
    if since is not None:
        stmt = stmt.where(GameSession.started_at > since)
    if until is not None:
        stmt = stmt.where(GameSession.started_at <= until)
    rows = (await session.execute(
        stmt.order_by(GameSession.started_at, GameSession.session_id))).all()
    return _scored(rows, await _metrics_between(session, child_id, since, until))


async def checkins_between(session: AsyncSession, child_id: str, *, since: datetime | None = None,
                           until: datetime | None = None) -> list[MoodCheckIn]:
    stmt = select(MoodCheckInRow).where(MoodCheckInRow.child_id == child_id)
    if since is not None:
        stmt = stmt.where(MoodCheckInRow.recorded_at > since)
    if until is not None:
        stmt = stmt.where(MoodCheckInRow.recorded_at <= until)
    rows = (await session.execute(
        stmt.order_by(MoodCheckInRow.recorded_at, MoodCheckInRow.checkin_id))).scalars()
    return [checkin_of(r) for r in rows]


async def _streaks(session: AsyncSession, child: Child,
                   as_of: datetime) -> tuple[list[date], tuple[int, int] | None]:
    """(play dates, None) for the domain to compute streaks from, or ([], (current,
    longest)) straight from the maintained aggregates.

    Usual case (nothing played after as_of): the aggregates are exact for as_of
    and nothing is read. For an as_of in the past every play date up to its day
    is read; the caller drops as_of's own day unless a session of that day
    started by as_of.
    """
    if child.last_played_at is None:
        return [], (0, 0)
    if child.last_played_at <= as_of:
        alive = (as_of.date() - child.last_played_at.date()).days <= 1
        return [], (child.current_run_days if alive else 0, child.longest_streak_days)
    stmt = (select(PlayDay.day).where(PlayDay.child_id == child.child_id,
                                      PlayDay.day <= as_of.date()).order_by(PlayDay.day))
    return list((await session.execute(stmt)).scalars()), None


async def child_window(session: AsyncSession, family_id: str, child_id: str,
                       as_of: datetime) -> ChildWindow:
    child = await child_row(session, family_id, child_id)
    if child is None:
        return ChildWindow(known=False)
    since = as_of - WINDOW
    results = await scored_sessions(session, child_id, since=since, until=as_of)
    before_row = (await session.execute(
        select(*_SESSION_COLS).where(GameSession.child_id == child_id,
                                     GameSession.started_at <= since)
        .order_by(GameSession.started_at.desc()).limit(1))).first()
    dates, streaks = await _streaks(session, child, as_of)
    states = (await session.execute(
        select(FlagState).where(FlagState.child_id == child_id))).scalars()
    return ChildWindow(
        known=True, results=results,
        before=result_of(before_row, ()) if before_row is not None else None,
        checkins=await checkins_between(session, child_id, since=since, until=as_of),
        play_dates=dates, streaks=streaks,
        flag_states={s.flag_id: s for s in states},
    )


# -- export ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RawSession:
    row: GameSession
    trials: tuple[Trial, ...]


async def raw_sessions(session: AsyncSession, child_id: str) -> list[RawSession]:
    """Every stored session of a child with its raw trials, oldest first."""
    rows = list((await session.execute(
        select(GameSession).where(GameSession.child_id == child_id)
        .order_by(GameSession.started_at, GameSession.session_id))).scalars())
    trials: dict[str, list[Trial]] = defaultdict(list)
    stmt = (select(TrialRow).join(GameSession, GameSession.session_id == TrialRow.session_id)
            .where(GameSession.child_id == child_id)
            .order_by(TrialRow.session_id, TrialRow.trial_index))
    for t in (await session.execute(stmt)).scalars():
        trials[t.session_id].append(Trial(
            t.trial_index, t.stimulus, t.response, t.correct, t.responded, t.reaction_time_ms,
            t.presented_at, t.responded_at))
    return [RawSession(r, tuple(trials.get(r.session_id, ()))) for r in rows]


# -- export, a page at a time ------------------------------------------------------------


@dataclass(frozen=True)
class ExportedSession:
    raw: RawSession
    result: SessionResult


async def session_page(session: AsyncSession, child_id: str,
                       after: tuple[datetime, str] | None, limit: int) -> list[ExportedSession]:
    """Up to `limit` of the child's sessions after the (started_at, session_id) position,
    oldest first, each with its raw trials and its stored result."""
    stmt = select(GameSession).where(GameSession.child_id == child_id)
    if after is not None:
        t, sid = after
        stmt = stmt.where(or_(GameSession.started_at > t,
                              and_(GameSession.started_at == t, GameSession.session_id > sid)))
    rows = list((await session.execute(
        stmt.order_by(GameSession.started_at, GameSession.session_id).limit(limit))).scalars())
    ids = [r.session_id for r in rows]
    if not ids:
        return []
    trials: dict[str, list[Trial]] = defaultdict(list)
    for t in (await session.execute(
            select(TrialRow).where(TrialRow.session_id.in_(ids))
            .order_by(TrialRow.session_id, TrialRow.trial_index))).scalars():
        trials[t.session_id].append(Trial(
            t.trial_index, t.stimulus, t.response, t.correct, t.responded, t.reaction_time_ms,
            t.presented_at, t.responded_at))
    metrics: dict[str, list[MetricValue]] = defaultdict(list)
    for sid, *values in (await session.execute(
            select(*_METRIC_COLS).where(SessionMetric.session_id.in_(ids)))).all():
        metrics[sid].append(MetricValue(*values))
    return [ExportedSession(RawSession(r, tuple(trials.get(r.session_id, ()))),
                            result_of(r, metrics.get(r.session_id, ()))) for r in rows]


async def checkin_page(session: AsyncSession, child_id: str,
                       after: tuple[datetime, str] | None, limit: int) -> list[MoodCheckIn]:
    """Up to `limit` check-ins after the (recorded_at, checkin_id) position, oldest first."""
    stmt = select(MoodCheckInRow).where(MoodCheckInRow.child_id == child_id)
    if after is not None:
        t, cid = after
        stmt = stmt.where(or_(MoodCheckInRow.recorded_at > t,
                              and_(MoodCheckInRow.recorded_at == t,
                                   MoodCheckInRow.checkin_id > cid)))
    rows = (await session.execute(stmt.order_by(
        MoodCheckInRow.recorded_at, MoodCheckInRow.checkin_id).limit(limit))).scalars()
    return [checkin_of(r) for r in rows]
