"""Shared state tier: time to first token of turn 30 on a replica that never saw the
conversation (resumed from Redis) against a local hit and a re-prefill of the history, and
the bytes one conversation takes in the shared tier (issue 13; goal for the 12 x 768 test
shape: shared <= 1.5x local and <= 0.2x re-prefill).

Two inference nodes in this process (real gRPC servers on 127.0.0.1, a random RWKV-4
12 x 768 World checkpoint on cpu fp32), both on the real Redis at
BENCH_STATE_REDIS (default redis://127.0.0.1:6379/0, keys under a fresh prefix that is
deleted afterwards). A 29-turn conversation is built once (greedy replies). Per repeat,
with a new conversation id: node A re-prefills turn 29 from the history and publishes the
state; then turn 30 runs on node B (shared tier), on node A (local hit) and on node A under
yet another id (re-prefill: the miss path, Redis asked and empty). Turn 30 asks one token,
so TTFT is the client's time from the call to its first streamed message (the shared
variant includes the Redis read and the state's decoding), and the engine's own TTFT stat
is shown beside it. Medians over the repeats; ratios against the same run.

Bytes per conversation: the encoded entry of the test shape (measured), and of 7B
(32 x 4096) and 14B (40 x 5120) computed from the state layout of their usual strategies
(fp16 activations: 2 of 5 slots per layer in fp16, 3 in fp32) and of cpu fp32.

    python -m bench state_tier        # BENCH_STATE_MODEL=12x768 BENCH_STATE_REPEATS=5
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from bench.common import print_table, write_result
from services.common.clients import internal_channel
from services.inference.checkpoint import build_random_checkpoint
from services.inference.main import build_server
from services.inference.settings import InferenceSettings
from services.inference.state_cache import CacheEntry, prefix_hash
from services.inference.state_store import encode_entry

REDIS = os.environ.get("BENCH_STATE_REDIS", "redis://127.0.0.1:6379/0")
REPEATS = int(os.environ.get("BENCH_STATE_REPEATS", "5"))
TURNS = 30
REPLY_TOKENS = 16
TOKEN = "bench-internal-token-0123456789abcdef"


def _settings(model: Path, prefix: str) -> InferenceSettings:
    return InferenceSettings(
        internal_token=TOKEN, port=0, metrics_port=None, model_path=model, tokenizer="world",
        strategy="cpu fp32", max_tokens_limit=256, default_max_tokens=REPLY_TOKENS,
        safety_model_opinion="off", log_level="WARNING", state_store_url=REDIS,
        state_store_prefix=prefix, state_store_timeout_s=2.0)


@contextlib.asynccontextmanager
async def _node(model: Path, prefix: str):
    node = await build_server(_settings(model, prefix))
    try:
        async with internal_channel(f"127.0.0.1:{node.port}", node.settings, caller="b") as ch:
            yield node, inference_pb2_grpc.InferenceServiceStub(ch)
    finally:
        await node.server.stop(0)
        await node._stop_engine()


def _req(conv: str, message: str, history: list[tuple[int, str]], max_tokens: int):
    return inference_pb2.ChatRequest(
        conversation_id=conv, message=message,
        params=chat_pb2.GenerationParams(temperature=0.0, max_tokens=max_tokens),
        history=[chat_pb2.ChatTurn(role=r, text=t) for r, t in history],
        child=chat_pb2.ChildContext(child_id=str(uuid.uuid4()), nickname="Kim",
                                    age_months=80, summary="Attention is on track."))


async def _turn(stub, req) -> tuple[float, inference_pb2.ChatFinal]:
    t0 = time.perf_counter()
    first = None
    final = None
    async for resp in stub.Chat(req):
        if first is None:
            first = time.perf_counter() - t0
        if resp.HasField("final"):
            final = resp.final
    assert final is not None and first is not None
    return first, final


def _message(t: int) -> str:
    return f"Question {t}: how can we make evenings calmer at home?"


def entry_bytes(n_layer: int, n_embd: int, atype: torch.dtype) -> int:
    """Bytes of the encoded shared entry for an RWKV-4 shape (state layout as
    BatchedRWKV._layout: per layer atype, fp32 x3, atype)."""
    state = []
    for _ in range(n_layer):
        state += [torch.zeros(n_embd, dtype=atype)] + \
            [torch.zeros(n_embd, dtype=torch.float32)] * 3 + [torch.zeros(n_embd, dtype=atype)]
    return len(encode_entry(CacheEntry(tuple(state), None, 1, prefix_hash([1])), bytes(16)))


async def run(model: Path, prefix: str) -> tuple[list[dict], dict]:
    async with _node(model, prefix) as (a, sa), _node(model, prefix) as (b, sb):
        history: list[tuple[int, str]] = []
        conv0 = str(uuid.uuid4())
        for t in range(1, TURNS - 1):  # turns 1..28, resumed locally on A
            _, fin = await _turn(sa, _req(conv0, _message(t), history, REPLY_TOKENS))
            history += [(chat_pb2.ROLE_PARENT, _message(t)), (chat_pb2.ROLE_ASSISTANT, fin.text)]
        times: dict[str, list[float]] = {"local": [], "shared": [], "re-prefill": []}
        engine: dict[str, list[float]] = {k: [] for k in times}
        prompt_tokens = cached = 0
        for _ in range(REPEATS + 1):  # the first round warms up, not counted
            conv = str(uuid.uuid4())
            _, f29 = await _turn(sa, _req(conv, _message(TURNS - 1), history, REPLY_TOKENS))
            h29 = history + [(chat_pb2.ROLE_PARENT, _message(TURNS - 1)),
                             (chat_pb2.ROLE_ASSISTANT, f29.text)]
            await asyncio.sleep(0.2)  # the background write of turn 29's state
            msg = _message(TURNS)
            rows = [("shared", sb, conv, chat_pb2.CACHE_TIER_SHARED),
                    ("local", sa, conv, chat_pb2.CACHE_TIER_LOCAL),
                    ("re-prefill", sa, str(uuid.uuid4()), chat_pb2.CACHE_TIER_MISS)]
            round_times = {}
            for name, stub, cid, tier in rows:
                ttft, fin = await _turn(stub, _req(cid, msg, h29, 1))
                assert fin.stats.cache_tier == tier, (name, fin.stats.cache_tier)
                round_times[name] = (ttft, fin.stats.time_to_first_token.ToTimedelta()
                                     .total_seconds())
                if name == "shared":
                    prompt_tokens, cached = fin.stats.prompt_tokens, fin.stats.cached_tokens
            if _ == 0:
                continue
            for name, (ttft, eng) in round_times.items():
                times[name].append(ttft)
                engine[name].append(eng)
        med = {k: statistics.median(v) for k, v in times.items()}
        eng_med = {k: statistics.median(v) for k, v in engine.items()}
        rows = [{"variant": k, "ttft_ms": med[k] * 1000, "engine_ttft_ms": eng_med[k] * 1000,
                 "vs_local": med[k] / med["local"], "vs_reprefill": med[k] / med["re-prefill"]}
                for k in ("local", "shared", "re-prefill")]
        entry = a.runtime.cache.peek(conv)
        assert entry is not None
        measured = len(encode_entry(entry, bytes(16)))
        meta = {"prompt_tokens_turn30": prompt_tokens, "cached_tokens_shared": cached,
                "shared_vs_local": med["shared"] / med["local"],
                "shared_vs_reprefill": med["shared"] / med["re-prefill"],
                "goal": {"shared_vs_local": 1.5, "shared_vs_reprefill": 0.2},
                "test_shape_entry_bytes": measured}
        return rows, meta


def main() -> int:
    layers, embd = (int(x) for x in os.environ.get("BENCH_STATE_MODEL", "12x768").split("x"))
    prefix = f"avatario-bench:{uuid.uuid4().hex[:12]}:"
    with tempfile.TemporaryDirectory() as d:
        model = build_random_checkpoint(Path(d) / "bench.pth", n_layer=layers, n_embd=embd,
                                        vocab_size=65536, seed=7)
        try:
            rows, meta = asyncio.run(run(model, prefix))
        finally:
            asyncio.run(_cleanup(prefix))
    sizes = [
        {"model": f"test {layers}x{embd} (cpu fp32)", "bytes": meta["test_shape_entry_bytes"],
         "MiB": meta["test_shape_entry_bytes"] / 2**20, "how": "measured"},
        *({"model": name, "bytes": (n := entry_bytes(nl, ne, dt)), "MiB": n / 2**20,
           "how": "computed"}
          for name, nl, ne, dt in [("7B 32x4096 (fp16 activations)", 32, 4096, torch.float16),
                                   ("7B 32x4096 (cpu fp32)", 32, 4096, torch.float32),
                                   ("14B 40x5120 (fp16 activations)", 40, 5120, torch.float16),
                                   ("14B 40x5120 (cpu fp32)", 40, 5120, torch.float32)]),
    ]
    print_table(f"Turn {TURNS} TTFT, {layers}x{embd} cpu fp32, median of {REPEATS}", rows)
    print_table("Shared tier bytes per conversation", sizes)
    print(f"shared/local {meta['shared_vs_local']:.2f} (goal <= 1.5), "
          f"shared/re-prefill {meta['shared_vs_reprefill']:.3f} (goal <= 0.2), "
          f"turn-{TURNS} prompt {meta['prompt_tokens_turn30']} tokens")
    path = write_result("state_tier", rows, model=f"{layers}x{embd}", repeats=REPEATS,
                        sizes=sizes, **meta)
    print(f"wrote {path}")
    return 0


async def _cleanup(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS)
    try:
        async for k in client.scan_iter(match=f"{prefix}*"):
            await client.delete(k)
    finally:
        await client.aclose()


if __name__ == "__main__":
    raise SystemExit(main())
