"""The inference node's state tiers as real gRPC servers on port 0, with the real Redis at
127.0.0.1:6379 (issue 13): completed turns always resume, a conversation resumes on a replica
that never saw it from the shared tier with the logits of a full re-prefill, a model change
misses, erasure leaves nothing and refuses the conversation, a store that is down or slow
only costs re-prefills."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import uuid
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from services.common.clients import internal_channel
from services.inference.checkpoint import build_random_checkpoint
from services.inference.main import build_server
from services.inference.safety import SafetyGuard
from services.inference.safety.classifier import Classifier
from services.inference.safety.layered import LayeredGuard
from services.inference.settings import InferenceSettings
from tests.helpers import INTERNAL_TOKEN, assert_rpc_error, new_id


async def _fails(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert_rpc_error(exc.value, code)
    return exc.value

REDIS = "redis://127.0.0.1:6379/0"
# A message the shipped classifier finds borderline (help line, not the fixed answer).
BORDERLINE = "My son has a high fever and is tired."  # emergency help line since round 8

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _redis_up() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), 0.5):
        return True
    return False


needs_redis = pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tier")
    return {name: build_random_checkpoint(d / f"{name}.pth", n_layer=2, n_embd=32,
                                          vocab_size=65536, seed=seed)
            for name, seed in (("a", 11), ("b", 4))}


def _settings(model: Path, **kw) -> InferenceSettings:
    base = dict(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None, model_path=model,
                tokenizer="world", strategy="cpu fp32", max_tokens_limit=256,
                default_max_tokens=16, safety_model_opinion="off", log_level="WARNING")
    return InferenceSettings(**(base | kw))


class Node:
    def __init__(self, node, stub) -> None:
        self.node = node
        self.stub = stub

    @property
    def cache(self):
        return self.node.runtime.cache

    def count(self, metric: str, **labels: str) -> float:
        value = self.node.metrics.__dict__  # the EngineMetrics' prometheus objects
        m = value[metric]
        return m.labels(**labels)._value.get() if labels else m._value.get()


@contextlib.asynccontextmanager
async def serving(model: Path, **kw):
    node = await build_server(_settings(model, **kw))
    try:
        async with internal_channel(f"127.0.0.1:{node.port}", node.settings, caller="t") as ch:
            yield Node(node, inference_pb2_grpc.InferenceServiceStub(ch))
    finally:
        await node.server.stop(0)
        await node._stop_engine()


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"avatario-test:{uuid.uuid4().hex[:12]}:"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def redis_keys(prefix):
    """A function listing this module's keys in the real Redis; they are deleted after."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS)

    async def keys() -> list[str]:
        return [k.decode() async for k in client.scan_iter(match=f"{prefix}*")]

    yield keys
    for k in await keys():
        await client.delete(k)
    await client.aclose()


def _req(conv: str, message: str, history=(), **params) -> inference_pb2.ChatRequest:
    p = chat_pb2.GenerationParams(**({"temperature": 0.0, "max_tokens": 24} | params))
    return inference_pb2.ChatRequest(
        conversation_id=conv, message=message, params=p,
        history=[chat_pb2.ChatTurn(role=r, text=t) for r, t in history],
        child=chat_pb2.ChildContext(child_id=new_id(), nickname="Mia", age_months=84,
                                    summary="Working memory is on track."))


async def _chat(stub, req) -> inference_pb2.ChatFinal:
    final = None
    async for resp in stub.Chat(req):
        if resp.HasField("final"):
            final = resp.final
    assert final is not None
    return final


# What the gateway does to a reply before storing it (services/gateway/chat.py clean()).
_GATEWAY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
COMPLETE = (chat_pb2.FINISH_REASON_STOP, chat_pb2.FINISH_REASON_LENGTH,
            chat_pb2.FINISH_REASON_STOP_SEQUENCE, chat_pb2.FINISH_REASON_SAFETY)


RAVEN_20B = Path(__file__).resolve().parents[3].parent / "shared" / "tokenizers" / \
    "20B_tokenizer.json"


@pytest.mark.parametrize("tokenizer", ["world", "raven-20b"])
async def test_every_turn_after_a_completed_reply_resumes_from_its_state(
        models, tmp_path, tokenizer: str) -> None:
    """The turn-2 misses (8 of 29 seen by a client): the reply the caller stores is the
    settled one (the guard's developmental note or rewrite, a borderline help line after a
    blank line, no control characters after the gateway's clean), and the node now closes
    the turn with exactly that. Sampled replies of random models over many seeds, World and
    Raven vocabularies: 100 % local resumes, and the seeds include replies the node settled
    differently from the model's text (on the old code every one of those missed)."""
    if tokenizer == "world":
        model, spec = models["a"], "world"
    else:
        if not RAVEN_20B.is_file():
            pytest.skip("20B_tokenizer.json is not on this machine")
        model = build_random_checkpoint(tmp_path / "raven.pth", n_layer=2, n_embd=32,
                                        vocab_size=50277, seed=5)
        spec = str(RAVEN_20B)
    settled_differently = 0
    # The fixture depends on the shipped classifier: say so plainly if a rebuild moves it.
    verdict = LayeredGuard(SafetyGuard.for_country("default"), Classifier.load()).check(BORDERLINE)
    assert verdict.verdict is None and verdict.borderline, "pick another borderline message"
    async with serving(model, tokenizer=spec) as n:
        for seed in range(12):
            # BORDERLINE is borderline for the classifier: the reply gets a help line
            msg = (BORDERLINE if seed % 3 == 0 else
                   "How can I help my son with reading, attention and his behaviour?")
            conv = new_id()
            first = await _chat(n.stub, _req(conv, msg, temperature=1.0, seed=seed,
                                             max_tokens=160))
            assert first.finish_reason in COMPLETE
            assert first.stats.cache_tier == chat_pb2.CACHE_TIER_MISS
            stored = _GATEWAY_CONTROL.sub("", first.text)
            assert stored == first.text  # the node streams no control characters
            settled_differently += ("general guidance" in stored or "\r" in stored
                                    or bool(first.safety_category))
            second = await _chat(n.stub, _req(
                conv, "Thank you!", [(chat_pb2.ROLE_PARENT, msg),
                                     (chat_pb2.ROLE_ASSISTANT, stored)], max_tokens=4))
            assert second.stats.cache_tier == chat_pb2.CACHE_TIER_LOCAL, (seed, stored)
            assert second.stats.cache_hit
        assert n.count("cache_lookups", tier="local") == 12
        assert n.count("cache_lookups", tier="miss") == 12
    assert settled_differently >= 4


@needs_redis
async def test_shared_tier_resume_model_change_and_erasure(models, prefix, redis_keys) -> None:
    store = dict(state_store_url=REDIS, state_store_prefix=prefix)
    async with serving(models["a"], **store) as a, serving(models["a"], **store) as b, \
            serving(models["b"], **store) as other, serving(models["a"]) as plain:
        conv, msg = new_id(), "My daughter is shy at school."
        first = await _chat(a.stub, _req(conv, msg))
        history = [(chat_pb2.ROLE_PARENT, msg), (chat_pb2.ROLE_ASSISTANT, first.text)]
        for _ in range(50):  # the write runs in the background
            if any(conv in k for k in await redis_keys()):
                break
            await asyncio.sleep(0.05)
        entry = a.cache.peek(conv)
        assert entry is not None

        # b never saw the conversation: it resumes from Redis, as exactly as a re-prefill
        moved = await _chat(b.stub, _req(conv, "And at home?", history))
        assert moved.stats.cache_tier == chat_pb2.CACHE_TIER_SHARED
        assert moved.stats.cached_tokens == entry.token_count
        again = await _chat(plain.stub, _req(conv, "And at home?", history))
        assert again.stats.cache_tier == chat_pb2.CACHE_TIER_MISS
        assert again.text == moved.text and again.stats.prompt_tokens == \
            moved.stats.prompt_tokens
        assert b.count("cache_lookups", tier="shared") == 1

        # another model never uses it
        elsewhere = await _chat(other.stub, _req(conv, "And at home?", history))
        assert elsewhere.stats.cache_tier == chat_pb2.CACHE_TIER_MISS
        assert other.count("store_rejected_total", reason="fingerprint") == 1

        # a plain forget (an incomplete turn) drops the state but not the conversation
        gone = await a.stub.ForgetConversations(
            inference_pb2.ForgetConversationsRequest(conversation_ids=[conv]))
        assert gone.forgotten == 1
        assert (await _chat(a.stub, _req(conv, msg))).finish_reason in COMPLETE

        # erasure while a turn streams on b: nothing stays, on either replica or in Redis
        call = b.stub.Chat(_req(conv, "Tell me a long story.", max_tokens=200))
        await call.read()
        erased = inference_pb2.ForgetConversationsRequest(conversation_ids=[conv], erased=True)
        await a.stub.ForgetConversations(erased)
        await b.stub.ForgetConversations(erased)
        async for _ in call:
            pass
        await asyncio.sleep(0.3)
        assert conv not in a.cache and conv not in b.cache
        keys = await redis_keys()
        assert not [k for k in keys if conv in k] and any(":erased:" in k for k in keys)
        for n in (a, b, other):  # other missed the call: it learns it from Redis
            err = await _fails(_chat(n.stub, _req(conv, "Hello?")),
                               grpc.StatusCode.FAILED_PRECONDITION)
            assert "erased" in err.details()


@needs_redis
async def test_a_store_down_or_slow_only_costs_reprefills(models, prefix) -> None:
    hung: list[asyncio.StreamWriter] = []

    async def swallow(reader, writer) -> None:  # accepts, reads, never answers
        hung.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(1 << 16):
                pass

    slow = await asyncio.start_server(swallow, "127.0.0.1", 0)
    slow_url = f"redis://127.0.0.1:{slow.sockets[0].getsockname()[1]}/0"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down_url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"  # nothing listens once closed
    try:
        for url, kind in ((down_url, "connection"), (slow_url, "timeout")):
            async with serving(models["a"], state_store_url=url, state_store_prefix=prefix,
                               state_store_timeout_s=0.1, state_store_retry_s=0.0) as n:
                conv, msg = new_id(), "How much sleep does a 7 year old need?"
                first = await _chat(n.stub, _req(conv, msg))
                assert first.finish_reason in COMPLETE
                history = [(chat_pb2.ROLE_PARENT, msg), (chat_pb2.ROLE_ASSISTANT, first.text)]
                second = await _chat(n.stub, _req(conv, "And a 9 year old?", history))
                assert second.stats.cache_tier == chat_pb2.CACHE_TIER_LOCAL
                fresh = await _chat(n.stub, _req(new_id(), "And a 9 year old?", history))
                assert fresh.stats.cache_tier == chat_pb2.CACHE_TIER_MISS
                await asyncio.sleep(0.3)  # the background writes fail too
                assert n.count("store_errors", op="get", kind=kind) >= 2
                assert n.count("store_errors", op="put", kind=kind) >= 1
                # an erasure that cannot reach the store is UNAVAILABLE (the caller retries)
                await _fails(n.stub.ForgetConversations(
                    inference_pb2.ForgetConversationsRequest(conversation_ids=[conv],
                                                             erased=True)),
                    grpc.StatusCode.UNAVAILABLE)
                await _fails(_chat(n.stub, _req(conv, "Hi")), grpc.StatusCode.FAILED_PRECONDITION)
    finally:
        for w in hung:
            w.close()
        slow.close()
