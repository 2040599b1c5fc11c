"""The chassis against a real grpc.aio server on port 0: health, reflection,
metrics (checked by promtool), error mapping, internal auth and mutual TLS."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common import errors
from services.common.clients import internal_channel
from services.common.interceptors import INTERNAL_TOKEN_KEY
from services.common.server import Registration, create_server
from services.common.settings import ServiceSettings
from tests.certs import TestCA
from tests.helpers import INTERNAL_TOKEN, assert_rpc_error, promtool_check, retry_after

SERVICE = "avatario.test.v1.EchoService"
S = wrappers_pb2.StringValue


class Echo:
    """A tiny service whose methods exercise each path of the interceptor."""

    def __init__(self) -> None:
        self.seen_request_ids: list[str] = []

    async def Say(self, request, context):
        from services.common.interceptors import current_request_id

        self.seen_request_ids.append(current_request_id.get())
        word = request.value
        if word == "bad":
            raise errors.InvalidArgument.field("value", "must not be bad")
        if word == "busy":
            raise errors.ResourceExhausted("queue full", retry_after_s=3)
        if word == "missing":
            raise errors.NotFound("word")
        if word == "boom":
            raise RuntimeError("secret internal detail")
        return S(value=word.upper())

    async def Count(self, request, context):
        for i in range(int(request.value)):
            if i == 2 and request.value == "5":
                raise errors.Unavailable("backend went away")
            yield S(value=str(i))


def _add(servicer: Echo, server) -> None:
    ser, de = S.SerializeToString, S.FromString
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Say": grpc.unary_unary_rpc_method_handler(servicer.Say, de, ser),
            "Count": grpc.unary_stream_rpc_method_handler(servicer.Count, de, ser),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_registered_method_handlers(SERVICE, {})


def _settings(**kw) -> ServiceSettings:
    return ServiceSettings(internal_token=INTERNAL_TOKEN, port=0, metrics_port=0, **kw)


async def _start(settings: ServiceSettings):
    echo = Echo()
    server, port = await create_server(
        name="echo", settings=settings, services=[Registration(_add, echo, SERVICE)]
    )
    await server.start()
    return echo, server, port


def _say(channel, metadata=None):
    return channel.unary_unary(f"/{SERVICE}/Say", S.SerializeToString, S.FromString)


async def test_health_reflection_errors_and_metrics(tmp_path):
    echo, server, port = await _start(_settings())
    target = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(target) as bare:
            health = health_pb2_grpc.HealthStub(bare)
            before = await health.Check(health_pb2.HealthCheckRequest())
            assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
            await server.set_serving()
            after = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            assert after.status == health_pb2.HealthCheckResponse.SERVING

            refl = reflection_pb2_grpc.ServerReflectionStub(bare)
            names = set()
            async for resp in refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            ):
                names |= {s.name for s in resp.list_services_response.service}
            assert {SERVICE, "grpc.health.v1.Health"} <= names

            # No internal credential: UNAUTHENTICATED, even for a method that exists.
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(bare)(S(value="hi"))
            assert_rpc_error(ei.value, grpc.StatusCode.UNAUTHENTICATED)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(bare)(S(value="hi"), metadata=((INTERNAL_TOKEN_KEY, "wrong-token-xxxxxxxx"),))
            assert_rpc_error(ei.value, grpc.StatusCode.UNAUTHENTICATED)

        async with internal_channel(target, _settings(), caller="test") as ch:
            assert (await _say(ch)(S(value="hi"), metadata=(("x-request-id", "req-42"),))).value == "HI"
            assert echo.seen_request_ids[-1] == "req-42"
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value="bad"))
            assert_rpc_error(ei.value, grpc.StatusCode.INVALID_ARGUMENT, "value")
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value="busy"))
            assert_rpc_error(ei.value, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert retry_after(ei.value) == pytest.approx(3.0)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value="missing"))
            assert_rpc_error(ei.value, grpc.StatusCode.NOT_FOUND)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value="boom"))
            assert_rpc_error(ei.value, grpc.StatusCode.INTERNAL)
            assert "secret" not in ei.value.details() and "Traceback" not in ei.value.details()

            count = ch.unary_stream(f"/{SERVICE}/Count", S.SerializeToString, S.FromString)
            assert [r.value async for r in count(S(value="3"))] == ["0", "1", "2"]
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                async for r in count(S(value="5")):
                    got.append(r.value)
            assert got == ["0", "1"]
            assert_rpc_error(ei.value, grpc.StatusCode.UNAVAILABLE)

        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
        assert f'grpc_server_handled_total{{grpc_code="OK",grpc_method="Say",grpc_service="{SERVICE}",grpc_type="unary"}} 1.0' in body
        assert 'grpc_code="INVALID_ARGUMENT"' in body and 'grpc_code="INTERNAL"' in body
        assert 'grpc_code="UNAUTHENTICATED"' in body
        assert "grpc_server_started_total" in body and "grpc_server_handling_seconds_bucket" in body
        promtool_check(body)
    finally:
        await server.stop(0)


async def test_graceful_stop_flips_health_and_drains():
    _, server, port = await _start(_settings(shutdown_grace_s=1.0))
    await server.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        stop = asyncio.create_task(server.stop())
        await asyncio.sleep(0)
        await stop
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(), timeout=1)


async def test_mutual_tls(tmp_path):
    ca = TestCA(tmp_path / "ca")
    server_files = ca.issue("echo-server")
    client_files = ca.issue("echo-client")
    server_settings = _settings(
        tls_cert_file=server_files.cert, tls_key_file=server_files.key, tls_ca_file=ca.ca_path
    )
    _, server, port = await _start(server_settings)
    target = f"localhost:{port}"
    try:
        client_settings = _settings(
            tls_cert_file=client_files.cert, tls_key_file=client_files.key, tls_ca_file=ca.ca_path
        )
        async with internal_channel(target, client_settings, caller="test") as ch:
            assert (await _say(ch)(S(value="tls"), timeout=5)).value == "TLS"

        # A client without a certificate is refused at the handshake.
        creds = grpc.ssl_channel_credentials(root_certificates=ca.ca_path.read_bytes())
        async with grpc.aio.secure_channel(target, creds) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value="x"), timeout=5,
                               metadata=((INTERNAL_TOKEN_KEY, INTERNAL_TOKEN),))
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE

        # A client certificate from another CA is refused too.
        other = TestCA(tmp_path / "other", name="rogue-ca").issue("rogue")
        rogue = _settings(tls_cert_file=other.cert, tls_key_file=other.key, tls_ca_file=ca.ca_path)
        async with internal_channel(target, rogue, caller="rogue") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value="x"), timeout=5)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE

        # mTLS alone is not enough: the token is still required.
        creds = grpc.ssl_channel_credentials(
            ca.ca_path.read_bytes(), client_files.key.read_bytes(), client_files.cert.read_bytes()
        )
        async with grpc.aio.secure_channel(target, creds) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value="x"), timeout=5)
            assert_rpc_error(ei.value, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await server.stop(0)


async def test_healthcheck_command_plain_and_mutual_tls(tmp_path):
    from services.common.healthcheck import main as healthcheck

    _, server, port = await _start(_settings())
    try:
        assert await asyncio.to_thread(healthcheck, [f"127.0.0.1:{port}"]) == 1  # NOT_SERVING
        await server.set_serving()
        assert await asyncio.to_thread(healthcheck, [f"127.0.0.1:{port}"]) == 0
        assert await asyncio.to_thread(healthcheck, [f"127.0.0.1:{port}", SERVICE]) == 0
    finally:
        await server.stop(0)

    ca = TestCA(tmp_path / "ca")
    srv, cli = ca.issue("echo-server"), ca.issue("probe")
    _, server, port = await _start(_settings(tls_cert_file=srv.cert, tls_key_file=srv.key,
                                             tls_ca_file=ca.ca_path))
    try:
        await server.set_serving()
        args = ["--cert-file", str(cli.cert), "--key-file", str(cli.key), "--ca-file",
                str(ca.ca_path), "--server-name", "localhost", f"127.0.0.1:{port}"]
        assert await asyncio.to_thread(healthcheck, args) == 0
        assert await asyncio.to_thread(healthcheck, [f"127.0.0.1:{port}", "--timeout", "1"]) == 1
    finally:
        await server.stop(0)


async def test_previous_internal_token_is_accepted_during_rotation():
    old = "old-internal-token-0123456789"
    settings = ServiceSettings(internal_token=INTERNAL_TOKEN, internal_token_previous=old,
                               port=0, metrics_port=None)
    _, server, port = await _start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for token in (INTERNAL_TOKEN, old):
                resp = await _say(ch)(S(value="r"), metadata=((INTERNAL_TOKEN_KEY, token),))
                assert resp.value == "R"
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value="r"), metadata=((INTERNAL_TOKEN_KEY, "x" * 30),))
            assert_rpc_error(ei.value, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await server.stop(0)
