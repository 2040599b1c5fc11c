"""What the fault tests share: clients that retry each session by its id until it
is acknowledged, the checks in the services' databases, and the fault table
(printed, and written to bench/results/faults.json)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from prometheus_client.parser import text_string_to_metric_families

from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api, ApiError
from avatario_tools.cli.simulate import plan
from tests.e2e.flows import family_with_child
from tests.helpers import new_id

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "faults.json"
PLAY_SCOPES = (family_pb2.CONSENT_SCOPE_CHILD_PROFILE, family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS,
               family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT)
# What a client may see while a service or the database is down: it retries.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.ABORTED})


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def query(url: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


# -- a family whose child plays ------------------------------------------------------


@dataclass
class Player:
    api: Api
    child: Any

    @classmethod
    async def create(cls, gateway: str, nickname: str) -> Player:
        api = Api(gateway, timeout=30)
        _parent, child = await family_with_child(
            api, f"fault-{new_id()[:8]}@example.org", "a long enough password", nickname,
            (2017, 5), PLAY_SCOPES)
        await api.pair(child.child_id, f"{nickname}'s tablet")
        return cls(api, child)

    def sessions(self, n: int):
        """n sessions the child played (fresh session ids: they are global keys)."""
        return plan(self.child.child_id, self.child.birth_year, self.child.birth_month,
                    sessions=n, weeks=max(2, n // 6), seed=None).sessions


# -- ingestion with retries ----------------------------------------------------------


@dataclass
class Ingest:
    """Counts of a run of clients that submit sessions until each is acknowledged.

    The fault sets `fault_at` when it strikes and `repair_at` when it starts the
    repair (restarting the process or the database): the first acknowledgement
    after `repair_at` marks the recovery."""

    requests: int = 0
    acked: dict[str, int] = field(default_factory=dict)  # session id -> xp awarded
    duplicate_acks: int = 0  # answered "already stored": a retry after a lost answer
    ack_times: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)  # (time, code)
    unexpected: list[str] = field(default_factory=list)
    fault_at: float | None = None
    repair_at: float | None = None

    @property
    def recovered_at(self) -> float | None:
        if self.repair_at is None:
            return None
        return next((t for t in sorted(self.ack_times) if t >= self.repair_at), None)

    @property
    def recovery_s(self) -> float | None:
        """From the start of the repair to the first acknowledged session."""
        back = self.recovered_at
        return None if back is None else round(back - self.repair_at, 3)

    @property
    def outage_s(self) -> float | None:
        """From the fault to the first acknowledged session after it."""
        back = self.recovered_at
        return None if back is None or self.fault_at is None else round(back - self.fault_at, 3)

    @property
    def codes(self) -> Counter:
        return Counter(code for _, code in self.errors)

    @property
    def fault_codes(self) -> Counter:
        """Failures from the fault to the recovery."""
        if self.fault_at is None:
            return Counter()
        end = self.recovered_at or float("inf")
        return Counter(code for t, code in self.errors if self.fault_at <= t <= end)


async def ingest(player: Player, sessions, stats: Ingest, *, workers: int,
                 fault: Callable[[Ingest], Awaitable[None]], fault_after: int,
                 timeout_s: float = 120.0) -> None:
    """Submit every session from `workers` concurrent clients, each retrying a session
    (same session id, same content) until it is acknowledged; run `fault` once
    `fault_after` sessions are acknowledged."""
    queue: asyncio.Queue = asyncio.Queue()
    for s in sessions:
        queue.put_nowait(s)
    reached = asyncio.Event()

    async def submit(session) -> None:
        request = gw.SubmitGameSessionRequest(session=session)
        while True:
            stats.requests += 1
            try:
                resp = await player.api.as_device(player.child.child_id, player.api.play.
                                                  SubmitGameSession, request, timeout=10)
            except ApiError as err:
                stats.errors.append((time.monotonic(), err.code.name))
                if err.code not in RETRYABLE:
                    stats.unexpected.append(f"{err.code.name}: {err.details}")
                    return
                await asyncio.sleep(0.05)
                continue
            stats.acked[session.session_id] = resp.result.xp_awarded
            stats.duplicate_acks += int(resp.duplicate)
            stats.ack_times.append(time.monotonic())
            if len(stats.acked) >= fault_after:
                reached.set()
            return

    async def worker() -> None:
        while not queue.empty():
            await submit(queue.get_nowait())

    async def inject() -> None:
        await reached.wait()
        stats.fault_at = time.monotonic()
        await fault(stats)

    injector = asyncio.create_task(inject())
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), timeout_s)
    if not injector.done():  # every session went through before the fault: run it anyway
        reached.set()
    await asyncio.wait_for(injector, timeout_s)


# -- what the databases hold ---------------------------------------------------------


async def wait_outbox_drained(analytics_url: str, child_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await query(analytics_url, "SELECT count(*) AS n FROM xp_outbox "
                           "WHERE child_id = $1 AND status = 'pending'", child_id)
        if rows[0]["n"] == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{rows[0]['n']} XP awards still pending after {timeout_s}s")
        await asyncio.sleep(0.2)


@dataclass
class Stored:
    sessions: Counter  # session id -> rows
    awards: Counter  # source id -> rows in profile
    award_total: int
    avatar_xp: int
    outbox: dict[str, str]  # source id -> status

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.sessions.values() if n > 1) + sum(
            n - 1 for n in self.awards.values() if n > 1)


async def stored(urls: dict[str, str], child_id: str) -> Stored:
    sessions = await query(urls["analytics"], "SELECT session_id FROM game_sessions "
                           "WHERE child_id = $1", child_id)
    outbox = await query(urls["analytics"], "SELECT source_id, status FROM xp_outbox "
                         "WHERE child_id = $1", child_id)
    awards = await query(urls["profile"], "SELECT source_id, amount FROM xp_awards "
                         "WHERE child_id = $1", child_id)
    avatar = await query(urls["profile"], "SELECT xp FROM avatars WHERE child_id = $1", child_id)
    return Stored(
        sessions=Counter(str(r["session_id"]) for r in sessions),
        awards=Counter(r["source_id"] for r in awards),
        award_total=sum(r["amount"] for r in awards),
        avatar_xp=avatar[0]["xp"] if avatar else 0,
        outbox={r["source_id"]: r["status"] for r in outbox},
    )


def check_exactly_once(stats: Ingest, db: Stored, sent: int) -> None:
    """Every acknowledged session stored once; every XP award applied once; the
    avatar's XP is the sum of its awards."""
    assert not stats.unexpected, stats.unexpected
    assert len(stats.acked) == sent
    assert set(db.sessions) == set(stats.acked), "stored sessions differ from acknowledged ones"
    assert all(n == 1 for n in db.sessions.values())
    assert all(n == 1 for n in db.awards.values()), "an XP award was applied twice"
    assert "pending" not in db.outbox.values()
    done = {s for s, status in db.outbox.items() if status == "done"}
    assert set(db.awards) == done, "awards in profile differ from delivered outbox rows"
    earned = {f"session:{sid}" for sid, xp in stats.acked.items() if xp > 0}
    assert earned <= set(db.awards), "an acknowledged session's XP never arrived"
    assert db.avatar_xp == db.award_total


# -- metrics and health --------------------------------------------------------------


def scrape(port: int) -> Counter:
    """Sums of grpc_server_started_total and grpc_server_handled_total (health and
    reflection left out), by name (0 before the first call)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: Counter = Counter()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in ("grpc_server_started_total", "grpc_server_handled_total") and \
                    not sample.labels.get("grpc_service", "").startswith("grpc."):
                out[sample.name] += sample.value
    return out


# -- the fault table -----------------------------------------------------------------

COLUMNS = ("scenario", "requests", "acknowledged", "stored", "duplicates", "codes_during_fault",
           "recovery_s")


class FaultTable:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, scenario: str, **values: Any) -> None:
        self.rows.append({"scenario": scenario, **values})

    def render(self) -> str:
        def cell(v: Any) -> str:
            if isinstance(v, dict):
                return " ".join(f"{k}={n}" for k, n in sorted(v.items())) or "-"
            return "-" if v is None else str(v)

        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for row in self.rows:
            lines.append("| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |")
        return "\n".join(lines)

    def write(self) -> None:
        if not self.rows:
            return
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"rows": self.rows}, indent=2) + "\n")
        print("\nFault table (also in bench/results/faults.json):\n" + self.render())
