"""BatchedRWKV7 against the rwkv package's own RWKV-7 forward (random x070 checkpoints with
the published key names and shapes, World-sized vocabulary, several head counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from services.inference.checkpoint import build_random_checkpoint7
from services.inference.model_family import as_batched, load_rwkv7
from services.inference.rwkv7_batched import BatchedRWKV7
from services.inference.rwkv_package import import_rwkv_model, is_v7_module
from services.inference.state_cache import CacheEntry, prefix_hash
from services.inference.state_store import decode_entry, encode_entry

TOL = 1e-4  # fp32 logits vs the package (the bound)
RESUME_TOL = 1e-5
# (n_embd, head_size): 2, 3 and 4 heads
HEADS = [(128, 64), (192, 64), (64, 16)]


@pytest.fixture(scope="module", params=HEADS, ids=lambda p: f"C{p[0]}xN{p[1]}")
def g1(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    c, n = request.param
    path = build_random_checkpoint7(tmp_path_factory.mktemp("g1") / "m", n_layer=3, n_embd=c,
                                    vocab_size=65536, head_size=n, seed=c + n)
    bm = load_rwkv7(path, "cpu fp32")
    return path, bm


def _ref(model: Any, tokens: list[int], state: list[torch.Tensor] | None = None
         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    st = None if state is None else [t.clone() for t in state]
    with torch.no_grad():
        out, st = model.forward(list(tokens), st)
    return out.float(), [t.clone() for t in st]


def _close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float) -> float:
    assert [tuple(x.shape) for x in a] == [tuple(y.shape) for y in b]
    diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b, strict=True))
    assert diff <= tol, diff
    return diff


def test_the_package_class_is_the_rwkv7_one(g1: Any) -> None:
    _path, bm = g1
    assert is_v7_module(import_rwkv_model(7))
    assert type(bm.model).__name__ == "RWKV_x070"
    assert bm.n_head * bm.head_size == bm.n_embd and bm.vocab_size == 65536


def test_batched_prefill_equals_the_package_per_sequence(g1: Any) -> None:
    _path, bm = g1
    m = bm.model
    _, start = _ref(m, [11, 12, 13])
    jobs = [([5, 6, 7, 100, 2000, 65535, 3], None), ([9], None), ([40000, 41, 42, 43], start),
            ([8, 8], start)]
    got = bm.prefill_many(jobs)
    for (toks, st), (logits, state) in zip(jobs, got, strict=True):
        want, want_state = _ref(m, toks, st)
        assert float((logits - want).abs().max()) <= TOL
        _close(state, want_state, TOL)
    assert [float(t.abs().sum()) for t in start] == [float(t.abs().sum()) for t in _ref(
        m, [11, 12, 13])[1]]  # the input state was not modified


def test_batched_decode_equals_the_package_per_sequence(g1: Any) -> None:
    _path, bm = g1
    m = bm.model
    prompts = [[1, 2, 3], [500], [65000, 7, 7, 7, 7], [300, 301]]
    refs = [_ref(m, p) for p in prompts]
    batch = bm.new_batch([s for _, s in refs])
    states = [s for _, s in refs]
    for step in range(3):
        toks = [100 + 7 * step + r for r in range(len(prompts))]
        logits = bm.step(toks, batch)
        for r, tok in enumerate(toks):
            want, states[r] = _ref(m, [tok], states[r])
            assert float((logits[r] - want).abs().max()) <= TOL, (step, r)
    for r in range(len(prompts)):
        _close(batch.get(r), states[r], TOL)


def test_a_mixed_batch_with_rows_leaving_and_joining(g1: Any) -> None:
    """Rows leave (keep) and join (append a freshly prefilled state) between steps, as the
    engine does while other conversations prefill."""
    _path, bm = g1
    m = bm.model
    refs = [_ref(m, p)[1] for p in ([1, 2], [3], [4, 5, 6])]
    batch = bm.new_batch(refs)
    bm.step([10, 11, 12], batch)
    refs = [_ref(m, [t], s)[1] for t, s in zip([10, 11, 12], refs, strict=True)]
    batch.keep([0, 2])
    refs = [refs[0], refs[2]]
    logits, newcomer = bm.prefill_many([([70, 71, 72, 73], None)])[0]
    batch.append(newcomer)
    refs.append(newcomer)
    out = bm.step([20, 21, 22], batch).clone()
    for r, tok in enumerate([20, 21, 22]):
        want, refs[r] = _ref(m, [tok], refs[r])
        assert float((out[r] - want).abs().max()) <= TOL
    assert float((logits - _ref(m, [70, 71, 72, 73])[0]).abs().max()) <= TOL


def test_a_batch_of_one_through_either_path(g1: Any) -> None:
    _path, bm = g1
    _, st = _ref(bm.model, [5, 6])
    outs = []
    for via in (True, False):
        bm.single_via_package = via
        batch = bm.new_batch([st])
        outs.append((bm.step([77], batch).clone(), batch.get(0)))
    bm.single_via_package = True
    assert float((outs[0][0] - outs[1][0]).abs().max()) <= TOL
    _close(outs[0][1], outs[1][1], TOL)


def test_chunked_prefill_and_resume_are_exact(g1: Any) -> None:
    """A conversation resumed from its state (also through the shared tier's wire format,
    which stores flat tensors) gives the logits of a full re-prefill."""
    _path, bm = g1
    history = [(i * 37) % 65536 for i in range(1, 41)]
    new = [9, 99, 999, 9999]
    full, _ = bm.prefill(history + new, None, chunk_len=16)
    _, state = bm.prefill(history, None, chunk_len=7)
    resumed, _ = bm.prefill(new, state)
    assert float((resumed - full).abs().max()) <= RESUME_TOL
    entry = CacheEntry(tuple(state), None, len(history), prefix_hash(history))
    blob = encode_entry(entry, b"f" * 16)
    entry = decode_entry(blob, b"f" * 16)
    assert all(t.dim() == 1 for t in entry.state)  # flat on the wire
    again, _ = bm.prefill(new, bm.to_model(entry.state))
    assert float((again - full).abs().max()) <= RESUME_TOL
    assert float((full - _ref(bm.model, history + new)[0]).abs().max()) <= TOL


def test_state_layout_is_the_packages(g1: Any) -> None:
    _path, bm = g1
    zero = bm.zero_state()
    pkg = bm.model.generate_zero_state()
    assert [(tuple(t.shape), t.dtype) for t in zero] == [(tuple(t.shape), t.dtype) for t in pkg]
    assert bm.state_nbytes() == sum(t.numel() * t.element_size() for t in pkg)
    assert bm.state_nbytes() == 3 * (2 * bm.n_embd * 4 + bm.n_embd * bm.head_size * 4)
    with pytest.raises(ValueError, match="RWKV-7 state has 5 tensors"):
        bm.to_model(zero[:5])


def test_split_placement_equals_one_device(g1: Any) -> None:
    """`cpu fp32 *2 -> cpu fp32`: blocks 0-1 in segment A, block 2 and the head in segment
    B; the same code path as cuda:0 -> cuda:1 (activations cross the boundary once)."""
    path, single = g1
    split = load_rwkv7(path, "cpu fp32 *2 -> cpu fp32")
    assert [s.segment for s in split.slots] == [0, 0, 1, 1]
    assert not split.single_via_package  # the package's forward knows one device only
    assert split.strategy == "cpu fp32 *2 -> cpu fp32"
    jobs = [([5, 6, 7], None), ([8], None)]
    for (a, sa), (b, sb) in zip(single.prefill_many(jobs), split.prefill_many(jobs), strict=True):
        assert torch.equal(a, b)
        _close(sa, sb, 0.0)
    before = split.boundary_moves
    batch = split.new_batch([single.prefill([1, 2], None)[1]] * 3)
    one = single.new_batch([single.prefill([1, 2], None)[1]] * 3)
    for tok in (4, 5):
        assert torch.equal(split.step([tok] * 3, batch), single.step([tok] * 3, one))
    assert split.boundary_moves - before == 2  # once per step
    # a mixed-dtype split converts the activations at the boundary and keeps per-layer dtypes
    mixed = load_rwkv7(path, "cpu fp32 *1 -> cpu bf16")
    assert mixed.model.z["head.weight"].dtype == torch.bfloat16  # the package holds no copy
    assert [t.dtype for t in mixed.zero_state()[:4]] == [torch.float32, torch.float32,
                                                           torch.float32, torch.bfloat16]
    logits, _ = mixed.prefill([5, 6, 7], None)
    want, _ = single.prefill([5, 6, 7], None)
    assert torch.isfinite(logits).all()
    assert float(torch.corrcoef(torch.stack([logits, want]))[0, 1]) > 0.98


def test_the_engine_wraps_a_package_model(g1: Any) -> None:
    _path, bm = g1
    assert as_batched(bm) is bm
    wrapped = as_batched(bm.model)
    assert isinstance(wrapped, BatchedRWKV7)
    assert all(wrapped.z[k] is t for k, t in bm.z.items())  # the package's tensors, no copies


def test_random_g1_logits_are_not_degenerate(g1: Any) -> None:
    _path, bm = g1
    out, _ = bm.prefill([1, 2, 3, 4, 5], None)
    assert torch.isfinite(out).all() and 0.5 < float(out.std()) < 20.0
    assert float(torch.softmax(out, -1).max()) < 0.9


def test_the_loader_takes_a_path_with_or_without_pth(tmp_path: Path) -> None:
    path = build_random_checkpoint7(tmp_path / "small", n_layer=1, n_embd=64, vocab_size=300,
                                    head_size=32)
    assert load_rwkv7(path, "cpu fp32").n_layer == 1
    assert load_rwkv7(str(path), "cpu fp32").vocab_size == 300
