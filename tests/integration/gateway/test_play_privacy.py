"""Play, reports, export and erasure through the gateway with the real profile
and analytics services (the inference node here is the failure-injection fake;
its ForgetConversations records what erasure asked it to drop)."""

from __future__ import annotations

import grpc
import pytest
from rich.console import Console

from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.simulate import plan
from avatario_tools.devstack.demo import run_demo
from tests.integration.gateway.conftest import fake_target
from tests.integration.gateway.support import (
    DEAD_TARGET,
    PASSWORD,
    bearer,
    fails,
    new_family,
    pair_device,
)

C = grpc.StatusCode


# The gateway talks to the scripted inference fake (conftest `fake`).
inference_target = pytest.fixture(name="inference_target")(fake_target)


async def play_some(fam, token: str, sessions: int = 6, weeks: int = 2):
    child = fam.client.as_(token)
    p = plan(fam.child_id, 2018, 3, sessions=sessions, weeks=weeks, seed=2)
    results = []
    for s in p.sessions:
        s.child_id = ""  # a device may leave it empty: its own child
        results.append(await child.play.SubmitGameSession(gw.SubmitGameSessionRequest(session=s),
                                                          metadata=child.md))
    for c in p.checkins[:3]:
        await child.play.SubmitMoodCheckIn(gw.SubmitMoodCheckInRequest(checkin=c),
                                           metadata=child.md)
    return p, results


async def test_a_device_plays_and_the_parent_reads_the_report(stack):
    fam = await new_family(stack.client, birth_year=2018)
    token, _ = await pair_device(fam)
    child = fam.client.as_(token)
    games = await child.play.ListGames(gw.ListGamesRequest(), metadata=child.md)
    assert games.games
    p, results = await play_some(fam, token)
    assert all(r.result.session_id for r in results) and not any(r.duplicate for r in results)
    again = await child.play.SubmitGameSession(gw.SubmitGameSessionRequest(
        session=p.sessions[0]), metadata=child.md)
    assert again.duplicate  # idempotent per session id
    report = (await fam.client.report.GetChildReport(gw.GetChildReportRequest(
        child_id=fam.child_id), metadata=fam.client.md)).report
    assert report.child_id == fam.child_id and report.domain_scores
    assert sum(s.session_count for s in report.domain_scores) >= len(p.sessions)
    await fam.client.report.ListFlags(gw.ListFlagsRequest(child_id=fam.child_id),
                                      metadata=fam.client.md)
    tips = await fam.client.report.ListTips(gw.ListTipsRequest(page_size=5),
                                            metadata=fam.client.md)
    assert tips.tips
    # Reports are for parents only.
    await fails(child.report.GetChildReport(gw.GetChildReportRequest(child_id=fam.child_id),
                                            metadata=child.md), C.PERMISSION_DENIED)


async def test_export_gathers_profile_and_analytics(stack):
    fam = await new_family(stack.client)
    token, _ = await pair_device(fam)
    p, _ = await play_some(fam, token, sessions=3, weeks=1)
    export = await fam.client.privacy.ExportFamilyData(gw.ExportFamilyDataRequest(),
                                                       metadata=fam.client.md)
    assert export.profile.family_id == fam.family_id
    assert [c.child_id for c in export.profile.children] == [fam.child_id]
    (mine,) = export.children
    assert mine.child_id == fam.child_id and len(mine.sessions) == len(p.sessions)


async def test_erasure_reaches_every_service_and_can_be_retried(stack, fake):
    fam = await new_family(stack.client)
    token, _ = await pair_device(fam)
    await play_some(fam, token, sessions=3, weeks=1)
    conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=fam.child_id), metadata=fam.client.md)).conversation
    # A first attempt fails midway (inference unreachable) and changes nothing in profile.
    _, cut = await stack.extra_gateway(inference=DEAD_TARGET)
    await fails(cut.privacy.EraseFamily(gw.EraseFamilyRequest(password=PASSWORD),
                                        metadata=fam.client.md, timeout=30), C.UNAVAILABLE)
    await fam.client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
    # The retry completes.
    resp = await fam.client.privacy.EraseFamily(gw.EraseFamilyRequest(password=PASSWORD),
                                                metadata=fam.client.md)
    rows = dict(resp.deleted_rows)
    assert rows["inference.conversation_states"] == 1 and conv.conversation_id in fake.forgotten
    assert rows["gateway.sign_ins_revoked"] == 1
    # (analytics' rows went in the first attempt; the retry reports what it deleted)
    assert any(k.startswith("analytics.") for k in rows)
    assert any(k.startswith("profile.") and v for k, v in rows.items())
    # Nothing of the family works any more.
    await fails(fam.client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md),
                C.UNAUTHENTICATED)
    await fails(stack.client.auth.RefreshTokens(gw.RefreshTokensRequest(
        refresh_token=fam.tokens.refresh_token)), C.UNAUTHENTICATED)
    await fails(stack.client.avatar.GetAvatar(gw.GetAvatarRequest(), metadata=bearer(token)),
                C.UNAUTHENTICATED)
    await fails(stack.client.auth.SignIn(gw.SignInRequest(email=fam.email, password=PASSWORD)),
                C.UNAUTHENTICATED)


async def test_the_scripted_demo_runs_through_the_public_api(stack, fake):
    console = Console(record=True, width=140)
    result = await run_demo(stack.target, console, sessions=30, weeks=6,
                            question="How can we help with bedtime?")
    assert result.sessions > 0 and result.checkins > 0
    assert result.reply == "".join(fake.script.chunks)
    text = console.export_text()
    assert "Progress report" in text and "demo complete" in text
    assert fake.requests[-1].child.summary  # the assistant got the analytics summary


async def test_erasure_finishes_when_an_earlier_attempt_got_past_profile(stack):
    from avatario.profile.v1 import profile_pb2, profile_pb2_grpc
    from services.common.clients import internal_channel

    fam = await new_family(stack.client)
    token, _ = await pair_device(fam)
    await play_some(fam, token, sessions=2, weeks=1)
    # An earlier attempt erased profile, then failed before analytics' sweep.
    settings = stack.gateway.deps.settings
    async with internal_channel(stack.profile_target, settings, caller="tests") as channel:
        await profile_pb2_grpc.ProfileServiceStub(channel).EraseFamily(
            profile_pb2.EraseFamilyRequest(family_id=fam.family_id))
    resp = await fam.client.privacy.EraseFamily(gw.EraseFamilyRequest(password="anything at all"),
                                                metadata=fam.client.md)
    rows = dict(resp.deleted_rows)
    assert sum(v for k, v in rows.items() if k.startswith("analytics.")) > 0
    assert rows["gateway.sign_ins_revoked"] == 1
    await fails(fam.client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md),
                C.UNAUTHENTICATED)
