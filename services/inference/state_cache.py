"""Conversation state cache: RWKV state after a conversation's last turn, LRU within a byte budget.

An entry records the state after consuming a token sequence, the logits that followed,
how many tokens that was, and a hash of exactly those tokens. A later prompt whose first
`token_count` tokens hash the same can resume from the state and prefill only the rest.

Tombstones (erasure): `forget(ids, tombstone=True)` drops the entries and remembers the
ids for `Tombstones.ttl_s`; while an id is remembered `put` refuses its state, so a turn
that was still running when its family was erased cannot put the state back.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CacheEntry", "CacheStats", "PrefixHasher", "StateCache", "Tombstones", "prefix_hash", "resumes"]

_DIGEST = 16


class PrefixHasher:
    """Streaming hash of a token sequence; chunking does not change the digest."""

    __slots__ = ("_h", "count")

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self._h = hashlib.blake2b(digest_size=_DIGEST)
        self.count = 0
        if tokens:
            self.update(tokens)

    def update(self, tokens: Sequence[int]) -> PrefixHasher:
        self._h.update(np.asarray(tokens, dtype="<i4").tobytes())
        self.count += len(tokens)
        return self

    def copy(self) -> PrefixHasher:
        other = PrefixHasher.__new__(PrefixHasher)
        other._h = self._h.copy()
        other.count = self.count
        return other

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def prefix_hash(tokens: Sequence[int]) -> str:
    """blake2b over the tokens as little-endian int32 (same as PrefixHasher(tokens))."""
    return PrefixHasher(tokens).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """State (CPU tensors) after consuming `token_count` tokens whose hash is `prefix_hash`."""

    state: tuple[torch.Tensor, ...]
    logits: torch.Tensor | None
    token_count: int
    prefix_hash: str

    @property
    def nbytes(self) -> int:
        n = sum(t.numel() * t.element_size() for t in self.state)
        if self.logits is not None:
            n += self.logits.numel() * self.logits.element_size()
        return n


class Tombstones:
    """Erased conversation ids, each remembered for `ttl_s` seconds (thread-safe).

    Insertion order is expiry order (one TTL for all), so pruning pops from the front."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._until: OrderedDict[str, float] = OrderedDict()

    def _prune(self, now: float) -> None:
        while self._until:
            cid, until = next(iter(self._until.items()))
            if until > now:
                return
            del self._until[cid]

    def add(self, conv_ids: Iterable[str]) -> None:
        with self._lock:
            now = self._clock()
            self._prune(now)
            for cid in conv_ids:
                self._until.pop(cid, None)  # re-added: moves to the back with a new expiry
                self._until[cid] = now + self.ttl_s

    def __contains__(self, conv_id: object) -> bool:
        with self._lock:
            until = self._until.get(conv_id)  # type: ignore[call-overload]
            return until is not None and until > self._clock()

    def __len__(self) -> int:
        with self._lock:
            self._prune(self._clock())
            return len(self._until)


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    used_bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int
    rejected: int  # entries larger than the whole budget
    tombstones: int = 0  # erased conversation ids remembered


class StateCache:
    """Thread-safe LRU of CacheEntry by conversation id, bounded by total tensor bytes."""

    def __init__(self, budget_bytes: int, tombstones: Tombstones | None = None) -> None:
        if budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0")
        self.budget_bytes = int(budget_bytes)
        self.tombstones = tombstones if tombstones is not None else Tombstones(3600.0)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._used = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._rejected = 0

    def put(
        self,
        conv_id: str,
        state: Sequence[torch.Tensor],
        logits: torch.Tensor | None,
        token_count: int,
        prefix_hash: str,
    ) -> bool:
        """Store a CPU copy (replacing any entry for conv_id); False when over the budget
        or when conv_id was erased (a tombstone)."""
        if conv_id in self.tombstones:
            return False
        entry = CacheEntry(
            state=tuple(t.detach().to("cpu", copy=True) for t in state),
            logits=None if logits is None else logits.detach().to("cpu", torch.float32, copy=True),
            token_count=int(token_count),
            prefix_hash=prefix_hash,
        )
        size = entry.nbytes
        with self._lock:
            old = self._entries.pop(conv_id, None)
            if old is not None:
                self._used -= old.nbytes
            if conv_id in self.tombstones:  # erased while the copy was made
                return False
            if size > self.budget_bytes:
                self._rejected += 1
                return False
            while self._entries and self._used + size > self.budget_bytes:
                _, ev = self._entries.popitem(last=False)
                self._used -= ev.nbytes
                self._evictions += 1
            self._entries[conv_id] = entry
            self._used += size
            return True

    def peek(self, conv_id: str) -> CacheEntry | None:
        """The entry without touching LRU order or hit counts (to learn its token_count)."""
        with self._lock:
            return self._entries.get(conv_id)

    def get(self, conv_id: str, prefix_hash: str) -> CacheEntry | None:
        """The entry if present and its hash matches; counts a hit or a miss."""
        with self._lock:
            e = self._entries.get(conv_id)
            if e is None or e.prefix_hash != prefix_hash:
                self._misses += 1
                return None
            self._entries.move_to_end(conv_id)
            self._hits += 1
            return e

    def lookup(self, conv_id: str, tokens: Sequence[int]) -> CacheEntry | None:
        """The entry whose consumed tokens are a prefix of `tokens` (hash-checked), else None.

        An entry that consumed all of `tokens` matches only if it kept its logits.
        """
        e = self.peek(conv_id)
        if e is None or not resumes(e, tokens, check_hash=False):
            with self._lock:
                self._misses += 1
            return None
        return self.get(conv_id, prefix_hash(tokens[: e.token_count]))

    def would_hit(self, conv_id: str, tokens: Sequence[int]) -> bool:
        """Whether `lookup` would hit now, without counting or touching LRU order."""
        e = self.peek(conv_id)
        return e is not None and resumes(e, tokens)

    def forget(self, conv_ids: Iterable[str], *, tombstone: bool = False) -> int:
        """Drop entries; returns how many existed. With `tombstone` (erasure), also refuse
        their state for the tombstones' TTL (set before the entries go, so a concurrent
        `put` cannot slip in between)."""
        conv_ids = list(conv_ids)
        if tombstone:
            self.tombstones.add(conv_ids)
        n = 0
        with self._lock:
            for cid in conv_ids:
                e = self._entries.pop(cid, None)
                if e is not None:
                    self._used -= e.nbytes
                    n += 1
        return n

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._used = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, conv_id: object) -> bool:
        with self._lock:
            return conv_id in self._entries

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                entries=len(self._entries),
                used_bytes=self._used,
                budget_bytes=self.budget_bytes,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                rejected=self._rejected,
                tombstones=len(self.tombstones),
            )


def resumes(entry: CacheEntry, tokens: Sequence[int], *, check_hash: bool = True) -> bool:
    """Whether `entry` consumed a prefix of `tokens` and can resume them: a strict prefix,
    or all of them when it kept the logits that followed; the prefix hash-checked."""
    n = entry.token_count
    if n > len(tokens) or (n == len(tokens) and entry.logits is None):
        return False
    return not check_hash or prefix_hash(tokens[:n]) == entry.prefix_hash
