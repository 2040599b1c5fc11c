"""AdmissionControl without a server: the cap, idempotent release, the refusal
(ResourceExhausted with the configured retry delay), the handler guard on every
path out, and the settings field every service reads from its environment."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import CollectorRegistry

from services.common.admission import AdmissionControl
from services.common.errors import ResourceExhausted
from services.common.settings import ServiceSettings
from services.common.status import status_code
from tests.helpers import INTERNAL_TOKEN


class FakeContext:
    def __init__(self) -> None:
        self.callbacks = []

    def add_done_callback(self, cb) -> None:
        self.callbacks.append(cb)

    def finish(self) -> None:
        for cb in self.callbacks:
            cb(self)


def test_cap_refuses_then_admits_after_release():
    registry = CollectorRegistry()
    adm = AdmissionControl(2, retry_after_s=0.75, registry=registry)
    first, second = adm.acquire("svc", "M"), adm.acquire("svc", "M")
    assert adm.in_flight == 2
    with pytest.raises(ResourceExhausted) as ei:
        adm.acquire("svc", "M")
    assert ei.value.retry_after_s == 0.75
    assert status_code(ei.value) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert adm.rejected == 1
    assert registry.get_sample_value("avatario_grpc_server_overload_rejected_total",
                                      {"grpc_service": "svc", "grpc_method": "M"}) == 1.0
    assert registry.get_sample_value("avatario_grpc_server_inflight_rpcs") == 2.0
    first()
    first()  # a second release of the same slot is a no-op
    assert adm.in_flight == 1
    adm.acquire("svc", "M")
    assert adm.in_flight == 2
    second()
    assert registry.get_sample_value("avatario_grpc_server_inflight_rpcs") == 1.0


def test_zero_means_no_cap_and_bad_values_are_refused():
    adm = AdmissionControl(0)
    assert not adm.enabled
    for _ in range(1000):
        adm.acquire("svc", "M")
    assert adm.rejected == 0
    with pytest.raises(ValueError):
        AdmissionControl(-1)
    with pytest.raises(ValueError):
        AdmissionControl(1, retry_after_s=0)


def _unary(adm, behavior):
    h = adm.guard(grpc.unary_unary_rpc_method_handler(behavior), "svc", "M")
    return h.unary_unary


async def test_guarded_unary_releases_on_success_error_and_cancellation():
    adm = AdmissionControl(1)

    async def ok(request, context):
        assert adm.in_flight == 1
        return request * 2

    async def boom(request, context):
        raise RuntimeError("bug")

    started = asyncio.Event()

    async def hang(request, context):
        started.set()
        await asyncio.Event().wait()

    assert await _unary(adm, ok)(21, FakeContext()) == 42
    assert adm.in_flight == 0
    with pytest.raises(RuntimeError):
        await _unary(adm, boom)(1, FakeContext())
    assert adm.in_flight == 0
    task = asyncio.create_task(_unary(adm, hang)(1, FakeContext()))
    await started.wait()
    with pytest.raises(ResourceExhausted):
        await _unary(adm, ok)(1, FakeContext())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert adm.in_flight == 0


async def test_guarded_stream_holds_its_slot_until_the_rpc_ends():
    adm = AdmissionControl(1)

    async def drip(request, context):
        for i in range(request):
            yield i

    h = adm.guard(grpc.unary_stream_rpc_method_handler(drip), "svc", "Drip").unary_stream
    ctx = FakeContext()
    gen = h(3, ctx)
    assert await gen.__anext__() == 0
    assert adm.in_flight == 1  # open stream: slot held
    with pytest.raises(ResourceExhausted):
        adm.acquire("svc", "Other")
    # The RPC ends (e.g. the client cancelled) while the generator stays suspended:
    # the done callback frees the slot.
    ctx.finish()
    assert adm.in_flight == 0
    assert [x async for x in gen] == [1, 2]
    assert adm.in_flight == 0, "the generator's end does not release the slot twice"

    # A stream that writes through the context (a coroutine, not a generator).
    async def writer(request, context):
        assert adm.in_flight == 1

    h = adm.guard(grpc.unary_stream_rpc_method_handler(writer), "svc", "W").unary_stream
    assert [x async for x in h(0, FakeContext())] == []
    assert adm.in_flight == 0


def test_settings_field_from_the_service_environment(monkeypatch):
    from pydantic_settings import SettingsConfigDict

    class DemoSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="AVATARIO_DEMO_", extra="ignore")

    base = DemoSettings(internal_token=INTERNAL_TOKEN)
    assert base.max_inflight_rpcs > 0 and base.overload_retry_after_s > 0
    monkeypatch.setenv("AVATARIO_DEMO_MAX_INFLIGHT_RPCS", "0")
    monkeypatch.setenv("AVATARIO_DEMO_OVERLOAD_RETRY_AFTER_S", "0.25")
    s = DemoSettings(internal_token=INTERNAL_TOKEN)
    assert s.max_inflight_rpcs == 0 and s.overload_retry_after_s == 0.25
    monkeypatch.setenv("AVATARIO_DEMO_MAX_INFLIGHT_RPCS", "-1")
    with pytest.raises(ValueError):
        DemoSettings(internal_token=INTERNAL_TOKEN)


@pytest.mark.parametrize("module, cls, env", [
    ("services.gateway.settings", "GatewaySettings", "AVATARIO_GATEWAY_"),
    ("services.profile.settings", "ProfileSettings", "AVATARIO_PROFILE_"),
    ("services.analytics.settings", "AnalyticsSettings", "AVATARIO_ANALYTICS_"),
    ("services.inference.settings", "InferenceSettings", "AVATARIO_INFERENCE_"),
])
def test_every_service_has_a_cap_it_reads_from_its_prefix(module, cls, env):
    import importlib

    settings_cls = getattr(importlib.import_module(module), cls)
    assert settings_cls.model_fields["max_inflight_rpcs"].default > 0, "a cap by default"
    # AVATARIO_<SERVICE>_MAX_INFLIGHT_RPCS (the reading itself: the test above)
    assert settings_cls.model_config["env_prefix"] == env
