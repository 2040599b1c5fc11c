"""Test helpers shared by every test package."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from services.common.status import field_violations, retry_delay_s

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
