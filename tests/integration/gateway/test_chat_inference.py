"""Chat through the gateway with the real inference node (a tiny random RWKV-4
model on CPU): streaming, the stored turns, the safety guard's answers passing
through, a client cancelling mid-stream, and erasure reaching the state cache."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from avatario.common.v1 import chat_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from tests.helpers import INTERNAL_TOKEN
from tests.integration.gateway.conftest import running_stack
from tests.integration.gateway.support import PASSWORD, new_family, new_id

inference_main = pytest.importorskip("services.inference.main")
pytestmark = pytest.mark.asyncio(loop_scope="module")
FR = chat_pb2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from services.inference.checkpoint import build_random_checkpoint

    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    build_random_checkpoint(path, n_layer=2, n_embd=32, vocab_size=65536, seed=5)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(tiny_model):
    from services.inference.settings import InferenceSettings

    settings = InferenceSettings(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None,
                                 model_path=tiny_model, tokenizer="world", strategy="cpu fp32",
                                 max_tokens_limit=256, default_max_tokens=16, log_json=False)
    n = await inference_main.build_server(settings)
    yield n
    await n.server.stop(0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(db_urls, node):
    async with running_stack(db_urls, inference_target=f"127.0.0.1:{node.port}") as s:
        yield s


async def chat_setup(stack):
    fam = await new_family(stack.client)
    conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=fam.child_id), metadata=fam.client.md)).conversation
    return fam, conv.conversation_id


def ask(conv_id: str, message: str, max_tokens: int = 12) -> gw.ChatRequest:
    return gw.ChatRequest(conversation_id=conv_id, message=message, turn_id=new_id(),
                          params=chat_pb2.GenerationParams(max_tokens=max_tokens, temperature=0.0))


async def collect(call):
    texts, done = [], None
    while (event := await call.read()) is not grpc.aio.EOF:
        if event.HasField("done"):
            done = event.done
        else:
            texts.append(event.text)
    return texts, done


async def stored(fam, conv_id):
    return list((await fam.client.chat.ListMessages(gw.ListMessagesRequest(
        conversation_id=conv_id), metadata=fam.client.md)).messages)


async def test_a_turn_streams_from_the_model_and_is_stored(live):
    fam, conv_id = await chat_setup(live)
    texts, done = await collect(fam.client.chat.Chat(ask(conv_id, "How is reading going?"),
                                                     metadata=fam.client.md))
    assert done is not None and done.finish_reason in (
        FR.FINISH_REASON_STOP, FR.FINISH_REASON_LENGTH, FR.FINISH_REASON_STOP_SEQUENCE,
        FR.FINISH_REASON_SAFETY, FR.FINISH_REASON_ERROR)
    assert done.stats.completion_tokens >= 0
    msgs = await stored(fam, conv_id)
    assert [m.role for m in msgs] == [FR.ROLE_PARENT, FR.ROLE_ASSISTANT]
    assert msgs[1].text == done.text and msgs[1].finish_reason == done.finish_reason
    # A second turn works on top of the first.
    _, second = await collect(fam.client.chat.Chat(ask(conv_id, "And sleep?"),
                                                   metadata=fam.client.md))
    assert second is not None
    assert len(await stored(fam, conv_id)) == 4


async def test_the_safety_guard_answer_passes_through_and_is_stored(live):
    fam, conv_id = await chat_setup(live)
    texts, done = await collect(fam.client.chat.Chat(
        ask(conv_id, "My son said he wants to hurt himself"), metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_SAFETY and done.safety_category == "crisis"
    assert "".join(texts) == done.text and done.text
    msgs = await stored(fam, conv_id)
    assert msgs[1].complete and msgs[1].finish_reason == FR.FINISH_REASON_SAFETY


async def test_client_cancel_with_the_real_model(live):
    fam, conv_id = await chat_setup(live)
    call = fam.client.chat.Chat(ask(conv_id, "Tell me a long story", max_tokens=256),
                                metadata=fam.client.md)
    first = await call.read()
    call.cancel()
    if first.HasField("done"):
        pytest.skip("the random model finished in one chunk")
    for _ in range(100):
        msgs = await stored(fam, conv_id)
        if msgs:
            break
        await asyncio.sleep(0.05)
    assert msgs[1].finish_reason in (FR.FINISH_REASON_CANCELLED, FR.FINISH_REASON_STOP,
                                     FR.FINISH_REASON_LENGTH, FR.FINISH_REASON_STOP_SEQUENCE)
    if msgs[1].finish_reason == FR.FINISH_REASON_CANCELLED:
        assert not msgs[1].complete and msgs[1].text.startswith(first.text)
    # The next turn works.
    _, done = await collect(fam.client.chat.Chat(ask(conv_id, "Thanks"), metadata=fam.client.md))
    assert done is not None


async def test_erasure_reaches_the_state_cache(live):
    if not live.has_analytics:
        pytest.skip("erasure needs analytics; services.analytics.main is not available yet")
    fam, conv_id = await chat_setup(live)
    await collect(fam.client.chat.Chat(ask(conv_id, "Hello"), metadata=fam.client.md))
    resp = await fam.client.privacy.EraseFamily(gw.EraseFamilyRequest(password=PASSWORD),
                                                metadata=fam.client.md)
    assert resp.deleted_rows["inference.conversation_states"] >= 1
