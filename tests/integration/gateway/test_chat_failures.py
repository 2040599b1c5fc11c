"""Chat orchestration when things go wrong, against a failure-injection inference
node: it dies mid-stream, the client cancels, inference is down or stalls, too
many streams, consent withdrawn, a retried turn. The conversation stays
consistent and the next turn works."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from avatario.common.v1 import chat_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from services.common.limits import CHAT_MESSAGE_MAX_CHARS
from tests.helpers import retry_after
from tests.integration.gateway.conftest import fake_target, sqlite_only
from tests.integration.gateway.fakes import FakeInference, start_fake
from tests.integration.gateway.support import CHAT, DEAD_TARGET, collect, fails, new_family, new_id

C = grpc.StatusCode
FR = chat_pb2

# Transport and orchestration do not depend on the database backend: SQLite only.
db_urls = pytest.fixture(scope="module", name="db_urls")(sqlite_only)



# The gateway talks to the scripted inference fake (conftest `fake`).
inference_target = pytest.fixture(name="inference_target")(fake_target)


async def conversation(stack):
    fam = await new_family(stack.client)
    conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=fam.child_id, title="Sleep"), metadata=fam.client.md)).conversation
    return fam, conv.conversation_id


def ask(conv_id: str, message: str = "How can we make bedtime easier?", turn_id: str | None = None,
        **params) -> gw.ChatRequest:
    return gw.ChatRequest(conversation_id=conv_id, message=message, turn_id=turn_id or new_id(),
                          params=chat_pb2.GenerationParams(**params))



async def messages(fam, conv_id: str):
    return list((await fam.client.chat.ListMessages(gw.ListMessagesRequest(
        conversation_id=conv_id), metadata=fam.client.md)).messages)


async def test_a_turn_relays_chunks_and_is_stored(stack, fake):
    fam, conv_id = await conversation(stack)
    texts, done = await collect(fam.client.chat.Chat(ask(conv_id, max_tokens=100000),
                                                     metadata=fam.client.md))
    assert texts == fake.script.chunks
    assert done.finish_reason == FR.FINISH_REASON_STOP and done.text == "".join(texts)
    stored = await messages(fam, conv_id)
    assert [m.role for m in stored] == [FR.ROLE_PARENT, FR.ROLE_ASSISTANT]
    assert stored[1].complete and stored[1].text == done.text and stored[1].turn_id == done.turn_id
    sent = fake.requests[-1]
    assert sent.params.max_tokens == stack.gateway.deps.settings.chat_max_tokens  # clamped
    assert sent.child.nickname == "Sunny" and sent.child.age_months > 0
    assert sent.child.summary != ""  # the child's summary, from analytics
    assert list(sent.history) == []


async def test_a_message_at_the_limit_is_relayed_and_stored_whole(stack, fake):
    """The gateway's edge limit is the contract's, the number the inference node accepts."""
    fam, conv_id = await conversation(stack)
    message = ("bedtime " * CHAT_MESSAGE_MAX_CHARS)[: CHAT_MESSAGE_MAX_CHARS - 1] + "?"
    _, done = await collect(fam.client.chat.Chat(ask(conv_id, message), metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_STOP
    assert fake.requests[-1].message == message
    assert (await messages(fam, conv_id))[0].text == message


async def test_analytics_down_the_turn_goes_on_without_a_summary(stack, fake):
    fam, conv_id = await conversation(stack)
    _, degraded = await stack.extra_gateway(analytics=DEAD_TARGET)
    texts, done = await collect(degraded.chat.Chat(ask(conv_id), metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_STOP and texts == fake.script.chunks
    assert fake.requests[-1].child.summary == ""


async def test_control_characters_from_the_model_are_dropped(stack, fake):
    fam, conv_id = await conversation(stack)
    fake.script.chunks = ["Hi\x0b ", "\x00", "there\x1b[31m.\n"]
    texts, done = await collect(fam.client.chat.Chat(ask(conv_id), metadata=fam.client.md))
    assert texts == ["Hi ", "there[31m.\n"] and done.text == "Hi there[31m.\n"
    assert done.finish_reason == FR.FINISH_REASON_STOP
    assert (await messages(fam, conv_id))[1].text == done.text


async def test_inference_dies_mid_stream_then_the_next_turn_works(stack, fake):
    fam, conv_id = await conversation(stack)
    await collect(fam.client.chat.Chat(ask(conv_id, "first question"), metadata=fam.client.md))
    fake.script.mode, fake.script.after = "hang", 2
    call = fam.client.chat.Chat(ask(conv_id, "second question"), metadata=fam.client.md)
    received = [(await call.read()).text, (await call.read()).text]
    await fake.reached.wait()
    await fake.server.stop(0)  # the inference process dies
    rest, done = await collect(call)
    assert rest == []
    assert done.finish_reason == FR.FINISH_REASON_ERROR and done.text == "".join(received)
    stored = await messages(fam, conv_id)
    assert len(stored) == 4
    assert not stored[3].complete and stored[3].finish_reason == FR.FINISH_REASON_ERROR
    assert stored[3].text == "".join(received) and stored[2].text == "second question"
    # Inference comes back on the same address; the next turn works and its history
    # holds the complete first turn only, never the partial reply.
    revived = FakeInference()
    revived.server, _ = await start_fake(revived, port=fake.port)
    fake.server = revived.server
    third = ask(conv_id, "third question")
    for _ in range(100):  # a client retries the same turn until the node is reachable
        try:
            texts, done = await collect(fam.client.chat.Chat(third, metadata=fam.client.md))
            break
        except grpc.RpcError as err:
            assert err.code() == C.UNAVAILABLE
            await asyncio.sleep(0.1)
    assert done.finish_reason == FR.FINISH_REASON_STOP
    history = [(t.role, t.text) for t in revived.requests[-1].history]
    assert history == [(FR.ROLE_PARENT, "first question"),
                       (FR.ROLE_ASSISTANT, "".join(fake.script.chunks))]
    assert len(await messages(fam, conv_id)) == 6


async def test_inference_error_after_some_text_is_stored_incomplete(stack, fake):
    fam, conv_id = await conversation(stack)
    fake.script.mode, fake.script.after = "abort", 1
    texts, done = await collect(fam.client.chat.Chat(ask(conv_id), metadata=fam.client.md))
    assert texts == fake.script.chunks[:1]
    assert done.finish_reason == FR.FINISH_REASON_ERROR
    stored = await messages(fam, conv_id)
    assert stored[1].text == texts[0] and not stored[1].complete
    assert conv_id in fake.forgotten  # the partial state is dropped from inference's cache


async def test_client_cancel_mid_stream_is_stored_as_cancelled(stack, fake):
    fam, conv_id = await conversation(stack)
    fake.script.chunks = [f"part{i} " for i in range(50)]
    fake.script.delay_s = 0.05
    call = fam.client.chat.Chat(ask(conv_id), metadata=fam.client.md)
    first = (await call.read()).text
    call.cancel()
    await asyncio.wait_for(fake.cancelled.wait(), 10)  # the generation is stopped too
    for _ in range(100):
        stored = await messages(fam, conv_id)
        if stored:
            break
        await asyncio.sleep(0.05)
    assert len(stored) == 2
    assert stored[1].finish_reason == FR.FINISH_REASON_CANCELLED and not stored[1].complete
    assert stored[1].text.startswith(first) and len(stored[1].text) < len("".join(fake.script.chunks))
    fake.script.chunks, fake.script.delay_s = ["ok."], 0.0
    _, done = await collect(fam.client.chat.Chat(ask(conv_id), metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_STOP
    assert stack.gateway.chat.streams.active() == 0


async def test_inference_down_answers_unavailable_and_stores_nothing(stack):
    fam, conv_id = await conversation(stack)
    _, down = await stack.extra_gateway(inference=DEAD_TARGET)
    await fails(collect(down.chat.Chat(ask(conv_id), metadata=fam.client.md, timeout=30)),
                C.UNAVAILABLE)
    assert await messages(fam, conv_id) == []


async def test_inference_stalling_answers_unavailable_and_the_turn_can_be_retried(stack, fake):
    fam, conv_id = await conversation(stack)
    _, impatient = await stack.extra_gateway(chat_first_chunk_timeout_s=0.5)
    fake.script.mode = "stall"
    request = ask(conv_id)
    await fails(collect(impatient.chat.Chat(request, metadata=fam.client.md, timeout=30)),
                C.UNAVAILABLE)
    assert await messages(fam, conv_id) == []
    fake.script.mode = "ok"
    _, done = await collect(impatient.chat.Chat(request, metadata=fam.client.md, timeout=30))
    assert done.finish_reason == FR.FINISH_REASON_STOP and done.turn_id == request.turn_id


async def test_concurrent_streams_per_parent_are_capped(stack, fake):
    fam, conv_id = await conversation(stack)
    _, capped = await stack.extra_gateway(max_chat_streams_per_parent=1)
    fake.script.mode, fake.script.after = "hang", 1
    first = capped.chat.Chat(ask(conv_id), metadata=fam.client.md)
    await first.read()
    err = await fails(collect(capped.chat.Chat(ask(conv_id), metadata=fam.client.md)),
                      C.RESOURCE_EXHAUSTED)
    assert retry_after(err) and retry_after(err) > 0
    first.cancel()
    fake.script.mode = "ok"
    for _ in range(100):  # the slot frees as soon as the gateway sees the cancel
        try:
            _, done = await collect(capped.chat.Chat(ask(conv_id), metadata=fam.client.md))
            break
        except grpc.RpcError as e:
            assert e.code() == C.RESOURCE_EXHAUSTED
            await asyncio.sleep(0.05)
    assert done.finish_reason == FR.FINISH_REASON_STOP


async def test_a_retried_turn_is_replayed_not_generated_again(stack, fake):
    fam, conv_id = await conversation(stack)
    request = ask(conv_id)
    _, done = await collect(fam.client.chat.Chat(request, metadata=fam.client.md))
    texts, again = await collect(fam.client.chat.Chat(request, metadata=fam.client.md))
    assert len(fake.requests) == 1
    assert again.text == done.text and texts == [done.text]
    other = gw.ChatRequest()
    other.CopyFrom(request)
    other.message = "a different question"
    await fails(collect(fam.client.chat.Chat(other, metadata=fam.client.md)), C.ALREADY_EXISTS)


async def test_chat_needs_the_chat_consent(stack, fake):
    fam, conv_id = await conversation(stack)
    await fam.client.family.WithdrawConsent(gw.WithdrawConsentRequest(scope=CHAT),
                                            metadata=fam.client.md)
    await fails(collect(fam.client.chat.Chat(ask(conv_id), metadata=fam.client.md)),
                C.FAILED_PRECONDITION)
    assert fake.requests == []


@pytest.mark.parametrize(("change", "field"), [
    (dict(message=""), "message"),
    (dict(message="x" * (CHAT_MESSAGE_MAX_CHARS + 1)), "message"),
    (dict(message="bad\x00text"), "message"),
    (dict(turn_id=""), "turn_id"),
    (dict(turn_id="not-a-uuid"), "turn_id"),
    (dict(conversation_id=""), "conversation_id"),
    (dict(conversation_id="nope"), "conversation_id"),
])
async def test_chat_bad_input(stack, fake, change, field):
    fam, conv_id = await conversation(stack)
    request = ask(conv_id)
    for k, v in change.items():
        setattr(request, k, v)
    await fails(collect(fam.client.chat.Chat(request, metadata=fam.client.md)),
                C.INVALID_ARGUMENT, field)
    request = ask(conv_id, max_tokens=-1)
    await fails(collect(fam.client.chat.Chat(request, metadata=fam.client.md)),
                C.INVALID_ARGUMENT, "params.max_tokens")
