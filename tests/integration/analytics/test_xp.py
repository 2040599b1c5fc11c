"""XP awards through the real profile server: at once, after an outage, never twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import select

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.profile.v1 import profile_pb2 as ppb
from services.analytics.models import XpOutbox
from services.common.db import Database
from tests.integration.analytics.conftest import (
    profile_child,
    row_counts,
    seed_consented_family,
    start_analytics,
    start_profile,
)
from tests.integration.analytics.support import (
    SIM_START,
    checkin_request,
    free_port,
    new_kid,
    session_of,
    session_request,
)

FAST_RETRY = dict(xp_outbox_poll_s=0.1, xp_retry_initial_s=0.05, xp_retry_max_s=0.3)


async def _outbox(db) -> dict[str, str]:
    async with db.session() as s:
        return {r.source_id: r.status for r in (await s.execute(select(XpOutbox))).scalars()}


async def _wait_drained(db, timeout: float = 20.0) -> dict[str, str]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        rows = await _outbox(db)
        if rows and all(v != "pending" for v in rows.values()):
            return rows
        assert loop.time() < end, f"outbox did not drain: {rows}"
        await asyncio.sleep(0.1)


async def _xp(profile, family_id: str, child_id: str) -> int:
    return (await profile.stub.GetAvatar(ppb.GetAvatarRequest(
        family_id=family_id, child_id=child_id))).avatar.xp


def _kid_in(family_id: str, child_id: str, seed: int = 1):
    return new_kid(seed, family_id=family_id, child_id=child_id)


async def test_xp_is_awarded_at_once_and_only_once(analytics_db_url, profile_db_url, clock):
    profile = await start_profile(profile_db_url)
    run = await start_analytics(analytics_db_url, clock, **FAST_RETRY, profile_target=f"127.0.0.1:{profile.port}")
    try:
        kid = new_kid(1)
        fam, child = await profile_child(profile, kid.ref.birth_year, kid.ref.birth_month)
        kid = _kid_in(fam, child)
        req = session_request(kid, session_of(kid, "go_nogo", SIM_START + timedelta(hours=15)))
        first = await run.stub.SubmitGameSession(req)
        assert first.result.xp_awarded == 20 and not first.result.xp_pending
        again = await asyncio.gather(*(run.stub.SubmitGameSession(req) for _ in range(3)))
        assert all(a.duplicate and not a.result.xp_pending for a in again)
        creq = checkin_request(kid)
        checked = await run.stub.SubmitMoodCheckIn(creq)
        assert checked.xp_awarded == 5 and not checked.xp_pending and not checked.duplicate
        again = await run.stub.SubmitMoodCheckIn(creq)  # a retry says the same XP, credited once
        assert again.duplicate and again.xp_awarded == 5 and not again.xp_pending
        assert await _xp(profile, fam, child) == 25  # 20 for the session, 5 for the check-in
        assert set((await _outbox(run.db)).values()) == {"done"}

        # Analytics reads no avatar back from profile (the gateway composes it:
        # tests/integration/gateway/test_play_privacy.py checks the avatar there).
        report = (await run.stub.GetChildReport(pb.GetChildReportRequest(child=kid.ref))).report
        assert not report.HasField("avatar") and report.child_id == child
        await run.built.outbox.drain_once()  # the gauge follows the table at every poll
        assert run.built.server.registry.get_sample_value(
            "avatario_analytics_xp_outbox_pending") == 0
    finally:
        await run.close()
        await profile.close()


async def test_profile_down_then_up_drains_the_outbox_once(analytics_db_url, profile_db_url, clock):
    """With consent_cache_ttl_s set, a consent profile confirmed shortly before lets
    play data in while profile is down; the awards wait in the outbox."""
    port = free_port()
    profile = await start_profile(profile_db_url, port)
    kid = new_kid(2)
    fam, child = await profile_child(profile, kid.ref.birth_year, kid.ref.birth_month)
    kid = _kid_in(fam, child, 2)
    run = await start_analytics(analytics_db_url, clock, **FAST_RETRY, consent_cache_ttl_s=30,
                                profile_target=f"127.0.0.1:{port}")
    try:
        first = await run.stub.SubmitGameSession(session_request(
            kid, session_of(kid, "go_nogo", SIM_START + timedelta(hours=10))))
        assert not first.result.xp_pending  # profile up: consent checked, XP awarded
        await profile.close()  # profile goes down

        reqs = [session_request(kid, session_of(kid, g, SIM_START + timedelta(days=i, hours=15)))
                for i, g in enumerate(["corsi_blocks", "tower_planner", "friends_turns"])]
        answers = [await run.stub.SubmitGameSession(r) for r in reqs]
        assert all(a.result.xp_pending for a in answers)
        assert (await run.stub.SubmitGameSession(reqs[0])).result.xp_pending  # still down
        await run.built.outbox.drain_once()
        assert run.built.server.registry.get_sample_value(
            "avatario_analytics_xp_outbox_pending") == 3
        # The report still works without profile (no avatar).
        report = (await run.stub.GetChildReport(pb.GetChildReportRequest(child=kid.ref))).report
        assert not report.HasField("avatar") and report.child_id == child

        profile = await start_profile(profile_db_url, port)  # profile is back
        clock.advance(minutes=1)  # retries are due (the worker runs on the service clock)
        try:
            rows = await _wait_drained(run.db)
            assert set(rows.values()) == {"done"} and len(rows) == 4
            assert await _xp(profile, fam, child) == 20 + 20 + 25 + 20
            # A retry of a session now answers not pending, and awards nothing more.
            assert not (await run.stub.SubmitGameSession(reqs[1])).result.xp_pending
            await run.built.outbox.drain_once()
            assert await _xp(profile, fam, child) == 85
            assert run.built.server.registry.get_sample_value(
                "avatario_analytics_xp_outbox_pending") == 0
            clock.advance(days=8)  # delivered awards are forgotten after the retention
            assert await run.built.outbox.purge() == 4 and await _outbox(run.db) == {}
        finally:
            await profile.close()
    finally:
        await run.close()


async def test_without_profile_play_writes_are_unavailable_and_nothing_is_stored(
        analytics_db_url, profile_db_url, clock):
    """By default consent is asked on every write: profile down means UNAVAILABLE (the
    device retries by session id), never a write that skipped the consent check."""
    port = free_port()
    profile = await start_profile(profile_db_url, port)
    kid = new_kid(4)
    fam, child = await profile_child(profile, kid.ref.birth_year, kid.ref.birth_month)
    kid = _kid_in(fam, child, 4)
    await profile.close()
    run = await start_analytics(analytics_db_url, clock, **FAST_RETRY,
                                profile_target=f"127.0.0.1:{port}")
    try:
        req = session_request(kid, session_of(kid, "go_nogo", SIM_START + timedelta(hours=15)))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await run.stub.SubmitGameSession(req)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await run.stub.SubmitMoodCheckIn(checkin_request(kid))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await row_counts(run.db) == {}
        profile = await start_profile(profile_db_url, port)
        try:  # the device's retry goes through once profile answers (reconnect: ~1 s)
            for _ in range(100):
                try:
                    assert not (await run.stub.SubmitGameSession(req)).duplicate
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("analytics never reached profile again")
        finally:
            await profile.close()
    finally:
        await run.close()


async def test_an_award_profile_refuses_for_good_is_abandoned(analytics_db_url, profile_db_url,
                                                              clock):
    profile = await start_profile(profile_db_url)
    run = await start_analytics(analytics_db_url, clock, **FAST_RETRY, profile_target=f"127.0.0.1:{profile.port}")
    try:
        stranger = new_kid(3)  # profile knows the family (with consent), not this child
        pdb = Database(profile_db_url, pool_size=1)
        await seed_consented_family(pdb, stranger.ref.family_id)
        await pdb.dispose()
        resp = await run.stub.SubmitGameSession(session_request(
            stranger, session_of(stranger, "number_compare", SIM_START + timedelta(hours=15))))
        assert not resp.result.xp_pending
        async with run.db.session() as s:
            row = (await s.execute(select(XpOutbox))).scalar_one()
        assert row.status == "abandoned" and row.last_error.startswith("NOT_FOUND")
    finally:
        await run.close()
        await profile.close()
