"""Engine metrics through a real CollectorRegistry, and the start-up warm-up (readiness)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest

from services.inference.checkpoint import build_random_checkpoint
from services.inference.engine import Engine, GenerationRequest
from services.inference.gpu import GpuInventory
from services.inference.planner import ConfigError
from services.inference.runtime import EngineMetrics, load_runtime
from services.inference.rwkv_batched import BatchedRWKV, _cpu_kernel_ok
from services.inference.sampling import SamplingParams
from services.inference.settings import InferenceSettings
from services.inference.state_cache import StateCache

RAW = {"turn_end": "", "eos_token_id": None}


def _value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    v = reg.get_sample_value(name, labels or None)
    return 0.0 if v is None else v


async def test_scrape_after_generations_moves_the_engine_metrics(make_engine, drain) -> None:
    reg = CollectorRegistry()
    metrics = EngineMetrics(reg)
    eng = make_engine(callbacks=metrics, cache=StateCache(1 << 24), max_running=4, **RAW)
    params = SamplingParams(temperature=1.0, top_p=0.7, seed=3, max_tokens=6)
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    handles = [eng.submit(GenerationRequest(f"c{i}", p, params)) for i, p in enumerate(prompts)]
    finals = [(await drain(h))[2] for h in handles]
    # A second turn of c0 resumes from the cache: its cached tokens are counted as such.
    nxt = eng.turn_tokens(prompts[0], finals[0].text) + [20, 21]
    hit = (await drain(eng.submit(GenerationRequest("c0", nxt, params))))[2]
    assert hit.cache_hit and hit.cached_tokens > 0
    finals.append(hit)

    text = generate_latest(reg).decode()
    for name in ("avatario_inference_inter_token_latency_seconds_bucket",
                 "avatario_inference_prompt_tokens_total",
                 "avatario_inference_requests_total"):
        assert name in text
    total_prompt = sum(len(p) for p in prompts) + len(nxt)
    assert _value(reg, "avatario_inference_prompt_tokens_total") == total_prompt
    assert _value(reg, "avatario_inference_cached_prompt_tokens_total") == hit.cached_tokens
    assert _value(reg, "avatario_inference_requests_total", finish_reason="length") == 4
    # One gap per token after a sequence's first one.
    gaps = sum(f.completion_tokens - 1 for f in finals)
    assert _value(reg, "avatario_inference_inter_token_latency_seconds_count") == gaps > 0
    assert _value(reg, "avatario_inference_inter_token_latency_seconds_sum") > 0
    assert _value(reg, "avatario_inference_tokens_generated_total") == sum(
        f.completion_tokens for f in finals)
    assert _value(reg, "avatario_inference_time_to_first_token_seconds_count") == 4
    assert _value(reg, "avatario_inference_batch_size_count") > 0


def test_warmup_runs_before_start_and_checks_logits(model_fp32: Any, tokenizer: Any) -> None:
    eng = Engine(model_fp32, tokenizer)
    assert eng.warmup() > 0
    eng.start()
    try:
        with pytest.raises(RuntimeError, match="before start"):
            eng.warmup()
    finally:
        eng.stop()


def test_warmup_rejects_non_finite_logits(model_fp32: Any, tokenizer: Any) -> None:
    class NaNModel(BatchedRWKV):
        def step(self, tokens, batch):  # type: ignore[override]
            return super().step(tokens, batch) * float("nan")

    with pytest.raises(RuntimeError, match="non-finite"):
        Engine(NaNModel(model_fp32), tokenizer).warmup()


@pytest.fixture(scope="module")
def world_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("world") / "w.pth"
    return build_random_checkpoint(path, n_layer=2, n_embd=32, vocab_size=65536, seed=4)


def _settings(path: Path) -> InferenceSettings:
    return InferenceSettings(internal_token="t" * 32, port=0, metrics_port=None,
                             model_path=path, tokenizer="world", strategy="cpu fp32")


def test_load_runtime_warms_up_before_serving(world_ckpt: Path) -> None:
    reg = CollectorRegistry()
    metrics = EngineMetrics(reg)
    rt = load_runtime(_settings(world_ckpt), GpuInventory(nvml=_NoNvml()), metrics)
    try:
        assert _value(reg, "avatario_inference_warmup_seconds") > 0
        assert rt.engine.bm.batched_steps >= 4  # batch of one and of two, twice each
    finally:
        rt.engine.stop()


@pytest.mark.parametrize("onednn, packed", [(False, True), (True, False)])
def test_load_runtime_kernel_settings(world_ckpt: Path, onednn: bool, packed: bool) -> None:
    """AVATARIO_INFERENCE_ONEDNN / _CPU_PACKED_WEIGHTS reach the batched decode."""
    settings = _settings(world_ckpt).model_copy(
        update={"onednn": onednn, "cpu_packed_weights": packed})
    rt = load_runtime(settings, GpuInventory(nvml=_NoNvml()))
    try:
        bm = rt.engine.bm
        assert not bm.packed_weights  # packing needs both
        assert bm.onednn == (onednn and _cpu_kernel_ok())
        assert bm.extra_bytes == bm.w["head.weight"].numel() * 4  # the head copy only
    finally:
        rt.engine.stop()


def test_warmup_failure_stops_start_with_a_clear_error(world_ckpt: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: BatchedRWKV, tokens: Any, batch: Any) -> torch.Tensor:
        raise RuntimeError("CUDA error: device-side assert")

    monkeypatch.setattr(BatchedRWKV, "step", broken)
    started: list[Engine] = []
    monkeypatch.setattr(Engine, "start", lambda self: started.append(self))
    with pytest.raises(ConfigError, match="warm-up failed.*device-side assert"):
        load_runtime(_settings(world_ckpt), GpuInventory(nvml=_NoNvml()))
    assert not started  # the engine thread never started


class _NoNvml:
    """An NVML that is not there (no driver): zero GPUs, a normal state."""

    def nvmlInit(self) -> None:
        raise OSError("NVML Shared Library Not Found")
