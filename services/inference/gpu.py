"""GPU inventory and metrics through NVML (`nvidia-ml-py`, imported as `pynvml`).

Zero GPUs is a normal state: no driver, no library, or any NVML error means an empty
inventory, logged once per process, never an exception. Metrics use the names and units of
NVIDIA's DCGM exporter so existing Grafana dashboards work unchanged.
"""

from __future__ import annotations

import importlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.inference.planner import GpuInfo

__all__ = ["GpuInventory", "GpuSample", "NvmlCollector"]

log = structlog.get_logger("avatario.inference.gpu")

MiB = 1024 * 1024
_logged: set[str] = set()
_logged_lock = threading.Lock()


def _log_once(key: str, event: str, **kw: Any) -> None:
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    log.warning(event, **kw)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One scrape of one GPU; a field is None when the device does not support it."""

    index: int
    uuid: str
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    gpu_util: float | None
    mem_copy_util: float | None
    temperature_c: float | None
    power_w: float | None
    sm_clock_mhz: float | None

    def info(self) -> GpuInfo:
        return GpuInfo(self.index, self.name, self.total_bytes, self.free_bytes)


class GpuInventory:
    """An NVML session: initialised once, lazily; failures read as "no GPU"."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._module = nvml
        self._lock = threading.Lock()
        self._started = False
        self._failed = False

    @classmethod
    def discover(cls, nvml: ModuleType | None = None) -> list[GpuInfo]:
        """The GPUs present now (empty without a driver); never raises."""
        inv = cls(nvml)
        try:
            return inv.gpus()
        finally:
            inv.close()

    def _nvml(self) -> ModuleType | None:
        with self._lock:
            if self._started:
                return self._module
            if self._failed:
                return None
            try:
                if self._module is None:
                    self._module = importlib.import_module("pynvml")
                self._module.nvmlInit()
            except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, driver errors
                self._failed = True
                _log_once("init", "nvml_unavailable", error=str(exc) or type(exc).__name__,
                          detail="no GPU metrics; the planner will use the CPU")  # fmt: skip
                return None
            self._started = True
            return self._module

    def close(self) -> None:
        with self._lock:
            if self._started and self._module is not None:
                try:
                    self._module.nvmlShutdown()
                except Exception:  # noqa: BLE001 - shutting down; nothing useful to do
                    pass
            self._started = False

    def gpus(self) -> list[GpuInfo]:
        return [s.info() for s in self.sample()]

    def sample(self) -> list[GpuSample]:
        nv = self._nvml()
        if nv is None:
            return []
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as exc:
            _log_once("count", "nvml_device_count_failed", error=str(exc))
            return []
        out: list[GpuSample] = []
        for i in range(count):
            try:
                out.append(self._sample_one(nv, i))
            except Exception as exc:  # a device that fell off the bus: skip it, keep the rest
                _log_once(f"device-{i}", "nvml_device_failed", gpu=i, error=str(exc))
        return out

    @staticmethod
    def _sample_one(nv: ModuleType, i: int) -> GpuSample:
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mem = nv.nvmlDeviceGetMemoryInfo(h)

        def opt(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except Exception:  # NVML_ERROR_NOT_SUPPORTED and friends: omit the metric
                return None

        util = opt(lambda: nv.nvmlDeviceGetUtilizationRates(h))
        power_mw = opt(lambda: nv.nvmlDeviceGetPowerUsage(h))
        temp = opt(lambda: nv.nvmlDeviceGetTemperature(h, getattr(nv, "NVML_TEMPERATURE_GPU", 0)))
        clock = opt(lambda: nv.nvmlDeviceGetClockInfo(h, getattr(nv, "NVML_CLOCK_SM", 1)))
        return GpuSample(
            index=i,
            uuid=_text(opt(lambda: nv.nvmlDeviceGetUUID(h)) or ""),
            name=_text(opt(lambda: nv.nvmlDeviceGetName(h)) or "unknown"),
            total_bytes=int(mem.total),
            free_bytes=int(mem.free),
            used_bytes=int(mem.used),
            gpu_util=float(util.gpu) if util is not None else None,
            mem_copy_util=float(util.memory) if util is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_w=float(power_mw) / 1000.0 if power_mw is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
        )


# name, help, value getter (None = skip)
_METRICS: list[tuple[str, str, Callable[[GpuSample], float | None]]] = [
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda s: s.gpu_util),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", lambda s: s.mem_copy_util),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda s: s.used_bytes / MiB),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", lambda s: s.free_bytes / MiB),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda s: s.temperature_c),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda s: s.power_w),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lambda s: s.sm_clock_mhz),
]
_LABELS = ["gpu", "UUID", "modelName", "Hostname"]


class NvmlCollector(Collector):
    """Prometheus collector: DCGM-compatible per-GPU gauges plus `avatario_inference_gpus`.

    Register with ``registry.register(NvmlCollector())``; every scrape samples NVML.
    """

    def __init__(self, inventory: GpuInventory | None = None, *, hostname: str | None = None):
        self._inventory = inventory or GpuInventory()
        self._hostname = hostname or socket.gethostname()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Lets the registry learn the names without touching NVML at registration time.
        for name, doc, _ in _METRICS:
            yield GaugeMetricFamily(name, doc, labels=_LABELS)
        yield GaugeMetricFamily("avatario_inference_gpus", "GPUs NVML reports on this node.")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        samples = self._inventory.sample()
        for name, doc, get in _METRICS:
            fam = GaugeMetricFamily(name, doc, labels=_LABELS)
            for s in samples:
                value = get(s)
                if value is not None:
                    fam.add_metric([str(s.index), s.uuid, s.name, self._hostname], value)
            yield fam
        yield GaugeMetricFamily(
            "avatario_inference_gpus", "GPUs NVML reports on this node.", value=len(samples)
        )
