"""The inference node as a real gRPC server on port 0 with a tiny random RWKV-4 model."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from services.common.clients import internal_channel
from services.common.limits import CHAT_MESSAGE_MAX_CHARS
from services.inference.chat import prompt_tokens
from services.inference.checkpoint import build_random_checkpoint
from services.inference.main import build_server
from services.inference.planner import ConfigError
from services.inference.prompt import PromptBuilder
from services.inference.tokenizer import load_tokenizer
from tests.helpers import assert_rpc_error, new_id, retry_after
from tests.integration.inference.support import collect_chat, node_settings


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    build_random_checkpoint(path, n_layer=2, n_embd=32, vocab_size=65536, seed=11)
    return path


_settings = node_settings


# One node for the module: loading the model and the World vocabulary takes seconds.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(model_path):
    node = await build_server(_settings(model_path))
    yield node
    await node.server.stop(0)



def _req(conv: str, message: str, history=(), **params) -> inference_pb2.ChatRequest:
    p = chat_pb2.GenerationParams(**({"temperature": 0.0, "max_tokens": 8} | params))
    return inference_pb2.ChatRequest(
        conversation_id=conv, message=message, params=p,
        history=[chat_pb2.ChatTurn(role=r, text=t) for r, t in history],
        child=chat_pb2.ChildContext(child_id=new_id(), nickname="Mia", age_months=84,
                                    summary="Working memory is on track."))



async def test_model_info_reports_the_plan(stub):
    info = await stub.GetModelInfo(inference_pb2.GetModelInfoRequest())
    assert (info.n_layer, info.n_embd, info.vocab_size) == (2, 32, 65536)
    assert info.strategy == "cpu fp32" and info.chat_format == "world"
    assert sum(seg.layer_count for seg in info.plan) >= 2 and not info.gpus
    assert info.state_cache_budget_bytes > 0


async def test_chat_streams_and_resumes_from_the_state_cache(stub):
    conv = new_id()
    text, final = await collect_chat(stub.Chat(_req(conv, "How can I help my son sleep better?")))
    assert final.text == text
    assert final.finish_reason in (chat_pb2.FINISH_REASON_STOP, chat_pb2.FINISH_REASON_LENGTH,
                                   chat_pb2.FINISH_REASON_STOP_SEQUENCE)
    assert final.stats.prompt_tokens > 50 and not final.stats.cache_hit
    history = [(chat_pb2.ROLE_PARENT, "How can I help my son sleep better?"),
               (chat_pb2.ROLE_ASSISTANT, final.text)]
    _, second = await collect_chat(stub.Chat(_req(conv, "And on weekends?", history)))
    assert second.stats.cache_hit
    assert second.stats.cached_tokens == final.stats.prompt_tokens + second.stats.cached_tokens - final.stats.prompt_tokens
    assert second.stats.cached_tokens >= final.stats.prompt_tokens

    # Another conversation with the same history re-prefills (no cross-conversation reuse).
    _, other = await collect_chat(stub.Chat(_req(new_id(), "And on weekends?", history)))
    assert not other.stats.cache_hit and other.stats.prompt_tokens == second.stats.prompt_tokens

    # Forgotten conversations re-prefill from the history.
    forgot = await stub.ForgetConversations(
        inference_pb2.ForgetConversationsRequest(conversation_ids=[conv]))
    assert forgot.forgotten == 1
    _, third = await collect_chat(stub.Chat(_req(conv, "And on weekends?", history)))
    assert not third.stats.cache_hit


async def test_a_message_at_the_limit_is_prefilled_whole(stub):
    """The node accepts the contract's limit and its prompt is the one builder's, with every
    character of the message (nothing cut at a second, smaller limit)."""
    message = ("sleep " * CHAT_MESSAGE_MAX_CHARS)[: CHAT_MESSAGE_MAX_CHARS - 1] + "?"
    history = [(chat_pb2.ROLE_PARENT, "Hello"), (chat_pb2.ROLE_ASSISTANT, " Hi.")]
    req = _req(new_id(), message, history, max_tokens=1)
    _, final = await collect_chat(stub.Chat(req))
    world = load_tokenizer("world")
    expected = prompt_tokens(PromptBuilder(world, "world"), req, 1 << 20)
    assert final.stats.prompt_tokens == len(expected)
    assert world.decode(expected).count(message) == 1


async def test_greedy_is_deterministic_and_seed_reproduces(stub):
    a = await collect_chat(stub.Chat(_req(new_id(), "Tell me about reading.")))
    b = await collect_chat(stub.Chat(_req(new_id(), "Tell me about reading.")))
    assert a[0] == b[0]
    s1 = await collect_chat(stub.Chat(_req(new_id(), "Ideas?", temperature=1.0, seed=5)))
    s2 = await collect_chat(stub.Chat(_req(new_id(), "Ideas?", temperature=1.0, seed=5)))
    assert s1[0] == s2[0]


@pytest.mark.parametrize("message, category", [
    ("My daughter swallowed some of the dishwasher tablets", "medical_emergency"),
    ("how much ibuprofen can I give my 4 year old", "medication_dosing"),
])
async def test_safety_answers_without_the_model(stub, message, category):
    text, final = await collect_chat(stub.Chat(_req(new_id(), message)))
    assert final.finish_reason == chat_pb2.FINISH_REASON_SAFETY
    assert final.safety_category == category and final.text == text and text
    assert final.stats.prompt_tokens == 0


@pytest.mark.parametrize("mutate, field", [
    (lambda r: setattr(r, "conversation_id", "not-a-uuid"), "conversation_id"),
    (lambda r: setattr(r, "message", ""), "message"),
    (lambda r: setattr(r, "message", "x" * (CHAT_MESSAGE_MAX_CHARS + 1)), "message"),
    (lambda r: r.params.__setattr__("top_p", 1.5), "params.top_p"),
    (lambda r: r.params.__setattr__("temperature", -1.0), "params.temperature"),
    (lambda r: r.params.__setattr__("max_tokens", 100000), "params.max_tokens"),
    (lambda r: r.params.__setattr__("top_k", -3), "params.top_k"),
    (lambda r: r.history.add(role=0, text="hi"), "history[0].role"),
    (lambda r: r.history.add(role=chat_pb2.ROLE_PARENT, text="x" * 20000), "history[0].text"),
    (lambda r: r.child.__setattr__("age_months", 999), "child.age_months"),
])
async def test_chat_bad_input(stub, mutate, field):
    req = _req(new_id(), "Hello")
    mutate(req)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await collect_chat(stub.Chat(req))
    assert_rpc_error(ei.value, grpc.StatusCode.INVALID_ARGUMENT, field)


async def test_forget_bad_input(stub):
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await stub.ForgetConversations(
            inference_pb2.ForgetConversationsRequest(conversation_ids=[new_id(), "nope"]))
    assert_rpc_error(ei.value, grpc.StatusCode.INVALID_ARGUMENT, "conversation_ids[1]")


async def test_requires_the_internal_credential(node):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await inference_pb2_grpc.InferenceServiceStub(ch).GetModelInfo(
                inference_pb2.GetModelInfoRequest())
    assert_rpc_error(ei.value, grpc.StatusCode.UNAUTHENTICATED)


async def _wait_for(pred, timeout=20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.02)


async def test_backpressure_cancellation_and_deadline(model_path):
    node = await build_server(_settings(model_path, max_batch_size=1, max_queue=0,
                                       max_tokens_limit=4096))
    engine = node.runtime.engine
    try:
        async with internal_channel(f"127.0.0.1:{node.port}", node.settings, caller="t") as ch:
            stub = inference_pb2_grpc.InferenceServiceStub(ch)
            long = stub.Chat(_req(new_id(), "Tell me a long story.", max_tokens=4096,
                                  temperature=1.0, seed=1, stop=["@@never@@"]))
            reader = asyncio.create_task(collect_chat(long))
            await _wait_for(lambda: engine.running_count() == 1)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await collect_chat(stub.Chat(_req(new_id(), "Me too")))
            assert_rpc_error(ei.value, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert retry_after(ei.value) and retry_after(ei.value) > 0
            long.cancel()  # a cancelled stream frees its slot
            with pytest.raises(asyncio.CancelledError):
                await reader
            await _wait_for(lambda: engine.outstanding() == 0)
            text, final = await collect_chat(stub.Chat(_req(new_id(), "Now there is room")))
            # The freed slot serves a whole reply: greedy, max_tokens 8, none of it held back.
            assert final.finish_reason == chat_pb2.FINISH_REASON_LENGTH
            assert final.stats.completion_tokens == 8 and final.text == text and text.strip()

            with pytest.raises(grpc.aio.AioRpcError) as ei:
                # 4096 tokens take seconds even for the tiny model: the deadline hits first.
                # Seeded like the long story above (unseeded, an early end of turn could
                # finish the reply before the deadline).
                await collect_chat(stub.Chat(_req(new_id(), "Tell me a long story.", max_tokens=4096,
                                              temperature=1.0, seed=1, stop=["@@never@@"]),
                                         timeout=0.3))
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await _wait_for(lambda: engine.running_count() == 0)
    finally:
        await node.server.stop(0)


@pytest.mark.parametrize("overrides, words", [
    ({"tokenizer": "/nonexistent/20B_tokenizer.json"}, "20B_tokenizer.json"),
    ({"strategy": "cuda:7 fp16"}, "cuda"),
    ({"strategy": "cpu fp33"}, "fp33"),
    ({"safety_country": "XX"}, "XX"),
])
async def test_configuration_errors_fail_at_start(model_path, overrides, words):
    with pytest.raises(ConfigError) as ei:
        node = await build_server(_settings(model_path, **overrides))
        await node.server.stop(0)
    assert words in str(ei.value)


async def test_vocab_mismatch_fails_at_start(tmp_path, model_path):
    small = tmp_path / "small-vocab.pth"
    build_random_checkpoint(small, n_layer=1, n_embd=16, vocab_size=512)
    with pytest.raises(ConfigError) as ei:
        await build_server(_settings(small))
    assert "vocab" in str(ei.value).lower()
    missing = tmp_path / "missing.pth"
    with pytest.raises(ConfigError):
        await build_server(_settings(missing))
