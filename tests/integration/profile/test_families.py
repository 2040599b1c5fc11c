"""Profile's side of issue 17 on SQLite and PostgreSQL: invites (expiry, single use,
the family's size), joining, roles, conversation privacy and the turn limit,
messages newest first, DeleteChild leaving no row that names the child, and the
streamed export; bad input for every new RPC."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from avatario.common.v1 import chat_pb2, family_pb2
from avatario.profile.v1 import profile_pb2 as pb
from avatario.profile.v1 import profile_pb2_grpc
from services.common.clients import internal_channel
from services.common.db import Database
from services.profile.main import build_server
from services.profile.models import Base
from tests.helpers import assert_rpc_error
from tests.integration.profile.conftest import profile_settings
from tests.integration.profile.support import (
    CHAT,
    CHILD,
    PASSWORD,
    Fam,
    Profile,
    fails,
    new_email,
    new_family,
    new_id,
    precondition_types,
)

C = grpc.StatusCode
OWNER, PARENT = family_pb2.FAMILY_ROLE_OWNER, family_pb2.FAMILY_ROLE_PARENT
STOP = chat_pb2.FINISH_REASON_STOP


async def invite(p, fam: Fam) -> str:
    return (await p.stub.CreateFamilyInvite(pb.CreateFamilyInviteRequest(
        family_id=fam.family_id, parent_id=fam.parent_id))).code


async def join(p, code: str) -> family_pb2.Parent:
    return (await p.stub.CreateParent(pb.CreateParentRequest(
        email=new_email(), password=PASSWORD, display_name="Sam", invite_code=code))).parent


async def test_an_invite_works_once_and_until_it_expires(profile):
    p = profile
    fam = await new_family(p)
    code = await invite(p, fam)
    # Typed in lower case with a dash, as a person would.
    second = await join(p, code[:4].lower() + "-" + code[4:])
    assert (second.family_id, second.role) == (fam.family_id, PARENT)
    await fails(join(p, code), C.NOT_FOUND)
    late = await invite(p, fam)
    p.clock.advance(seconds=p.settings.family_invite_ttl_s + 1)
    await fails(join(p, late), C.NOT_FOUND)


async def test_a_family_holds_at_most_four_parents(profile):
    p = profile
    fam = await new_family(p)
    codes = [await invite(p, fam) for _ in range(4)]
    for code in codes[:3]:
        await join(p, code)
    err = await fails(join(p, codes[3]), C.FAILED_PRECONDITION)
    assert precondition_types(err) == ["FAMILY_FULL"]
    await fails(p.stub.CreateFamilyInvite(pb.CreateFamilyInviteRequest(
        family_id=fam.family_id, parent_id=fam.parent_id)), C.FAILED_PRECONDITION)


async def test_join_moves_an_empty_account_and_erases_its_family(profile):
    p = profile
    fam = await new_family(p)
    alone = await new_family(p, child=False)
    resp = await p.stub.JoinFamily(pb.JoinFamilyRequest(
        family_id=alone.family_id, parent_id=alone.parent_id, code=await invite(p, fam)))
    assert resp.left_family_id == alone.family_id
    assert (resp.parent.family_id, resp.parent.role) == (fam.family_id, PARENT)
    await fails(p.stub.ListChildren(pb.ListChildrenRequest(family_id=alone.family_id)),
                C.NOT_FOUND)
    # Already a member; a family with children cannot be left this way.
    await fails(p.stub.JoinFamily(pb.JoinFamilyRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, code=await invite(p, fam))),
        C.ALREADY_EXISTS)
    full = await new_family(p)
    err = await fails(p.stub.JoinFamily(pb.JoinFamilyRequest(
        family_id=full.family_id, parent_id=full.parent_id, code=await invite(p, fam))),
        C.FAILED_PRECONDITION)
    assert precondition_types(err) == ["FAMILY_NOT_EMPTY"]


async def test_roles_decide_removal_transfer_and_erasure(profile):
    p = profile
    fam = await new_family(p)
    second = await join(p, await invite(p, fam))
    await fails(p.stub.EraseFamily(pb.EraseFamilyRequest(
        family_id=fam.family_id, parent_id=second.parent_id)), C.PERMISSION_DENIED)
    await fails(p.stub.TransferOwnership(pb.TransferOwnershipRequest(
        family_id=fam.family_id, parent_id=second.parent_id,
        new_owner_parent_id=second.parent_id)), C.PERMISSION_DENIED)
    await fails(p.stub.TransferOwnership(pb.TransferOwnershipRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, new_owner_parent_id=fam.parent_id)),
        C.INVALID_ARGUMENT, "new_owner_parent_id")
    parents = (await p.stub.TransferOwnership(pb.TransferOwnershipRequest(
        family_id=fam.family_id, parent_id=fam.parent_id,
        new_owner_parent_id=second.parent_id))).parents
    assert {x.parent_id: x.role for x in parents} == {fam.parent_id: PARENT,
                                                     second.parent_id: OWNER}
    # A withdrawal names who withdrew; the record survives its giver's departure.
    await p.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=second.parent_id, scope=CHAT))
    removed = await p.stub.RemoveParent(pb.RemoveParentRequest(
        family_id=fam.family_id, parent_id=second.parent_id, removed_parent_id=fam.parent_id))
    assert removed.parent.family_id != fam.family_id and removed.parent.role == OWNER
    consents = (await p.stub.ListConsents(pb.ListConsentsRequest(
        family_id=fam.family_id, include_withdrawn=True))).consents
    assert {(c.scope, c.parent_id, c.withdrawn_by_parent_id) for c in consents} == {
        (CHILD, fam.parent_id, ""), (CHAT, fam.parent_id, second.parent_id)}
    # Erasing the departed parent's new family leaves this family's history alone.
    await p.stub.EraseFamily(pb.EraseFamilyRequest(family_id=removed.parent.family_id,
                                                   parent_id=fam.parent_id))
    again = (await p.stub.ListConsents(pb.ListConsentsRequest(
        family_id=fam.family_id, include_withdrawn=True))).consents
    assert len(again) == 2


async def append(p, fam: Fam, conv_id: str, parent_id: str = "", text: str = "hi"):
    return await p.stub.AppendTurn(pb.AppendTurnRequest(
        family_id=fam.family_id, conversation_id=conv_id, turn_id=new_id(), user_message=text,
        assistant_message=f"re: {text}", finish_reason=STOP, parent_id=parent_id))


async def test_conversations_are_private_and_continued_only_by_their_owner(profile):
    p = profile
    fam = await new_family(p)
    second = await join(p, await invite(p, fam))
    conv = (await p.stub.CreateConversation(pb.CreateConversationRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id))).conversation
    assert conv.turn_limit == p.settings.conversation_turn_limit
    viewer = dict(family_id=fam.family_id, parent_id=second.parent_id)
    await fails(p.stub.GetConversation(pb.GetConversationRequest(
        conversation_id=conv.conversation_id, **viewer)), C.NOT_FOUND)
    await fails(append(p, fam, conv.conversation_id, second.parent_id), C.NOT_FOUND)
    assert not (await p.stub.ListConversations(pb.ListConversationsRequest(
        **viewer))).conversations
    # Internal callers (erasure) see every conversation.
    assert len((await p.stub.ListConversations(pb.ListConversationsRequest(
        family_id=fam.family_id))).conversations) == 1
    await p.stub.UpdateConversation(pb.UpdateConversationRequest(
        family_id=fam.family_id, conversation_id=conv.conversation_id,
        parent_id=fam.parent_id, shared=True))
    await p.stub.GetConversation(pb.GetConversationRequest(
        conversation_id=conv.conversation_id, **viewer))
    await fails(append(p, fam, conv.conversation_id, second.parent_id), C.PERMISSION_DENIED)
    await append(p, fam, conv.conversation_id, fam.parent_id)
    # Removing a parent erases their private conversations, not the shared ones.
    private = (await p.stub.CreateConversation(pb.CreateConversationRequest(
        family_id=fam.family_id, child_id=fam.child_id,
        parent_id=second.parent_id))).conversation
    removed = await p.stub.RemoveParent(pb.RemoveParentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, removed_parent_id=second.parent_id))
    assert list(removed.conversation_ids) == [private.conversation_id]


async def test_the_turn_limit_and_messages_newest_first(profile_db_url, clock):
    settings = profile_settings(profile_db_url, conversation_turn_limit=5)
    db = Database(profile_db_url, pool_size=2)
    server, port = await build_server(settings, db, clock=clock)
    await server.start()
    channel = internal_channel(f"127.0.0.1:{port}", settings, caller="tests")
    p = Profile(profile_pb2_grpc.ProfileServiceStub(channel), db, clock, port, settings, server)
    try:
        fam = await new_family(p)
        conv = (await p.stub.CreateConversation(pb.CreateConversationRequest(
            family_id=fam.family_id, child_id=fam.child_id))).conversation
        turns = [await append(p, fam, conv.conversation_id, text=f"q{i}") for i in range(5)]
        err = await fails(append(p, fam, conv.conversation_id), C.FAILED_PRECONDITION)
        assert precondition_types(err) == ["CONVERSATION_TURN_LIMIT"]
        # A retried turn is still answered from what was stored.
        last = turns[-1].user_message
        await p.stub.AppendTurn(pb.AppendTurnRequest(
            family_id=fam.family_id, conversation_id=conv.conversation_id,
            turn_id=last.turn_id, user_message="q4", assistant_message="re: q4",
            finish_reason=STOP))
        base = dict(family_id=fam.family_id, conversation_id=conv.conversation_id)
        seen, token = [], ""
        while True:
            page = await p.stub.ListMessages(pb.ListMessagesRequest(
                **base, newest_first=True, page_size=3, page_token=token))
            seen += [m.text for m in page.messages]
            token = page.next_page_token
            if not token:
                break
        oldest = (await p.stub.ListMessages(pb.ListMessagesRequest(**base))).messages
        assert seen == [m.text for m in oldest][::-1] and len(seen) == 10
        one = await p.stub.ListMessages(pb.ListMessagesRequest(**base, turn_id=last.turn_id))
        assert [m.text for m in one.messages] == ["q4", "re: q4"]
        # A token from one order is refused by the other, naming the field.
        first = await p.stub.ListMessages(pb.ListMessagesRequest(**base, page_size=2))
        await fails(p.stub.ListMessages(pb.ListMessagesRequest(
            **base, newest_first=True, page_token=first.next_page_token)),
            C.INVALID_ARGUMENT, "page_token")
    finally:
        await channel.close()
        await server.stop(0)
        await db.dispose()


async def test_delete_child_leaves_no_row_that_names_it(profile):
    p = profile
    fam = await new_family(p)
    other = (await p.stub.CreateChild(pb.CreateChildRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, nickname="Bo",
        birth_year=p.clock.now.year - 6, birth_month=2))).child.child_id
    for child_id in (fam.child_id, other):
        code = (await p.stub.CreatePairingCode(pb.CreatePairingCodeRequest(
            family_id=fam.family_id, child_id=child_id, parent_id=fam.parent_id))).code
        device = (await p.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
            code=code, device_name="Tab"))).device
        await p.stub.RevokeDevice(pb.RevokeDeviceRequest(
            family_id=fam.family_id, device_id=device.device_id, parent_id=fam.parent_id))
        await p.stub.AwardXp(pb.AwardXpRequest(family_id=fam.family_id, child_id=child_id,
                                               amount=50, source_id=f"s:{child_id}"))
        await p.stub.UpdateChild(pb.UpdateChildRequest(
            family_id=fam.family_id, child_id=child_id, nickname="Z", parent_id=fam.parent_id))
        conv = (await p.stub.CreateConversation(pb.CreateConversationRequest(
            family_id=fam.family_id, child_id=child_id))).conversation
        await append(p, fam, conv.conversation_id)
    resp = await p.stub.DeleteChild(pb.DeleteChildRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id))
    assert resp.deleted_rows["children"] == 1 and len(resp.conversation_ids) == 1
    assert resp.deleted_rows["audit_events"] >= 4
    named = {fam.child_id, *resp.conversation_ids, *resp.device_ids}
    async with p.db.session() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                assert not any(n in repr(tuple(row)) for n in named), table.name
        sibling = 0
        for table in Base.metadata.sorted_tables:
            sibling += sum(other in repr(tuple(r)) for r in (await session.execute(
                select(table))).all())
    assert sibling >= 10
    await fails(p.stub.DeleteChild(pb.DeleteChildRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id)), C.NOT_FOUND)


async def test_the_stream_equals_the_one_message_export(profile):
    p = profile
    fam = await new_family(p)
    await invite(p, fam)
    conv = (await p.stub.CreateConversation(pb.CreateConversationRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id))).conversation
    for i in range(3):
        await append(p, fam, conv.conversation_id, text=f"q{i}")
    req = dict(family_id=fam.family_id, parent_id=fam.parent_id)
    one = (await p.stub.ExportFamilyData(pb.ExportFamilyDataRequest(**req))).export
    records = []
    async for resp in p.stub.StreamFamilyExport(pb.StreamFamilyExportRequest(**req)):
        records.extend(resp.records)
    assert records[0].header.family_id == fam.family_id
    by_kind: dict[str, list] = {}
    for r in records[1:]:
        kind = r.WhichOneof("record")
        by_kind.setdefault(kind, []).append(getattr(r, kind))
    for field, kind in (("parents", "parent"), ("consents", "consent"), ("invites", "invite"),
                        ("children", "child"), ("avatars", "avatar"), ("devices", "device"),
                        ("conversations", "conversation"), ("messages", "message"),
                        ("xp_awards", "xp_award"), ("pairings", "pairing")):
        assert list(getattr(one, field)) == by_kind.get(kind, []), field
    # Each export audits itself first: the stream holds one more event than the message.
    assert len(by_kind["audit_event"]) == len(one.audit_events) + 1


@pytest.mark.parametrize(("method", "request_", "field"), [
    ("CreateFamilyInvite", pb.CreateFamilyInviteRequest(family_id=new_id()), "parent_id"),
    ("JoinFamily", pb.JoinFamilyRequest(family_id=new_id(), parent_id=new_id()), "code"),
    ("JoinFamily", pb.JoinFamilyRequest(parent_id=new_id(), code="ABCD2345"), "family_id"),
    ("ListParents", pb.ListParentsRequest(family_id="x"), "family_id"),
    ("RemoveParent", pb.RemoveParentRequest(family_id=new_id(), parent_id=new_id()),
     "removed_parent_id"),
    ("TransferOwnership", pb.TransferOwnershipRequest(family_id=new_id(), parent_id=new_id()),
     "new_owner_parent_id"),
    ("DeleteChild", pb.DeleteChildRequest(family_id=new_id(), parent_id=new_id()), "child_id"),
    ("UpdateConversation", pb.UpdateConversationRequest(
        family_id=new_id(), conversation_id=new_id()), "parent_id"),
    ("CreateParent", pb.CreateParentRequest(email="a@example.org", password=PASSWORD,
                                            display_name="A", invite_code="0O"), "invite_code"),
    ("ListMessages", pb.ListMessagesRequest(family_id=new_id(), conversation_id=new_id(),
                                            turn_id="t"), "turn_id"),
    ("GetConversation", pb.GetConversationRequest(family_id=new_id(), conversation_id=new_id(),
                                                  parent_id="p"), "parent_id"),
    ("EraseFamily", pb.EraseFamilyRequest(family_id=new_id(), parent_id="p"), "parent_id"),
])
async def test_bad_input_names_the_field(profile, method, request_, field):
    await fails(getattr(profile.stub, method)(request_), C.INVALID_ARGUMENT, field)


async def test_bad_input_of_the_streamed_export(profile):
    with pytest.raises(grpc.RpcError) as info:
        async for _ in profile.stub.StreamFamilyExport(pb.StreamFamilyExportRequest(
                family_id=new_id())):
            pass
    assert_rpc_error(info.value, C.INVALID_ARGUMENT, "parent_id")
