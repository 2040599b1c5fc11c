"""Consent is enforced where data is accepted, on SQLite and PostgreSQL.

Each transition of a family's consents, through the public API of a real gateway
in front of real profile and analytics servers (and a second gateway replica):
  * no CONSENT_SCOPE_GAMEPLAY_ANALYTICS: play writes answer FAILED_PRECONDITION with
    an ErrorInfo naming the scope, and nothing is stored, also when analytics is
    called directly (it checks with profile itself);
  * consent granted: writes go through; withdrawn: the next write fails at once on
    every replica, while the stored data stays readable to the parent;
  * CONSENT_SCOPE_CHILD_PROFILE withdrawn: device sign-in is refused (at once where
    the withdrawal was made, within device_cache_ttl_s on other replicas);
  * the chat sends the child's analytics summary only while gameplay consent is
    active, and the nickname only while child-profile consent is.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_status import rpc_status
from sqlalchemy import func, select

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.analytics.v1 import analytics_pb2_grpc as an_grpc
from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from services.common.clients import internal_channel
from services.common.db import Database
from services.common.status import error_info
from tests.integration.gateway.conftest import fake_target, profile_settings
from tests.integration.gateway.support import (
    ANALYTICS,
    CHAT,
    CHILD,
    fails,
    new_family,
    pair_device,
    plan_with_checkins,
)

C = grpc.StatusCode
SCOPE_NAME = {s: family_pb2.ConsentScope.Name(s) for s in (CHILD, ANALYTICS, CHAT)}


# The gateway talks to the scripted inference fake (conftest `fake`).
inference_target = pytest.fixture(name="inference_target")(fake_target)


def consent_missing(err: grpc.RpcError, scope: int) -> None:
    """FAILED_PRECONDITION whose ErrorInfo says CONSENT_REQUIRED for `scope`."""
    assert err.code() == C.FAILED_PRECONDITION, (err.code(), err.details())
    info = error_info(rpc_status.from_call(err))
    assert info is not None, "no ErrorInfo detail"
    assert info.reason == "CONSENT_REQUIRED" and info.domain == "avatario.app"
    assert info.metadata["scope"] == SCOPE_NAME[scope]


async def analytics_rows(stack) -> int:
    from services.analytics.models import CHILD_TABLES

    db = Database(stack.urls.analytics, pool_size=1)
    try:
        async with db.session() as s:
            return sum([(await s.execute(select(func.count()).select_from(m))).scalar_one()
                        for m in CHILD_TABLES])
    finally:
        await db.dispose()


def one_session(fam, seed: int = 2):
    p = plan_with_checkins(fam.child_id, 1, sessions=2, seed=seed)
    s = p.sessions[0]
    s.child_id = ""
    return s, p.checkins[0]


async def submit(client, session=None, checkin=None):
    if session is not None:
        return await client.play.SubmitGameSession(
            gw.SubmitGameSessionRequest(session=session), metadata=client.md)
    return await client.play.SubmitMoodCheckIn(
        gw.SubmitMoodCheckInRequest(checkin=checkin), metadata=client.md)


async def withdraw(fam, scope: int) -> None:
    await fam.client.family.WithdrawConsent(gw.WithdrawConsentRequest(scope=scope),
                                            metadata=fam.client.md)


async def grant(fam, *scopes: int) -> None:
    await fam.client.family.RecordConsent(gw.RecordConsentRequest(
        scopes=list(scopes), policy_version="2024-01"), metadata=fam.client.md)


async def test_play_writes_need_gameplay_consent_and_store_nothing_without_it(stack):
    fam = await new_family(stack.client, scopes=(CHILD,), birth_year=2018)
    token, _ = await pair_device(fam)  # pairing needs CHILD_PROFILE only
    device = fam.client.as_(token)
    session, checkin = one_session(fam)
    before = await analytics_rows(stack)
    for who, child_id in ((device, ""), (fam.client, fam.child_id)):  # device and parent
        session.child_id = checkin.child_id = child_id
        err = await fails(submit(who, session=session), C.FAILED_PRECONDITION)
        consent_missing(err, ANALYTICS)
        err = await fails(submit(who, checkin=checkin), C.FAILED_PRECONDITION)
        consent_missing(err, ANALYTICS)
    assert await analytics_rows(stack) == before

    # Analytics checks it itself: a caller that skips the gateway gets the same answer.
    child = (await fam.client.family.GetChild(gw.GetChildRequest(child_id=fam.child_id),
                                              metadata=fam.client.md)).child
    ref = an.ChildRef(family_id=fam.family_id, child_id=child.child_id,
                      birth_year=child.birth_year, birth_month=child.birth_month)
    settings = profile_settings(stack.urls.profile)
    channel = internal_channel(stack.analytics_target, settings, caller="tests")
    try:
        stub = an_grpc.AnalyticsServiceStub(channel)
        session.child_id = checkin.child_id = child.child_id
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SubmitGameSession(an.SubmitGameSessionRequest(child=ref, session=session))
        consent_missing(info.value, ANALYTICS)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SubmitMoodCheckIn(an.SubmitMoodCheckInRequest(child=ref, checkin=checkin))
        consent_missing(info.value, ANALYTICS)
    finally:
        await channel.close()
    assert await analytics_rows(stack) == before

    await grant(fam, ANALYTICS)  # granted: the same writes go through
    session.child_id = checkin.child_id = ""
    assert not (await submit(device, session=session)).duplicate
    assert not (await submit(device, checkin=checkin)).duplicate
    assert await analytics_rows(stack) > before


async def test_a_withdrawal_stops_play_writes_at_once_on_every_replica(stack):
    fam = await new_family(stack.client, birth_year=2018)
    token, _ = await pair_device(fam)
    # A second replica that keeps device credentials for a long time: the write check
    # must not depend on any gateway cache.
    _, other = await stack.extra_gateway(device_cache_ttl_s=10)
    devices = [fam.client.as_(token), other.as_(token)]
    p = plan_with_checkins(fam.child_id, 2, sessions=6, seed=5)
    for i, device in enumerate(devices):  # both replicas have the device cached now
        p.sessions[i].child_id = ""
        await submit(device, session=p.sessions[i])

    await withdraw(fam, ANALYTICS)
    for i, device in enumerate(devices):
        p.sessions[2 + i].child_id = ""
        consent_missing(await fails(submit(device, session=p.sessions[2 + i]),
                                    C.FAILED_PRECONDITION), ANALYTICS)
        p.checkins[i].child_id = ""
        consent_missing(await fails(submit(device, checkin=p.checkins[i]),
                                    C.FAILED_PRECONDITION), ANALYTICS)

    # What was stored stays readable to the parent until erased.
    report = (await fam.client.report.GetChildReport(gw.GetChildReportRequest(
        child_id=fam.child_id), metadata=fam.client.md)).report
    assert sum(s.session_count for s in report.domain_scores) == 2
    export = await fam.client.privacy.ExportFamilyData(gw.ExportFamilyDataRequest(),
                                                      metadata=fam.client.md)
    assert len(export.children[0].sessions) == 2

    await grant(fam, ANALYTICS)  # consent again: writes resume
    p.sessions[4].child_id = ""
    assert not (await submit(devices[1], session=p.sessions[4])).duplicate


async def test_device_sign_in_is_refused_once_child_profile_consent_is_withdrawn(stack):
    fam = await new_family(stack.client, birth_year=2018)
    token, _ = await pair_device(fam)
    ttl = 0.5
    _, cached = await stack.extra_gateway(device_cache_ttl_s=ttl)
    _, fresh = await stack.extra_gateway()
    here, there = fam.client.as_(token), cached.as_(token)
    for device in (here, there):
        await device.avatar.GetAvatar(gw.GetAvatarRequest(), metadata=device.md)

    await withdraw(fam, CHILD)
    # The replica that took the withdrawal forgets the device at once; one that never
    # saw the device asks profile, which refuses.
    for device in (here, fresh.as_(token)):
        err = await fails(device.avatar.GetAvatar(gw.GetAvatarRequest(), metadata=device.md),
                          C.FAILED_PRECONDITION)
        consent_missing(err, CHILD)
    # Another replica stops within its device_cache_ttl_s.
    await asyncio.sleep(ttl + 0.2)
    err = await fails(there.avatar.GetAvatar(gw.GetAvatarRequest(), metadata=there.md),
                      C.FAILED_PRECONDITION)
    consent_missing(err, CHILD)
    # The parent still reads the child's data.
    await fam.client.family.GetChild(gw.GetChildRequest(child_id=fam.child_id),
                                     metadata=fam.client.md)
    await fam.client.report.GetChildReport(gw.GetChildReportRequest(child_id=fam.child_id),
                                           metadata=fam.client.md)


async def _chat(fam, conv_id: str, turn: int):
    import uuid

    call = fam.client.chat.Chat(gw.ChatRequest(
        conversation_id=conv_id, message=f"How is my child doing? ({turn})",
        turn_id=str(uuid.uuid4())), metadata=fam.client.md)
    return [r async for r in call]


async def test_the_chat_gets_the_play_summary_only_with_gameplay_consent(stack, fake):
    fam = await new_family(stack.client, birth_year=2018)
    token, _ = await pair_device(fam)
    device = fam.client.as_(token)
    for s in plan_with_checkins(fam.child_id, 0, sessions=8, weeks=2, seed=7).sessions:
        s.child_id = ""
        await submit(device, session=s)
    conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=fam.child_id, title="Sleep"), metadata=fam.client.md)).conversation

    await _chat(fam, conv.conversation_id, 1)
    first = fake.requests[-1].child
    assert first.summary and first.nickname == "Sunny" and first.age_months > 0

    await withdraw(fam, ANALYTICS)
    await _chat(fam, conv.conversation_id, 2)
    second = fake.requests[-1].child
    assert second.summary == "" and second.nickname == "Sunny"

    await withdraw(fam, CHILD)
    await _chat(fam, conv.conversation_id, 3)
    third = fake.requests[-1].child
    assert third.summary == "" and third.nickname == "" and third.age_months == 0

    await withdraw(fam, CHAT)
    consent_missing(await fails(_chat(fam, conv.conversation_id, 4), C.FAILED_PRECONDITION),
                    CHAT)
    assert len(fake.requests) == 3  # the refused turn never reached the model
