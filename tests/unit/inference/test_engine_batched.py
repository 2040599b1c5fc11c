"""Batched RWKV-4 decode vs the rwkv package's own per-sequence forward."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from services.inference.checkpoint import build_random_checkpoint, inspect_checkpoint
from services.inference.rwkv_batched import (
    BatchedRWKV,
    ListStates,
    StackedStates,
    load_rwkv,
    prefill,
    state_nbytes,
    state_to,
)

VOCAB = 512


def _run_mixed_batch(model: Any, bm: BatchedRWKV, batch_size: int, atol: float, seed: int = 0,
                     steps: int = 8) -> float:
    """Sequences of different prompt lengths join and leave a live batch; every step's
    logits and the final states are compared with model.forward on the same tokens/state."""
    rng = random.Random(seed)

    def new_seq() -> dict[str, Any]:
        prompt = [rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 6))]
        _, st = prefill(model, prompt, None, chunk_len=1)  # one-token mode: no JIT re-warm per length
        return {"ref": st, "left": rng.randint(2, steps)}

    live = [new_seq() for _ in range(batch_size)]
    batch = bm.new_batch([s["ref"] for s in live])
    worst = 0.0
    for step in range(steps):
        tokens = [rng.randrange(1, VOCAB) for _ in live]
        logits = bm.step(tokens, batch)
        assert logits.shape == (len(live), VOCAB) and logits.dtype == torch.float32
        for i, (s, tok) in enumerate(zip(live, tokens, strict=True)):
            ref_out, s["ref"] = model.forward([tok], list(s["ref"]))
            d = float((logits[i] - ref_out.float().cpu()).abs().max())
            worst = max(worst, d)
            assert d <= atol, f"step {step} row {i}: {d}"
            s["left"] -= 1
        # leave: drop finished rows, checking their state first
        keep = []
        for i, s in enumerate(live):
            if s["left"] > 0:
                keep.append(i)
                continue
            got = batch.get(i)
            for a, b in zip(got, s["ref"], strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
                assert torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-3)
        live = [live[i] for i in keep]
        batch.keep(keep)
        # join: refill to the target size with fresh sequences (different prompt lengths)
        joiners = [new_seq() for _ in range(batch_size - len(live))]
        for j in joiners:
            batch.append(j["ref"])
        live += joiners
        assert len(batch) == len(live)
    return worst


KERNELS = {"packed": {}, "onednn": {"packed_weights": False},
           "blas": {"onednn": False, "packed_weights": False}}


@pytest.mark.parametrize("kernels", sorted(KERNELS))
@pytest.mark.parametrize("strategy", ["cpu fp32", "cpu fp32 *3 -> cpu fp32"])
@pytest.mark.parametrize("batch_size", [1, 3, 17])
def test_batched_fp32_matches_package(tiny_ckpt: Path, load_model, strategy: str,
                                      batch_size: int, kernels: str) -> None:
    model = load_model(tiny_ckpt, strategy)
    bm = BatchedRWKV(model, single_via_package=False, **KERNELS[kernels])
    assert bm.batched and bm.fallback_reason is None
    if kernels != "blas" and not bm.onednn:
        pytest.skip("this torch has no working oneDNN linear")
    assert (bm._head.packed is not None) == (kernels == "packed")
    if "->" in strategy:  # really two placement segments
        assert len(model.args.strategy_string.split("->")) == 2
    _run_mixed_batch(model, bm, batch_size, atol=1e-4, seed=batch_size)
    assert bm.batched_steps > 0 and bm.fallback_steps == 0


def test_batched_bf16_matches_package(tiny_ckpt: Path, load_model) -> None:
    model = load_model(tiny_ckpt, "cpu bf16")
    bm = BatchedRWKV(model)
    assert bm.batched
    assert bm.zero_state()[0].dtype == torch.bfloat16
    _run_mixed_batch(model, bm, 5, atol=0.1, seed=7)


def test_batched_fp16_with_rescale_matches_package(ckpt_dir: Path) -> None:
    # 6 layers so the package's fp16 rescale (x / 2 after every 6th layer) is exercised.
    p = build_random_checkpoint(ckpt_dir / "six", n_layer=6, n_embd=32, vocab_size=VOCAB, seed=3)
    model = load_rwkv(p, "cpu fp16")
    bm = BatchedRWKV(model)
    assert bm.batched and bm.rescale_layer == 6
    _run_mixed_batch(model, bm, 4, atol=0.1, seed=5, steps=6)


@pytest.mark.parametrize("strategy", ["cpu fp32i8", "cpu fp32 *2 -> cpu fp32i8"])
def test_int8_falls_back_to_per_sequence_forward(tiny_ckpt: Path, load_model,
                                                strategy: str) -> None:
    model = load_model(tiny_ckpt, strategy)
    bm = BatchedRWKV(model)
    assert not bm.batched and "uint8" in (bm.fallback_reason or "")
    assert isinstance(bm.new_batch(), ListStates)
    _run_mixed_batch(model, bm, 3, atol=1e-6, seed=11, steps=5)
    assert bm.fallback_steps > 0 and bm.batched_steps == 0


def test_streamed_layers_fall_back(tiny_ckpt: Path) -> None:
    model = load_rwkv(tiny_ckpt, "cpu fp32 *1+")
    bm = BatchedRWKV(model)
    assert not bm.batched and "streamed" in (bm.fallback_reason or "")


def test_forward_batch_api_and_state_helpers(model_fp32: Any) -> None:
    bm = BatchedRWKV(model_fp32)
    _, s1 = prefill(model_fp32, [5, 6, 7], None)
    logits, states = bm.forward_batch([9, 10], [s1, None])  # None = fresh state
    ref1, _ = model_fp32.forward([9], list(s1))
    ref2, _ = model_fp32.forward([10], None)
    assert torch.allclose(logits[0], ref1, atol=1e-5)
    assert torch.allclose(logits[1], ref2, atol=1e-5)
    assert len(states) == 2 and len(states[0]) == 5 * bm.n_layer
    # zero_state has the package's layout: pp starts at -1e30.
    z = bm.zero_state()
    assert float(z[3][0]) == pytest.approx(-1e30) and z[1].dtype == torch.float32
    assert bm.state_nbytes() == state_nbytes(z) == 4 * 5 * 32 * 4
    cpu = state_to(s1, "cpu")
    assert all(a is not b and torch.equal(a, b) for a, b in zip(cpu, s1, strict=True))
    assert isinstance(bm.new_batch(), StackedStates)


def test_chunked_prefill_matches_one_call(model_fp32: Any) -> None:
    toks = list(range(1, 40))
    a, sa = prefill(model_fp32, toks, None, chunk_len=7)
    b, sb = model_fp32.forward(toks, None)
    assert torch.allclose(a, b, atol=1e-5)
    for x, y in zip(sa, sb, strict=True):
        assert torch.allclose(x, y, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        prefill(model_fp32, [], None)


def test_real_vocab_shapes_load_and_batch(ckpt_dir: Path) -> None:
    """Real 20B-tokenizer vocabulary (50277), bf16 on disk like the published files."""
    p = build_random_checkpoint(ckpt_dir / "v50277", n_layer=2, n_embd=32, vocab_size=50277,
                                dtype=torch.bfloat16, seed=2)
    info = inspect_checkpoint(p)
    assert (info.vocab_size, info.n_embd, info.n_layer, info.dtype) == (50277, 32, 2, "bfloat16")
    model = load_rwkv(p, "cpu fp32")
    bm = BatchedRWKV(model)
    assert bm.vocab_size == 50277
    _, s1 = prefill(model, [187, 535, 50000], None)
    _, s2 = prefill(model, [12], None)
    logits, _ = bm.forward_batch([50276, 0], [s1, s2])
    assert logits.shape == (2, 50277)
    ref, _ = model.forward([50276], list(s1))
    assert torch.allclose(logits[0], ref, atol=1e-4)


@pytest.mark.parametrize("strategy", ["cpu fp32", "cpu fp32 *3 -> cpu fp32"])
def test_batched_kernels_at_batch_of_one_match_package(tiny_ckpt: Path, load_model,
                                                       strategy: str) -> None:
    """The batched kernels themselves at B=1 (the engine sends a batch of one through
    model.forward by default, so this path needs its own check)."""
    model = load_model(tiny_ckpt, strategy)
    bm = BatchedRWKV(model, single_via_package=False)
    _run_mixed_batch(model, bm, 1, atol=1e-4, seed=21)
    assert bm.batched_steps > 0 and bm.package_steps == 0 and bm.fallback_steps == 0
    # Without the contiguous head copy a batch of one goes through the package by default.
    plain = BatchedRWKV(model, contiguous_head=False)
    assert plain._head_c is None and plain.single_via_package
    _run_mixed_batch(model, plain, 1, atol=1e-4, seed=22)
    assert plain.package_steps == plain.batched_steps > 0


def test_batch_of_one_goes_through_the_package_and_joins_a_batch(model_fp32: Any) -> None:
    """B=1 uses model.forward on row 0's state; the state it leaves is a normal batch row, so
    sequences can join it and the batched kernels take over."""
    bm = BatchedRWKV(model_fp32, single_via_package=True)
    _, s1 = prefill(model_fp32, [3, 4, 5], None)
    _, s2 = prefill(model_fp32, [9], None)
    batch = bm.new_batch([s1])
    ref1 = list(s1)
    for tok in (7, 8):
        got = bm.step([tok], batch)
        want, ref1 = model_fp32.forward([tok], ref1)
        assert torch.equal(got[0], want.float())  # the same call: bit-identical
    assert bm.package_steps == 2
    batch.append(s2)
    got = bm.step([10, 11], batch)
    want1, _ = model_fp32.forward([10], list(ref1))
    want2, _ = model_fp32.forward([11], list(s2))
    assert torch.allclose(got[0], want1, atol=1e-4) and torch.allclose(got[1], want2, atol=1e-4)
    assert bm.package_steps == 2 and bm.batched_steps == 3


def test_step_logits_buffer_is_reused_but_forward_batch_copies(model_fp32: Any) -> None:
    bm = BatchedRWKV(model_fp32)
    _, s1 = prefill(model_fp32, [1, 2], None)
    batch = bm.new_batch([s1, s1])
    a = bm.step([3, 4], batch)
    kept = a.clone()
    b = bm.step([5, 6], batch)
    assert a.data_ptr() == b.data_ptr()  # documented: valid until the next step
    assert not torch.equal(kept, b)
    l1, _ = bm.forward_batch([3, 4], [s1, s1])
    l2, _ = bm.forward_batch([3, 4], [s1, s1])
    assert l1.data_ptr() != l2.data_ptr() and torch.equal(l1, l2)


def test_onednn_kernels_one_and_two_threads_and_extra_bytes(model_fp32: Any) -> None:
    """oneDNN (packed by default) against BLAS on the same states, at one and two threads
    (a single row takes BLAS on one thread, oneDNN on more); the copies are accounted."""
    bm = BatchedRWKV(model_fp32, single_via_package=False)
    if not bm.onednn:
        pytest.skip("this torch has no working oneDNN linear")
    blas = BatchedRWKV(model_fp32, single_via_package=False, onednn=False, packed_weights=False)
    mats = [k for k, t in model_fp32.w.items() if t.dim() == 2 and k != "emb.weight"]
    matrix_bytes = sum(model_fp32.w[k].numel() * 4 for k in mats)
    head_bytes = model_fp32.w["head.weight"].numel() * 4
    assert blas.extra_bytes == head_bytes  # the contiguous head copy only
    assert bm.extra_bytes == head_bytes + matrix_bytes
    _, s1 = prefill(model_fp32, [1, 2], None)
    _, s2 = prefill(model_fp32, [3], None)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for states in ([s1], [s1, s2], [s2, s1, s2, s1]):
                toks = [5, 6, 7, 8][: len(states)]
                a, sa = bm.forward_batch(toks, states)
                b, sb = blas.forward_batch(toks, states)
                assert torch.allclose(a, b, atol=1e-5, rtol=0)
                for x, y in zip(sa, sb, strict=True):
                    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(x, y, strict=True))
    finally:
        torch.set_num_threads(old)


def _prefill_jobs(model: Any, rng: random.Random, lengths: list[int]) -> list[tuple[list[int], Any]]:
    """Jobs of the given lengths, about half of them resuming a state of a few tokens."""
    jobs = []
    for n in lengths:
        state = None
        if rng.random() < 0.5:
            state = prefill(model, [rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 6))],
                            None)[1]
        jobs.append(([rng.randrange(1, VOCAB) for _ in range(n)], state))
    return jobs


@pytest.mark.parametrize("kernels", sorted(KERNELS))
@pytest.mark.parametrize("strategy", ["cpu fp32", "cpu fp32 *3 -> cpu fp32"])
def test_prefill_many_matches_package(tiny_ckpt: Path, load_model, strategy: str,
                                      kernels: str) -> None:
    """Several sequences of different lengths (fresh and resumed) in one pass: the same last
    logits and states as the package's forward on each alone, in the jobs' order, with the
    inputs untouched."""
    model = load_model(tiny_ckpt, strategy)
    bm = BatchedRWKV(model, **KERNELS[kernels])
    assert bm.batched_prefill
    rng = random.Random(len(strategy))
    jobs = _prefill_jobs(model, rng, [1, 7, 3, 30, 1, 12, 7])
    before = [None if st is None else [t.clone() for t in st] for _, st in jobs]
    got = bm.prefill_many(jobs)
    assert len(got) == len(jobs)
    for (toks, st), old, (logits, state) in zip(jobs, before, got, strict=True):
        ref_logits, ref_state = prefill(model, toks, st, len(toks))
        assert logits.shape == (VOCAB,) and logits.dtype == torch.float32
        assert float((logits - ref_logits).abs().max()) <= 1e-4
        for a, b in zip(state, ref_state, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
        if st is not None:
            assert all(torch.equal(a, b) for a, b in zip(st, old, strict=True))
    assert bm.prefill_many([]) == []
    with pytest.raises(ValueError, match="at least one token"):
        bm.prefill_many([([1, 2], None), ([], None)])


def test_prefill_many_then_decode_equals_package(model_fp32: Any) -> None:
    """States from one pass decode on as the package's would (they join a decode batch)."""
    bm = BatchedRWKV(model_fp32)
    rng = random.Random(5)
    jobs = _prefill_jobs(model_fp32, rng, [4, 9, 2])
    states = [st for _, st in bm.prefill_many(jobs)]
    refs = [prefill(model_fp32, toks, st, len(toks))[1] for toks, st in jobs]
    batch = bm.new_batch(states)
    for _ in range(3):
        tokens = [rng.randrange(1, VOCAB) for _ in jobs]
        got = bm.step(tokens, batch).clone()
        for i, (tok, ref) in enumerate(zip(tokens, refs, strict=True)):
            out, refs[i] = model_fp32.forward([tok], ref)
            assert float((got[i] - out.float()).abs().max()) <= 1e-4


def test_prefill_many_half_precision_goes_through_the_package(tiny_ckpt: Path,
                                                              load_model) -> None:
    model = load_model(tiny_ckpt, "cpu bf16")
    bm = BatchedRWKV(model)
    assert bm.batched and not bm.batched_prefill
    jobs = _prefill_jobs(model, random.Random(3), [3, 5])
    for (toks, st), (logits, _state) in zip(jobs, bm.prefill_many(jobs), strict=True):
        assert torch.equal(logits, prefill(model, toks, st, len(toks))[0])
