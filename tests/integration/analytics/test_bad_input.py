"""Every RPC: bad input answers INVALID_ARGUMENT naming the field; lists page."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.common.v1 import play_pb2
from services.analytics.domain.tips import load_tips
from services.analytics.domain.types import SkillDomain
from tests.integration.analytics.support import (
    CATALOG,
    SIM_START,
    checkin_request,
    domain_enum,
    fails,
    new_kid,
    session_of,
    session_request,
)

C = grpc.StatusCode
BAD = C.INVALID_ARGUMENT


def bad_refs(kid, clock_year: int) -> list[tuple[pb.ChildRef, str]]:
    def ref(**kw) -> pb.ChildRef:
        r = pb.ChildRef()
        r.CopyFrom(kid.ref)
        for k, v in kw.items():
            setattr(r, k, v)
        return r

    return [
        (ref(family_id=""), "child.family_id"),
        (ref(family_id="not-a-uuid"), "child.family_id"),
        (ref(child_id=kid.ref.child_id.upper()), "child.child_id"),
        (ref(child_id=""), "child.child_id"),
        (ref(birth_year=0), "child.birth_year"),
        (ref(birth_year=1900), "child.birth_year"),
        (ref(birth_year=clock_year + 1), "child.birth_year"),
        (ref(birth_month=13), "child.birth_month"),
        (ref(birth_month=0), "child.birth_month"),
        (ref(birth_year=clock_year, birth_month=12), "child.birth_month"),
    ]


async def test_every_child_call_checks_the_child_ref(analytics):
    kid = new_kid(1)
    session = session_of(kid, "go_nogo", SIM_START + timedelta(hours=15))
    session.child_id = ""
    for ref, field in bad_refs(kid, analytics.clock.now.year):
        calls = [
            analytics.stub.SubmitGameSession(pb.SubmitGameSessionRequest(child=ref, session=session)),
            analytics.stub.SubmitMoodCheckIn(pb.SubmitMoodCheckInRequest(
                child=ref, checkin=checkin_request(kid).checkin)),
            analytics.stub.GetChildReport(pb.GetChildReportRequest(child=ref)),
            analytics.stub.ListFlags(pb.ListFlagsRequest(child=ref)),
            analytics.stub.GetChildSummary(pb.GetChildSummaryRequest(child=ref)),
            analytics.stub.ExportChildData(pb.ExportChildDataRequest(child=ref)),
            analytics.stub.EraseChildData(pb.EraseChildDataRequest(child=ref)),
        ]
        for call in calls:
            await fails(call, BAD, field)


def _session(kid):
    s = session_of(kid, "go_nogo", SIM_START + timedelta(hours=15))
    return s


def _edit(kid, change):
    s = _session(kid)
    change(s)
    return session_request(kid, s)


@pytest.mark.parametrize("change,field", [
    (lambda s: setattr(s, "session_id", "nope"), "session.session_id"),
    (lambda s: setattr(s, "session_id", ""), "session.session_id"),
    (lambda s: setattr(s, "child_id", "5e1c1e4e-94b1-4d47-8a43-bd0d7b54c7d1"), "session.child_id"),
    (lambda s: setattr(s, "game_id", "tetris"), "session.game_id"),
    (lambda s: setattr(s, "game_version", 99), "session.game_version"),
    (lambda s: s.ClearField("started_at"), "session.started_at"),
    (lambda s: s.ended_at.FromDatetime(SIM_START + timedelta(days=200)), "session.ended_at"),
    (lambda s: setattr(s.trials[3], "reaction_time_ms", 45_000), "session.trials[3].reaction_time_ms"),
    (lambda s: setattr(s.trials[2], "index", 7), "session.trials[2].index"),
    (lambda s: s.trials[1].stimulus.update({"colour": "red"}), "session.trials[1].stimulus.colour"),
    (lambda s: s.trials[1].stimulus.update({"is_target": "yes"}), "session.trials[1].stimulus.is_target"),
    (lambda s: s.trials[0].presented_at.FromDatetime(SIM_START + timedelta(hours=14)),
     "session.trials[0].presented_at"),
    (lambda s: s.trials.extend([s.trials[0]] * 200), "session.trials"),
    (lambda s: s.ClearField("trials"), "session.trials"),
])
async def test_bad_sessions_name_the_field(analytics, change, field):
    kid = new_kid(2)
    await fails(analytics.stub.SubmitGameSession(_edit(kid, change)), BAD, field)


async def test_sessions_in_the_future_are_refused(analytics):
    kid = new_kid(3)
    s = session_of(kid, "corsi_blocks", analytics.clock.now + timedelta(hours=1))
    await fails(analytics.stub.SubmitGameSession(session_request(kid, s)), BAD,
                "session.started_at")


@pytest.mark.parametrize("kw,field", [
    (dict(checkin_id="x"), "checkin.checkin_id"),
    (dict(mood=play_pb2.MOOD_UNSPECIFIED), "checkin.mood"),
    (dict(mood=42), "checkin.mood"),
    (dict(intensity=0), "checkin.intensity"),
    (dict(intensity=6), "checkin.intensity"),
    (dict(recorded_at=SIM_START + timedelta(days=400)), "checkin.recorded_at"),
    (dict(child_id="5e1c1e4e-94b1-4d47-8a43-bd0d7b54c7d1"), "checkin.child_id"),
])
async def test_bad_checkins_name_the_field(analytics, kw, field):
    kid = new_kid(4)
    await fails(analytics.stub.SubmitMoodCheckIn(checkin_request(kid, **kw)), BAD, field)


async def test_list_games_pages_through_the_catalog(analytics):
    games, token = [], ""
    while True:
        page = await analytics.stub.ListGames(pb.ListGamesRequest(page_size=4, page_token=token))
        games += page.games
        token = page.next_page_token
        if not token:
            break
    assert [(g.game_id, g.version) for g in games] == [g.key for g in CATALOG.games]
    go = next(g for g in games if g.game_id == "go_nogo")
    assert go.domain == domain_enum(SkillDomain.ATTENTION) and go.area == play_pb2.SKILL_AREA_COGNITIVE
    assert go.min_trials == 24 and go.xp_per_session == 20 and "dprime" in go.metrics
    field = next(f for f in go.stimulus_fields if f.name == "is_target")
    assert field.type == play_pb2.TRIAL_FIELD_TYPE_BOOLEAN and field.required
    everything = await analytics.stub.ListGames(pb.ListGamesRequest())
    assert len(everything.games) == len(CATALOG.games) and not everything.next_page_token


async def test_list_tips_filters_and_pages(analytics):
    tips = load_tips()
    mood = await analytics.stub.ListTips(pb.ListTipsRequest(
        domain=domain_enum(SkillDomain.MOOD), age_band="7-9", page_size=200))
    want = tips.list(SkillDomain.MOOD, "7-9")
    assert [t.tip_id for t in mood.tips] == [t.tip_id for t in want] and want
    assert all(t.when_to_seek_help for t in mood.tips)
    seen, token = [], ""
    while True:
        page = await analytics.stub.ListTips(pb.ListTipsRequest(page_size=7, page_token=token))
        seen += [t.tip_id for t in page.tips]
        token = page.next_page_token
        if not token:
            break
    assert seen == [t.tip_id for t in tips.tips] and len(seen) >= 40


@pytest.mark.parametrize("request_,field", [
    (pb.ListTipsRequest(domain=99), "domain"),
    (pb.ListTipsRequest(age_band="3-5"), "age_band"),
    (pb.ListTipsRequest(page_size=-1), "page_size"),
    (pb.ListTipsRequest(page_size=1000), "page_size"),
    (pb.ListTipsRequest(page_token="%%%"), "page_token"),
])
async def test_list_tips_bad_input(analytics, request_, field):
    await fails(analytics.stub.ListTips(request_), BAD, field)


@pytest.mark.parametrize("request_,field", [
    (pb.ListGamesRequest(page_size=-5), "page_size"),
    (pb.ListGamesRequest(page_token="garbage!"), "page_token"),
    (pb.ListGamesRequest(page_token="eyJnIjoieCIsInYiOjF9"), "page_token"),  # unknown game
])
async def test_list_games_bad_input(analytics, request_, field):
    await fails(analytics.stub.ListGames(request_), BAD, field)


async def test_list_flags_bad_paging(analytics):
    kid = new_kid(5)
    await fails(analytics.stub.ListFlags(pb.ListFlagsRequest(child=kid.ref, page_size=-1)),
                BAD, "page_size")
    await fails(analytics.stub.ListFlags(pb.ListFlagsRequest(child=kid.ref, page_token="e30")),
                BAD, "page_token")


@pytest.mark.parametrize("family_id", ["", "x", "0" * 36])
async def test_erase_family_bad_input(analytics, family_id):
    await fails(analytics.stub.EraseFamilyData(pb.EraseFamilyDataRequest(family_id=family_id)),
                BAD, "family_id")


async def test_calls_without_the_internal_token_are_unauthenticated(analytics):
    from avatario.analytics.v1 import analytics_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{analytics.built.port}") as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        await fails(stub.ListGames(pb.ListGamesRequest()), C.UNAUTHENTICATED)
