"""The slot-indexed decode path (services/inference/decode_slots.py) for RWKV-7: padded
bucket steps equal unpadded ones (logits and the [H, N, N] states) on one segment and
across two, a sequence joining copies one row, a decode run with rows joining and leaving
equals the stacked path, the step as a GPU runs it reads nothing back to the host, and the
engine on the slot path gives the package's greedy tokens."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from services.inference.checkpoint import build_random_checkpoint7
from services.inference.decode_slots import DecodeSlots, bucket_for, supports_slots
from services.inference.model_family import load_rwkv7
from services.inference.rwkv7_batched import BatchedRWKV7

from .conftest import VOCAB, greedy_reference, join_leave_run
from .test_engine import RAW, greedy, req

TOL = 1e-5


@pytest.fixture(scope="module")
def g1_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3 layers (a split `*2 -> ...` has a block on each side), 2 heads of 64, the toy
    # tokenizer's vocabulary (the engine test decodes the ids)
    return build_random_checkpoint7(tmp_path_factory.mktemp("g1slots") / "m", n_layer=3,
                                    n_embd=128, vocab_size=VOCAB, head_size=64, seed=11)


@pytest.fixture(scope="module")
def g1(g1_path: Path) -> BatchedRWKV7:
    return load_rwkv7(g1_path, "cpu fp32")


def _states(bm: BatchedRWKV7, n: int, seed: int = 0) -> list[list[torch.Tensor]]:
    rng = random.Random(seed)
    return [bm.prefill([rng.randrange(1, VOCAB) for _ in range(1 + i % 4)], None, 8)[1]
            for i in range(n)]


def test_the_slot_interface_is_the_packages_state_layout(g1: BatchedRWKV7) -> None:
    assert supports_slots(g1)
    pkg = g1.model.generate_zero_state()
    layout = g1.state_layout()
    assert [(tuple(shape), dt) for _d, dt, shape in layout] == [
        (tuple(t.shape), t.dtype) for t in pkg]
    slots = DecodeSlots(g1, capacity=4)
    h, n = g1.n_head, g1.head_size
    assert [tuple(b.shape) for b in slots.bufs[:3]] == [(5, g1.n_embd), (5, h, n, n),
                                                        (5, g1.n_embd)]
    st = _states(g1, 1)[0]
    slots.append(st)
    got = slots.get(0)  # the package's shapes, as StackedStates7.get gives them
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in pkg]
    assert all(torch.equal(a, b) for a, b in zip(got, st, strict=True))


@pytest.mark.parametrize("strategy", ["cpu fp32", "cpu fp32 *2 -> cpu fp32"])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_padded_bucket_step_equals_the_unpadded_step(g1: BatchedRWKV7, g1_path: Path,
                                                     strategy: str, n: int) -> None:
    bm = load_rwkv7(g1_path, strategy)
    bm.single_via_package = False  # the reference is the stacked step, a batch of one too
    states = _states(g1, n)
    tokens = [7 + 31 * i for i in range(n)]
    ref_batch = bm.new_batch(states)
    ref = bm.step(tokens, ref_batch).clone()
    slots = DecodeSlots(bm, capacity=8)
    slots.extend(states)
    assert bucket_for(n, 8) > n or n == 1  # 3 and 5 rows run padded (to 4 and 8)
    moves = bm.boundary_moves
    got = slots.step(tokens)
    assert bm.boundary_moves - moves == (1 if "->" in strategy else 0)  # the split path ran
    assert got.shape == ref.shape == (n, VOCAB)
    torch.testing.assert_close(got, ref, rtol=TOL, atol=TOL)
    for i in range(n):
        for a, b in zip(slots.get(i), ref_batch.get(i), strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)
    # the padding rows wrote only the scratch slot: the free slots are still zero
    free = [s for s in range(8) if s not in slots.rows]
    assert all(not bool(b[free].any()) for b in slots.bufs)
    assert not slots.graphs_enabled  # CPU: eager


def test_a_joining_sequence_copies_one_row(g1: BatchedRWKV7) -> None:
    slots = DecodeSlots(g1, capacity=6)
    states = _states(g1, 5, seed=3)
    slots.extend(states[:4])
    assert slots.rows == [0, 1, 2, 3] and slots.copies == 4
    ptrs = [b.data_ptr() for b in slots.bufs]
    before = [b.clone() for b in slots.bufs]
    slots.keep([3, 0])  # rows 1 and 2 leave; nothing is copied
    assert slots.rows == [3, 0] and slots.copies == 4
    assert all(torch.equal(a, b) for a, b in zip(before, slots.bufs, strict=True))
    slots.append(states[4])  # joins in the lowest free slot: one row written per tensor
    assert slots.rows == [3, 0, 1] and slots.copies == 5
    for a, b, new in zip(before, slots.bufs, states[4], strict=True):
        changed = (a != b).reshape(a.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
        assert changed in ([1], [])
        assert torch.equal(b[1], new)
    assert [b.data_ptr() for b in slots.bufs] == ptrs  # preallocated: never reallocated
    for row, src in ((0, states[3]), (1, states[0]), (2, states[4])):
        assert all(torch.equal(a, b) for a, b in zip(slots.get(row), src, strict=True))
    # a state from the shared tier's wire format (flat tensors) joins as well
    flat = [t.reshape(-1) for t in states[2]]
    slots.append(flat)
    assert all(torch.equal(a, b) for a, b in zip(slots.get(3), states[2], strict=True))
    with pytest.raises(ValueError, match="a state of 5 tensors for 9 slots"):
        slots.append(states[0][:5])


def test_steps_with_rows_joining_and_leaving_equal_the_stacked_path(g1_path: Path) -> None:
    """A decode run over a split placement where sequences join and leave between steps:
    the slot path's logits and states equal StackedStates7's at every step."""
    bm = load_rwkv7(g1_path, "cpu fp32 *2 -> cpu fp32")
    join_leave_run(bm, _states(bm, 9, seed=5), bm.new_batch(), DecodeSlots(bm, capacity=8),
                   VOCAB, TOL)

class _HostReads(TorchDispatchMode):
    """Records the operators that read a tensor's value on the host (`.item()`, `int()`,
    `float()`, `bool()` end in `_local_scalar_dense`) or give a data-dependent shape: either
    stops a step from being captured in a CUDA graph. (`.tolist()` and `.cpu()` do not show
    on a CPU tensor at this level; the step has neither, see its docstring.)"""

    SYNCING = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select",
               "aten.unique", "aten._unique2", "aten.item")

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.seen = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.seen += 1
        name = str(func.overloadpacket)
        if name in self.SYNCING:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def test_the_step_as_a_gpu_runs_it_reads_nothing_on_the_host(g1_path: Path) -> None:
    """Without oneDNN and the compiled CPU kernel the step takes the code path a CUDA
    placement takes (`x @ W` and the attention core in torch); traced at the operator level
    it has no host read, so DecodeSlots can capture it. It equals the CPU-optimised step."""
    gpu_like = load_rwkv7(g1_path, "cpu fp32 *2 -> cpu fp32", onednn=False)
    gpu_like.kernel = None
    cpu = load_rwkv7(g1_path, "cpu fp32 *2 -> cpu fp32")
    states = _states(cpu, 3, seed=9)
    idx = torch.tensor([3, 400, 0, 0])  # a bucket of 4: the last row pads
    t = [torch.stack([s[j] for s in states] + [torch.zeros_like(states[0][j])])
         for j in range(len(states[0]))]
    t_ref = [x.clone() for x in t]
    mode = _HostReads()
    with mode:
        got = gpu_like.step_states(idx, t, on_device=True)
    assert mode.seen > 50 and mode.ops == []
    assert gpu_like.kernel_calls == 0
    want = cpu.step_states(idx, t_ref, on_device=True)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for a, b in zip(t, t_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


async def test_engine_on_the_slot_path_gives_the_packages_greedy_tokens(
        g1: BatchedRWKV7, make_engine: Any, drain: Any) -> None:
    eng = make_engine(g1, slot_decode="on", max_running=5, prefill_chunk_len=4, **RAW)
    assert isinstance(eng._batch, DecodeSlots)
    assert tuple(eng._batch.bufs[1].shape) == (6, g1.n_head, g1.head_size, g1.head_size)
    rng = random.Random(7)
    prompts = [[rng.randrange(1, VOCAB) for _ in range(2 + 3 * i)] for i in range(5)]
    handles = [eng.submit(req(p, greedy(6 + 2 * i), conv=f"c{i}"))
               for i, p in enumerate(prompts)]
    for i, h in enumerate(handles):
        ids, _, fin = await drain(h)
        assert fin.reason == "length"
        assert ids == greedy_reference(g1.model, prompts[i], 6 + 2 * i)
    assert eng._batch.steps > 0
