"""Slot-indexed decode state (services/inference/decode_slots.py) on the CPU: the same code
that a CUDA node captures in graphs runs eagerly here. Padded bucket steps equal unpadded
ones (logits and states), a sequence joining or leaving copies one row or none, buckets
are chosen as documented, and the engine gives the same tokens on the slot path."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from services.inference.decode_slots import DecodeSlots, bucket_for, buckets, supports_slots
from services.inference.rwkv_batched import BatchedRWKV, prefill

from .conftest import join_leave_run
from .test_engine import RAW, greedy, req


def _states(model: Any, n: int, seed: int = 0) -> list[list[torch.Tensor]]:
    rng = random.Random(seed)
    return [prefill(model, [rng.randrange(1, 512) for _ in range(1 + i % 4)], None, 8)[1]
            for i in range(n)]


def test_buckets_and_bucket_choice() -> None:
    assert buckets(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert buckets(12) == [1, 2, 4, 8, 12]
    assert buckets(1) == [1]
    assert [bucket_for(n, 64) for n in (1, 2, 3, 5, 33, 64)] == [1, 2, 4, 8, 64, 64]
    assert bucket_for(9, 12) == 12
    with pytest.raises(ValueError, match="capacity"):
        buckets(0)
    with pytest.raises(ValueError, match="capacity"):
        buckets(257)
    with pytest.raises(ValueError, match="13 rows"):
        bucket_for(13, 12)


@pytest.mark.parametrize("strategy", ["cpu fp32", "cpu fp32 *2 -> cpu fp32"])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_padded_bucket_step_equals_the_unpadded_step(tiny_ckpt, load_model, strategy: str,
                                                     n: int) -> None:
    model = load_model(tiny_ckpt, strategy)
    bm = BatchedRWKV(model, single_via_package=False)
    assert supports_slots(bm)
    states = _states(model, n)
    tokens = [7 + 31 * i for i in range(n)]
    ref_batch = bm.new_batch(states)
    ref = bm.step(tokens, ref_batch).clone()
    slots = DecodeSlots(bm, capacity=8)
    slots.extend(states)
    assert bucket_for(n, 8) > n or n == 1  # 3 and 5 rows run padded (to 4 and 8)
    got = slots.step(tokens)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for i in range(n):
        for a, b in zip(slots.get(i), ref_batch.get(i), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not slots.graphs_enabled  # CPU: eager


def test_join_and_leave_copy_one_row_and_keep_the_others(model_fp32: Any) -> None:
    bm = BatchedRWKV(model_fp32)
    slots = DecodeSlots(bm, capacity=6)
    states = _states(model_fp32, 5, seed=3)
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
        assert changed in ([1], [])  # only slot 1 (or nothing, where the values agree)
        assert torch.equal(b[1], new)
    assert [b.data_ptr() for b in slots.bufs] == ptrs  # preallocated: never reallocated
    for row, src in ((0, states[3]), (1, states[0]), (2, states[4])):
        assert all(torch.equal(a, b) for a, b in zip(slots.get(row), src, strict=True))
    slots.append(states[1])
    slots.append(states[2])
    slots.append(states[0])
    with pytest.raises(RuntimeError, match="all 6 decode slots"):
        slots.append(states[0])
    with pytest.raises(ValueError, match="2 tokens for 6 rows"):
        slots.step([1, 2])
    with pytest.raises(ValueError, match="twice"):
        slots.keep([0, 0])
    slots.clear()
    assert len(slots) == 0 and slots.step([]).shape == (0, bm.vocab_size)


def test_steps_with_rows_joining_and_leaving_equal_the_stacked_path(model_fp32: Any) -> None:
    """A decode run where sequences join and leave between steps: the slot path's logits
    and states equal StackedStates' at every step."""
    bm = BatchedRWKV(model_fp32, single_via_package=False)
    join_leave_run(bm, _states(model_fp32, 9, seed=5), bm.new_batch(),
                   DecodeSlots(bm, capacity=8), 512, 1e-5)

def test_models_without_the_slot_interface_are_refused_by_supports_slots(tiny_ckpt,
                                                                         load_model) -> None:
    int8 = BatchedRWKV(load_model(tiny_ckpt, "cpu fp32i8"))
    assert not int8.batched and not supports_slots(int8)
    assert not supports_slots(object())


async def test_engine_on_the_slot_path_gives_the_same_tokens(make_engine, model_fp32,
                                                             greedy_ref, drain) -> None:
    eng = make_engine(slot_decode="on", max_running=5, **RAW)
    assert isinstance(eng._batch, DecodeSlots)
    rng = random.Random(7)
    prompts = [[rng.randrange(1, 512) for _ in range(2 + i)] for i in range(5)]
    handles = [eng.submit(req(p, greedy(6 + 2 * i, presence_penalty=0.3), conv=f"c{i}"))
               for i, p in enumerate(prompts)]
    for i, h in enumerate(handles):
        ids, _, fin = await drain(h)
        assert fin.reason == "length"
        assert ids == greedy_ref(model_fp32, prompts[i], 6 + 2 * i, presence=0.3)
    assert eng._batch.steps > 0


async def test_engine_device_sampler_is_reproducible_and_position_independent(
        make_engine, drain) -> None:
    from services.inference.sampling import SamplingParams

    p = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=12, seed=99)
    prompt = [5, 6, 7, 8]
    eng = make_engine(device_sampling="on", slot_decode="on", **RAW)
    alone = (await drain(eng.submit(req(prompt, p, conv="a"))))[0]
    mates = [eng.submit(req([9 + i, 10], SamplingParams(max_tokens=12, seed=i), conv=f"m{i}"))
             for i in range(3)]
    again = eng.submit(req(prompt, p, conv="b"))
    assert (await drain(again))[0] == alone
    for h in mates:
        assert (await drain(h))[2].reason == "length"
    assert len(alone) == 12
