"""Test helpers shared by every test package."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.common.status import field_violations, retry_delay_s

ROOT = Path(__file__).resolve().parent.parent
INTERNAL_TOKEN = "test-internal-token-0123456789"
# Profile's required HMAC key for pairing codes and device tokens.
TOKEN_PEPPER = "test-token-pepper-0123456789"


def new_id() -> str:
    return str(uuid.uuid4())


def rpc_error_fields(err: grpc.RpcError) -> list[str]:
    """Field names in the BadRequest detail of a failed call."""
    return [f for f, _ in field_violations(rpc_status.from_call(err))]


def assert_rpc_error(err: grpc.RpcError, code: grpc.StatusCode, field: str | None = None) -> None:
    """The call failed with `code`, and (for INVALID_ARGUMENT) named `field`."""
    assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
    if field is not None:
        fields = rpc_error_fields(err)
        assert field in fields, f"expected field {field!r} in {fields} ({err.details()})"


def retry_after(err: grpc.RpcError) -> float | None:
    return retry_delay_s(rpc_status.from_call(err))


def promtool_check(body: str, *, allow: tuple[str, ...] = ()) -> None:
    """`promtool check metrics` accepts the exposition text (skips without promtool,
    unless AVATARIO_REQUIRE_TOOLS=1 as in CI). `allow`: lint findings that are
    deliberate (e.g. DCGM's camelCase labels, kept for dcgm-exporter compatibility)."""
    root = Path(__file__).resolve().parent.parent
    promtool = shutil.which("promtool") or str(root / ".tools" / "bin" / "promtool")
    if not Path(promtool).exists():
        if os.environ.get("AVATARIO_REQUIRE_TOOLS") == "1":
            pytest.fail("promtool missing: run scripts/install_tools.sh")
        pytest.skip("promtool not installed (scripts/install_tools.sh)")
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
    findings = [line for line in (out.stdout + out.stderr).splitlines()
                if line.strip() and not any(a in line for a in allow)]
    assert out.returncode == 0 or (allow and not findings), "\n".join(findings)


async def log_line_with(stream: asyncio.StreamReader, event: str, timeout: float = 30.0) -> dict:
    """The next JSON log record with this `event` on a child process's log stream (other
    records and non-JSON lines are skipped); fails if the stream ends first or `timeout` passes."""
    async def find() -> dict:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"process ended before {event}")
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if record.get("event") == event:
                return record

    return await asyncio.wait_for(find(), timeout)


async def run_module(module: str, env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """`python -m module args` to the end; its output (stdout and stderr). Fails unless it
    exits 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@asynccontextmanager
async def serving_process(module: str, env: dict[str, str], service: str) -> AsyncIterator[int]:
    """`python -m module` (serve) as a process, configured by `env` (JSON logs on stderr).
    Yields its gRPC port once it logged `<service>.listening` and `server.serving` and its
    health service says SERVING. On leaving: SIGTERM, `server.stopped` is logged and the
    process exits 0 (killed instead when the body failed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        port = (await log_line_with(proc.stderr, f"{service}.listening"))["port"]
        await log_line_with(proc.stderr, "server.serving")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        yield port
        proc.send_signal(signal.SIGTERM)
        await log_line_with(proc.stderr, "server.stopped")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def schema_diff(url: str, metadata) -> list:
    """Alembic's differences between the migrated database at `url` and the models'
    metadata (types compared); [] when the migrations produce exactly the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), metadata))
    finally:
        await engine.dispose()
