"""Client-visible time to first text vs the server's time to first token, old vs new guard.

    .venv/bin/python -m bench.bench_stream_latency            # writes bench/results/stream_latency.json

The whole stack runs as processes (devstack: profile, analytics, inference, gateway; SQLite),
once with the output guard holding every sentence until it ends (the old behaviour) and once
with early release (the default), on the same random checkpoint (`cpu fp32`). An outside
client signs up, records consent, adds a child and chats through the gateway's public API.
Per chat it records:

- client TTFT: from sending the request to the first text event the client receives;
- server TTFT: the node's own time to first token (ChatDone.stats.time_to_first_token);
- chunks: text events per reply, and the reply's completion tokens.

Random weights emit text without sentence ends, which is where sentence holding sent
nothing until the very end. The table gives median and p90 of both times, their ratio
(median client / median server, the issue's goal is <= 1.3), the median gap between them
per chat (the gateway's own work before the node is called: auth, context, history, plus
what the guard holds back), and chunks per 300 tokens.

A second table times `OutputStreamGuard.feed` alone (µs per feed, early vs holding) on a
300-token junk reply and on an English reply, token by token.

The inference node of each stack is started through this module (`node sentence|early`),
which sets the guard's `early_release` flag for that process and runs the node's own main.
"""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from avatario.common.v1 import chat_pb2, family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api
from avatario_tools.devstack.stack import StackConfig, free_ports, service_specs, start_stack
from avatario_tools.devstack.supervisor import ProcessSpec, Supervisor, python
from bench.common import print_table, write_result

CHATS = int(os.environ.get("BENCH_STREAM_CHATS", "30"))
TOKENS = 300
MODES = ("sentence", "early")
QUESTION = "She gets frustrated with puzzles and gives up quickly. What can we try at home?"
ENGLISH = (
    "That sounds hard for both of you, and it is very common at this age. Puzzles ask a lot "
    "of patience, so start with ones she can finish in a few minutes, then add pieces slowly. "
    "Sit with her, name the feeling when she gets stuck, and praise the trying rather than the "
    "result. If your child is still upset, take a short break and come back together. "
) * 4


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run_node(mode: str) -> int:
    """The inference node with the guard's early release set for this process."""
    import services.inference.servicer as servicer
    from services.inference.main import main as node_main
    from services.inference.safety import OutputStreamGuard

    servicer.OutputStreamGuard = functools.partial(  # type: ignore[misc]
        OutputStreamGuard, early_release=mode == "early")
    return node_main(["serve"])


async def _family(target: str) -> tuple[Api, str, tuple]:
    api = Api(target, timeout=60)
    await api.sign_up(f"stream-{uuid.uuid4().hex[:8]}@example.org", "stream-password-xyz",
                      "Parent")
    await api.call(api.family.RecordConsent, gw.RecordConsentRequest(
        scopes=[family_pb2.CONSENT_SCOPE_CHILD_PROFILE, family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT],
        policy_version="2024-01"))
    child = (await api.call(api.family.CreateChild, gw.CreateChildRequest(
        nickname="Mia", birth_year=2018, birth_month=5))).child
    conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
        child_id=child.child_id, title="bench"))).conversation
    return api, conv.conversation_id, await api.parent_metadata()


async def _chat(api: Api, conversation_id: str, md: tuple) -> dict[str, Any]:
    t0 = time.perf_counter()
    first: float | None = None
    chunks = 0
    done = None
    call = api.chat.Chat(gw.ChatRequest(
        conversation_id=conversation_id, message=QUESTION, turn_id=str(uuid.uuid4()),
        params=chat_pb2.GenerationParams(max_tokens=TOKENS, temperature=1.0, top_p=0.9)),
        metadata=md, timeout=120)
    async for event in call:
        if event.HasField("done"):
            done = event.done
        elif event.text:
            chunks += 1
            first = first if first is not None else time.perf_counter() - t0
    assert done is not None, "no done event"
    return {"client_ttft_s": first, "server_ttft_s": done.stats.time_to_first_token.ToTimedelta()
            .total_seconds(), "chunks": chunks, "tokens": done.stats.completion_tokens}


async def run_stack(model: Path, mode: str, console: Console) -> list[dict[str, Any]]:
    var = Path(tempfile.mkdtemp(prefix=f"bench-stream-{mode}-"))
    cfg = StackConfig(var=var, ports=free_ports(), metrics_ports=free_ports(),
                      database_urls=StackConfig.sqlite(var), model=model, tokenizer="world",
                      strategy="cpu fp32", log_level="WARNING")
    sup = Supervisor(Console(stderr=True, width=200))
    node = service_specs(cfg)["inference"]
    sup_start = sup.start

    async def start(spec: ProcessSpec):  # the node through run_node, with its mode
        if spec.name == "inference":
            spec = ProcessSpec(spec.name, [python(), "-m", "bench.bench_stream_latency", "node",
                                           mode], node.env, spec.grpc_target,
                               spec.ready_timeout_s)
        return await sup_start(spec)

    sup.start = start  # type: ignore[method-assign]
    api = None
    try:
        await start_stack(cfg, sup)
        api, conv, md = await _family(cfg.target("gateway"))
        await _chat(api, conv, md)  # warm-up: first prefill, imports, connections
        rows = []
        for _ in range(CHATS):
            rows.append(await _chat(api, conv, md))
        console.print(f"{mode}: {CHATS} chats done")
        return rows
    finally:
        if api is not None:
            await api.close()
        await sup.stop_all()


def summarize(mode: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    client = [r["client_ttft_s"] for r in rows if r["client_ttft_s"] is not None]
    server = [r["server_ttft_s"] for r in rows]
    per300 = [r["chunks"] * TOKENS / r["tokens"] for r in rows if r["tokens"]]
    return {
        "guard": mode,
        "chats": len(rows),
        "server_ttft_p50_ms": 1000 * statistics.median(server),
        "server_ttft_p90_ms": 1000 * percentile(server, 0.9),
        "client_ttft_p50_ms": 1000 * statistics.median(client),
        "client_ttft_p90_ms": 1000 * percentile(client, 0.9),
        "ratio_p50": statistics.median(client) / statistics.median(server),
        "gap_p50_ms": 1000 * statistics.median(
            r["client_ttft_s"] - r["server_ttft_s"] for r in rows if r["client_ttft_s"]),
        "chunks_per_300_tokens": statistics.median(per300) if per300 else 0.0,
        "tokens_p50": statistics.median(r["tokens"] for r in rows),
    }


def feed_cost() -> list[dict[str, Any]]:
    """µs per `feed` over a reply token by token (the tokenizer's own pieces)."""
    from services.inference.safety import OutputStreamGuard, SafetyGuard
    from services.inference.tokenizer import load_tokenizer

    tok = load_tokenizer("world")
    guard = SafetyGuard.for_country("US")
    junk_ids = [(i * 7919 + 13) % 60000 + 256 for i in range(TOKENS)]
    texts = {"junk": [tok.decode([i]) for i in junk_ids],
             "english": [tok.decode([i]) for i in tok.encode(ENGLISH)][:TOKENS]}
    rows = []
    for name, pieces in texts.items():
        for early in (False, True):
            best = float("inf")
            for _ in range(5):
                g = OutputStreamGuard(guard, nickname="Mia", early_release=early)
                t0 = time.perf_counter()
                chunks = sum(1 for p in pieces if g.feed(p))
                g.finish()
                best = min(best, time.perf_counter() - t0)
            rows.append({"reply": name, "guard": "early" if early else "sentence",
                         "tokens": len(pieces), "us_per_feed": 1e6 * best / len(pieces),
                         "chunks_before_finish": chunks})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["node"]:
        return run_node(argv[1])
    os.environ.setdefault("COLUMNS", "180")
    console = Console()
    from services.inference.checkpoint import build_random_checkpoint

    model = Path(tempfile.mkdtemp(prefix="bench-stream-model-")) / "small-world.pth"
    layers, embd = (int(x) for x in os.environ.get("BENCH_STREAM_MODEL", "12x768").split("x"))
    build_random_checkpoint(model, n_layer=layers, n_embd=embd, vocab_size=65536, seed=11)
    raw = {mode: asyncio.run(run_stack(model, mode, console)) for mode in MODES}
    rows = [summarize(mode, raw[mode]) for mode in MODES]
    print_table(f"Time to first text, outside client through the gateway ({CHATS} chats of "
                f"up to {TOKENS} tokens; random {layers}x{embd} model, cpu fp32)", rows)
    cost = feed_cost()
    print_table("OutputStreamGuard.feed cost, token by token", cost)
    path = write_result("stream_latency", rows, chats=CHATS, max_tokens=TOKENS,
                        model=f"random RWKV-4 {layers} layers x {embd}, world vocabulary, cpu fp32",
                        feed_cost=cost, per_chat=raw)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
