"""The stack under a rising mixed load: where it bends, and how it says no past that.

The whole stack runs as processes (the devstack launcher; SQLite by default,
PostgreSQL with --postgres or BENCH_LOAD_BACKEND=postgres) with a small random
RWKV-4 model. `BENCH_LOAD_FAMILIES` families sign up, consent, add a child and
pair its device, and each child plays a few sessions. Then an asyncio open-loop
generator on the real gateway stubs sends a mix of

* SubmitGameSession (the child's device; real simulated sessions),
* GetChildReport and ListFlags (the parent),
* Chat (the parent; a short reply, `BENCH_LOAD_CHAT_TOKENS` tokens)

at rising rates (`BENCH_LOAD_RATES`, req/s, `BENCH_LOAD_STEP_S` seconds each).
Arrivals follow the clock, not the answers (open loop): a slow server does not
slow the generator down. Every call carries a deadline; in-flight calls are
capped at `BENCH_LOAD_MAX_OUTSTANDING` (past it an arrival is counted as dropped
by the client).

Per step and per RPC: throughput (OK answers/s), p50/p95/p99 of the OK answers,
answers by status (RESOURCE_EXHAUSTED with and without RetryInfo,
DEADLINE_EXCEEDED, UNAVAILABLE, INTERNAL, ...), and the RSS of every service
after the step. The knee is the first rate where the p99 of the unary calls is
at least twice the lowest rate's; past it the goal is no timeouts and no
INTERNAL (overload answered with RESOURCE_EXHAUSTED + RetryInfo), and memory
that plateaus (RSS growth over the last steps small).

The sweep runs twice by default, with overload admission off and on (the
services' default `max_inflight_rpcs`), in the same run (BENCH_LOAD_ADMISSION=
off|on|both). Writes bench/results/load.json. Run: python -m bench load
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status
from rich.console import Console

from avatario.common.v1 import chat_pb2, family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api
from avatario_tools.cli.simulate import plan
from avatario_tools.devstack.stack import SERVICES, StackConfig, free_ports, start_stack
from avatario_tools.devstack.supervisor import Supervisor
from bench.common import print_table, write_result
from services.common.status import retry_delay_s

RATES = [float(r) for r in os.environ.get("BENCH_LOAD_RATES", "5,10,20,40,80,160").split(",")]
STEP_S = float(os.environ.get("BENCH_LOAD_STEP_S", "15"))
FAMILIES = int(os.environ.get("BENCH_LOAD_FAMILIES", "24"))
CHAT_TOKENS = int(os.environ.get("BENCH_LOAD_CHAT_TOKENS", "8"))
MAX_OUTSTANDING = int(os.environ.get("BENCH_LOAD_MAX_OUTSTANDING", "2000"))
UNARY_DEADLINE_S = float(os.environ.get("BENCH_LOAD_UNARY_DEADLINE_S", "10"))
CHAT_DEADLINE_S = float(os.environ.get("BENCH_LOAD_CHAT_DEADLINE_S", "30"))
ADMISSION = os.environ.get("BENCH_LOAD_ADMISSION", "both")
# The mix: (rpc, weight).
MIX = (("SubmitGameSession", 45), ("GetChildReport", 20), ("ListFlags", 25), ("Chat", 10))
UNARY = ("SubmitGameSession", "GetChildReport", "ListFlags")
KNEE_FACTOR = 2.0
# Memory "plateaus" when the services' total RSS grows less than this over the last steps.
PLATEAU_GROWTH = 0.10
QUESTION = "How can we help our child follow instructions with several steps?"


def rss_kib(pid: int) -> int:
    """Resident set size from /proc (psutil is not a dependency)."""
    try:
        import psutil  # type: ignore[import-not-found]

        return psutil.Process(pid).memory_info().rss // 1024
    except ImportError:
        pass
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class Family:
    api: Api
    child_id: str
    conversation_id: str
    parent_md: tuple
    device_md: tuple
    sessions: list = field(default_factory=list)
    templates: list = field(default_factory=list)

    def next_session(self):
        if self.sessions:
            return self.sessions.pop()
        # Pool used up: the same play again under a new id (a new session to analytics).
        s = type(self.templates[0])()
        s.CopyFrom(random.choice(self.templates))
        s.session_id = str(uuid.uuid4())
        return s


@dataclass
class Outcome:
    rpc: str
    code: str
    seconds: float
    retry_info: bool = False


async def _setup_family(target: str, i: int) -> Family:
    api = Api(target, timeout=60)
    await api.sign_up(f"load-{i}-{uuid.uuid4().hex[:6]}@example.org", f"load-password-{i}-xyz",
                      f"Parent {i}")
    await api.call(api.family.RecordConsent, gw.RecordConsentRequest(
        scopes=[family_pb2.CONSENT_SCOPE_CHILD_PROFILE, family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS,
                family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT], policy_version="2024-01"))
    child = (await api.call(api.family.CreateChild, gw.CreateChildRequest(
        nickname=f"Kid{i}", birth_year=2018, birth_month=1 + i % 12))).child
    await api.pair(child.child_id, f"tablet {i}")
    conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
        child_id=child.child_id, title="load"))).conversation
    the_plan = await asyncio.to_thread(plan, child.child_id, child.birth_year, child.birth_month,
                                       sessions=120, weeks=10, seed=i)
    fam = Family(api, child.child_id, conv.conversation_id, await api.parent_metadata(),
                 (("authorization", f"Bearer {api.device_token(child.child_id)}"),),
                 list(reversed(the_plan.sessions)), list(the_plan.sessions))
    for _ in range(5):  # some history for the reports
        await api.play.SubmitGameSession(gw.SubmitGameSessionRequest(
            session=fam.next_session()), metadata=fam.device_md, timeout=60)
    return fam


async def _one(fam: Family, rpc: str) -> Outcome:
    t0 = time.perf_counter()
    try:
        if rpc == "SubmitGameSession":
            await fam.api.play.SubmitGameSession(gw.SubmitGameSessionRequest(
                session=fam.next_session()), metadata=fam.device_md, timeout=UNARY_DEADLINE_S)
        elif rpc == "GetChildReport":
            await fam.api.report.GetChildReport(gw.GetChildReportRequest(
                child_id=fam.child_id), metadata=fam.parent_md, timeout=UNARY_DEADLINE_S)
        elif rpc == "ListFlags":
            await fam.api.report.ListFlags(gw.ListFlagsRequest(
                child_id=fam.child_id), metadata=fam.parent_md, timeout=UNARY_DEADLINE_S)
        else:
            call = fam.api.chat.Chat(gw.ChatRequest(
                conversation_id=fam.conversation_id, message=QUESTION, turn_id=str(uuid.uuid4()),
                params=chat_pb2.GenerationParams(max_tokens=CHAT_TOKENS)),
                metadata=fam.parent_md, timeout=CHAT_DEADLINE_S)
            done = False
            async for event in call:
                done = done or event.HasField("done")
            if not done:
                return Outcome(rpc, "NO_DONE_EVENT", time.perf_counter() - t0)
        return Outcome(rpc, "OK", time.perf_counter() - t0)
    except grpc.aio.AioRpcError as err:
        retry = False
        if err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            retry = retry_delay_s(rpc_status.from_call(err)) is not None
        return Outcome(rpc, err.code().name, time.perf_counter() - t0, retry)
    except Exception as exc:  # noqa: BLE001 - a client-side failure is an outcome too
        return Outcome(rpc, f"client:{type(exc).__name__}", time.perf_counter() - t0)


async def run_step(families: list[Family], rate: float, seconds: float,
                   rng: random.Random) -> tuple[list[Outcome], int, float]:
    """Open loop at `rate` req/s for `seconds`; (outcomes, dropped, wall seconds)."""
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * seconds))
    names = [m for m, _ in MIX]
    weights = [w for _, w in MIX]
    tasks: set[asyncio.Task] = set()
    outcomes: list[Outcome] = []
    dropped = 0
    t0 = loop.time()
    for i in range(n):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= MAX_OUTSTANDING:
            dropped += 1
            continue
        task = asyncio.create_task(_one(rng.choice(families), rng.choices(names, weights)[0]))
        tasks.add(task)
        task.add_done_callback(lambda t: (tasks.discard(t), outcomes.append(t.result())))
    if tasks:  # every call has a deadline, so this ends
        await asyncio.wait(set(tasks))
    return outcomes, dropped, loop.time() - t0


def summarize(rate: float, outcomes: list[Outcome], dropped: int, wall: float,
              seconds: float) -> dict[str, Any]:
    by_rpc: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_rpc[o.rpc].append(o)
    unary_ok = [o.seconds for o in outcomes if o.rpc in UNARY and o.code == "OK"]
    codes = Counter(o.code for o in outcomes)
    step = {
        "rate": rate, "sent": len(outcomes), "dropped": dropped, "wall_s": round(wall, 2),
        "ok_per_s": round(codes["OK"] / seconds, 2),
        "unary_p50_ms": round(percentile(unary_ok, 50) * 1000, 1),
        "unary_p95_ms": round(percentile(unary_ok, 95) * 1000, 1),
        "unary_p99_ms": round(percentile(unary_ok, 99) * 1000, 1),
        "codes": dict(codes),
        "exhausted_with_retry_info": sum(1 for o in outcomes if o.retry_info),
        "exhausted_without_retry_info": sum(
            1 for o in outcomes if o.code == "RESOURCE_EXHAUSTED" and not o.retry_info),
        "rpcs": {},
    }
    for rpc, items in sorted(by_rpc.items()):
        ok = [o.seconds for o in items if o.code == "OK"]
        step["rpcs"][rpc] = {
            "sent": len(items), "ok_per_s": round(len(ok) / seconds, 2),
            "p50_ms": round(percentile(ok, 50) * 1000, 1),
            "p95_ms": round(percentile(ok, 95) * 1000, 1),
            "p99_ms": round(percentile(ok, 99) * 1000, 1),
            "codes": dict(Counter(o.code for o in items)),
        }
    return step


def find_knee(steps: list[dict[str, Any]], key: str = "unary_p99_ms") -> float | None:
    """The first rate whose p99 is at least KNEE_FACTOR x the lowest rate's."""
    base = steps[0][key] if steps else float("nan")
    for step in steps[1:]:
        if step[key] != step[key] or step[key] >= KNEE_FACTOR * base:  # nan: nothing answered OK
            return step["rate"]
    return None


async def sweep(model: Path, backend: str, admission: bool, console: Console) -> dict[str, Any]:
    var = Path(tempfile.mkdtemp(prefix=f"bench-load-{backend}-"))
    urls = StackConfig.sqlite(var)
    created: list[str] = []
    if backend == "postgres":
        from tests.conftest import create_pg_database

        for name in list(urls):
            urls[name] = create_pg_database()
            created.append(urls[name])
    extra = {
        # The one load-generator peer pairs every device: room for its anonymous calls.
        "gateway": {"AVATARIO_GATEWAY_ANONYMOUS_RATE_LIMIT_BURST": "1000"},
    }
    if not admission:
        for name in SERVICES:
            extra.setdefault(name, {})[f"AVATARIO_{name.upper()}_MAX_INFLIGHT_RPCS"] = "0"
    cfg = StackConfig(var=var, ports=free_ports(), metrics_ports=free_ports(), database_urls=urls,
                      model=model, tokenizer="world", strategy="cpu fp32", log_level="WARNING",
                      extra_env=extra)
    sup = Supervisor(Console(stderr=True, width=200))
    families: list[Family] = []
    try:
        await start_stack(cfg, sup)
        target = cfg.target("gateway")
        t = time.perf_counter()
        for i in range(FAMILIES):  # sequential: sign-up hashes a password (argon2)
            families.append(await _setup_family(target, i))
        console.print(f"{FAMILIES} families ready in {time.perf_counter() - t:.1f}s")
        pids = {name: sup.procs[name].pid for name in SERVICES}
        rss_before = {name: rss_kib(pid) for name, pid in pids.items()}
        rng = random.Random(42)
        steps = []
        for rate in RATES:
            outcomes, dropped, wall = await run_step(families, rate, STEP_S, rng)
            step = summarize(rate, outcomes, dropped, wall, STEP_S)
            step["rss_mib"] = {n: round(rss_kib(pid) / 1024, 1) for n, pid in pids.items()}
            steps.append(step)
            console.print(f"admission {'on' if admission else 'off'} · {rate:g} req/s: "
                          f"{step['ok_per_s']} ok/s, unary p99 {step['unary_p99_ms']} ms, "
                          f"{step['codes']}")
            await asyncio.sleep(1.0)  # let the last answers' work settle
        dead = sup.any_exited()
        return {"backend": backend, "admission": admission, "steps": steps,
                "rss_before_mib": {n: round(v / 1024, 1) for n, v in rss_before.items()},
                "service_exited": dead}
    finally:
        for fam in families:
            await fam.api.close()
        await sup.stop_all()
        if created:
            from tests.conftest import drop_pg_database

            for url in created:
                drop_pg_database(url)


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    steps = result["steps"]
    knee = find_knee(steps)
    past = [s for s in steps if knee is not None and s["rate"] >= knee]
    totals = Counter()
    for s in past:
        totals.update(s["codes"])
    totals_rpc = {rpc: find_knee([{"rate": s["rate"], "p99": s["rpcs"].get(rpc, {}).get(
        "p99_ms", float("nan"))} for s in steps], "p99") for rpc, _ in MIX}
    rss = [sum(s["rss_mib"].values()) for s in steps]
    growth = (rss[-1] - rss[-3]) / rss[-3] if len(rss) >= 3 and rss[-3] else 0.0
    by_service = {
        name: round((steps[-1]["rss_mib"][name] - steps[-3]["rss_mib"][name])
                    / steps[-3]["rss_mib"][name], 3)
        for name in steps[-1]["rss_mib"]} if len(steps) >= 3 else {}
    return {
        "knee_rate": knee, "knee_by_rpc": totals_rpc,
        "past_knee": {
            "calls": sum(totals.values()),
            "ok": totals["OK"],
            "resource_exhausted_with_retry_info": sum(s["exhausted_with_retry_info"] for s in past),
            "resource_exhausted_without_retry_info": sum(
                s["exhausted_without_retry_info"] for s in past),
            "deadline_exceeded": totals["DEADLINE_EXCEEDED"],
            "internal": totals["INTERNAL"] + totals["UNKNOWN"],
            "unavailable": totals["UNAVAILABLE"],
            "dropped_by_client": sum(s["dropped"] for s in past),
        },
        "rss_total_mib_by_step": [round(r, 1) for r in rss],
        "rss_growth_last_two_steps": round(growth, 3),
        "rss_growth_last_two_steps_by_service": by_service,
        "memory_plateaus": growth < PLATEAU_GROWTH,
    }


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in result["steps"]:
        c = s["codes"]
        rows.append({
            "admission": "on" if result["admission"] else "off", "rate": s["rate"],
            "ok/s": s["ok_per_s"], "p50 ms": s["unary_p50_ms"], "p95 ms": s["unary_p95_ms"],
            "p99 ms": s["unary_p99_ms"],
            "chat p99 ms": s["rpcs"].get("Chat", {}).get("p99_ms", float("nan")),
            "OK": c.get("OK", 0),
            "EXH+retry": s["exhausted_with_retry_info"],
            "EXH-retry": s["exhausted_without_retry_info"],
            "DEADLINE": c.get("DEADLINE_EXCEEDED", 0), "UNAVAIL": c.get("UNAVAILABLE", 0),
            "INTERNAL": c.get("INTERNAL", 0) + c.get("UNKNOWN", 0),
            "other": sum(v for k, v in c.items() if k not in {
                "OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "INTERNAL",
                "UNKNOWN"}),
            "dropped": s["dropped"],
            "RSS MiB": round(sum(s["rss_mib"].values()), 1),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    backend = "postgres" if "--postgres" in argv else os.environ.get("BENCH_LOAD_BACKEND", "sqlite")
    modes = {"off": [False], "on": [True], "both": [False, True]}[ADMISSION]
    os.environ.setdefault("COLUMNS", "180")  # the table is wide; rich reads this
    console = Console()

    from services.inference.checkpoint import build_random_checkpoint

    model = Path(tempfile.mkdtemp(prefix="bench-load-model-")) / "tiny-world.pth"
    build_random_checkpoint(model, n_layer=2, n_embd=64, vocab_size=65536, seed=5)
    results = []
    for admission in modes:
        result = asyncio.run(sweep(model, backend, admission, console))
        result["verdict"] = verdict(result)
        results.append(result)
    rows = [r for res in results for r in _rows(res)]
    print_table(f"Mixed load on the whole stack ({backend}; unary = SubmitGameSession, "
                f"GetChildReport, ListFlags; {STEP_S:g}s per rate)", rows)
    for res in results:
        v = res["verdict"]
        console.print(f"admission {'on' if res['admission'] else 'off'}: knee at "
                      f"{v['knee_rate']} req/s (per RPC {v['knee_by_rpc']}); past it "
                      f"{v['past_knee']}; RSS by step {v['rss_total_mib_by_step']} MiB "
                      f"(last-steps growth {v['rss_growth_last_two_steps']:.1%}, "
                      f"plateau: {v['memory_plateaus']})")
    path = write_result("load", rows, backend=backend, rates=RATES, step_s=STEP_S,
                        families=FAMILIES, mix=dict(MIX), chat_tokens=CHAT_TOKENS,
                        unary_deadline_s=UNARY_DEADLINE_S, chat_deadline_s=CHAT_DEADLINE_S,
                        knee_factor=KNEE_FACTOR, sweeps=results)
    console.print(f"wrote {path}")
    failed = any(r["service_exited"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
