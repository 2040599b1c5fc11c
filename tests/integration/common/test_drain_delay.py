"""Graceful shutdown on a real server (port 0) driven by a real signal through serve():
health turns NOT_SERVING at once, the server keeps answering new and in-flight calls for
`drain_delay_s`, then refuses new calls, lets the in-flight ones finish (grace) and stops."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.clients import internal_channel
from services.common.server import Registration, create_server, serve
from services.common.settings import ServiceSettings
from tests.helpers import INTERNAL_TOKEN

SERVICE = "avatario.test.v1.DrainService"
S = wrappers_pb2.StringValue
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING
SIG = signal.SIGUSR1  # stands in for SIGTERM: same handler, and pytest survives a mistake
DRAIN_DELAY_S = 3.0


class Held:
    """`Say` answers at once; `Hold` answers only when the test releases it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def Say(self, request, context):
        return S(value=request.value.upper())

    async def Hold(self, request, context):
        self.entered.set()
        await self.release.wait()
        return S(value="released")


def _add(servicer: Held, server) -> None:
    de, ser = S.FromString, S.SerializeToString
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Say": grpc.unary_unary_rpc_method_handler(servicer.Say, de, ser),
        "Hold": grpc.unary_unary_rpc_method_handler(servicer.Hold, de, ser),
    }),))


async def _status(health) -> int | None:
    try:
        return (await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status
    except grpc.aio.AioRpcError:
        return None  # the server no longer answers


async def _until(predicate, timeout: float = 20.0):
    """Poll the server (another party's state: no local event to wait on)."""
    async with asyncio.timeout(timeout):
        while True:
            if result := await predicate():
                return result
            await asyncio.sleep(0.02)


async def _run(drain_delay_s: float):
    """Serve, hold one call in flight, signal; report what a client saw after the signal."""
    settings = ServiceSettings(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None,
                               shutdown_grace_s=20, drain_delay_s=drain_delay_s)
    held = Held()
    server, port = await create_server(name="drain", settings=settings,
                                       services=[Registration(_add, held, SERVICE)])
    serving = asyncio.create_task(serve(server, stop_signals=(SIG,)))
    loop = asyncio.get_running_loop()
    seen = {"said_after_not_serving": 0}
    try:
        async with internal_channel(f"127.0.0.1:{port}", settings, caller="test") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            say = ch.unary_unary(f"/{SERVICE}/Say", S.SerializeToString, S.FromString)
            hold = ch.unary_unary(f"/{SERVICE}/Hold", S.SerializeToString, S.FromString)
            await _until(lambda: _is(health, SERVING))
            in_flight = asyncio.ensure_future(hold(S(value="x"), timeout=60))
            await asyncio.wait_for(held.entered.wait(), 10)

            os.kill(os.getpid(), SIG)
            signalled = loop.time()
            # The first answer health gives after the signal (None: no answer any more).
            seen["health_after_signal"] = (await _until(lambda: _changed(health)))[0]
            # Keep calling until the server refuses a new call; count the answers.
            while True:
                try:
                    assert (await say(S(value="hi"), timeout=5)).value == "HI"
                    seen["said_after_not_serving"] += 1
                    assert await _status(health) == NOT_SERVING
                except grpc.aio.AioRpcError as err:
                    seen["refused"] = err.code()
                    break
                await asyncio.sleep(0.05)
            seen["refused_after_s"] = loop.time() - signalled
            seen["in_flight_done_at_refusal"] = in_flight.done()
            seen["stopped_before_release"] = serving.done()
            held.release.set()
            seen["in_flight"] = (await in_flight).value
            await asyncio.wait_for(serving, 30)
            seen["health_after_stop"] = await _status(health)
    finally:
        held.release.set()
        if not serving.done():
            await server.stop(0)
            serving.cancel()
    return seen


async def _is(health, status: int) -> bool:
    return await _status(health) == status


async def _changed(health) -> tuple[int | None] | None:
    status = await _status(health)
    return None if status == SERVING else (status,)


async def test_drain_delay_keeps_serving_while_not_serving():
    seen = await _run(DRAIN_DELAY_S)
    assert seen["health_after_signal"] == NOT_SERVING
    # New calls were answered after health said NOT_SERVING, for at least the delay.
    assert seen["said_after_not_serving"] >= 1
    assert seen["refused_after_s"] >= DRAIN_DELAY_S
    # Then the grace stop: new calls refused while the held call was still running ...
    # (grpc core refuses a call that races the start of the grace stop with CANCELLED, one
    # that comes after it with UNAVAILABLE: both are a refusal, and CI has seen both)
    assert seen["refused"] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert not seen["in_flight_done_at_refusal"] and not seen["stopped_before_release"]
    # ... which still completed, and the server stopped.
    assert seen["in_flight"] == "released"
    assert seen["health_after_stop"] is None


async def test_without_a_drain_delay_new_calls_are_refused_at_once():
    seen = await _run(0.0)
    # Health may flip with the refusal itself (the old behaviour, still the default):
    # a client may never see NOT_SERVING before its calls are refused.
    assert seen["health_after_signal"] in (NOT_SERVING, None)
    # (grpc core refuses a call that races the start of the grace stop with CANCELLED, one
    # that comes after it with UNAVAILABLE: both are a refusal, and CI has seen both)
    assert seen["refused"] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert not seen["in_flight_done_at_refusal"] and not seen["stopped_before_release"]
    assert seen["in_flight"] == "released"
    assert seen["health_after_stop"] is None


def test_drain_delay_setting_is_checked():
    with pytest.raises(ValueError, match="drain_delay_s"):
        ServiceSettings(internal_token=INTERNAL_TOKEN, drain_delay_s=-1)
