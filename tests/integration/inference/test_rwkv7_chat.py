"""An RWKV-7 ("x070") checkpoint served by the inference node, through the gateway: a tiny
random G1-shaped model placed over two segments (`cpu fp32 *1 -> cpu fp32`, the split code
path), the G1 chat format, streaming, the stored turns, the state cache resuming turn 2, the
safety guard unchanged, and the node's description of the model."""

from __future__ import annotations

import pytest
import pytest_asyncio

from avatario.common.v1 import chat_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from services.common.clients import internal_channel
from services.inference import main as inference_main
from services.inference.checkpoint import build_random_checkpoint7
from services.inference.planner import ConfigError
from services.inference.rwkv7_batched import BatchedRWKV7
from services.inference.settings import InferenceSettings
from tests.helpers import INTERNAL_TOKEN
from tests.integration.gateway.conftest import running_stack, sqlite_only
from tests.integration.gateway.support import collect, new_family, new_id

pytestmark = pytest.mark.asyncio(loop_scope="module")
db_urls = pytest.fixture(scope="module", name="db_urls")(sqlite_only)
FR = chat_pb2
STRATEGY = "cpu fp32 *1 -> cpu fp32"


@pytest.fixture(scope="module")
def g1_model(tmp_path_factory):
    return build_random_checkpoint7(tmp_path_factory.mktemp("g1") / "g1.pth", n_layer=2,
                                    n_embd=64, vocab_size=65536, head_size=32, seed=7)


def _settings(path, **kw) -> InferenceSettings:
    base = dict(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None, model_path=path,
                tokenizer="world", strategy=STRATEGY, max_tokens_limit=64,
                default_max_tokens=16, log_json=False)
    return InferenceSettings(**(base | kw))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(g1_model):
    n = await inference_main.build_server(_settings(g1_model))
    yield n
    await n.server.stop(0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(db_urls, node):
    async with running_stack(db_urls, inference_target=f"127.0.0.1:{node.port}") as s:
        yield s


def ask(conv_id: str, message: str, max_tokens: int = 10) -> gw.ChatRequest:
    return gw.ChatRequest(conversation_id=conv_id, message=message, turn_id=new_id(),
                          params=chat_pb2.GenerationParams(max_tokens=max_tokens, temperature=0.0))



async def test_the_node_serves_the_rwkv7_file_split_over_two_segments(node):
    rt = node.runtime
    assert isinstance(rt.engine.bm, BatchedRWKV7)
    assert rt.chat_format == "g1" and rt.info.version == 7
    assert [s.segment for s in rt.engine.bm.slots] == [0, 1, 1]
    assert rt.engine.config.reasoning_block
    async with internal_channel(f"127.0.0.1:{node.port}", node.settings, caller="test") as ch:
        info = await inference_pb2_grpc.InferenceServiceStub(ch).GetModelInfo(
            inference_pb2.GetModelInfoRequest())
    assert info.chat_format == "g1" and info.strategy == STRATEGY


async def test_rwkv7_turns_stream_through_the_gateway_and_resume_from_the_cache(live, node):
    fam = await new_family(live.client)
    conv_id = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=fam.child_id), metadata=fam.client.md)).conversation.conversation_id
    moves = node.runtime.engine.bm.boundary_moves
    texts, done = await collect(fam.client.chat.Chat(ask(conv_id, "How is reading going?"),
                                                     metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_LENGTH and done.stats.completion_tokens == 10
    assert "".join(texts) == done.text and done.text
    assert node.runtime.engine.bm.boundary_moves > moves  # activations crossed the split
    hits = node.runtime.cache.stats().hits
    _, second = await collect(fam.client.chat.Chat(ask(conv_id, "And sleep?"),
                                                   metadata=fam.client.md))
    assert second.finish_reason == FR.FINISH_REASON_LENGTH
    assert second.stats.prompt_tokens > done.stats.prompt_tokens
    assert node.runtime.cache.stats().hits == hits + 1  # turn 2 resumed the RWKV-7 state
    msgs = (await fam.client.chat.ListMessages(gw.ListMessagesRequest(
        conversation_id=conv_id), metadata=fam.client.md)).messages
    assert [m.role for m in msgs] == [FR.ROLE_PARENT, FR.ROLE_ASSISTANT] * 2
    assert msgs[1].text == done.text


async def test_the_guard_answers_before_an_rwkv7_model(live):
    fam = await new_family(live.client)
    conv_id = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
        child_id=fam.child_id), metadata=fam.client.md)).conversation.conversation_id
    _, done = await collect(fam.client.chat.Chat(
        ask(conv_id, "My son said he wants to hurt himself"), metadata=fam.client.md))
    assert done.finish_reason == FR.FINISH_REASON_SAFETY and done.safety_category == "crisis"


async def test_rwkv7_configuration_errors_fail_at_start(g1_model, tmp_path):
    with pytest.raises(ConfigError, match="RWKV-7 path has no int8"):
        await inference_main.build_server(_settings(g1_model, strategy="cpu fp32i8"))
    with pytest.raises(ConfigError, match="adapters merge into RWKV-4 checkpoints only"):
        await inference_main.build_server(_settings(g1_model, lora=str(tmp_path / "a.safetensors")))
