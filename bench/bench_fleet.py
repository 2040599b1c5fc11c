"""Gateway routing overhead: chat tokens/s through the gateway with three inference
replicas against one, under the same total load (issue 13 goal: ratio >= 0.95).

Both stacks run in this process's run, one after the other, as real processes
(the local stack of avatario_tools.devstack on SQLite, a random RWKV-4 World model
on cpu fp32): the same clients (CLIENTS parents, one conversation each, TURNS
greedy turns of TOKENS tokens) drive the gateway; the figure is completion tokens
over wall time. The replicas share the machine's cores: with R replicas each gets
OMP_NUM_THREADS = max(1, cores // R), so the fleet has no more compute than the
single replica, and what differs is the routing (one channel per replica, health
watches, rendezvous placement) and the smaller batches each replica decodes.

    python -m bench fleet            # BENCH_FLEET_MODEL=4x256 (layers x embedding)
"""

from __future__ import annotations

import asyncio
import os
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
from avatario_tools.devstack.stack import StackConfig, free_ports, start_stack
from avatario_tools.devstack.supervisor import Supervisor
from bench.common import print_table, write_result

CLIENTS = int(os.environ.get("BENCH_FLEET_CLIENTS", "6"))
TURNS = int(os.environ.get("BENCH_FLEET_TURNS", "4"))
TOKENS = int(os.environ.get("BENCH_FLEET_TOKENS", "48"))
REPEATS = int(os.environ.get("BENCH_FLEET_REPEATS", "2"))
SCOPES = (family_pb2.CONSENT_SCOPE_CHILD_PROFILE, family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT)


async def _client(gateway: str, i: int) -> tuple[Api, str]:
    api = Api(gateway, timeout=120)
    await api.sign_up(f"bench-fleet-{i}-{time.time_ns()}@example.org", "a long enough password",
                      "bench parent")
    await api.call(api.family.RecordConsent, gw.RecordConsentRequest(
        scopes=list(SCOPES), policy_version="2024-01"))
    child = (await api.call(api.family.CreateChild, gw.CreateChildRequest(
        nickname="Kim", birth_year=2018, birth_month=5))).child
    conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
        child_id=child.child_id))).conversation
    return api, conv.conversation_id


async def _turns(api: Api, conversation_id: str) -> int:
    tokens = 0
    for t in range(TURNS):
        call = api.chat.Chat(gw.ChatRequest(
            conversation_id=conversation_id, message=f"Question {t}: how do I help with sleep?",
            turn_id=str(uuid.uuid4()),
            params=chat_pb2.GenerationParams(max_tokens=TOKENS, temperature=0.0)),
            metadata=await api.parent_metadata(), timeout=300)
        async for event in call:
            if event.HasField("done"):
                tokens += event.done.stats.completion_tokens
    return tokens


async def run_stack(model: Path, replicas: int, console: Console) -> dict[str, Any]:
    var = Path(tempfile.mkdtemp(prefix=f"bench-fleet-{replicas}-"))
    threads = str(max(1, (os.cpu_count() or 1) // replicas))
    cfg = StackConfig(
        var=var, ports=free_ports(replicas), metrics_ports=free_ports(replicas),
        database_urls=StackConfig.sqlite(var), model=model, tokenizer="world",
        strategy="cpu fp32", log_level="WARNING", inference_replicas=replicas,
        extra_env={"inference": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
                   "gateway": {"AVATARIO_GATEWAY_RATE_LIMIT_RPS": "1000",
                               "AVATARIO_GATEWAY_RATE_LIMIT_BURST": "1000",
                               "AVATARIO_GATEWAY_ANONYMOUS_RATE_LIMIT_RPS": "1000",
                               "AVATARIO_GATEWAY_ANONYMOUS_RATE_LIMIT_BURST": "1000",
                               "AVATARIO_GATEWAY_AUTH_RATE_LIMIT_RPS": "1000",
                               "AVATARIO_GATEWAY_AUTH_RATE_LIMIT_BURST": "1000"}})
    sup = Supervisor(Console(stderr=True, width=200))
    try:
        await start_stack(cfg, sup)
        clients = [await _client(cfg.target("gateway"), i) for i in range(CLIENTS)]
        await asyncio.gather(*(_turns(api, cid) for api, cid in clients[:2]))  # warm-up
        best = 0.0
        tokens_total = 0
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            tokens = sum(await asyncio.gather(*(_turns(api, cid) for api, cid in clients)))
            tps = tokens / (time.perf_counter() - t0)
            if tps > best:
                best, tokens_total = tps, tokens
        for api, _ in clients:
            await api.close()
        return {"replicas": replicas, "threads_per_replica": int(threads), "clients": CLIENTS,
                "completion_tokens": tokens_total, "tokens_per_s": best}
    finally:
        await sup.stop_all()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("COLUMNS", "160")
    console = Console()
    from services.inference.checkpoint import build_random_checkpoint

    layers, embd = (int(x) for x in os.environ.get("BENCH_FLEET_MODEL", "4x256").split("x"))
    model = Path(tempfile.mkdtemp(prefix="bench-fleet-model-")) / "fleet-world.pth"
    build_random_checkpoint(model, n_layer=layers, n_embd=embd, vocab_size=65536, seed=5)
    rows = [asyncio.run(run_stack(model, n, console)) for n in (1, 3)]
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["ratio_vs_one"] = row["tokens_per_s"] / base
    print_table(f"Chat tokens/s through the gateway, {CLIENTS} clients x {TURNS} turns x "
                f"{TOKENS} tokens (random {layers}x{embd} World model, cpu fp32, best of "
                f"{REPEATS})", rows)
    ratio = rows[1]["ratio_vs_one"]
    console.print(f"three replicas / one: {ratio:.3f} (goal >= 0.95)")
    path = write_result("fleet", rows, clients=CLIENTS, turns=TURNS, max_tokens=TOKENS,
                        model=f"random RWKV-4 {layers} layers x {embd}, world vocabulary, cpu fp32",
                        cores=os.cpu_count(), ratio_three_vs_one=ratio, goal=0.95)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
