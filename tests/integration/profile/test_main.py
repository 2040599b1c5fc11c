"""The real entry point: `python -m services.profile migrate`, then `serve`, as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatario.profile.v1 import profile_pb2 as pb
from avatario.profile.v1 import profile_pb2_grpc
from services.common.clients import internal_channel
from tests.conftest import ROOT
from tests.helpers import INTERNAL_TOKEN, TOKEN_PEPPER, log_line_with
from tests.integration.profile.conftest import profile_settings


async def test_migrate_then_serve_then_drain_on_sigterm(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'profile.db'}"
    env = {
        **os.environ, "AVATARIO_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "AVATARIO_PROFILE_DATABASE_URL": url, "AVATARIO_PROFILE_PORT": "0",
        "AVATARIO_PROFILE_METRICS_PORT": "0", "AVATARIO_PROFILE_ARGON2_MEMORY_COST_KIB": "256",
        "AVATARIO_PROFILE_SHUTDOWN_GRACE_S": "1", "AVATARIO_PROFILE_TOKEN_PEPPER": TOKEN_PEPPER,
    }
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.profile.migrate", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(migrate.communicate(), 60)
    assert migrate.returncode == 0, out.decode()

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.profile", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        port = (await log_line_with(proc.stderr, "profile.listening"))["port"]
        await log_line_with(proc.stderr, "server.serving")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with internal_channel(f"127.0.0.1:{port}", profile_settings(url),
                                    caller="tests") as channel:
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            parent = (await stub.CreateParent(pb.CreateParentRequest(
                email="main@example.org", password="a fine passphrase",
                display_name="Main"))).parent
            assert parent.email == "main@example.org"
        proc.send_signal(signal.SIGTERM)
        await log_line_with(proc.stderr, "server.stopped")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
