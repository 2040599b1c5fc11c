"""Chat through the gateway with the real inference node (a tiny random RWKV-4
model on CPU): streaming, the stored turns, the safety guard's answers passing
through, a client cancelling mid-stream, and erasure reaching the state cache.

Replies are greedy (temperature 0) from a seeded model, so they are the same on every run:
12 tokens end with FINISH_REASON_LENGTH, in several chunks."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from avatario.common.v1 import chat_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from services.inference import main as inference_main
from services.inference.checkpoint import build_random_checkpoint
from services.inference.settings import InferenceSettings
from tests.helpers import INTERNAL_TOKEN
from tests.integration.gateway.conftest import running_stack
from tests.integration.gateway.support import PASSWORD, collect, new_family, new_id

pytestmark = pytest.mark.asyncio(loop_scope="module")
FR = chat_pb2
# The cancel test asks for this many tokens: generating them all takes the tiny model far
# longer than a cancel takes to arrive, so the cancel always lands mid-reply.
LONG_REPLY = 2048


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    build_random_checkpoint(path, n_layer=2, n_embd=32, vocab_size=65536, seed=5)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tiny_model):
    settings = InferenceSettings(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None,
                                 model_path=tiny_model, tokenizer="world", strategy="cpu fp32",
                                 max_tokens_limit=LONG_REPLY, default_max_tokens=16, log_json=False)
    n = await inference_main.build_server(settings)
    yield n
    await n.server.stop(0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(db_urls, node):
    async with running_stack(db_urls, inference_target=f"127.0.0.1:{node.port}") as s:
        yield s


async def chat_setup(client):
    fam = await new_family(client)
    conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=fam.child_id), metadata=fam.client.md)).conversation
    return fam, conv.conversation_id


def ask(conv_id: str, message: str, max_tokens: int = 12) -> gw.ChatRequest:
    return gw.ChatRequest(conversation_id=conv_id, message=message, turn_id=new_id(),
                          params=chat_pb2.GenerationParams(max_tokens=max_tokens, temperature=0.0))



async def stored(fam, conv_id):
    return list((await fam.client.chat.ListMessages(gw.ListMessagesRequest(
        conversation_id=conv_id), metadata=fam.client.md)).messages)


async def test_a_turn_streams_from_the_model_and_is_stored(live):
    fam, conv_id = await chat_setup(live.client)
    texts, done = await collect(fam.client.chat.Chat(ask(conv_id, "How is reading going?"),
                                                     metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_LENGTH
    assert done.stats.completion_tokens == 12 and done.stats.prompt_tokens > 0
    assert len(texts) > 1 and "".join(texts) == done.text and done.text.strip()
    msgs = await stored(fam, conv_id)
    assert [m.role for m in msgs] == [FR.ROLE_PARENT, FR.ROLE_ASSISTANT]
    assert msgs[1].text == done.text and msgs[1].finish_reason == done.finish_reason
    assert msgs[1].complete
    # A second turn works on top of the first.
    _, second = await collect(fam.client.chat.Chat(ask(conv_id, "And sleep?"),
                                                   metadata=fam.client.md))
    assert second.finish_reason == FR.FINISH_REASON_LENGTH
    assert second.stats.completion_tokens == 12
    assert second.stats.prompt_tokens > done.stats.prompt_tokens  # the history came along
    assert len(await stored(fam, conv_id)) == 4


async def test_the_safety_guard_answer_passes_through_and_is_stored(live):
    fam, conv_id = await chat_setup(live.client)
    texts, done = await collect(fam.client.chat.Chat(
        ask(conv_id, "My son said he wants to hurt himself"), metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_SAFETY and done.safety_category == "crisis"
    assert "".join(texts) == done.text and done.text
    msgs = await stored(fam, conv_id)
    assert msgs[1].complete and msgs[1].finish_reason == FR.FINISH_REASON_SAFETY


def cancelled_generations(node) -> float:
    return sum(s.value for m in node.metrics.requests.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["finish_reason"] == "cancelled")


async def eventually(check, what: str, tries: int = 200, pause_s: float = 0.05):
    for _ in range(tries):
        if result := await check():
            return result
        await asyncio.sleep(pause_s)
    raise AssertionError(f"gave up waiting for {what}")


async def test_client_cancel_with_the_real_model(live, node):
    _, client = await live.extra_gateway(chat_max_tokens=LONG_REPLY)
    fam, conv_id = await chat_setup(client)
    engine = node.runtime.engine
    cancelled_before = cancelled_generations(node)
    call = fam.client.chat.Chat(ask(conv_id, "Tell me a long story", max_tokens=LONG_REPLY),
                                metadata=fam.client.md)
    first = await call.read()
    call.cancel()
    assert first.text and not first.HasField("done")
    msgs = await eventually(lambda: stored(fam, conv_id), "the cancelled turn to be stored")
    assert [m.role for m in msgs] == [FR.ROLE_PARENT, FR.ROLE_ASSISTANT]
    assert msgs[1].finish_reason == FR.FINISH_REASON_CANCELLED
    assert not msgs[1].complete and msgs[1].text.startswith(first.text)

    # The node stopped generating: the engine ended the request as cancelled, its slot is free.
    async def freed() -> bool:
        return engine.outstanding() == 0 and cancelled_generations(node) == cancelled_before + 1
    await eventually(freed, "the engine to cancel the generation")
    # The next turn works.
    _, done = await collect(fam.client.chat.Chat(ask(conv_id, "Thanks"), metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_LENGTH and done.stats.completion_tokens == 12


async def test_erasure_reaches_the_state_cache(live):
    fam, conv_id = await chat_setup(live.client)
    await collect(fam.client.chat.Chat(ask(conv_id, "Hello"), metadata=fam.client.md))
    resp = await fam.client.privacy.EraseFamily(gw.EraseFamilyRequest(password=PASSWORD),
                                                metadata=fam.client.md)
    assert resp.deleted_rows["inference.conversation_states"] >= 1
