"""The real entry point as processes: migrate, serve (readiness, SIGTERM), renorm."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.analytics.v1 import analytics_pb2_grpc
from services.common.clients import internal_channel
from tests.conftest import ROOT
from tests.helpers import INTERNAL_TOKEN, log_line_with
from tests.integration.analytics.conftest import analytics_settings


async def _run(env: dict, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.analytics", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_migrate_serve_renorm_and_drain_on_sigterm(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'analytics.db'}"
    env = {
        **os.environ, "AVATARIO_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "AVATARIO_ANALYTICS_DATABASE_URL": url, "AVATARIO_ANALYTICS_PORT": "0",
        "AVATARIO_ANALYTICS_METRICS_PORT": "0", "AVATARIO_ANALYTICS_SHUTDOWN_GRACE_S": "1",
        "AVATARIO_ANALYTICS_PROFILE_TARGET": "127.0.0.1:1",
    }
    assert "analytics.migrated" in await _run(env, "migrate")
    assert '"stored": false' in await _run(env, "renorm")

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.analytics", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        port = (await log_line_with(proc.stderr, "analytics.listening"))["port"]
        await log_line_with(proc.stderr, "server.serving")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with internal_channel(f"127.0.0.1:{port}", analytics_settings(url),
                                    caller="tests") as channel:
            games = await analytics_pb2_grpc.AnalyticsServiceStub(channel).ListGames(
                pb.ListGamesRequest())
            assert len(games.games) >= 6
        proc.send_signal(signal.SIGTERM)
        await log_line_with(proc.stderr, "server.stopped")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
