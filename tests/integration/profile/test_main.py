"""The real entry point: `python -m services.profile migrate`, then `serve`, as processes."""

from __future__ import annotations

import os

from avatario.profile.v1 import profile_pb2 as pb
from avatario.profile.v1 import profile_pb2_grpc
from services.common.clients import internal_channel
from tests.helpers import INTERNAL_TOKEN, TOKEN_PEPPER, run_module, serving_process
from tests.integration.profile.conftest import profile_settings


async def test_migrate_then_serve_then_drain_on_sigterm(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'profile.db'}"
    env = {
        **os.environ, "AVATARIO_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "AVATARIO_PROFILE_DATABASE_URL": url, "AVATARIO_PROFILE_PORT": "0",
        "AVATARIO_PROFILE_METRICS_PORT": "0", "AVATARIO_PROFILE_ARGON2_MEMORY_COST_KIB": "256",
        "AVATARIO_PROFILE_SHUTDOWN_GRACE_S": "1", "AVATARIO_PROFILE_TOKEN_PEPPER": TOKEN_PEPPER,
    }
    await run_module("services.profile.migrate", env)
    async with serving_process("services.profile", env, "profile") as port:
        async with internal_channel(f"127.0.0.1:{port}", profile_settings(url),
                                    caller="tests") as channel:
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            parent = (await stub.CreateParent(pb.CreateParentRequest(
                email="main@example.org", password="a fine passphrase",
                display_name="Main"))).parent
            assert parent.email == "main@example.org"
