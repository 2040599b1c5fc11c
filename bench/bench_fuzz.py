"""Protocol fuzzing, long run: at least 10,000 generated requests across every public
RPC (through the gateway as a parent, a device, anonymously and with bogus
credentials) and every internal RPC (profile, analytics, inference; with and
without the internal token), on the real stack in this process.

Each round creates fresh families (the previous round's erasures, revocations and
password changes used them up), then runs CASES_PER_TARGET generated requests per
(RPC, identity), with a seed of its own. Counted per service: cases, the status
codes seen, INTERNAL/UNKNOWN answers (bugs), rejected writes whose row counts were
compared (every table of every database, before and after), partial writes found;
and each server's grpc.health.v1 status after each round.

Env: BENCH_FUZZ_CASES (total, default 10000), BENCH_FUZZ_CASES_PER_TARGET (12),
BENCH_FUZZ_CHECK_WRITES (fraction of rejected writes compared, 1.0),
BENCH_FUZZ_BACKENDS ("sqlite"; "sqlite,postgres" adds PostgreSQL when reachable).
Writes bench/results/fuzz.json. Run: python -m bench fuzz
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from bench.common import print_table, write_result

TOTAL = int(os.environ.get("BENCH_FUZZ_CASES", "10000"))
PER_TARGET = int(os.environ.get("BENCH_FUZZ_CASES_PER_TARGET", "12"))
CHECK_WRITES = float(os.environ.get("BENCH_FUZZ_CHECK_WRITES", "1.0"))
BACKENDS = [b for b in os.environ.get("BENCH_FUZZ_BACKENDS", "sqlite").split(",") if b]
SEED = 10_000


class _Folders:
    """tmp_path_factory's mktemp for migrated_urls outside pytest."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.root))


async def _run(urls: Any, model: Path) -> dict[str, Any]:
    from tests.fuzz.driver import Driver, World, all_targets, fuzz_stack, health

    rounds = max(1, -(-TOTAL // (PER_TARGET * len(all_targets()))))
    async with fuzz_stack(urls, model) as stack:
        world = World()
        driver: Driver | None = None
        statuses = []
        t0 = time.perf_counter()
        for r in range(rounds):
            await world.populate(stack, rng=random.Random(SEED + r))
            if driver is None:
                driver = Driver(stack, world, seed_value=SEED, check_writes=CHECK_WRITES)
            driver.seed = SEED + r
            await driver.run(PER_TARGET)
            statuses.append(await health(stack))
            done = sum(s.cases for s in driver.stats.values())
            print(f"  round {r + 1}/{rounds}: {done} cases, health {statuses[-1]}", flush=True)
        seconds = time.perf_counter() - t0
        assert driver is not None
        await driver.close()
    return {"driver": driver, "health": statuses, "rounds": rounds, "seconds": seconds}


def _backend(name: str, folders: _Folders, model: Path) -> dict[str, Any] | None:
    from tests.conftest import _pg_available
    from tests.integration.gateway.conftest import migrated_urls

    if name == "postgres" and (problem := _pg_available()):
        print(f"  postgres skipped: {problem}")
        return None
    with migrated_urls(name, folders) as urls:
        return asyncio.run(_run(urls, model))


def main() -> int:
    from tests.fuzz.driver import build_model

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger().setLevel(logging.CRITICAL)
    all_rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"cases_per_target": PER_TARGET, "check_writes": CHECK_WRITES,
                            "backends": {}}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        folders = _Folders(Path(tmp))
        model = build_model(folders.mktemp("model"))
        for backend in BACKENDS:
            print(f"fuzzing on {backend} ...", flush=True)
            out = _backend(backend, folders, model)
            if out is None:
                continue
            driver = out["driver"]
            rows = [{"backend": backend, **row} for row in driver.table()]
            totals = {"cases": sum(r["cases"] for r in rows),
                      "internal_unknown": sum(r["internal_unknown"] for r in rows),
                      "rejected_writes_checked": sum(r["rejected_writes_checked"] for r in rows),
                      "partial_writes": sum(r["partial_writes"] for r in rows)}
            codes = Counter()
            for s in driver.stats.values():
                codes.update(s.codes)
            healthy = all(set(h.values()) == {"SERVING"} for h in out["health"])
            print_table(f"protocol fuzzing on {backend}: {totals['cases']} cases in "
                        f"{out['seconds']:.0f} s ({out['rounds']} rounds)", rows)
            for row in rows:  # the whole codes column (the table above wraps it)
                print(f"  {row['service']}: {row['codes']}")
            print(f"  totals {totals}; codes {dict(sorted(codes.items()))}; "
                  f"every service SERVING after every round: {healthy}")
            for f in driver.findings[:20]:
                print(f"  BUG {f.target} as {f.identity}: {f.code} {f.details!r} <- {f.request}")
            for f in driver.partials[:20]:
                print(f"  PARTIAL WRITE {f.target} as {f.identity}: {f.code} {f.details}")
            meta["backends"][backend] = {
                **totals, "seconds": round(out["seconds"], 1), "rounds": out["rounds"],
                "codes": dict(codes), "health": out["health"], "healthy": healthy,
                "findings": [asdict(f) for f in driver.findings],
                "partials": [asdict(f) for f in driver.partials]}
            all_rows += rows
            failed |= bool(totals["internal_unknown"] or totals["partial_writes"] or not healthy
                           or totals["cases"] < TOTAL)
    path = write_result("fuzz", all_rows, **meta)
    print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
