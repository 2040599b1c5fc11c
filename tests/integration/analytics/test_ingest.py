"""SubmitGameSession and SubmitMoodCheckIn: storage, idempotency, concurrency."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
from sqlalchemy import func, select

from avatario.common.v1 import play_pb2
from services.analytics.models import (
    Child,
    GameSession,
    MoodCheckInRow,
    PlayDay,
    SessionMetric,
    TrialRow,
    XpOutbox,
)
from tests.integration.analytics.support import (
    SIM_START,
    checkin_request,
    fails,
    new_kid,
    session_of,
    session_request,
)

C = grpc.StatusCode


async def count(db, model, **where) -> int:
    stmt = select(func.count()).select_from(model)
    for k, v in where.items():
        stmt = stmt.where(getattr(model, k) == v)
    async with db.session() as s:
        return (await s.execute(stmt)).scalar_one()


async def test_a_session_is_scored_and_stored_with_its_raw_trials(analytics):
    kid = new_kid(1)
    s = session_of(kid, "go_nogo", SIM_START + timedelta(hours=15))
    resp = await analytics.stub.SubmitGameSession(session_request(kid, s))
    r = resp.result
    assert not resp.duplicate
    assert r.session_id == s.session_id and r.child_id == kid.ref.child_id
    assert r.game_id == "go_nogo" and r.game_version == 1
    assert r.valid_trials + r.excluded_trials == len(s.trials)
    names = {m.name for m in r.metrics}
    assert {"accuracy", "dprime", "mean_rt_ms"} <= names
    dprime = next(m for m in r.metrics if m.name == "dprime")
    assert dprime.normed and dprime.norm_source == "provisional" and 0 < dprime.percentile < 100
    # Profile knows the family (consent) but not this made-up child: the award is
    # abandoned, not pending (test_xp covers delivery).
    assert r.xp_awarded == 20 and not r.xp_pending
    assert r.received_at.ToDatetime().year == analytics.clock.now.year

    db = analytics.db
    assert await count(db, TrialRow, session_id=s.session_id) == len(s.trials)
    assert await count(db, SessionMetric, session_id=s.session_id) == len(r.metrics)
    assert await count(db, XpOutbox, child_id=kid.ref.child_id) == 1
    async with db.session() as session:
        child = await session.get(Child, kid.ref.child_id)
        assert child.total_sessions == 1 and child.longest_streak_days == 1
        assert child.family_id == kid.ref.family_id


async def test_a_retry_counts_once_and_answers_the_same_result(analytics):
    kid = new_kid(2)
    s = session_of(kid, "corsi_blocks", SIM_START + timedelta(hours=15))
    first = await analytics.stub.SubmitGameSession(session_request(kid, s))
    again = await analytics.stub.SubmitGameSession(session_request(kid, s))
    assert again.duplicate and not first.duplicate
    assert again.result.metrics == first.result.metrics
    assert again.result.received_at == first.result.received_at
    # The session_id without child_id (filled from the ChildRef) is the same content.
    s2 = play_pb2.GameSession()
    s2.CopyFrom(s)
    s2.child_id = ""
    assert (await analytics.stub.SubmitGameSession(session_request(kid, s2))).duplicate
    assert await count(analytics.db, GameSession, child_id=kid.ref.child_id) == 1
    async with analytics.db.session() as session:
        assert (await session.get(Child, kid.ref.child_id)).total_sessions == 1
        day = await session.get(PlayDay, (kid.ref.child_id, SIM_START.date()))
        assert day.sessions == 1


async def test_same_id_with_different_content_is_already_exists(analytics):
    kid = new_kid(3)
    s = session_of(kid, "number_compare", SIM_START + timedelta(hours=15))
    await analytics.stub.SubmitGameSession(session_request(kid, s))
    changed = play_pb2.GameSession()
    changed.CopyFrom(s)
    changed.trials[0].stimulus["left"] = changed.trials[0].stimulus["left"] + 1
    changed.trials[0].correct = (changed.trials[0].response["side"] == (
        "left" if changed.trials[0].stimulus["left"] > changed.trials[0].stimulus["right"]
        else "right"))
    err = await fails(analytics.stub.SubmitGameSession(session_request(kid, changed)),
                      C.ALREADY_EXISTS)
    assert "session.session_id" in err.details()
    other = new_kid(4)
    s.child_id = ""  # the same session id for another child
    await fails(analytics.stub.SubmitGameSession(session_request(other, s)), C.ALREADY_EXISTS)


async def test_concurrent_retries_store_one_session(analytics):
    kid = new_kid(5)
    s = session_of(kid, "emotion_faces", SIM_START + timedelta(hours=15))
    req = session_request(kid, s)
    answers = await asyncio.gather(*(analytics.stub.SubmitGameSession(req) for _ in range(6)))
    assert sum(not a.duplicate for a in answers) == 1
    assert len({a.result.SerializeToString(deterministic=True) for a in answers}) == 1
    assert await count(analytics.db, GameSession, session_id=s.session_id) == 1
    assert await count(analytics.db, TrialRow, session_id=s.session_id) == len(s.trials)
    async with analytics.db.session() as session:
        assert (await session.get(Child, kid.ref.child_id)).total_sessions == 1


async def test_concurrent_sessions_of_one_child_keep_the_aggregates(analytics):
    kid = new_kid(6)
    days = [SIM_START + timedelta(days=d, hours=15) for d in range(6)]
    reqs = [session_request(kid, session_of(kid, "friends_turns", t, seed=i))
            for i, t in enumerate(days)]
    await asyncio.gather(*(analytics.stub.SubmitGameSession(r) for r in reqs))
    async with analytics.db.session() as session:
        child = await session.get(Child, kid.ref.child_id)
    assert child.total_sessions == 6 and child.longest_streak_days == 6


async def test_mood_checkins_are_idempotent(analytics):
    kid = new_kid(7)
    req = checkin_request(kid, mood=play_pb2.MOOD_SAD, intensity=4)
    first = await analytics.stub.SubmitMoodCheckIn(req)
    assert not first.duplicate and first.checkin.child_id == kid.ref.child_id
    assert first.checkin.mood == play_pb2.MOOD_SAD and first.checkin.intensity == 4
    answers = await asyncio.gather(*(analytics.stub.SubmitMoodCheckIn(req) for _ in range(4)))
    assert all(a.duplicate and a.checkin == first.checkin for a in answers)
    assert await count(analytics.db, MoodCheckInRow, child_id=kid.ref.child_id) == 1
    changed = checkin_request(kid, checkin_id=req.checkin.checkin_id, mood=play_pb2.MOOD_HAPPY)
    err = await fails(analytics.stub.SubmitMoodCheckIn(changed), C.ALREADY_EXISTS)
    assert "checkin.checkin_id" in err.details()


async def test_a_child_of_another_family_is_not_found(analytics):
    kid = new_kid(8)
    await analytics.stub.SubmitMoodCheckIn(checkin_request(kid))
    thief = new_kid(8, child_id=kid.ref.child_id)  # same child id, another family
    s = session_of(thief, "go_nogo", SIM_START + timedelta(hours=15))
    await fails(analytics.stub.SubmitGameSession(session_request(thief, s)), C.NOT_FOUND)
    await fails(analytics.stub.SubmitMoodCheckIn(checkin_request(thief)), C.NOT_FOUND)
    assert await count(analytics.db, GameSession, child_id=kid.ref.child_id) == 0
    assert (await analytics.stub.SubmitMoodCheckIn(checkin_request(kid))).checkin.checkin_id


async def test_streak_aggregates_follow_late_sessions(analytics):
    from avatario.analytics.v1 import analytics_pb2 as pb

    kid = new_kid(9)

    async def play(day: int) -> None:
        s = session_of(kid, "corsi_blocks", SIM_START + timedelta(days=day, hours=15), seed=day)
        await analytics.stub.SubmitGameSession(session_request(kid, s))

    async def streaks(day: float) -> tuple[int, int]:
        req = pb.GetChildReportRequest(child=kid.ref)
        req.as_of.FromDatetime(SIM_START + timedelta(days=day))
        rep = (await analytics.stub.GetChildReport(req)).report
        return rep.current_streak_days, rep.longest_streak_days

    for day in (0, 1, 5, 6, 9):
        await play(day)
    assert await streaks(10) == (1, 2)
    await play(3)  # arrives late: no merge yet
    assert await streaks(10) == (1, 2)
    await play(2)  # merges 0-3
    assert await streaks(10) == (1, 4)
    await play(4)  # merges 0-6
    assert await streaks(10) == (1, 7)
    await play(8)  # 8-9 is the current run
    assert await streaks(10.9) == (2, 7) and await streaks(12) == (0, 7)
    assert await streaks(6.9) == (7, 7)  # as of the past: from the play dates
    async with analytics.db.session() as session:
        child = await session.get(Child, kid.ref.child_id)
    assert (child.longest_streak_days, child.current_run_days, child.total_sessions) == (7, 2, 9)
