"""The CUDA check script must not rot between the rare runs on a CUDA machine: its
--allow-cpu mode runs every step (planner, checkpoint, logits, engine, breakdown, NVML scrape)
on the CPU with a tiny model, and must pass."""

from __future__ import annotations

import json

import pytest
import torch

from bench import gpu_check

pytestmark = pytest.mark.slow


def test_gpu_check_without_cuda_refuses(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--json", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_gpu_check_allow_cpu_passes(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--allow-cpu", "--tokens", "3", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    checks = {r["check"]: r for r in data["rows"]}
    assert all(r["ok"] != "FAIL" for r in data["rows"])
    assert checks["NVML metrics scrape"]["result"].startswith("0 GPU(s)")
    assert data["logits"]["17"]["max_abs_diff"] <= 1e-4
    assert set(data["throughput"]) == {"package_tok_s", "engine_1_tok_s", "engine_16_tok_s",
                                       "engine_64_tok_s"}
    assert data["step_breakdown"]["rows"] == 64
