"""The compiled RWKV-7 attention core (services/inference/rwkv7_kernel.py) against its torch
version, and the batched model through either of them against the package's forward."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import structlog
import torch

from services.inference.checkpoint import build_random_checkpoint7
from services.inference.model_family import load_rwkv7
from services.inference.rwkv7_batched import _LINEAR, BatchedRWKV7, _Mat7
from services.inference.rwkv7_kernel import _Params as _P  # random core params of a layer
from services.inference.rwkv7_kernel import (
    attention_core,
    attention_core_torch,
    load_kernel,
    nucleus_op,
    nucleus_self_check,
    self_check,
)
from services.inference.sampling import _row_totals, _torch_cutoff, sorted_cutoff

from .test_rwkv7_batched import _ref  # the package's forward, states cloned

TOL = 1e-4

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None,
                                    reason="no C++ compiler: the node runs the torch version")




@pytest.fixture(scope="module")
def op() -> Any:
    kernel = load_kernel()
    assert kernel is not None, "a compiler is on PATH, so the kernel must build and agree"
    return kernel


@needs_compiler
@pytest.mark.parametrize(("rows", "heads", "n"), [(1, 12, 64), (5, 3, 64), (7, 4, 16),
                                                  (2, 2, 32)])
@pytest.mark.parametrize("residual", [False, True], ids=["layer0", "residual"])
def test_the_kernel_equals_the_torch_core(op: Any, rows: int, heads: int, n: int,
                                          residual: bool) -> None:
    g = torch.Generator().manual_seed(rows * 100 + heads * 10 + n)
    c = heads * n
    p = _P(c, g, residual)
    r, k, v, gate, wl, al, vl, vf = (torch.randn(rows, c, generator=g) for _ in range(8))
    state = torch.randn(rows, heads, n, n, generator=g) * 0.3
    want_state, got_state = state.clone(), state.clone()
    args = (r, k, v, gate, wl, al, vl if residual else None, vf if residual else None, p)
    for _ in range(3):  # three tokens: the state carries over
        want = attention_core_torch(want_state, *args)
        got = attention_core(op, got_state, *args)
        assert got.shape == want.shape == (rows, c)
        assert float((got - want).abs().max()) <= TOL
        assert float((got_state - want_state).abs().max()) <= TOL
    assert not torch.equal(got_state, state)  # the state was updated in place


@needs_compiler
def test_the_kernel_names_a_bad_input(op: Any) -> None:
    g = torch.Generator().manual_seed(1)
    p = _P(32, g, False)
    x = torch.randn(2, 32, generator=g)
    state = torch.zeros(2, 2, 16, 16)
    with pytest.raises(RuntimeError, match="state must be"):
        attention_core(op, torch.zeros(2, 32), x, x, x, x, x, x, None, None, p)
    with pytest.raises(RuntimeError, match="float32"):
        attention_core(op, state, x.double(), x, x, x, x, x, None, None, p)
    short = _P(16, g, False)
    with pytest.raises(RuntimeError, match="parameter"):
        attention_core(op, state, x, x, x, x, x, x, None, None, short)


def test_without_a_compiler_there_is_no_kernel_and_a_log_line() -> None:
    with structlog.testing.capture_logs() as logs:
        assert load_kernel("no-such-c++-compiler") is None
    assert any(e["event"] == "rwkv7_kernel_unavailable" and "no-such-c++-compiler" in e["reason"]
               for e in logs)


def test_the_self_check_catches_a_wrong_kernel() -> None:
    def off_by_a_bit(state: torch.Tensor, r: torch.Tensor, *rest: Any) -> torch.Tensor:
        return r * 0.5

    assert "differs" in self_check(off_by_a_bit)


@needs_compiler
@pytest.mark.parametrize("scale", [0.3, 1.0, 2.0, 4.0, 12.0])
@pytest.mark.parametrize("top_p", [0.01, 0.3, 0.7, 0.95, 0.999])
def test_the_top_p_kernel_equals_the_torch_cutoff(op: Any, scale: float, top_p: float) -> None:
    """The compiled top-p cutoff (what the host sampler uses once the library is loaded)
    gives the cutoff by definition (sorted, float64 sums) on vocabulary-sized rows from flat
    to peaked, with ties and zero weights; the torch fallback agrees within its float32 bin
    sums (the same cutoff or a neighbouring weight of the sorted row)."""
    cutoff = nucleus_op()
    assert cutoff is not None
    g = torch.Generator().manual_seed(int(scale * 100 + top_p * 10))
    t = torch.randn(6, 65536, generator=g) * scale
    t[1, :100] = t[1].max()              # a run of tied best tokens
    t[2, 1000:] = -200.0                 # weights that underflow to 0
    t[3] = t[3].round()                  # many ties everywhere
    e = (t - t.amax(dim=1, keepdim=True)).exp()
    target = torch.full((6,), top_p, dtype=torch.float64) * _row_totals(e)
    want = sorted_cutoff(e, target)
    assert torch.equal(cutoff(e, target, False), want)
    cut = e.clone()
    assert torch.equal(cutoff(cut, target, True), want)  # and the weights below it are zeroed
    assert torch.equal(cut, torch.where(e < want.unsqueeze(1), 0.0, e))
    srt = torch.sort(e, dim=-1, descending=True).values
    rank = (srt > want.unsqueeze(1)).sum(dim=1)  # the cutoff's first rank in the sorted row
    fallback = _torch_cutoff(e, _row_totals(e), target)
    for r in range(6):
        near = srt[r, max(int(rank[r]) - 1, 0):int(rank[r]) + 2]
        assert bool((near == fallback[r]).any()), (r, float(fallback[r]), near)


@needs_compiler
def test_the_top_p_kernel_names_a_bad_input(op: Any) -> None:
    cutoff = nucleus_op()
    with pytest.raises(RuntimeError, match="float32"):
        cutoff(torch.ones(2, 8, dtype=torch.float64), torch.ones(2, dtype=torch.float64), False)
    with pytest.raises(RuntimeError, match="target"):
        cutoff(torch.ones(2, 8), torch.ones(3, dtype=torch.float64), False)


def test_the_self_check_catches_a_wrong_top_p_kernel() -> None:
    def keep_everything(e: torch.Tensor, target: torch.Tensor, zero_below: bool) -> torch.Tensor:
        return torch.zeros(e.shape[0])

    assert "differs" in nucleus_self_check(keep_everything)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_checkpoint7(tmp_path_factory.mktemp("k7") / "m", n_layer=2,
                                    n_embd=128, vocab_size=65536, head_size=32, seed=3)


@pytest.mark.parametrize("fused", [pytest.param(True, marks=needs_compiler), False],
                         ids=["kernel", "torch"])
def test_decode_and_prefill_equal_the_package_on_either_path(model_path: Path,
                                                             fused: bool) -> None:
    bm = load_rwkv7(model_path, "cpu fp32")
    bm = BatchedRWKV7(bm.model, bm.slots, fused_kernel=fused)
    assert (bm.kernel is not None) == fused
    m = bm.model
    jobs = [([5, 6, 7, 100], None), ([9], None), ([40000, 41], _ref(m, [3, 4])[1])]
    states = []
    for (toks, st), (logits, state) in zip(jobs, bm.prefill_many(jobs), strict=True):
        want, want_state = _ref(m, toks, st)
        assert float((logits - want).abs().max()) <= TOL
        assert max(float((a - b).abs().max()) for a, b in zip(state, want_state, strict=True)
                   ) <= TOL
        states.append(want_state)
    batch = bm.new_batch(states)
    for step in range(3):
        toks = [200 + step, 300 + step, 65535 - step]
        logits = bm.step(toks, batch)
        for r, tok in enumerate(toks):
            want, states[r] = _ref(m, [tok], states[r])
            assert float((logits[r] - want).abs().max()) <= TOL, (fused, step, r)
    assert (bm.kernel_calls > 0) == fused


@pytest.mark.parametrize("act", ["none", "relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("rows", [1, 3, 64])
def test_packed_products_with_fused_post_ops_equal_torch(act: str, rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(96, 40, generator=g)  # [in, out], as the package keeps its matrices
    x, other = torch.randn(rows, 96, generator=g), torch.randn(rows, 40, generator=g)
    packed, plain = _Mat7(w, packed=True), _Mat7(w, packed=False)
    want = {"none": x @ w, "relu": torch.relu(x @ w), "tanh": torch.tanh(x @ w),
            "sigmoid": torch.sigmoid(x @ w)}[act]
    for m in (packed, plain):
        assert float((m(x, True, act) - want).abs().max()) <= 1e-5
        assert float((m(x, False, act) - want).abs().max()) <= 1e-5
        assert float((m.add_to(x, other) - (other + x @ w)).abs().max()) <= 1e-5
    if _LINEAR is not None:
        assert packed.packed is not None and plain.packed is None
