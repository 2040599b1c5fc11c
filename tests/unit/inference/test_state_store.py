"""The shared state tier without a network: the entry format, the model fingerprint,
tombstones, and StateTier over an in-memory store (Redis itself: tests/integration)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import torch

from services.common.errors import FailedPrecondition, Unavailable
from services.inference.state_cache import CacheEntry, StateCache, Tombstones, prefix_hash
from services.inference.state_store import (
    CONVERSATION_ERASED,
    EntryRejected,
    StateTier,
    StoreError,
    decode_entry,
    encode_entry,
    model_fingerprint,
    vocabulary_digest,
)

FP = b"f" * 16
TOKENS = [5, 6, 7, 8]


def _entry(n: int = 3) -> CacheEntry:
    return CacheEntry((torch.arange(8, dtype=torch.float32), torch.ones(8, dtype=torch.float16)),
                      None, n, prefix_hash(TOKENS[:n]))


def test_entry_round_trip_and_rejections() -> None:
    blob = encode_entry(_entry(), FP)
    back = decode_entry(blob, FP)
    assert back.token_count == 3 and back.prefix_hash == prefix_hash(TOKENS[:3])
    assert back.logits is None and torch.equal(back.state[0], torch.arange(8.0))
    assert len(blob) == len(encode_entry(_entry(), FP)) and len(blob) < 32 + 4 * 8 + 2 * 8 + 64
    with_logits = CacheEntry(_entry().state, torch.zeros(1000), 3, _entry().prefix_hash)
    assert len(encode_entry(with_logits, FP)) == len(blob)  # logits never travel
    for bad, reason in [
        (b"", "corrupt"),
        (blob[:-1], "corrupt"),
        (blob + b"x", "corrupt"),
        (b"XXXX" + blob[4:], "format"),
        (blob[:4] + struct.pack("<H", 99) + blob[6:], "format"),
    ]:
        with pytest.raises(EntryRejected) as exc:
            decode_entry(bad, FP)
        assert exc.value.reason == reason
    with pytest.raises(EntryRejected) as exc:
        decode_entry(blob, b"g" * 16)
    assert exc.value.reason == "fingerprint"


class _Tok:
    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.vocab_size = len(pieces)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


def test_fingerprint_names_weights_vocabulary_and_placement() -> None:
    torch.manual_seed(0)
    w = {"emb.weight": torch.randn(64, 16), "blocks.0.att.key.weight": torch.randn(16, 16)}
    vocab = vocabulary_digest(_Tok(["", "a", "b"]))
    placement = [("cpu", "torch.float32", 16)] * 5
    base = model_fingerprint(w, vocab, placement, "cpu fp32")
    assert base == model_fingerprint({k: v.clone() for k, v in w.items()}, vocab, placement,
                                     "cpu fp32")
    tuned = dict(w, **{"blocks.0.att.key.weight": w["blocks.0.att.key.weight"] + 1e-3})
    big = {"emb.weight": torch.randn(70000, 8)}  # sampled, not hashed whole
    big2 = {"emb.weight": big["emb.weight"] * 1.001}
    assert len({
        base,
        model_fingerprint(tuned, vocab, placement, "cpu fp32"),
        model_fingerprint(w, vocabulary_digest(_Tok(["", "a", "c"])), placement, "cpu fp32"),
        model_fingerprint(w, vocab, [("cpu", "torch.float16", 16)] * 5, "cpu fp32"),
        model_fingerprint(w, vocab, placement, "cpu fp32 *1 -> cpu fp32"),
        model_fingerprint(big, vocab, placement, "cpu fp32"),
        model_fingerprint(big2, vocab, placement, "cpu fp32"),
    }) == 7


def test_tombstones_expire_and_refuse_puts() -> None:
    now = [0.0]
    cache = StateCache(1 << 20, Tombstones(10.0, clock=lambda: now[0]))
    e = _entry()
    assert cache.put("a", e.state, None, 3, e.prefix_hash)
    assert cache.forget(["a"], tombstone=True) == 1 and "a" not in cache
    assert not cache.put("a", e.state, None, 3, e.prefix_hash)
    assert cache.stats().tombstones == 1
    now[0] = 10.5
    assert "a" not in cache.tombstones and cache.stats().tombstones == 0
    assert cache.put("a", e.state, None, 3, e.prefix_hash)
    cache.forget(["a"])  # a plain forget leaves no tombstone
    assert cache.put("a", e.state, None, 3, e.prefix_hash)
    with pytest.raises(ValueError):
        Tombstones(0)


class MemoryStore:
    """RedisStateStore's interface in memory; `fail` makes every call raise."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.erased: set[str] = set()
        self.fail: str | None = None
        self.closed = False

    def _check(self, op: str) -> None:
        if self.fail:
            raise StoreError(op, self.fail)

    async def get(self, conv_id: str) -> tuple[bytes | None, bool]:
        self._check("get")
        return self.entries.get(conv_id), conv_id in self.erased

    async def put(self, conv_id: str, blob: bytes) -> bool:
        self._check("put")
        if conv_id in self.erased:
            return False
        self.entries[conv_id] = blob
        return True

    async def forget(self, conv_ids: list[str], *, erased: bool) -> list[str]:
        self._check("forget")
        if erased:
            self.erased.update(conv_ids)
        return [c for c in conv_ids if self.entries.pop(c, None) is not None]

    async def aclose(self) -> None:
        self.closed = True


class Metrics:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.rejected: list[str] = []
        self.ops: list[str] = []

    def store_seconds(self, op: str, seconds: float) -> None:
        self.ops.append(op)

    def store_error(self, op: str, kind: str) -> None:
        self.errors.append((op, kind))

    def store_rejected(self, reason: str) -> None:
        self.rejected.append(reason)


def _tier(store: Any = None, fp: bytes = FP, **kw: Any) -> tuple[StateTier, Metrics]:
    m = Metrics()
    return StateTier(StateCache(1 << 20), store, fp, metrics=m, **kw), m


async def test_publish_then_resume_on_another_replica() -> None:
    store = MemoryStore()
    a, _ = _tier(store)
    b, mb = _tier(store)
    e = _entry()
    a.cache.put("c", e.state, None, 3, e.prefix_hash)
    assert await a.publish("c")
    got = await b.resume("c", TOKENS)
    assert got is not None and got.token_count == 3 and torch.equal(got.state[0], e.state[0])
    assert await a.resume("c", TOKENS) is None  # a local hit: the store is not asked
    assert await b.resume("c", TOKENS[:2] + [9, 9]) is None and mb.rejected == ["prefix"]
    c, mc = _tier(store, fp=b"x" * 16)  # another model
    assert await c.resume("c", TOKENS) is None and mc.rejected == ["fingerprint"]
    assert await b.resume("nobody", TOKENS) is None
    d, md = _tier(store, max_entry_bytes=10)
    d.cache.put("c", e.state, None, 3, e.prefix_hash)
    assert not await d.publish("c") and md.rejected == ["size"]
    assert await _tier(None)[0].resume("c", TOKENS) is None  # no store: as before


async def test_a_failing_store_degrades_to_a_miss_but_an_erasure_fails() -> None:
    store = MemoryStore()
    tier, m = _tier(store)
    e = _entry()
    tier.cache.put("c", e.state, None, 3, e.prefix_hash)
    store.fail = "timeout"
    assert await tier.resume("other", TOKENS) is None
    assert not await tier.publish("c")
    assert await tier.forget(["c"], erased=False) == 1  # a plain forget only logs
    with pytest.raises(Unavailable):
        await tier.forget(["d"], erased=True)
    assert m.errors == [("get", "timeout"), ("put", "timeout"), ("forget", "timeout"),
                        ("forget", "timeout")]
    assert "d" in tier.cache.tombstones  # the local tombstone is kept all the same


async def test_erasure_tombstones_locally_and_in_the_store() -> None:
    store = MemoryStore()
    a, _ = _tier(store)
    b, _ = _tier(store)
    e = _entry()
    a.cache.put("c", e.state, None, 3, e.prefix_hash)
    assert await a.publish("c")
    assert await a.forget(["c", "c", "x"], erased=True) == 1
    assert store.entries == {} and "c" in store.erased
    with pytest.raises(FailedPrecondition) as exc:
        a.check_turn("c")
    assert exc.value.violation_type == CONVERSATION_ERASED
    b.check_turn("c")  # b missed the call, but learns it from the store on its miss
    with pytest.raises(FailedPrecondition):
        await b.resume("c", TOKENS)
    with pytest.raises(FailedPrecondition):
        b.check_turn("c")
    # a running turn on a third replica cannot write it back
    c, _ = _tier(store)
    c.cache.put("c", e.state, None, 3, e.prefix_hash)
    assert not await c.publish("c") and store.entries == {} and "c" in c.cache.tombstones
    await a.aclose()
    assert store.closed
