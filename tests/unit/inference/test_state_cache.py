from __future__ import annotations

import threading
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inference.rwkv_batched import BatchedRWKV, prefill
from services.inference.state_cache import PrefixHasher, StateCache, prefix_hash


def _state(n: int, fill: float = 1.0) -> list[torch.Tensor]:
    return [torch.full((n,), fill, dtype=torch.float32)]  # n * 4 bytes


def test_prefix_hash_is_chunking_independent() -> None:
    toks = list(range(100))
    h = PrefixHasher()
    for i in range(0, 100, 7):
        h.update(toks[i : i + 7])
    assert h.hexdigest() == prefix_hash(toks) and h.count == 100
    fork = h.copy().update([1])
    assert fork.hexdigest() == prefix_hash(toks + [1]) != h.hexdigest()
    assert prefix_hash([1, 2]) != prefix_hash([2, 1])
    assert prefix_hash([256]) != prefix_hash([1, 0])  # int32 packing, not bytes


def test_get_hit_miss_and_hash_mismatch() -> None:
    c = StateCache(budget_bytes=10_000)
    assert c.put("a", _state(10), torch.zeros(4), 3, prefix_hash([1, 2, 3]))
    e = c.get("a", prefix_hash([1, 2, 3]))
    assert e is not None and e.token_count == 3 and e.logits is not None
    assert c.get("a", prefix_hash([1, 2, 4])) is None  # mismatch is a miss
    assert c.get("b", prefix_hash([1, 2, 3])) is None
    assert c.lookup("a", [1, 2, 3, 9, 9]) is not None  # consumed tokens are a prefix
    assert c.lookup("a", [1, 2, 4, 9]) is None
    assert c.lookup("a", [1, 2]) is None  # entry consumed more than the prompt
    s = c.stats()
    assert (s.hits, s.misses, s.entries, s.used_bytes) == (2, 4, 1, 40 + 16)


def test_entry_is_a_cpu_copy() -> None:
    c = StateCache(budget_bytes=1000)
    src = _state(4)
    c.put("a", src, None, 1, prefix_hash([1]))
    src[0].add_(5)
    e = c.get("a", prefix_hash([1]))
    assert e is not None and float(e.state[0][0]) == 1.0 and e.state[0].device.type == "cpu"


def test_lru_eviction_is_counted_and_get_refreshes() -> None:
    c = StateCache(budget_bytes=3 * 40)
    for cid in "abc":
        assert c.put(cid, _state(10), None, 1, prefix_hash([1]))
    assert c.get("a", prefix_hash([1])) is not None  # a is now most recent
    c.put("d", _state(10), None, 1, prefix_hash([1]))
    assert "b" not in c and {"a", "c", "d"} <= {k for k in "acd" if k in c}
    assert c.stats().evictions == 1
    c.put("a", _state(10), None, 2, prefix_hash([1, 2]))  # replacing is not evicting
    assert c.stats().evictions == 1 and len(c) == 3


def test_oversized_entry_not_stored_and_forget() -> None:
    c = StateCache(budget_bytes=100)
    c.put("a", _state(10), None, 1, "h")
    assert not c.put("big", _state(100), None, 1, "h")
    assert "big" not in c and c.stats().rejected == 1 and "a" in c
    assert c.forget(["a", "zzz"]) == 1
    assert c.used_bytes == 0 and len(c) == 0


@settings(max_examples=100, deadline=None)
@given(
    budget=st.integers(min_value=0, max_value=2000),
    ops=st.lists(
        st.tuples(st.sampled_from(["put", "forget", "get"]), st.integers(0, 15),
                  st.integers(1, 200)),
        max_size=80,
    ),
)
def test_budget_never_exceeded(budget: int, ops: list[tuple[str, int, int]]) -> None:
    c = StateCache(budget_bytes=budget)
    for op, key, size in ops:
        cid = f"c{key}"
        if op == "put":
            stored = c.put(cid, _state(size), None, size, prefix_hash([size]))
            assert stored == (size * 4 <= budget)
        elif op == "forget":
            c.forget([cid])
        else:
            c.get(cid, prefix_hash([size]))
        s = c.stats()
        assert s.used_bytes <= budget
        assert s.used_bytes == sum(e.nbytes for e in c._entries.values())


def test_thread_safety_smoke() -> None:
    c = StateCache(budget_bytes=50 * 40)

    def writer(base: int) -> None:
        for i in range(300):
            c.put(f"{base}-{i % 80}", _state(10), None, 1, "h")

    def reader() -> None:
        for i in range(300):
            c.forget([f"0-{i % 80}"])
            c.stats()

    threads = [threading.Thread(target=writer, args=(b,)) for b in range(3)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.used_bytes <= 50 * 40 and c.used_bytes == sum(e.nbytes for e in c._entries.values())


def test_resume_from_cache_equals_full_reprefill(model_fp32: Any) -> None:
    """Turn 1 (history) is cached; turn 2 prefills only its new tokens from the cached state.
    The next-token logits equal a full re-prefill of the whole conversation."""
    bm = BatchedRWKV(model_fp32)
    history = [(i * 37) % 500 + 1 for i in range(45)]
    new_turn = [7, 99, 180, 3, 250]
    cache = StateCache(budget_bytes=1 << 20)
    logits_h, st_h = prefill(model_fp32, history, None, chunk_len=16)
    assert cache.put("conv", st_h, logits_h, len(history), prefix_hash(history))

    prompt = history + new_turn
    entry = cache.lookup("conv", prompt)
    assert entry is not None
    resumed, _ = prefill(model_fp32, prompt[entry.token_count :], bm.to_model(entry.state), 16)
    full, _ = prefill(model_fp32, prompt, None, chunk_len=64)
    assert float((resumed - full).abs().max()) <= 1e-5
    # The stored logits are the ones after the history.
    assert torch.allclose(entry.logits, logits_h)
    assert cache.stats().used_bytes == bm.state_nbytes() + 4 * bm.vocab_size


@pytest.mark.parametrize("strategy", ["cpu bf16"])
def test_to_model_restores_layer_dtypes(tiny_ckpt, load_model, strategy: str) -> None:
    m = load_model(tiny_ckpt, strategy)
    bm = BatchedRWKV(m)
    _, st_ = prefill(m, [1, 2, 3], None)
    c = StateCache(1 << 20)
    c.put("x", st_, None, 3, prefix_hash([1, 2, 3]))
    e = c.get("x", prefix_hash([1, 2, 3]))
    assert e is not None
    back = bm.to_model(e.state)
    assert [t.dtype for t in back] == [t.dtype for t in st_]
    a, _ = m.forward([4], back)
    b, _ = m.forward([4], list(st_))
    assert torch.equal(a, b)
