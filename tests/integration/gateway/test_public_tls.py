"""No plaintext on public interfaces: the gateway refuses to start on a non-loopback
address without TLS (unless explicitly allowed), and the development certificate that
scripts/dev_cert.py generates (docker compose's one-shot service) serves real TLS."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from avatario.gateway.v1 import gateway_pb2 as gw
from services.common import healthcheck
from tests.helpers import INTERNAL_TOKEN
from tests.integration.gateway.conftest import sqlite_only, start_gateway
from tests.integration.gateway.support import KEYS, PASSWORD, Client, fails, sign_up

ROOT = Path(__file__).resolve().parents[3]

db_urls = pytest.fixture(scope="module", name="db_urls")(sqlite_only)


def dev_cert():
    spec = importlib.util.spec_from_file_location("dev_cert", ROOT / "scripts" / "dev_cert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_cert_is_a_self_signed_server_certificate_and_idempotent(tmp_path, capsys):
    tool = dev_cert()
    out = tmp_path / "tls"
    assert tool.main(["--out", str(out), "--name", "localhost", "--name", "gateway",
                      "--ip", "127.0.0.1"]) == 0
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "gateway"}
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert (out / "tls.key").stat().st_mode & 0o077 == 0, "the key is private"
    first = (out / "tls.crt").read_bytes()
    tool.main(["--out", str(out), "--name", "localhost"])  # covered: kept
    assert (out / "tls.crt").read_bytes() == first
    tool.main(["--out", str(out), "--name", "api.example.org"])  # a new name: replaced
    assert (out / "tls.crt").read_bytes() != first
    assert "wrote" in capsys.readouterr().out


async def test_the_dev_certificate_serves_tls_on_the_public_port(stack, tmp_path):
    out = tmp_path / "tls"
    dev_cert().ensure(out, ["localhost"], ["127.0.0.1"])
    gw_tls = await start_gateway(stack.urls.gateway, stack.profile_target,
                                 public_tls_cert_file=out / "tls.crt",
                                 public_tls_key_file=out / "tls.key")
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=(out / "tls.crt").read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{gw_tls.port}", creds) as channel:
            fam = await sign_up(Client(channel))
            await Client(channel).auth.SignIn(gw.SignInRequest(email=fam.email, password=PASSWORD))
        # The compose health check of the gateway (TLS, trusting the dev certificate).
        ok = await asyncio.to_thread(healthcheck.main, [
            "--tls", "--ca-file", str(out / "tls.crt"), "--server-name", "localhost",
            f"127.0.0.1:{gw_tls.port}"])
        assert ok == 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw_tls.port}") as plain:
            await fails(Client(plain).auth.SignIn(gw.SignInRequest(
                email=fam.email, password=PASSWORD), timeout=5), grpc.StatusCode.UNAVAILABLE)
    finally:
        await gw_tls.server.stop(0)


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AVATARIO_")}
    base.update(
        AVATARIO_INTERNAL_TOKEN=INTERNAL_TOKEN,
        AVATARIO_GATEWAY_JWT_SIGNING_KEYS=json.dumps(KEYS),
        AVATARIO_GATEWAY_JWT_ACTIVE_KID="k1",
        AVATARIO_GATEWAY_PORT="0",
        AVATARIO_GATEWAY_METRICS_PORT="0",
        AVATARIO_GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        AVATARIO_GATEWAY_READY_TIMEOUT_S="0",
        AVATARIO_GATEWAY_LOG_JSON="false",
        **env,
    )
    return subprocess.run([sys.executable, "-m", "services.gateway", "serve"], cwd=ROOT,
                          env=base, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_the_gateway_refuses_plaintext_on_a_public_address(tmp_path, host):
    # The check runs before anything binds: no port is opened on a public address.
    out = serve(tmp_path, AVATARIO_GATEWAY_HOST=host)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    for name in ("AVATARIO_GATEWAY_PUBLIC_TLS_CERT_FILE", "AVATARIO_GATEWAY_PUBLIC_TLS_KEY_FILE",
                 "AVATARIO_GATEWAY_ALLOW_PLAINTEXT_PUBLIC", "AVATARIO_GATEWAY_HOST"):
        assert name in text, text
    assert "Traceback" not in text
