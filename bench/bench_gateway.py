"""What the gateway costs: the same calls direct to the owning service and through
the gateway, in one run (ratios; these machines are shared and noisy).

* unary read: GetChild (profile direct with the service credential vs the public
  GetChild with a parent token); goal >= 75% of direct throughput;
* unary write: SubmitGameSession (analytics direct vs the public call with a
  device token); skipped with a note until services.analytics.main exists;
* chat: completion tokens/s at 1 and 16 concurrent streams, inference Chat
  direct vs the public Chat (which also loads the conversation, consent and
  summary and stores the turn); goal >= 90%; needs services.inference.main.

Every service runs as its own process (SQLite, a small random RWKV-4 model on
the CPU) so the gateway and the backends do not share the load generator's
interpreter. Writes bench/results/gateway.json. Run: python -m bench gateway
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.analytics.v1 import analytics_pb2_grpc
from avatario.common.v1 import chat_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.inference.v1 import inference_pb2 as inf
from avatario.inference.v1 import inference_pb2_grpc
from avatario.profile.v1 import profile_pb2 as pf
from avatario.profile.v1 import profile_pb2_grpc
from avatario_tools.cli.api import Api
from avatario_tools.devstack.supervisor import ProcessSpec, Supervisor, python
from bench.common import print_table, write_result
from services.common.clients import internal_channel
from services.common.settings import ServiceSettings

SECONDS = float(os.environ.get("BENCH_GATEWAY_SECONDS", "3"))
CONCURRENCY = int(os.environ.get("BENCH_GATEWAY_CONCURRENCY", "16"))
ROUNDS = int(os.environ.get("BENCH_GATEWAY_ROUNDS", "3"))
CHAT_TOKENS = int(os.environ.get("BENCH_GATEWAY_CHAT_TOKENS", "256"))
PORTS = {"gateway": 0, "profile": 1, "analytics": 2, "inference": 3}


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(call: Callable[[int], Awaitable[Any]], concurrency: int, seconds: float,
                  on_start: Callable[[], None] | None = None) -> dict[str, float]:
    """Closed loop: `concurrency` workers call back to back for `seconds` after a
    warm-up; `on_start` runs when the measured part begins."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    stop = 0.0

    async def worker(record: bool) -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await call(next(counter))
            if record:
                latencies.append(time.perf_counter() - t)

    stop = time.perf_counter() + min(1.0, seconds / 4)
    await asyncio.gather(*(worker(False) for _ in range(concurrency)))
    if on_start:
        on_start()
    stop = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"rps": len(latencies) / elapsed, "elapsed_s": elapsed, "latencies": latencies}


def _quantiles(rounds: list[dict]) -> tuple[float, float]:
    lat = [x for r in rounds for x in r["latencies"]]
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [0.0] * 99
    return q[49] * 1000, q[98] * 1000


async def compare(name: str, direct: Callable, via: Callable, concurrency: int, seconds: float,
                  goal: float, tokens: dict[str, int] | None = None) -> dict[str, Any]:
    """ROUNDS alternating rounds, direct then through the gateway. The ratio is the
    median of the per-round ratios, so drift on a shared machine hits both sides."""
    unit = "rps" if tokens is None else "tokens_s"
    rounds: dict[str, list[dict]] = {"direct": [], "gateway": []}
    for _ in range(ROUNDS):
        for side, call in (("direct", direct), ("gateway", via)):
            reset = None if tokens is None else (lambda side=side: tokens.update({side: 0}))
            r = await measure(call, concurrency, seconds, reset)
            if tokens is not None:
                r["tokens_s"] = tokens[side] / r["elapsed_s"]
            rounds[side].append(r)
    pairs = zip(rounds["direct"], rounds["gateway"], strict=True)
    ratios = [g[unit] / d[unit] for d, g in pairs if d[unit]]
    ratio = statistics.median(ratios) if ratios else 0.0
    (d50, d99), (g50, g99) = _quantiles(rounds["direct"]), _quantiles(rounds["gateway"])
    return {"measure": name,
            f"direct_{unit}": statistics.median(r[unit] for r in rounds["direct"]),
            f"gateway_{unit}": statistics.median(r[unit] for r in rounds["gateway"]),
            "ratio": ratio, "round_ratios": [round(x, 3) for x in ratios], "goal": goal,
            "met": ratio >= goal, "direct_p50_ms": d50, "gateway_p50_ms": g50,
            "direct_p99_ms": d99, "gateway_p99_ms": g99}


def compact(r: dict[str, Any]) -> dict[str, Any]:
    if "note" in r:
        return {"measure": r["measure"], "direct": "-", "gateway": "-", "ratio": "-",
                "goal": "-", "p50 ms d/g": "-", "p99 ms d/g": r["note"]}
    unit = "tokens_s" if "direct_tokens_s" in r else "rps"
    return {
        "measure": r["measure"], "direct": f"{r['direct_' + unit]:.1f}",
        "gateway": f"{r['gateway_' + unit]:.1f}",
        "ratio": f"{r['ratio']:.2f}" + (" ok" if r["met"] else " LOW"), "goal": r["goal"],
        "p50 ms d/g": f"{r['direct_p50_ms']:.0f}/{r['gateway_p50_ms']:.0f}",
        "p99 ms d/g": f"{r['direct_p99_ms']:.0f}/{r['gateway_p99_ms']:.0f}",
    }


class Stack:
    """The services as supervised local processes (the devstack's supervisor)."""

    def __init__(self, var: Path) -> None:
        self.var = var
        self.token = secrets.token_urlsafe(24)
        self.ports = {name: free_port() for name in PORTS}
        self.sup = Supervisor(Console(stderr=True), verbose=False)
        self.names = ["profile"] + [n for n in ("analytics", "inference")
                                    if have(f"services.{n}.main")] + ["gateway"]

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def env(self, name: str) -> dict[str, str]:
        p = f"AVATARIO_{name.upper()}_"
        env = {"AVATARIO_INTERNAL_TOKEN": self.token, p + "PORT": str(self.ports[name]),
               p + "METRICS_PORT": str(free_port()), p + "LOG_LEVEL": "WARNING",
               p + "DATABASE_URL": f"sqlite+aiosqlite:///{self.var / (name + '.db')}"}
        if name in ("analytics", "gateway"):
            env[p + "PROFILE_TARGET"] = self.target("profile")
        if name == "inference":
            env |= {p + "MODEL_PATH": str(self.model()), p + "TOKENIZER": "world",
                    p + "STRATEGY": "cpu fp32", p + "MAX_TOKENS_LIMIT": "512"}
        if name == "gateway":
            env |= {p + "ANALYTICS_TARGET": self.target("analytics"),
                    p + "INFERENCE_TARGET": self.target("inference"),
                    p + "JWT_SIGNING_KEYS": json.dumps({"b1": secrets.token_urlsafe(40)}),
                    p + "JWT_ACTIVE_KID": "b1", p + "RATE_LIMIT_RPS": "1000000",
                    p + "RATE_LIMIT_BURST": "1000000", p + "MAX_CHAT_STREAMS_PER_PARENT": "64",
                    p + "CHAT_MAX_TOKENS": str(max(CHAT_TOKENS, 300))}
        return env

    def model(self) -> Path:
        from services.inference.checkpoint import build_random_checkpoint

        path = self.var / "bench-rwkv4-L4-D128.pth"
        if not path.exists():
            build_random_checkpoint(path, n_layer=4, n_embd=128, vocab_size=65536, seed=7)
        return path

    async def start(self) -> None:
        # Every migration first: the supervisor's run_once waits for all output pumps.
        for name in self.names:
            if name in ("profile", "analytics", "gateway"):
                await self.sup.run_once(ProcessSpec(
                    f"{name}-migrate", [python(), "-m", f"services.{name}", "migrate"],
                    self.env(name)))
        for name in self.names:
            await self.sup.start(ProcessSpec(name, [python(), "-m", f"services.{name}", "serve"],
                                             self.env(name), self.target(name), 300.0))

    def channel(self, name: str):
        settings = ServiceSettings(internal_token=self.token)
        return internal_channel(self.target(name), settings, caller="bench")


async def unary(stack: Stack, api: Api, child) -> list[dict[str, Any]]:
    rows = []
    profile = profile_pb2_grpc.ProfileServiceStub(stack.channel("profile"))
    direct_req = pf.GetChildRequest(family_id=child.family_id, child_id=child.child_id)
    md = await api.parent_metadata()
    public_req = gw.GetChildRequest(child_id=child.child_id)
    rows.append(await compare(
        "read GetChild", lambda i: profile.GetChild(direct_req),
        lambda i: api.family.GetChild(public_req, metadata=md), CONCURRENCY, SECONDS, 0.75))
    if "analytics" not in stack.names:
        rows.append({"measure": "write SubmitGameSession",
                     "note": "skipped: services.analytics.main is not available yet"})
        return rows
    from avatario_tools.cli.simulate import plan

    pool = plan(child.child_id, child.birth_year, child.birth_month, sessions=200, weeks=4,
                seed=1).sessions
    analytics = analytics_pb2_grpc.AnalyticsServiceStub(stack.channel("analytics"))
    ref = an.ChildRef(family_id=child.family_id, child_id=child.child_id,
                      birth_year=child.birth_year, birth_month=child.birth_month)

    def fresh(i: int):
        s = type(pool[0])()
        s.CopyFrom(pool[i % len(pool)])
        s.session_id = str(uuid.uuid4())
        return s

    rows.append(await compare(
        "write SubmitGameSession",
        lambda i: analytics.SubmitGameSession(an.SubmitGameSessionRequest(
            child=ref, session=fresh(i))),
        lambda i: api.as_device(child.child_id, api.play.SubmitGameSession,
                                gw.SubmitGameSessionRequest(session=fresh(i))),
        CONCURRENCY, SECONDS, 0.75))
    return rows


async def chat(stack: Stack, api: Api, child) -> list[dict[str, Any]]:
    if "inference" not in stack.names:
        return [{"measure": "chat tokens/s", "note": "skipped: services.inference.main missing"}]
    inference = inference_pb2_grpc.InferenceServiceStub(stack.channel("inference"))
    params = chat_pb2.GenerationParams(max_tokens=CHAT_TOKENS, temperature=0.0)
    # The direct calls carry the same context the gateway sends (the analytics summary).
    analytics = analytics_pb2_grpc.AnalyticsServiceStub(stack.channel("analytics"))
    summary = (await analytics.GetChildSummary(an.GetChildSummaryRequest(child=an.ChildRef(
        family_id=child.family_id, child_id=child.child_id, birth_year=child.birth_year,
        birth_month=child.birth_month)))).summary
    context = chat_pb2.ChildContext(child_id=child.child_id, nickname=child.nickname,
                                    age_months=summary.age_months, summary=summary.text)
    rows = []
    for streams in (1, 16):
        rows.append(await chat_round(api, inference, child, context, params, streams))
    return rows


async def chat_round(api: Api, inference, child, context, params, streams: int) -> dict:
    question = "How can we practise following instructions with several steps?"
    convs = [(await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
        child_id=child.child_id))).conversation.conversation_id
             for _ in range(streams * 30 + 60)]
    fresh = iter(convs)  # a new conversation per turn on both sides: no history, same prompt
    tokens = {"direct": 0, "gateway": 0}

    async def direct(i: int) -> None:
        async for ev in inference.Chat(inf.ChatRequest(
                conversation_id=str(uuid.uuid4()), message=question, child=context,
                params=params)):
            if ev.HasField("final"):
                tokens["direct"] += ev.final.stats.completion_tokens

    async def via(i: int) -> None:
        md = await api.parent_metadata()
        async for ev in api.chat.Chat(gw.ChatRequest(
                conversation_id=next(fresh), message=question,
                turn_id=str(uuid.uuid4()), params=params), metadata=md):
            if ev.HasField("done"):
                tokens["gateway"] += ev.done.stats.completion_tokens

    # Long windows: tokens count when a turn ends, and one stream ends few turns.
    window = SECONDS * (4 if streams == 1 else 3)
    return await compare(f"chat tokens/s, {streams} stream(s)", direct, via, streams, window,
                         0.90, tokens)


async def run() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        stack = Stack(Path(tmp))
        try:
            await stack.start()
            async with Api(stack.target("gateway"), timeout=60) as api:
                await api.sign_up(f"bench-{secrets.token_hex(3)}@example.org",
                                  secrets.token_urlsafe(12), "Bench")
                await api.call(api.family.RecordConsent, gw.RecordConsentRequest(
                    scopes=[1, 2, 3], policy_version="2024-01"))
                child = (await api.call(api.family.CreateChild, gw.CreateChildRequest(
                    nickname="Bench", birth_year=2017, birth_month=6))).child
                await api.pair(child.child_id, "bench")
                rows = await unary(stack, api, child) + await chat(stack, api, child)
        finally:
            await stack.sup.stop_all()
    print_table("gateway vs direct (ratio = through the gateway / direct)",
                [compact(r) for r in rows])
    path = write_result("gateway", rows, seconds=SECONDS, rounds=ROUNDS, concurrency=CONCURRENCY,
                        chat_max_tokens=CHAT_TOKENS, services=stack.names)
    print(f"wrote {path}")
    return 0


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
