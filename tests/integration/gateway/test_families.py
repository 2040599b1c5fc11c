"""Families as they are (issue 17), through the public API with the real profile and
analytics services on SQLite and PostgreSQL: a second parent (invite, sign up or
join, roles), chats private unless shared, DeleteChild erasing one child in
every service and on every inference replica (checked by scanning every table),
ChangePassword's fresh tokens, the chat history read newest first, and the turn
limit."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_status import rpc_status
from sqlalchemy import select, update

from avatario.common.v1 import chat_pb2, family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.simulate import plan
from services.analytics.models import Base as AnalyticsBase
from services.common.db import Database
from services.common.status import error_info
from services.gateway.models import Base as GatewayBase
from services.profile.models import Base as ProfileBase
from services.profile.models import Conversation
from tests.integration.gateway.conftest import running_stack
from tests.integration.gateway.fakes import FakeInference, start_fake
from tests.integration.gateway.support import (
    PASSWORD,
    Fam,
    bearer,
    fails,
    new_email,
    new_family,
    pair_device,
    sign_up,
)

C = grpc.StatusCode
OWNER, PARENT = family_pb2.FAMILY_ROLE_OWNER, family_pb2.FAMILY_ROLE_PARENT


async def invite(fam: Fam) -> str:
    return (await fam.client.family.CreateFamilyInvite(
        gw.CreateFamilyInviteRequest(), metadata=fam.client.md)).code


async def second_parent(stack, fam: Fam, code: str = "") -> Fam:
    code = code or await invite(fam)
    resp = await stack.client.auth.SignUp(gw.SignUpRequest(
        email=new_email(), password=PASSWORD, display_name="Sam", invite_code=code))
    return Fam(resp.parent.email, resp.parent, resp.tokens,
               stack.client.as_(resp.tokens.access_token), child_id=fam.child_id)


def reason(err: grpc.RpcError) -> str:
    info = error_info(rpc_status.from_call(err))
    return info.reason if info is not None else ""


async def test_a_second_parent_signs_up_with_an_invite_and_sees_the_children(stack):
    owner = await new_family(stack.client)
    code = await invite(owner)
    second = await second_parent(stack, owner, code)
    assert second.family_id == owner.family_id and second.parent.role == PARENT
    # Single use: the same code again is refused like an unknown one.
    await fails(stack.client.auth.SignUp(gw.SignUpRequest(
        email=new_email(), password=PASSWORD, display_name="Al", invite_code=code)), C.NOT_FOUND)
    await fails(stack.client.auth.SignUp(gw.SignUpRequest(
        email=new_email(), password=PASSWORD, display_name="Al", invite_code="!!")),
        C.INVALID_ARGUMENT, "invite_code")
    kids = await second.client.family.ListChildren(gw.ListChildrenRequest(),
                                                   metadata=second.client.md)
    assert [c.child_id for c in kids.children] == [owner.child_id]
    report = await second.client.report.GetChildReport(gw.GetChildReportRequest(
        child_id=owner.child_id), metadata=second.client.md)
    assert report.report.child_id == owner.child_id
    parents = (await second.client.family.ListParents(gw.ListParentsRequest(),
                                                      metadata=second.client.md)).parents
    assert [(p.parent_id, p.role) for p in parents] == [
        (owner.parent.parent_id, OWNER), (second.parent.parent_id, PARENT)]
    # Consent records name who gave and who withdrew them.
    await second.client.family.WithdrawConsent(gw.WithdrawConsentRequest(
        scope=family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT), metadata=second.client.md)
    consents = (await owner.client.family.ListConsents(gw.ListConsentsRequest(
        include_withdrawn=True), metadata=owner.client.md)).consents
    chat = [c for c in consents if c.scope == family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT]
    assert [(c.parent_id, c.withdrawn_by_parent_id) for c in chat] == [
        (owner.parent.parent_id, second.parent.parent_id)]


async def test_an_existing_empty_account_joins_and_gets_fresh_tokens(stack):
    owner = await new_family(stack.client)
    alone = await sign_up(stack.client)
    with_child = await new_family(stack.client)
    await fails(with_child.client.family.JoinFamily(gw.JoinFamilyRequest(
        code=await invite(owner)), metadata=with_child.client.md), C.FAILED_PRECONDITION)
    resp = await alone.client.family.JoinFamily(gw.JoinFamilyRequest(
        code=await invite(owner)), metadata=alone.client.md)
    assert resp.parent.family_id == owner.family_id and resp.parent.role == PARENT
    joined = alone.client.as_(resp.tokens.access_token)
    kids = await joined.family.ListChildren(gw.ListChildrenRequest(), metadata=joined.md)
    assert [c.child_id for c in kids.children] == [owner.child_id]
    # The tokens of the family it left end.
    await fails(alone.client.family.GetAccount(gw.GetAccountRequest(), metadata=alone.client.md),
                C.UNAUTHENTICATED)
    await fails(alone.client.family.JoinFamily(gw.JoinFamilyRequest(code="ABCD"),
                                               metadata=joined.md), C.INVALID_ARGUMENT, "code")


async def test_only_the_owner_erases_removes_or_hands_on(stack):
    owner = await new_family(stack.client)
    second = await second_parent(stack, owner)
    s = second.client
    await fails(s.privacy.EraseFamily(gw.EraseFamilyRequest(password=PASSWORD), metadata=s.md),
                C.PERMISSION_DENIED)
    await fails(s.family.RemoveParent(gw.RemoveParentRequest(
        parent_id=owner.parent.parent_id), metadata=s.md), C.PERMISSION_DENIED)
    await fails(s.family.TransferOwnership(gw.TransferOwnershipRequest(
        parent_id=second.parent.parent_id, password=PASSWORD), metadata=s.md),
        C.PERMISSION_DENIED)
    o = owner.client
    err = await fails(o.family.RemoveParent(gw.RemoveParentRequest(
        parent_id=owner.parent.parent_id), metadata=o.md), C.FAILED_PRECONDITION)
    assert reason(err) == "OWNER_CANNOT_LEAVE"
    await fails(o.family.TransferOwnership(gw.TransferOwnershipRequest(
        parent_id=second.parent.parent_id, password="not the password"), metadata=o.md),
        C.PERMISSION_DENIED)
    await fails(o.family.TransferOwnership(gw.TransferOwnershipRequest(
        parent_id=str(uuid.uuid4()), password=PASSWORD), metadata=o.md), C.NOT_FOUND)
    parents = (await o.family.TransferOwnership(gw.TransferOwnershipRequest(
        parent_id=second.parent.parent_id, password=PASSWORD), metadata=o.md)).parents
    assert {p.parent_id: p.role for p in parents} == {
        owner.parent.parent_id: PARENT, second.parent.parent_id: OWNER}
    # Roles follow at once, on tokens issued before.
    await fails(o.privacy.EraseFamily(gw.EraseFamilyRequest(password=PASSWORD), metadata=o.md),
                C.PERMISSION_DENIED)
    await s.family.RemoveParent(gw.RemoveParentRequest(parent_id=owner.parent.parent_id),
                                metadata=s.md)
    await fails(o.family.ListChildren(gw.ListChildrenRequest(), metadata=o.md),
                C.UNAUTHENTICATED)
    back = await stack.client.auth.SignIn(gw.SignInRequest(email=owner.email, password=PASSWORD))
    assert back.parent.family_id != owner.family_id and back.parent.role == OWNER
    mine = stack.client.as_(back.tokens.access_token)
    assert not (await mine.family.ListChildren(gw.ListChildrenRequest(),
                                               metadata=mine.md)).children
    # The family keeps its children and its consent history, naming the parent who left.
    kids = await s.family.ListChildren(gw.ListChildrenRequest(), metadata=s.md)
    assert [c.child_id for c in kids.children] == [owner.child_id]
    consents = (await s.family.ListConsents(gw.ListConsentsRequest(), metadata=s.md)).consents
    assert {c.parent_id for c in consents} == {owner.parent.parent_id}


async def test_a_parent_who_is_not_the_owner_may_leave(stack):
    owner = await new_family(stack.client)
    second = await second_parent(stack, owner)
    await second.client.family.RemoveParent(gw.RemoveParentRequest(
        parent_id=second.parent.parent_id), metadata=second.client.md)
    parents = (await owner.client.family.ListParents(gw.ListParentsRequest(),
                                                     metadata=owner.client.md)).parents
    assert [p.parent_id for p in parents] == [owner.parent.parent_id]


async def test_chats_are_private_to_their_parent_unless_shared(stack):
    owner = await new_family(stack.client)
    second = await second_parent(stack, owner)
    o, s = owner.client, second.client
    private = (await o.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=owner.child_id, title="mine"), metadata=o.md)).conversation
    shared = (await o.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=owner.child_id, title="ours", shared=True), metadata=o.md)).conversation
    assert private.owner_parent_id == owner.parent.parent_id and not private.shared
    assert private.turn_limit > 0
    listed = (await s.chat.ListConversations(gw.ListConversationsRequest(),
                                             metadata=s.md)).conversations
    assert [c.conversation_id for c in listed] == [shared.conversation_id]
    for call in (s.chat.GetConversation(gw.GetConversationRequest(
                     conversation_id=private.conversation_id), metadata=s.md),
                 s.chat.ListMessages(gw.ListMessagesRequest(
                     conversation_id=private.conversation_id), metadata=s.md),
                 s.chat.UpdateConversation(gw.UpdateConversationRequest(
                     conversation_id=private.conversation_id, shared=True), metadata=s.md)):
        await fails(call, C.NOT_FOUND)
    # A shared conversation is read-only for the other parent.
    await s.chat.GetConversation(gw.GetConversationRequest(
        conversation_id=shared.conversation_id), metadata=s.md)
    with pytest.raises(grpc.RpcError) as info:
        async for _ in s.chat.Chat(gw.ChatRequest(
                conversation_id=shared.conversation_id, message="hello",
                turn_id=str(uuid.uuid4())), metadata=s.md):
            pass
    assert info.value.code() == C.PERMISSION_DENIED
    await fails(s.chat.UpdateConversation(gw.UpdateConversationRequest(
        conversation_id=shared.conversation_id, shared=False), metadata=s.md),
        C.PERMISSION_DENIED)
    # Sharing it makes it readable; the other parent's export follows the same rule.
    await o.chat.UpdateConversation(gw.UpdateConversationRequest(
        conversation_id=private.conversation_id, shared=True), metadata=o.md)
    await s.chat.GetConversation(gw.GetConversationRequest(
        conversation_id=private.conversation_id), metadata=s.md)
    await o.chat.UpdateConversation(gw.UpdateConversationRequest(
        conversation_id=private.conversation_id, shared=False), metadata=o.md)
    seen = set()
    async for resp in s.privacy.StreamFamilyExport(gw.StreamFamilyExportRequest(),
                                                   metadata=s.md):
        seen |= {r.conversation.conversation_id for r in resp.profile
                 if r.WhichOneof("record") == "conversation"}
    assert seen == {shared.conversation_id}


async def test_change_password_answers_fresh_tokens(stack):
    fam = await new_family(stack.client, child=False)
    resp = await fam.client.auth.ChangePassword(gw.ChangePasswordRequest(
        current_password=PASSWORD, new_password="a brand new password"), metadata=fam.client.md)
    assert resp.tokens.access_token and resp.tokens.refresh_token
    await fails(fam.client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md),
                C.UNAUTHENTICATED)
    fresh = fam.client.as_(resp.tokens.access_token)
    await fresh.family.GetAccount(gw.GetAccountRequest(), metadata=fresh.md)
    await stack.client.auth.RefreshTokens(gw.RefreshTokensRequest(
        refresh_token=resp.tokens.refresh_token))


# -- erase one child -----------------------------------------------------------------


@asynccontextmanager
async def fleet_stack(db_urls, replicas: int = 2):
    fakes = [FakeInference() for _ in range(replicas)]
    for f in fakes:
        f.server, f.port = await start_fake(f)
    target = ",".join(f"127.0.0.1:{f.port}" for f in fakes)
    try:
        async with running_stack(db_urls, inference_target=target) as stack:
            yield stack, fakes
    finally:
        for f in fakes:
            await f.server.stop(0)


async def rows_naming(url: str, metadata, needles: set[str]) -> list[str]:
    """Every row of every table whose values mention one of `needles`."""
    db = Database(url, pool_size=1)
    found = []
    try:
        async with db.session() as session:
            for table in metadata.sorted_tables:
                for row in (await session.execute(select(table))).all():
                    text = repr(tuple(row))
                    found.extend(f"{table.name}: {n}" for n in needles if n in text)
    finally:
        await db.dispose()
    return found


async def chat_turn(fam: Fam, conversation_id: str, message: str = "How is sleep going?"):
    return [m async for m in fam.client.chat.Chat(gw.ChatRequest(
        conversation_id=conversation_id, message=message, turn_id=str(uuid.uuid4()),
        params=chat_pb2.GenerationParams(max_tokens=8)), metadata=fam.client.md)]


async def use_child(fam: Fam, child_id: str) -> dict[str, str]:
    """Everything a child leaves behind: play, check-ins, a device, an avatar, a chat."""
    token, device = await pair_device(fam, child_id)
    dev = fam.client.as_(token)
    p = plan(child_id, 2018, 3, sessions=4, weeks=1, seed=int(child_id[:8], 16))
    for s in p.sessions:
        s.child_id = ""
        await dev.play.SubmitGameSession(gw.SubmitGameSessionRequest(session=s), metadata=dev.md)
    for c in p.checkins[:2]:
        await dev.play.SubmitMoodCheckIn(gw.SubmitMoodCheckInRequest(checkin=c), metadata=dev.md)
    await fam.client.device.CreatePairingCode(gw.CreatePairingCodeRequest(child_id=child_id),
                                              metadata=fam.client.md)
    conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=child_id, title="sleep"), metadata=fam.client.md)).conversation
    await chat_turn(fam, conv.conversation_id)
    return {"child": child_id, "device": device.device_id, "conversation": conv.conversation_id,
            "token": token}


async def test_delete_child_erases_it_in_every_service_and_on_every_replica(db_urls):
    async with fleet_stack(db_urls) as (stack, fakes):
        fam = await new_family(stack.client)
        other = (await fam.client.family.CreateChild(gw.CreateChildRequest(
            nickname="Bo", birth_year=2017, birth_month=6), metadata=fam.client.md)).child
        second = await second_parent(stack, fam)
        gone = await use_child(fam, fam.child_id)
        # The other parent's private chat about the child goes too.
        private = (await second.client.chat.CreateConversation(gw.CreateConversationRequest(
            child_id=fam.child_id), metadata=second.client.md)).conversation
        await chat_turn(second, private.conversation_id)
        kept = await use_child(fam, other.child_id)

        await fails(fam.client.privacy.DeleteChild(gw.DeleteChildRequest(
            child_id=fam.child_id, password="wrong password"), metadata=fam.client.md),
            C.PERMISSION_DENIED)
        resp = await second.client.privacy.DeleteChild(gw.DeleteChildRequest(
            child_id=fam.child_id, password=PASSWORD), metadata=second.client.md)
        rows = resp.deleted_rows
        assert rows["profile.children"] == 1 and rows["analytics.game_sessions"] == 4
        assert rows["profile.chat_messages"] == 4 and rows["inference.conversation_states"] > 0

        needles = {gone["child"], gone["device"], gone["conversation"], private.conversation_id}
        for url, metadata in ((stack.urls.profile, ProfileBase.metadata),
                              (stack.urls.analytics, AnalyticsBase.metadata),
                              (stack.urls.gateway, GatewayBase.metadata)):
            assert await rows_naming(url, metadata, needles) == []
        # The sibling is untouched, in every service.
        for url, metadata in ((stack.urls.profile, ProfileBase.metadata),
                              (stack.urls.analytics, AnalyticsBase.metadata)):
            assert await rows_naming(url, metadata, {kept["child"]})
        report = await fam.client.report.GetChildReport(gw.GetChildReportRequest(
            child_id=other.child_id), metadata=fam.client.md)
        assert sum(s.session_count for s in report.report.domain_scores) == 4
        # Every replica was told to erase both conversations' state.
        for f in fakes:
            assert {gone["conversation"], private.conversation_id} <= set(f.erased)
            assert kept["conversation"] not in f.erased
        # The device is gone, the child answers like one that never was, the log
        # keeps the fact without the child's id.
        await fails(fam.client.family.GetAccount(gw.GetAccountRequest(),
                                                 metadata=bearer(gone["token"])),
                    C.UNAUTHENTICATED)
        await fails(fam.client.family.GetChild(gw.GetChildRequest(child_id=fam.child_id),
                                               metadata=fam.client.md), C.NOT_FOUND)
        events = (await fam.client.family.ListAuditEvents(gw.ListAuditEventsRequest(),
                                                          metadata=fam.client.md)).events
        assert events[0].action == "child.deleted"
        assert events[0].actor == f"parent:{second.parent.parent_id}"
        await fails(fam.client.privacy.DeleteChild(gw.DeleteChildRequest(
            child_id=fam.child_id, password=PASSWORD), metadata=fam.client.md), C.NOT_FOUND)


# -- conversations -------------------------------------------------------------------


async def test_the_chat_history_is_the_newest_turns_read_newest_first(db_urls, monkeypatch):
    async with fleet_stack(db_urls, replicas=1) as (stack, fakes):
        fam = await new_family(stack.client)
        conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
            child_id=fam.child_id), metadata=fam.client.md)).conversation
        for i in range(12):
            await chat_turn(fam, conv.conversation_id, message=f"question {i}")
        newest = (await fam.client.chat.ListMessages(gw.ListMessagesRequest(
            conversation_id=conv.conversation_id, newest_first=True, page_size=3),
            metadata=fam.client.md))
        assert [m.text for m in newest.messages][1] == "question 11"
        assert [m.role for m in newest.messages] == [2, 1, 2]
        page2 = await fam.client.chat.ListMessages(gw.ListMessagesRequest(
            conversation_id=conv.conversation_id, newest_first=True, page_size=3,
            page_token=newest.next_page_token), metadata=fam.client.md)
        assert [m.text for m in page2.messages][::2] == ["question 10", "question 9"]

        asked = []
        profile = stack.gateway.deps.backends.profile
        real = profile.call

        async def spy(method, request, **kw):
            if method == "ListMessages":
                asked.append(request)
            return await real(method, request, **kw)

        monkeypatch.setattr(profile, "call", spy)
        await chat_turn(fam, conv.conversation_id, message="question 12")
        history = fakes[0].requests[-1].history
        want = stack.gateway.deps.settings.chat_history_turns
        assert [t.text for t in history][::2] == [f"question {i}" for i in range(12 - want, 12)]
        # One turn lookup and one page of the newest messages, not the whole conversation.
        assert len(asked) == 2
        assert {(r.newest_first, bool(r.turn_id)) for r in asked} == {(True, False), (False, True)}


async def test_a_conversation_at_its_turn_limit_is_refused_before_inference(db_urls):
    async with fleet_stack(db_urls, replicas=1) as (stack, fakes):
        fam = await new_family(stack.client)
        conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
            child_id=fam.child_id), metadata=fam.client.md)).conversation
        await chat_turn(fam, conv.conversation_id)
        db = Database(stack.urls.profile, pool_size=1)
        async with db.transaction() as session:
            await session.execute(update(Conversation).where(
                Conversation.id == conv.conversation_id).values(turn_count=conv.turn_limit))
        await db.dispose()
        asked = len(fakes[0].requests)
        with pytest.raises(grpc.RpcError) as info:
            await chat_turn(fam, conv.conversation_id)
        assert info.value.code() == C.FAILED_PRECONDITION
        assert reason(info.value) == "CONVERSATION_TURN_LIMIT"
        assert str(conv.turn_limit) in info.value.details()
        assert len(fakes[0].requests) == asked
