"""Helpers every benchmark uses: result files, tables, concurrent call rates."""

from __future__ import annotations

import asyncio
import json
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, rows: list[dict[str, Any]], **meta: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        **meta,
        "rows": rows,
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(str(key))
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)


async def calls_per_second(n: int, call: Callable[[int], Awaitable[Any]],
                           concurrency: int) -> float:
    """Calls per second for call(0) .. call(n - 1) spread over `concurrency` workers."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await call(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0)
