"""Analytics service on PostgreSQL: ingestion cost and report scaling, with in-run baselines.

Profile and analytics run as their own processes (`python -m services.X serve`),
as deployed; this process is the client and the baseline.

1. Sustained ingestion of 30-trial sessions through gRPC (CONCURRENCY clients,
   the real profile server answers the per-write consent check and takes the
   inline AwardXp, as in production), in sessions/s, against a baseline measured
   in the same run: bare asyncpg writing the same rows to the same tables
   (session, 30 trials, metrics, XP outbox row, play day upsert, child
   aggregates; one transaction per session, executemany for trials and metrics,
   the same concurrency). A second gRPC row reuses profile's consent answer for
   30 s (AVATARIO_ANALYTICS_CONSENT_CACHE_TTL_S), which prices the consent check.
2. GetChildReport (gRPC, median of REPORT_CALLS interleaved rounds) for
   children with 100, 1,000 and 10,000 sessions of history (3 sessions a day
   up to now, seeded with COPY; the 10-week window holds 100, 210 and 210 of
   them), against the same report computed naively from the whole history
   (read every session, then build_report) in the same run.

Needs PostgreSQL (AVATARIO_TEST_PG_URL). Writes bench/results/analytics.json.
Run: python -m bench analytics
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import statistics
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.analytics.v1 import analytics_pb2_grpc
from avatario_tools.simulation.simulator import draw_child, simulate_session
from bench.common import calls_per_second, print_table, write_result
from services.analytics import convert
from services.analytics.domain.catalog import load_catalog
from services.analytics.domain.ingest import score_session
from services.analytics.domain.norms import load_norms
from services.analytics.domain.report import build_report
from services.analytics.domain.tips import load_tips
from services.analytics.domain.types import Session, SessionResult, age_months
from services.analytics.main import MIGRATIONS
from services.analytics.repo import reads
from services.analytics.repo.ingest import run_through
from services.analytics.settings import AnalyticsSettings
from services.common import migrations
from services.common.clients import internal_channel
from services.common.db import Database
from services.common.healthcheck import wait_serving
from services.common.logs import configure_logging
from services.profile.main import MIGRATIONS as PROFILE_MIGRATIONS
from tests.conftest import ROOT

CONCURRENCY = int(os.environ.get("BENCH_ANALYTICS_CONCURRENCY", "8"))
SESSIONS = int(os.environ.get("BENCH_ANALYTICS_SESSIONS", "600"))
CHILDREN = 40
TRIALS = 30
HISTORY = (100, 1_000, 10_000)
REPORT_CALLS = int(os.environ.get("BENCH_ANALYTICS_REPORT_CALLS", "15"))
PER_DAY = 3
TOKEN = "bench-internal-token-0123456789"
GAMES = ("go_nogo", "number_compare", "emotion_faces")
CATALOG = load_catalog()
NORMS = load_norms()
TIPS = load_tips()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


# -- data -------------------------------------------------------------------------------


def thirty_trial_sessions(rng: random.Random, n: int, start: datetime) -> list[Session]:
    """Valid simulated sessions cut to their first 30 trials (child id filled in later)."""
    child = draw_child(rng, start, age_years=(8, 8))
    out: list[Session] = []
    while len(out) < n:
        game = CATALOG.latest(rng.choice(GAMES))
        s = simulate_session(game, child, rng.gauss(0, 1), start + timedelta(
            minutes=rng.randint(0, 60 * 24 * 20)), NORMS, rng)
        if len(s.trials) < TRIALS:
            continue
        trials = s.trials[:TRIALS]
        last = trials[-1].responded_at or trials[-1].presented_at
        out.append(replace(s, trials=trials, ended_at=last + timedelta(seconds=1)))
    return out


def _trial_rows(s: Session, family_id: str) -> list[tuple]:
    return [(s.session_id, t.index, s.child_id, family_id, json.dumps(dict(t.stimulus)),
             json.dumps(dict(t.response)), t.correct, t.responded, t.reaction_time_ms,
             t.presented_at, t.responded_at) for t in s.trials]


def _metric_rows(r: SessionResult, family_id: str) -> list[tuple]:
    return [(r.session_id, m.name, r.child_id, family_id, r.game_id, r.started_at, m.value,
             m.unit, m.normed, m.z_score, m.percentile, m.norm_source) for m in r.metrics]


# -- 1. ingestion -----------------------------------------------------------------------


INSERT_SESSION = """INSERT INTO game_sessions (session_id, child_id, family_id, game_id,
 game_version, domain, started_at, ended_at, received_at, age_months, content_hash, trial_count,
 valid_trials, excluded_trials, xp_awarded, norms_version)
 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)"""
INSERT_TRIAL = """INSERT INTO trials (session_id, trial_index, child_id, family_id, stimulus,
 response, correct, responded, reaction_time_ms, presented_at, responded_at)
 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"""
INSERT_METRIC = """INSERT INTO session_metrics (session_id, name, child_id, family_id, game_id,
 started_at, value, unit, normed, z_score, percentile, norm_source)
 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"""
INSERT_OUTBOX = """INSERT INTO xp_outbox (source_id, child_id, family_id, amount, reason, status,
 attempts, next_attempt_at, last_error, created_at) VALUES ($1,$2,$3,$4,$5,'done',1,$6,'',$6)"""
UPSERT_DAY = """INSERT INTO play_days (child_id, day, family_id, seconds, sessions)
 VALUES ($1,$2,$3,$4,1) ON CONFLICT (child_id, day)
 DO UPDATE SET seconds = play_days.seconds + EXCLUDED.seconds, sessions = play_days.sessions + 1"""
UPDATE_CHILD = """UPDATE children SET total_sessions = total_sessions + 1,
 total_play_seconds = total_play_seconds + $2 WHERE child_id = $1"""


async def _baseline(url: str, sessions: list[tuple[Session, SessionResult, str, int]]) -> float:
    pool = await asyncpg.create_pool(_dsn(url), min_size=CONCURRENCY, max_size=CONCURRENCY)
    now = datetime.now(UTC)
    rows = []
    for s, r, fam, age in sessions:
        sid = str(uuid.uuid4())
        s2, r2 = replace(s, session_id=sid), replace(r, session_id=sid)
        rows.append((
            (sid, s.child_id, fam, r.game_id, r.game_version, r.domain.value, r.started_at,
             r.ended_at, now, age, "0" * 64, len(s.trials), r.valid_trials, r.excluded_trials,
             r.xp_awarded, NORMS.version),
            _trial_rows(s2, fam), _metric_rows(r2, fam),
            (f"session:{sid}", s.child_id, fam, r.xp_awarded, "bench", now),
            (s.child_id, r.started_at.date(), fam, r.duration_seconds)))

    async def one(i: int) -> None:
        sess, trials, metrics, outbox, day = rows[i]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(UPDATE_CHILD, sess[1], day[3])
            await conn.execute(INSERT_SESSION, *sess)
            await conn.executemany(INSERT_TRIAL, trials)
            await conn.executemany(INSERT_METRIC, metrics)
            await conn.execute(INSERT_OUTBOX, *outbox)
            await conn.execute(UPSERT_DAY, *day)

    try:
        await one(0)
        return await calls_per_second(len(rows) - 1, lambda i: one(i + 1), CONCURRENCY)
    finally:
        await pool.close()


async def _profile_children(stub, n: int, birth: tuple[int, int]) -> list[tuple[str, str]]:
    from avatario.common.v1 import family_pb2
    from avatario.profile.v1 import profile_pb2 as ppb

    out = []
    for _ in range(n):
        parent = (await stub.CreateParent(ppb.CreateParentRequest(
            email=f"b.{uuid.uuid4().hex[:10]}@example.org", password="bench passphrase 123",
            display_name="Bench"))).parent
        await stub.RecordConsent(ppb.RecordConsentRequest(
            family_id=parent.family_id, parent_id=parent.parent_id, policy_version="bench",
            scopes=[family_pb2.CONSENT_SCOPE_CHILD_PROFILE]))
        child = (await stub.CreateChild(ppb.CreateChildRequest(
            family_id=parent.family_id, parent_id=parent.parent_id, nickname="Bench",
            birth_year=birth[0], birth_month=birth[1]))).child
        out.append((parent.family_id, child.child_id))
    return out


# -- 2. report scaling ------------------------------------------------------------------


async def _seed_history(url: str, fam: str, child: str, birth: tuple[int, int], n: int,
                        pool_results: list[SessionResult]) -> None:
    """n sessions ending now, PER_DAY a day, with metrics, play days and aggregates (COPY)."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rng = random.Random(n)
    sessions, metrics, days = [], [], {}
    for i in range(n):
        template = pool_results[i % len(pool_results)]
        start = now - timedelta(hours=24 / PER_DAY * i, minutes=rng.randint(0, 30))
        r = replace(template, session_id=str(uuid.uuid4()), child_id=child, started_at=start,
                    ended_at=start + (template.ended_at - template.started_at))
        sessions.append((r.session_id, child, fam, r.game_id, r.game_version, r.domain.value,
                         r.started_at, r.ended_at, r.ended_at,
                         age_months(birth[0], birth[1], start), "0" * 64, 30, r.valid_trials,
                         r.excluded_trials, r.xp_awarded, NORMS.version))
        metrics += _metric_rows(r, fam)
        d = days.setdefault(start.date(), [0.0, 0])
        d[0] += r.duration_seconds
        d[1] += 1
    ordered = sorted(days)
    longest = max(run_through(ordered, d)[0] for d in ordered)
    current = run_through(ordered, ordered[-1])[0]
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(
            """INSERT INTO children (child_id, family_id, birth_year, birth_month, created_at,
            total_sessions, total_play_seconds, first_played_at, last_played_at,
            longest_streak_days, current_run_days)
            VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)""",
            child, fam, birth[0], birth[1], now, n, sum(v[0] for v in days.values()),
            min(s[6] for s in sessions), max(s[6] for s in sessions), longest, current)
        await conn.copy_records_to_table("game_sessions", records=sessions, columns=[
            "session_id", "child_id", "family_id", "game_id", "game_version", "domain",
            "started_at", "ended_at", "received_at", "age_months", "content_hash", "trial_count",
            "valid_trials", "excluded_trials", "xp_awarded", "norms_version"])
        await conn.copy_records_to_table("session_metrics", records=metrics, columns=[
            "session_id", "name", "child_id", "family_id", "game_id", "started_at", "value",
            "unit", "normed", "z_score", "percentile", "norm_source"])
        await conn.copy_records_to_table("play_days", records=[
            (child, d, fam, v[0], v[1]) for d, v in days.items()],
            columns=["child_id", "day", "family_id", "seconds", "sessions"])
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _naive_report_ms(db: Database, ref: pb.ChildRef) -> float:
    """The report computed the naive way: read the whole history, then build it."""
    t0 = time.perf_counter()
    async with db.session() as s:
        scored = await reads.scored_sessions(s, ref.child_id)
    build_report(ref.child_id, ref.birth_year, ref.birth_month, [x.result for x in scored],
                 [], datetime.now(UTC), CATALOG, TIPS)
    return (time.perf_counter() - t0) * 1000


# -- run --------------------------------------------------------------------------------


class Proc:
    """A service started as its own process (`python -m services.<name> serve`)."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name, self.env = name, env
        self.port = _free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        prefix = f"AVATARIO_{self.name.upper()}_"
        env = {**os.environ, "AVATARIO_INTERNAL_TOKEN": TOKEN, f"{prefix}PORT": str(self.port),
               f"{prefix}METRICS_PORT": str(_free_port()), f"{prefix}LOG_LEVEL": "WARNING",
               **{prefix + k: v for k, v in self.env.items()}}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"services.{self.name}", "serve", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        target = f"127.0.0.1:{self.port}"
        if not await wait_serving(target, timeout=60):
            raise RuntimeError(f"{self.name} did not become ready")
        return target

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _run(url: str, profile_url: str) -> tuple[list[dict], list[dict]]:
    await asyncio.to_thread(migrations.upgrade, Path(MIGRATIONS), url)
    await asyncio.to_thread(migrations.upgrade, Path(PROFILE_MIGRATIONS), profile_url)
    settings = AnalyticsSettings(internal_token=TOKEN, port=0, metrics_port=None,
                                 database_url=url)
    profile = Proc("profile", {"DATABASE_URL": profile_url})
    p_target = await profile.start()
    procs, channels = [profile], []

    def channel(target: str):
        ch = internal_channel(target, settings, caller="bench")
        channels.append(ch)
        return ch

    async def analytics(profile_target: str, consent_ttl_s: float = 0.0):
        proc = Proc("analytics", {"DATABASE_URL": url, "PROFILE_TARGET": profile_target,
                                  "RENORM_INTERVAL_S": "0", "XP_RETRY_INITIAL_S": "3600",
                                  "XP_RETRY_MAX_S": "3600", "DB_POOL_SIZE": str(CONCURRENCY),
                                  "CONSENT_CACHE_TTL_S": str(consent_ttl_s)})
        procs.append(proc)
        return analytics_pb2_grpc.AnalyticsServiceStub(channel(await proc.start()))

    from avatario.profile.v1 import profile_pb2_grpc

    p_stub = profile_pb2_grpc.ProfileServiceStub(channel(p_target))
    today = datetime.now(UTC)
    birth = (today.year - 8, 1)
    report_birth = (today.year - 12, 1)
    try:
        kids = await _profile_children(p_stub, CHILDREN, birth)
        report_kids = await _profile_children(p_stub, len(HISTORY), report_birth)
        rng = random.Random(7)
        templates = thirty_trial_sessions(rng, 3 * SESSIONS, today - timedelta(days=25))
        refs = [pb.ChildRef(family_id=f, child_id=c, birth_year=birth[0], birth_month=birth[1])
                for f, c in kids]

        def request(i: int, offset: int) -> pb.SubmitGameSessionRequest:
            ref = refs[i % len(refs)]
            s = replace(templates[offset + i], session_id=str(uuid.uuid4()),
                        child_id=ref.child_id)
            return pb.SubmitGameSessionRequest(child=ref, session=convert.session_pb(s))

        up = await analytics(p_target)
        for i in range(len(refs)):  # warm up; the children's rows exist
            await up.SubmitGameSession(request(i, SESSIONS))
        reqs_up = [request(i, 0) for i in range(SESSIONS)]
        grpc_up = await calls_per_second(
            SESSIONS, lambda i: up.SubmitGameSession(reqs_up[i]), CONCURRENCY)

        cached = await analytics(p_target, consent_ttl_s=30.0)
        reqs_cached = [request(i, 2 * SESSIONS) for i in range(SESSIONS)]
        for i in range(len(refs)):  # warm up: every family's consent answer is cached
            await cached.SubmitGameSession(request(i, SESSIONS + len(refs)))
        grpc_cached = await calls_per_second(
            SESSIONS, lambda i: cached.SubmitGameSession(reqs_cached[i]), CONCURRENCY)

        base_rows = []
        for i in range(SESSIONS):
            ref = refs[i % len(refs)]
            s = replace(templates[i], child_id=ref.child_id)
            r = score_session(s, CATALOG.get(s.game_id, s.game_version), NORMS, *birth)
            base_rows.append((s, r, ref.family_id, age_months(*birth, s.started_at)))
        bare = await _baseline(url, base_rows)
        ingest = [
            {"path": "bare asyncpg executemany (baseline)", "sessions": SESSIONS,
             "sessions_per_s": bare, "vs_baseline": 1.0},
            {"path": "gRPC SubmitGameSession, consent asked + AwardXp", "sessions": SESSIONS,
             "sessions_per_s": grpc_up, "vs_baseline": grpc_up / bare},
            {"path": "gRPC SubmitGameSession, consent cached 30 s", "sessions": SESSIONS,
             "sessions_per_s": grpc_cached, "vs_baseline": grpc_cached / bare},
        ]

        # Report scaling.
        pool_results = [score_session(replace(s, child_id="x"), CATALOG.get(
            s.game_id, s.game_version), NORMS, *report_birth) for s in templates[:300]]
        db = Database(url, pool_size=2)
        try:
            reqs = []
            for (fam, child), n in zip(report_kids, HISTORY, strict=True):
                await _seed_history(url, fam, child, report_birth, n, pool_results)
                reqs.append(pb.GetChildReportRequest(child=pb.ChildRef(
                    family_id=fam, child_id=child, birth_year=report_birth[0],
                    birth_month=report_birth[1])))
            reports = [(await up.GetChildReport(r)).report for r in reqs for _ in range(3)][::3]
            # Interleaved rounds, so noise on a shared machine hits every size alike.
            times: list[list[float]] = [[] for _ in reqs]
            naive: list[list[float]] = [[] for _ in reqs]
            for round_ in range(REPORT_CALLS):
                for i, r in enumerate(reqs):
                    t0 = time.perf_counter()
                    await up.GetChildReport(r)
                    times[i].append((time.perf_counter() - t0) * 1000)
                    if round_ < 3:
                        naive[i].append(await _naive_report_ms(db, r.child))
            medians = [statistics.median(t) for t in times]
            report_rows = [{
                "history_sessions": n, "sessions_in_10_weeks": min(n, 70 * PER_DAY),
                "report_ms_median": ms, "vs_100": ms / medians[0], "vs_1000": ms / medians[1],
                "naive_full_read_ms": statistics.median(nv), "avatar": rep.HasField("avatar"),
                "streak_days": rep.current_streak_days,
            } for n, ms, nv, rep in zip(HISTORY, medians, naive, reports, strict=True)]
        finally:
            await db.dispose()
        return ingest, report_rows
    finally:
        for ch in channels:
            await ch.close()
        for proc in reversed(procs):
            await proc.stop()


def main() -> int:
    configure_logging("WARNING", json=False)
    try:
        from tests.conftest import create_pg_database, drop_pg_database

        url = create_pg_database()
        profile_url = create_pg_database()
    except BaseException as exc:  # noqa: BLE001 - pytest.skip is a BaseException
        print(f"bench analytics needs PostgreSQL: {exc}")
        return 1
    try:
        ingest, reports = asyncio.run(_run(url, profile_url))
    finally:
        drop_pg_database(url)
        drop_pg_database(profile_url)
    print_table(f"analytics ingestion of {TRIALS}-trial sessions into PostgreSQL, "
                f"{CONCURRENCY} concurrent clients", ingest)
    print_table("GetChildReport vs history length (PostgreSQL)", reports)
    path = write_result("analytics", ingest + reports, concurrency=CONCURRENCY,
                        trials_per_session=TRIALS, sessions_per_day_seeded=PER_DAY,
                        ingestion=ingest, reports=reports)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
