"""NVML inventory and DCGM-compatible metrics with a fake `pynvml` module."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from services.inference import gpu as gpu_mod
from services.inference.gpu import GpuInventory, NvmlCollector
from services.inference.planner import GpuInfo

MiB = 1024 * 1024


class NVMLError(Exception):
    pass


@dataclass
class FakeDevice:
    name: str
    uuid: str
    total: int
    used: int
    util_gpu: int = 37
    util_mem: int = 12
    temp: int = 61
    power_mw: int | None = 215_500
    sm_clock: int = 1410


def fake_nvml(devices: list[FakeDevice], *, init_error: bool = False) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    m.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    m.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    m.calls = {"init": 0, "shutdown": 0}  # type: ignore[attr-defined]

    def init() -> None:
        m.calls["init"] += 1  # type: ignore[attr-defined]
        if init_error:
            raise NVMLError("Driver Not Loaded")

    def shutdown() -> None:
        m.calls["shutdown"] += 1  # type: ignore[attr-defined]

    def power(h: FakeDevice) -> int:
        if h.power_mw is None:
            raise NVMLError("Not Supported")
        return h.power_mw

    fns: dict[str, Any] = {
        "nvmlInit": init,
        "nvmlShutdown": shutdown,
        "nvmlDeviceGetCount": lambda: len(devices),
        "nvmlDeviceGetHandleByIndex": lambda i: devices[i],
        "nvmlDeviceGetName": lambda h: h.name.encode(),  # older bindings return bytes
        "nvmlDeviceGetUUID": lambda h: h.uuid,
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(
            total=h.total, used=h.used, free=h.total - h.used
        ),
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(
            gpu=h.util_gpu, memory=h.util_mem
        ),
        "nvmlDeviceGetTemperature": lambda h, sensor: h.temp,
        "nvmlDeviceGetPowerUsage": power,
        "nvmlDeviceGetClockInfo": lambda h, kind: h.sm_clock,
    }
    for k, v in fns.items():
        setattr(m, k, v)
    return m


H100 = FakeDevice("NVIDIA H100 80GB HBM3", "GPU-aaaa", 80 * 1024 * MiB, 1024 * MiB)
A10 = FakeDevice("NVIDIA A10", "GPU-bbbb", 24 * 1024 * MiB, 3 * 1024 * MiB, power_mw=None)


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_mod, "_logged", set())


def scrape(collector: NvmlCollector) -> dict[str, list[Any]]:
    reg = CollectorRegistry()
    reg.register(collector)
    text = generate_latest(reg).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_discover_two_gpus() -> None:
    nv = fake_nvml([H100, A10])
    gpus = GpuInventory.discover(nv)
    assert gpus == [
        GpuInfo(0, "NVIDIA H100 80GB HBM3", 80 * 1024 * MiB, 79 * 1024 * MiB),
        GpuInfo(1, "NVIDIA A10", 24 * 1024 * MiB, 21 * 1024 * MiB),
    ]
    assert nv.calls == {"init": 1, "shutdown": 1}


def test_discover_zero_gpus() -> None:
    assert GpuInventory.discover(fake_nvml([])) == []


def test_init_failure_is_empty_and_logged_once() -> None:
    nv = fake_nvml([H100], init_error=True)
    with capture_logs() as logs:
        assert GpuInventory.discover(nv) == []
        assert GpuInventory.discover(nv) == []
        inv = GpuInventory(nv)
        assert inv.gpus() == [] and inv.gpus() == []
    assert [e["event"] for e in logs] == ["nvml_unavailable"]
    assert nv.calls["init"] == 3  # one try per inventory, not per call


def test_missing_library_via_sys_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([A10]))
    assert [g.name for g in GpuInventory.discover()] == ["NVIDIA A10"]
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert GpuInventory.discover() == []


def test_real_pynvml_without_driver_does_not_crash() -> None:
    # No machine here has a GPU driver; on one that has, this lists its GPUs.
    gpus = GpuInventory.discover()
    assert all(isinstance(g, GpuInfo) for g in gpus)


def test_collector_two_gpus() -> None:
    families = scrape(NvmlCollector(GpuInventory(fake_nvml([H100, A10])), hostname="node-1"))
    assert families["avatario_inference_gpus"][0].value == 2
    used = {s.labels["gpu"]: s for s in families["DCGM_FI_DEV_FB_USED"]}
    assert used["0"].value == 1024 and used["1"].value == 3 * 1024  # MiB, as DCGM
    assert used["0"].labels == {
        "gpu": "0",
        "UUID": "GPU-aaaa",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": "node-1",
    }
    free = {s.labels["gpu"]: s.value for s in families["DCGM_FI_DEV_FB_FREE"]}
    assert free == {"0": 79 * 1024, "1": 21 * 1024}
    assert [s.value for s in families["DCGM_FI_DEV_GPU_UTIL"]] == [37, 37]
    assert [s.value for s in families["DCGM_FI_DEV_MEM_COPY_UTIL"]] == [12, 12]
    assert [s.value for s in families["DCGM_FI_DEV_GPU_TEMP"]] == [61, 61]
    assert [s.value for s in families["DCGM_FI_DEV_SM_CLOCK"]] == [1410, 1410]
    # the A10 does not report power: its sample is omitted, the H100's is in watts
    power = families["DCGM_FI_DEV_POWER_USAGE"]
    assert [(s.labels["gpu"], s.value) for s in power] == [("0", 215.5)]


def test_collector_one_gpu_and_zero() -> None:
    one = scrape(NvmlCollector(GpuInventory(fake_nvml([H100])), hostname="h"))
    assert one["avatario_inference_gpus"][0].value == 1
    assert len(one["DCGM_FI_DEV_GPU_UTIL"]) == 1
    zero = scrape(NvmlCollector(GpuInventory(fake_nvml([])), hostname="h"))
    assert zero["avatario_inference_gpus"][0].value == 0
    assert zero.get("DCGM_FI_DEV_GPU_UTIL", []) == []


def test_collector_with_nvml_failure() -> None:
    nv = fake_nvml([H100], init_error=True)
    collector = NvmlCollector(GpuInventory(nv), hostname="h")
    with capture_logs() as logs:
        for _ in range(3):
            families = scrape(collector)
            assert families["avatario_inference_gpus"][0].value == 0
    assert len(logs) == 1
    assert nv.calls["init"] == 1  # a failed NVML is not retried on every scrape


def test_device_failure_skips_that_device() -> None:
    nv = fake_nvml([H100, A10])

    def handle(i: int) -> FakeDevice:
        if i == 0:
            raise NVMLError("GPU is lost")
        return A10

    nv.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    with capture_logs() as logs:
        assert [g.index for g in GpuInventory.discover(nv)] == [1]
    assert logs[0]["event"] == "nvml_device_failed"


def test_registration_does_not_touch_nvml() -> None:
    nv = fake_nvml([H100])
    reg = CollectorRegistry()
    reg.register(NvmlCollector(GpuInventory(nv), hostname="h"))
    assert nv.calls["init"] == 0


def test_exposition_passes_promtool() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from tests.helpers import promtool_check

    registry = CollectorRegistry()
    registry.register(NvmlCollector(GpuInventory(fake_nvml([H100, A10])), hostname="node-1"))
    # DCGM's label names (UUID, modelName) are kept as dcgm-exporter spells them.
    promtool_check(generate_latest(registry).decode(),
                   allow=("label names should be written in 'snake_case' not 'camelCase'",))
