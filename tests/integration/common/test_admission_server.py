"""Overload admission on a real grpc.aio server (port 0): past max_inflight_rpcs a
call is refused at once with RESOURCE_EXHAUSTED + RetryInfo; a slot is freed
when its call succeeds, fails or is cancelled, and a stream holds its slot until
it ends. The slow handlers wait on events the test sets (no wall-clock timing)."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import errors
from services.common.clients import internal_channel
from services.common.server import Registration, create_server
from services.common.settings import ServiceSettings
from tests.helpers import INTERNAL_TOKEN, assert_rpc_error, promtool_check, retry_after

SERVICE = "avatario.test.v1.SlowService"
S = wrappers_pb2.StringValue


class Slow:
    """Say blocks until `gate` is set ("fail"/"boom" fail after it); Drip yields
    one message, then waits for the gate before the second."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = 0

    async def Say(self, request, context):
        self.entered += 1
        await self.gate.wait()
        if request.value == "fail":
            raise errors.NotFound("word")
        if request.value == "boom":
            raise RuntimeError("a bug")
        return S(value=request.value.upper())

    async def Drip(self, request, context):
        self.entered += 1
        yield S(value="first")
        await self.gate.wait()
        yield S(value="second")


def _add(servicer: Slow, server) -> None:
    ser, de = S.SerializeToString, S.FromString
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Say": grpc.unary_unary_rpc_method_handler(servicer.Say, de, ser),
        "Drip": grpc.unary_stream_rpc_method_handler(servicer.Drip, de, ser),
    }),))
    server.add_registered_method_handlers(SERVICE, {})


def _settings(**kw) -> ServiceSettings:
    return ServiceSettings(internal_token=INTERNAL_TOKEN, port=0, metrics_port=0, **kw)


@pytest.fixture
async def slow_server():
    servers = []

    async def start(cap: int, retry_after_s: float = 1.0):
        slow = Slow()
        server, port = await create_server(
            name="slow", settings=_settings(max_inflight_rpcs=cap,
                                            overload_retry_after_s=retry_after_s),
            services=[Registration(_add, slow, SERVICE)])
        await server.start()
        await server.set_serving()
        servers.append(server)
        return slow, server, internal_channel(f"127.0.0.1:{port}", _settings(), caller="test")

    yield start
    for server in servers:
        await server.stop(0)


def _say(ch):
    return ch.unary_unary(f"/{SERVICE}/Say", S.SerializeToString, S.FromString)


def _drip(ch):
    return ch.unary_stream(f"/{SERVICE}/Drip", S.SerializeToString, S.FromString)


async def _until(predicate, what: str) -> None:
    """Wait (bounded) for a state change that happens on the server's loop."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_calls_past_the_cap_are_refused_with_retry_info(slow_server):
    slow, server, ch = await slow_server(cap=2, retry_after_s=2.5)
    async with ch:
        running = [asyncio.ensure_future(_say(ch)(S(value=f"w{i}"), timeout=30)) for i in range(2)]
        await _until(lambda: slow.entered == 2, "two calls admitted")
        assert server.admission.in_flight == 2

        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await _say(ch)(S(value="third"), timeout=30)
        assert_rpc_error(ei.value, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert retry_after(ei.value) == pytest.approx(2.5)
        assert slow.entered == 2, "the refused call never reached the handler"

        # Probes are never refused, even at the cap.
        health = health_pb2_grpc.HealthStub(ch)
        status = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING

        slow.gate.set()
        assert [r.value for r in await asyncio.gather(*running)] == ["W0", "W1"]
        assert server.admission.in_flight == 0
        assert (await _say(ch)(S(value="again"), timeout=30)).value == "AGAIN"

    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
    assert ('avatario_grpc_server_overload_rejected_total'
            f'{{grpc_method="Say",grpc_service="{SERVICE}"}} 1.0') in body
    assert "avatario_grpc_server_max_inflight_rpcs 2.0" in body
    assert (f'grpc_server_handled_total{{grpc_code="RESOURCE_EXHAUSTED",grpc_method="Say",'
            f'grpc_service="{SERVICE}",grpc_type="unary"}} 1.0') in body
    promtool_check(body)


@pytest.mark.parametrize("word, code", [("fail", grpc.StatusCode.NOT_FOUND),
                                        ("boom", grpc.StatusCode.INTERNAL)])
async def test_a_failed_call_frees_its_slot(slow_server, word, code):
    slow, server, ch = await slow_server(cap=1)
    slow.gate.set()
    async with ch:
        for _ in range(3):  # with a leaked slot the second call would be refused
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _say(ch)(S(value=word), timeout=30)
            assert_rpc_error(ei.value, code)
        assert server.admission.in_flight == 0
        assert server.admission.rejected == 0


async def test_a_cancelled_unary_call_frees_its_slot(slow_server):
    slow, server, ch = await slow_server(cap=1)
    async with ch:
        call = _say(ch)(S(value="slow"), timeout=30)
        await _until(lambda: slow.entered == 1, "the call admitted")
        call.cancel()
        await _until(lambda: server.admission.in_flight == 0, "the slot freed")
        slow.gate.set()
        assert (await _say(ch)(S(value="next"), timeout=30)).value == "NEXT"


async def test_a_stream_holds_its_slot_until_it_ends_or_is_cancelled(slow_server):
    slow, server, ch = await slow_server(cap=1)
    async with ch:
        stream = _drip(ch)(S(value=""), timeout=30)
        assert (await stream.read()).value == "first"
        # The stream is open (waiting for the gate): no room for another call.
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await _say(ch)(S(value="x"), timeout=30)
        assert_rpc_error(ei.value, grpc.StatusCode.RESOURCE_EXHAUSTED)
        stream.cancel()
        await _until(lambda: server.admission.in_flight == 0, "the cancelled stream's slot freed")

        slow.gate.set()
        assert [r.value async for r in _drip(ch)(S(value=""), timeout=30)] == ["first", "second"]
        assert server.admission.in_flight == 0
        assert (await _say(ch)(S(value="y"), timeout=30)).value == "Y"


async def test_cap_zero_admits_everything(slow_server):
    slow, server, ch = await slow_server(cap=0)
    async with ch:
        calls = [asyncio.ensure_future(_say(ch)(S(value="z"), timeout=30)) for _ in range(20)]
        await _until(lambda: slow.entered == 20, "every call admitted")
        slow.gate.set()
        assert len(await asyncio.gather(*calls)) == 20
