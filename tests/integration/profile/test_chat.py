"""Conversations and turns: consent, idempotent turns, incomplete replies, paging."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from avatario.common.v1 import chat_pb2
from avatario.profile.v1 import profile_pb2 as pb
from services.common.limits import CHAT_MESSAGE_MAX_CHARS
from services.profile.models import ChatMessage, Conversation
from tests.integration.profile.support import (
    CHAT,
    CHILD,
    count_rows,
    fails,
    new_family,
    new_id,
    precondition_types,
)

C = grpc.StatusCode
STOP = chat_pb2.FINISH_REASON_STOP


async def new_conversation(profile, fam, title="Sleep"):
    return (await profile.stub.CreateConversation(pb.CreateConversationRequest(
        family_id=fam.family_id, child_id=fam.child_id, title=title))).conversation


def turn(fam, conv, turn_id: str | None = None, user="How much sleep?", reply="About 10 hours.",
         reason=STOP, **kw):
    base = dict(family_id=fam.family_id, conversation_id=conv.conversation_id,
                turn_id=new_id() if turn_id is None else turn_id, user_message=user, assistant_message=reply,
                finish_reason=reason)
    base.update(kw)
    return pb.AppendTurnRequest(**base)


async def test_conversation_and_turns(profile):
    fam = await new_family(profile)
    conv = await new_conversation(profile, fam)
    assert conv.turn_count == 0 and conv.child_id == fam.child_id and conv.title == "Sleep"
    got = (await profile.stub.GetConversation(pb.GetConversationRequest(
        family_id=fam.family_id, conversation_id=conv.conversation_id))).conversation
    assert got == conv
    t1 = new_id()
    first = await profile.stub.AppendTurn(turn(fam, conv, t1, user="Hi\nthere"))
    assert first.user_message.role == chat_pb2.ROLE_PARENT
    assert first.user_message.text == "Hi\nthere"
    assert first.assistant_message.role == chat_pb2.ROLE_ASSISTANT
    assert first.assistant_message.complete and first.assistant_message.finish_reason == STOP
    assert first.conversation.turn_count == 1
    # The same turn again: the same messages, counted once.
    again = await profile.stub.AppendTurn(turn(fam, conv, t1, user="Hi\nthere"))
    assert again.user_message == first.user_message
    assert again.assistant_message == first.assistant_message
    assert again.conversation.turn_count == 1
    await fails(profile.stub.AppendTurn(turn(fam, conv, t1, user="Different")),
                C.ALREADY_EXISTS)
    cut = await profile.stub.AppendTurn(turn(
        fam, conv, reply="", reason=chat_pb2.FINISH_REASON_CANCELLED))
    assert not cut.assistant_message.complete and cut.assistant_message.text == ""
    err = await profile.stub.AppendTurn(turn(
        fam, conv, reply="Partial", reason=chat_pb2.FINISH_REASON_ERROR))
    assert not err.assistant_message.complete
    assert err.conversation.turn_count == 3
    messages = (await profile.stub.ListMessages(pb.ListMessagesRequest(
        family_id=fam.family_id, conversation_id=conv.conversation_id))).messages
    assert [m.text for m in messages] == [
        "Hi\nthere", "About 10 hours.", "How much sleep?", "", "How much sleep?", "Partial"]
    assert [m.role for m in messages] == [1, 2] * 3


async def test_concurrent_appends_of_one_turn(profile):
    fam = await new_family(profile)
    conv = await new_conversation(profile, fam)
    t = new_id()
    results = await asyncio.gather(*[profile.stub.AppendTurn(turn(fam, conv, t))
                                     for _ in range(3)])
    assert len({r.user_message.message_id for r in results}) == 1
    assert await count_rows(profile, ChatMessage) == 2
    got = (await profile.stub.GetConversation(pb.GetConversationRequest(
        family_id=fam.family_id, conversation_id=conv.conversation_id))).conversation
    assert got.turn_count == 1


async def test_messages_page_oldest_first(profile):
    fam = await new_family(profile)
    conv = await new_conversation(profile, fam)
    for i in range(3):
        await profile.stub.AppendTurn(turn(fam, conv, user=f"q{i}", reply=f"a{i}"))
    texts, token = [], ""
    while True:
        resp = await profile.stub.ListMessages(pb.ListMessagesRequest(
            family_id=fam.family_id, conversation_id=conv.conversation_id, page_size=4,
            page_token=token))
        texts.extend(m.text for m in resp.messages)
        token = resp.next_page_token
        if not token:
            break
    assert texts == ["q0", "a0", "q1", "a1", "q2", "a2"]


async def test_conversations_newest_first_and_filtered_by_child(profile):
    fam = await new_family(profile)
    second_child = (await profile.stub.CreateChild(pb.CreateChildRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, nickname="Kit",
        birth_year=profile.clock.now.year - 4, birth_month=5))).child.child_id
    a = await new_conversation(profile, fam, "a")
    b = await new_conversation(profile, fam, "b")
    c = (await profile.stub.CreateConversation(pb.CreateConversationRequest(
        family_id=fam.family_id, child_id=second_child, title=""))).conversation
    page1 = await profile.stub.ListConversations(pb.ListConversationsRequest(
        family_id=fam.family_id, page_size=2))
    page2 = await profile.stub.ListConversations(pb.ListConversationsRequest(
        family_id=fam.family_id, page_size=2, page_token=page1.next_page_token))
    ids = [x.conversation_id for x in [*page1.conversations, *page2.conversations]]
    assert ids == [c.conversation_id, b.conversation_id, a.conversation_id]
    only = await profile.stub.ListConversations(pb.ListConversationsRequest(
        family_id=fam.family_id, child_id=second_child))
    assert [x.conversation_id for x in only.conversations] == [c.conversation_id]
    other = await new_family(profile)
    await fails(profile.stub.ListConversations(pb.ListConversationsRequest(
        family_id=other.family_id, child_id=fam.child_id)), C.NOT_FOUND)
    await fails(profile.stub.ListConversations(pb.ListConversationsRequest(
        family_id=fam.family_id, child_id="kid")), C.INVALID_ARGUMENT, "child_id")


async def test_chat_writes_need_the_chat_consent(profile):
    fam = await new_family(profile, scopes=(CHILD,))
    err = await fails(profile.stub.CreateConversation(pb.CreateConversationRequest(
        family_id=fam.family_id, child_id=fam.child_id)), C.FAILED_PRECONDITION)
    assert precondition_types(err) == ["CONSENT_REQUIRED"]
    assert await count_rows(profile, Conversation) == 0
    await profile.stub.RecordConsent(pb.RecordConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id,
        scopes=[CHAT], policy_version="2024-01"))
    conv = await new_conversation(profile, fam)
    await profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scope=CHAT))
    await fails(profile.stub.AppendTurn(turn(fam, conv)), C.FAILED_PRECONDITION)
    assert await count_rows(profile, ChatMessage) == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(child_id=""), "child_id"),
        (dict(child_id="c"), "child_id"),
        (dict(family_id=""), "family_id"),
        (dict(title="t" * 121), "title"),
        (dict(title="a\nb"), "title"),
    ],
)
async def test_create_conversation_bad_input(profile, changes, field):
    fam = await new_family(profile)
    req = dict(family_id=fam.family_id, child_id=fam.child_id, title="ok")
    req.update(changes)
    await fails(profile.stub.CreateConversation(pb.CreateConversationRequest(**req)),
                C.INVALID_ARGUMENT, field)
    assert await count_rows(profile, Conversation) == 0


async def test_conversations_scoped(profile):
    fam = await new_family(profile)
    other = await new_family(profile)
    conv = await new_conversation(profile, fam)
    await fails(profile.stub.CreateConversation(pb.CreateConversationRequest(
        family_id=other.family_id, child_id=fam.child_id)), C.NOT_FOUND)
    await fails(profile.stub.GetConversation(pb.GetConversationRequest(
        family_id=other.family_id, conversation_id=conv.conversation_id)), C.NOT_FOUND)
    await fails(profile.stub.GetConversation(pb.GetConversationRequest(
        family_id=fam.family_id, conversation_id="")), C.INVALID_ARGUMENT, "conversation_id")
    await fails(profile.stub.AppendTurn(turn(other, conv)), C.NOT_FOUND)
    await fails(profile.stub.ListMessages(pb.ListMessagesRequest(
        family_id=other.family_id, conversation_id=conv.conversation_id)), C.NOT_FOUND)
    await fails(profile.stub.ListMessages(pb.ListMessagesRequest(
        family_id=fam.family_id, conversation_id=conv.conversation_id,
        page_token="eyJzZXEiOiJ4In0")), C.INVALID_ARGUMENT, "page_token")
    await fails(profile.stub.ListMessages(pb.ListMessagesRequest(
        family_id=fam.family_id, conversation_id="conv")), C.INVALID_ARGUMENT, "conversation_id")
    await fails(profile.stub.ListMessages(pb.ListMessagesRequest(
        family_id=fam.family_id, conversation_id=conv.conversation_id, page_size=500)),
        C.INVALID_ARGUMENT, "page_size")
    await fails(profile.stub.ListConversations(pb.ListConversationsRequest(
        family_id=new_id())), C.NOT_FOUND)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(turn_id=""), "turn_id"),
        (dict(turn_id="turn-1"), "turn_id"),
        (dict(conversation_id="c"), "conversation_id"),
        (dict(user=""), "user_message"),
        (dict(user="  "), "user_message"),
        (dict(user="u" * (CHAT_MESSAGE_MAX_CHARS + 1)), "user_message"),
        (dict(user="bell\x07"), "user_message"),
        (dict(reply=""), "assistant_message"),  # a finished reply cannot be empty
        (dict(reply="r" * 32_001), "assistant_message"),
        (dict(reason=0), "finish_reason"),
        (dict(reason=99), "finish_reason"),
    ],
)
async def test_append_turn_bad_input(profile, changes, field):
    fam = await new_family(profile)
    conv = await new_conversation(profile, fam)
    await fails(profile.stub.AppendTurn(turn(fam, conv, **changes)), C.INVALID_ARGUMENT, field)
    assert await count_rows(profile, ChatMessage) == 0
