"""The `avatario` CLI against a real gateway and profile (the CLI runs in a
worker thread: it drives its own event loop)."""

from __future__ import annotations

import asyncio
import json
import stat

import pytest
import structlog
from typer.testing import CliRunner

from avatario_tools.cli.app import app
from services.common.logs import configure_logging
from tests.integration.gateway.conftest import fake_target, sqlite_only
from tests.integration.gateway.support import PASSWORD, new_email

# Transport and orchestration do not depend on the database backend: SQLite only.
db_urls = pytest.fixture(scope="module", name="db_urls")(sqlite_only)



# The gateway talks to the scripted inference fake (conftest `fake`).
inference_target = pytest.fixture(name="inference_target")(fake_target)


@pytest.fixture(autouse=True)
def quiet_servers():
    """The servers run in this process: keep their logs out of the CLI's output."""
    configure_logging("WARNING", json=True)
    yield
    structlog.reset_defaults()


class Cli:
    def __init__(self, target: str, credentials) -> None:
        self.env = {"AVATARIO_CLI_GATEWAY": target, "AVATARIO_CLI_CREDENTIALS": str(credentials),
                    "COLUMNS": "200"}
        self.runner = CliRunner()

    async def __call__(self, *args: str, ok: bool = True, input: str | None = None) -> str:
        result = await asyncio.to_thread(self.runner.invoke, app, list(args), env=self.env,
                                         input=input)
        output = result.output
        if ok:
            assert result.exit_code == 0, f"{args}: {output}"
        else:
            assert result.exit_code != 0, f"{args} should fail: {output}"
        return output


async def test_a_parent_session_through_the_cli(stack, tmp_path, fake):
    creds = tmp_path / "config" / "credentials.json"
    cli = Cli(stack.target, creds)
    email = new_email()
    await cli("signup", "--email", email, "--name", "Sam", "--password", PASSWORD)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert email in await cli("whoami")
    assert "granted" in await cli("consent", "grant")
    assert "chat-assistant" in await cli("consent", "list")
    await cli("child", "add", "Noa", "--birth", "2018-06")
    assert "Noa" in await cli("child", "list")
    assert "Level" in await cli("child", "show", "Noa")
    out = await cli("pair", "code", "Noa")
    code = out.split("pairing code: ")[1].split()[0]
    await cli("pair", "redeem", code, "--name", "Noa's tablet")
    saved = json.loads(creds.read_text())["gateways"][stack.target]
    (child_id, device), = saved["devices"].items()
    assert device["device_token"].startswith("dev_")
    assert "Level" in await cli("avatar", "show", child_id, "--device")
    assert "Item" in await cli("avatar", "items")
    reply = await cli("chat", "Noa", "--message", "How can we help with sleep?")
    assert "".join(fake.script.chunks) in reply
    # Errors are readable, with the field named, and exit non-zero.
    out = await cli("child", "add", "X" * 100, "--birth", "2018-01", ok=False)
    assert "INVALID_ARGUMENT" in out and "nickname" in out
    await cli("signout")
    assert "not signed in" in await cli("whoami", ok=False)
    assert "signed in" in await cli("signin", "--email", email, "--password", PASSWORD)
    # A stale access token is refreshed transparently.
    data = json.loads(creds.read_text())
    data["gateways"][stack.target]["parent"]["access_expires_at"] = "2000-01-01T00:00:00+00:00"
    creds.write_text(json.dumps(data))
    assert email in await cli("whoami")


async def test_cli_reports_an_unreachable_gateway(tmp_path):
    cli = Cli("127.0.0.1:9", tmp_path / "c.json")
    out = await cli("signin", "--email", "a@example.org", "--password", PASSWORD, ok=False)
    assert "UNAVAILABLE" in out
