"""TLS on the public port, rate limits with RetryInfo, domain metrics, health."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatario.gateway.v1 import gateway_pb2 as gw
from services.gateway.settings import GatewaySettings
from tests.certs import TestCA
from tests.helpers import retry_after
from tests.integration.gateway.conftest import sqlite_only, start_gateway
from tests.integration.gateway.support import (
    DEAD_TARGET,
    PASSWORD,
    Client,
    fails,
    gateway_settings,
    new_email,
    sign_up,
)

C = grpc.StatusCode

# Transport and orchestration do not depend on the database backend: SQLite only.
db_urls = pytest.fixture(scope="module", name="db_urls")(sqlite_only)



async def test_public_port_serves_tls_to_a_real_tls_client(stack, tmp_path):
    ca = TestCA(tmp_path / "pki")
    leaf = ca.issue("gateway", dns=("localhost",))
    gw_tls = await start_gateway(stack.urls.gateway, stack.profile_target,
                                 public_tls_cert_file=leaf.cert, public_tls_key_file=leaf.key)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=ca.ca_path.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{gw_tls.port}", creds) as channel:
            client = Client(channel)
            fam = await sign_up(client)
            me = await client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
            assert me.parent.email == fam.email
        # A plaintext client cannot talk to the TLS port.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw_tls.port}") as plain:
            await fails(Client(plain).auth.SignIn(gw.SignInRequest(
                email=fam.email, password=PASSWORD), timeout=5), C.UNAVAILABLE)
        # Nor a TLS client that does not trust the CA.
        other = TestCA(tmp_path / "other", name="someone-else")
        wrong = grpc.ssl_channel_credentials(root_certificates=other.ca_path.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{gw_tls.port}", wrong) as channel:
            await fails(Client(channel).auth.SignIn(gw.SignInRequest(
                email=fam.email, password=PASSWORD), timeout=5), C.UNAVAILABLE)
    finally:
        await gw_tls.server.stop(0)


def test_tls_settings_go_together(tmp_path):
    with pytest.raises(ValueError):
        gateway_settings("sqlite+aiosqlite://", profile="x", public_tls_cert_file=tmp_path / "c")
    ca = TestCA(tmp_path / "pki")
    leaf = ca.issue("gateway")
    # Internal mTLS without public TLS would put the internal credentials on the public port.
    with pytest.raises(ValueError):
        gateway_settings("sqlite+aiosqlite://", profile="x", tls_cert_file=leaf.cert,
                         tls_key_file=leaf.key, tls_ca_file=leaf.ca)


def test_signing_key_settings_are_checked():
    for keys, kid in (({"k1": "too short"}, "k1"), ({"k1": "x" * 40}, "k2"), ({}, "k1")):
        with pytest.raises(ValueError):
            gateway_settings("sqlite+aiosqlite://", profile="x", keys=keys or {"": ""},
                             active_kid=kid)


def test_defaults_match_the_contract():
    s = GatewaySettings(internal_token="t" * 20, jwt_signing_keys='{"a": "' + "s" * 32 + '"}',
                        jwt_active_kid="a")
    assert (s.port, s.metrics_port, s.access_ttl_s, s.refresh_ttl_s) == (50051, 9101, 900, 2592000)
    assert (s.jwt_issuer, s.jwt_audience) == ("avatario-gateway", "avatario-mobile")
    assert (s.backend_deadline_s, s.chat_deadline_s, s.chat_message_max_chars) == (5.0, 120.0, 4000)
    options = dict(s.public_options())
    # The gateway refuses requests over public_max_receive_bytes (1 MiB) itself, with
    # ErrorInfo MESSAGE_TOO_LARGE; gRPC's transport limit sits at twice that.
    assert s.public_max_receive_bytes == 1024 * 1024
    assert options["grpc.max_receive_message_length"] == 2 * 1024 * 1024
    assert options["grpc.keepalive_permit_without_calls"] == 1


async def test_per_principal_rate_limit_answers_resource_exhausted_with_retry_info(stack):
    gw_limited, client = await stack.extra_gateway(rate_limit_rps=0.5, rate_limit_burst=3)
    fam = await sign_up(client)
    for _ in range(3):
        await client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
    err = await fails(client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md),
                      C.RESOURCE_EXHAUSTED)
    assert 0 < retry_after(err) <= 6.0  # 3 calls per 3 / 0.5 = 6 s (a moving window)
    # Another parent has their own bucket.
    other = await sign_up(client)
    await client.family.GetAccount(gw.GetAccountRequest(), metadata=other.client.md)
    registry = gw_limited.server.registry
    assert registry.get_sample_value("avatario_gateway_rate_limited_total",
                                     {"kind": "parent"}) == 1.0


async def test_sign_in_is_limited_per_email_and_peer(stack):
    _, client = await stack.extra_gateway(auth_rate_limit_rps=0.01, auth_rate_limit_burst=3)
    fam = await sign_up(client)  # one of the three
    for _ in range(2):
        await fails(client.auth.SignIn(gw.SignInRequest(email=fam.email, password="wrong pass!")),
                    C.UNAUTHENTICATED)
    err = await fails(client.auth.SignIn(gw.SignInRequest(email=fam.email, password=PASSWORD)),
                      C.RESOURCE_EXHAUSTED)
    assert retry_after(err) > 1
    # The limit is per email (and peer): another account signs in.
    await sign_up(client, new_email())


async def test_anonymous_calls_are_limited_per_peer(stack):
    _, client = await stack.extra_gateway(anonymous_rate_limit_rps=0.01,
                                          anonymous_rate_limit_burst=2)
    for _ in range(2):
        await fails(client.auth.RefreshTokens(gw.RefreshTokensRequest()), C.INVALID_ARGUMENT)
    await fails(client.auth.RefreshTokens(gw.RefreshTokensRequest()), C.RESOURCE_EXHAUSTED)


async def test_backend_errors_are_counted_and_a_down_backend_is_unavailable(stack):
    cut, client = await stack.extra_gateway(analytics=DEAD_TARGET)
    fam = await sign_up(client)
    await fails(client.play.ListGames(gw.ListGamesRequest(), metadata=fam.client.md,
                                      timeout=30), C.UNAVAILABLE)
    registry = cut.server.registry
    assert registry.get_sample_value("avatario_gateway_backend_errors_total",
                                     {"backend": "analytics", "code": "UNAVAILABLE"}) >= 1
    assert registry.get_sample_value("avatario_gateway_active_chat_streams") == 0
    assert registry.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_type": "unary", "grpc_service": "avatario.gateway.v1.PlayService",
         "grpc_method": "ListGames", "grpc_code": "UNAVAILABLE"}) == 1


async def test_profile_down_is_unavailable_not_a_hang(stack):
    fam = await sign_up(stack.client)
    gw_cut = await start_gateway(stack.urls.gateway, "127.0.0.1:9")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw_cut.port}") as channel:
            client = Client(channel)
            await fails(client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md,
                                                 timeout=30), C.UNAVAILABLE)
            await fails(client.auth.SignIn(gw.SignInRequest(email=fam.email, password=PASSWORD),
                                           timeout=30), C.UNAVAILABLE)
    finally:
        await gw_cut.server.stop(0)


async def test_health_and_reflection_are_public(stack):
    stub = health_pb2_grpc.HealthStub(stack.client.channel)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service="avatario.gateway.v1.ChatService"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
