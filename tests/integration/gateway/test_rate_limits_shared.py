"""Rate limits through real gateways: two replicas share their counts in Redis, password
checks are under a strict per-account limit, and a failed Redis neither opens the gate
nor turns calls into INTERNAL.

Redis: AVATARIO_TEST_REDIS_URL (default redis://127.0.0.1:6379/0). Without a reachable
server these tests skip, unless AVATARIO_REQUIRE_REDIS=1 (set by .ci/run), where they fail.
Every test uses its own key prefix, so runs never see each other's counts."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import grpc
import pytest

from avatario.gateway.v1 import gateway_pb2 as gw
from tests.helpers import retry_after
from tests.integration.gateway.conftest import sqlite_only
from tests.integration.gateway.support import PASSWORD, fails, sign_up

C = grpc.StatusCode
WRONG_PASSWORD = {"ChangePassword": C.PERMISSION_DENIED, "EraseFamily": C.PERMISSION_DENIED}
REDIS_URL = os.environ.get("AVATARIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("AVATARIO_REQUIRE_REDIS", "") == "1"

# Limits do not depend on the database backend: SQLite only.
db_urls = pytest.fixture(scope="module", name="db_urls")(sqlite_only)


async def _ping(url: str) -> str | None:
    import coredis

    client = coredis.Redis.from_url(url, connect_timeout=2, stream_timeout=2)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - report why
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture
async def redis_url() -> str:
    problem = await _ping(REDIS_URL)
    if problem:
        if REQUIRE_REDIS:
            pytest.fail(f"Redis is required (AVATARIO_REQUIRE_REDIS=1) but unreachable: {problem}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {problem}")
    return REDIS_URL


def prefix() -> str:
    return f"avatario-test-{uuid.uuid4().hex[:12]}"


async def test_two_replicas_share_the_per_account_sign_in_limit(stack, redis_url):
    shared = dict(rate_limit_url=redis_url, rate_limit_key_prefix=prefix(),
                  password_rate_limit="3/hour")
    _, a = await stack.extra_gateway(**shared)
    _, b = await stack.extra_gateway(**shared)
    fam = await sign_up(stack.client)
    wrong = gw.SignInRequest(email=fam.email, password="not the password")
    await fails(a.auth.SignIn(wrong), C.UNAUTHENTICATED)
    await fails(b.auth.SignIn(wrong), C.UNAUTHENTICATED)
    await a.auth.SignIn(gw.SignInRequest(email=fam.email, password=PASSWORD))
    # The fourth attempt, on either replica, is over the account's limit, right password or not.
    for client in (b, a):
        err = await fails(client.auth.SignIn(gw.SignInRequest(
            email=fam.email.upper(), password=PASSWORD)), C.RESOURCE_EXHAUSTED)
        assert 3000 < retry_after(err) <= 3600
    # Another account is not affected.
    other = await sign_up(stack.client)
    await b.auth.SignIn(gw.SignInRequest(email=other.email, password=PASSWORD))


async def test_two_replicas_share_the_per_principal_limit(stack, redis_url):
    shared = dict(rate_limit_url=redis_url, rate_limit_key_prefix=prefix(),
                  rate_limit_rps=0.05, rate_limit_burst=3)  # 3 per minute
    gw_a, a = await stack.extra_gateway(**shared)
    _, b = await stack.extra_gateway(**shared)
    fam = await sign_up(stack.client)
    for client in (a, b, a):
        await client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
    err = await fails(b.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md),
                      C.RESOURCE_EXHAUSTED)
    assert 0 < retry_after(err) <= 60
    # A replica on another prefix (another deployment) counts on its own.
    _, c = await stack.extra_gateway(**{**shared, "rate_limit_key_prefix": prefix()})
    await c.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
    assert gw_a.server.registry.get_sample_value(
        "avatario_gateway_rate_limit_storage_errors_total") == 0


@pytest.mark.parametrize("rpc", ["ChangePassword", "EraseFamily"])
async def test_password_checks_with_a_stolen_token_are_limited_per_account(stack, rpc):
    _, client = await stack.extra_gateway(password_rate_limit="2/hour")
    fam = await sign_up(stack.client)
    md = fam.client.md

    def attempt():
        if rpc == "ChangePassword":
            return client.auth.ChangePassword(gw.ChangePasswordRequest(
                current_password="guess guess guess", new_password="new password 123"), metadata=md)
        return client.privacy.EraseFamily(gw.EraseFamilyRequest(password="guess guess"),
                                          metadata=md)

    for _ in range(2):  # a wrong password, as the thief would send
        await fails(attempt(), WRONG_PASSWORD[rpc])
    err = await fails(attempt(), C.RESOURCE_EXHAUSTED)
    assert retry_after(err) > 60
    # Other calls of the same parent go on.
    await client.family.GetAccount(gw.GetAccountRequest(), metadata=md)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_down_redis_falls_back_per_replica_never_internal_never_unlimited(stack):
    gw_down, client = await stack.extra_gateway(
        rate_limit_url=f"redis://127.0.0.1:{closed_port()}/0", rate_limit_key_prefix=prefix(),
        password_rate_limit="2/hour")
    fam = await sign_up(stack.client)
    signin = gw.SignInRequest(email=fam.email, password=PASSWORD)
    await asyncio.gather(client.auth.SignIn(signin), client.auth.SignIn(signin))
    await fails(client.auth.SignIn(signin), C.RESOURCE_EXHAUSTED)
    registry = gw_down.server.registry
    assert registry.get_sample_value("avatario_gateway_rate_limit_storage_errors_total") >= 1
    assert registry.get_sample_value("avatario_gateway_rate_limit_degraded") == 1
    assert registry.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_type": "unary", "grpc_service": "avatario.gateway.v1.AuthService",
         "grpc_method": "SignIn", "grpc_code": "INTERNAL"}) in (None, 0)
