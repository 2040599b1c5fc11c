"""The real entry point as processes: migrate, serve (readiness, SIGTERM), renorm."""

from __future__ import annotations

import os

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.analytics.v1 import analytics_pb2_grpc
from services.common.clients import internal_channel
from tests.helpers import INTERNAL_TOKEN, run_module, serving_process
from tests.integration.analytics.conftest import analytics_settings


async def test_migrate_serve_renorm_and_drain_on_sigterm(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'analytics.db'}"
    env = {
        **os.environ, "AVATARIO_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "AVATARIO_ANALYTICS_DATABASE_URL": url, "AVATARIO_ANALYTICS_PORT": "0",
        "AVATARIO_ANALYTICS_METRICS_PORT": "0", "AVATARIO_ANALYTICS_SHUTDOWN_GRACE_S": "1",
        "AVATARIO_ANALYTICS_PROFILE_TARGET": "127.0.0.1:1",
    }
    assert "analytics.migrated" in await run_module("services.analytics", env, "migrate")
    assert '"stored": false' in await run_module("services.analytics", env, "renorm")

    async with serving_process("services.analytics", env, "analytics") as port:
        async with internal_channel(f"127.0.0.1:{port}", analytics_settings(url),
                                    caller="tests") as channel:
            games = await analytics_pb2_grpc.AnalyticsServiceStub(channel).ListGames(
                pb.ListGamesRequest())
            assert len(games.games) >= 6
