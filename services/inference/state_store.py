"""The shared second tier of conversation state (Redis), and the tier logic over both tiers.

A replica keeps each conversation's state after its last turn in its local `StateCache`.
With a shared store configured (`AVATARIO_INFERENCE_STATE_STORE_URL`), it also writes that
state to Redis after every completed turn, and on a local miss reads it there before
re-prefilling the history, so a conversation that moves to another replica (a pod lost,
scaled, drained) resumes exactly. Without a store the node behaves as before.

Entries. One key per conversation, ``{prefix}state:{<tag>}:<conversation id>`` (`<tag>`:
8 hex digits of the id's hash, a Redis Cluster hash tag, so a conversation's two keys share
a slot and the write script may touch both), holding `encode_entry`'s bytes: a header (format version, model fingerprint, consumed-token count and prefix hash)
and the state tensors, no logits (a chat turn always adds tokens after the cached prefix).
A reader accepts an entry only when the format version and the fingerprint equal its own
(`model_fingerprint`: weights, vocabulary, per-layer placement and dtypes), so a state from
another model, vocabulary or placement is never used, and only when its consumed tokens
are a prefix of the prompt (count and blake2b hash, as the local cache checks).
Entries expire after `ttl_s`.

Byte budget. Redis's own `maxmemory` with `maxmemory-policy volatile-lru` is the fleet's
budget (set by the operator; docs/operations.md): every key here carries a TTL and Redis
evicts the least recently used under pressure. The node caps one entry's size
(`max_entry_bytes`) and does not count entries: a fleet-wide count would need a shared
counter on every write, which Redis's eviction already makes unnecessary.

Erasure. `forget(ids, erased=True)` sets a tombstone key ``{prefix}erased:{<tag>}:<hash>``
(the id's blake2b, not the id: nothing of an erased conversation stays readable; TTL
`tombstone_s`) and deletes the entry in one transaction; writes go through a Lua script
that refuses to write when the tombstone exists, so a turn still running on any replica
cannot put an erased conversation's state back. The local cache keeps its own tombstones
(`StateCache.forget(..., tombstone=True)`), and `StateTier.check_turn` refuses a turn for
an erased conversation with FAILED_PRECONDITION (`ConversationErased`): the conversation is
not unknown to the caller (NOT_FOUND) but erased, and retrying cannot help.

Failures. Every store call has a short timeout and no retry; an error or a timeout counts
in the metrics (`StoreMetrics.error`), opens a short back-off (`retry_s`) during which
reads and writes are skipped, and the turn goes on as a local miss (re-prefill). Only an
erasure answers UNAVAILABLE when the store cannot be reached, so the caller retries it.
Serialisation runs in a worker thread: neither the engine thread nor the event loop
copies state bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import structlog
import torch

from services.common.errors import FailedPrecondition, Unavailable
from services.inference.state_cache import CacheEntry, StateCache, resumes

__all__ = [
    "CONVERSATION_ERASED",
    "FORMAT_VERSION",
    "ConversationErased",
    "EntryRejected",
    "RedisStateStore",
    "StateTier",
    "StoreError",
    "StoreMetrics",
    "decode_entry",
    "encode_entry",
    "model_fingerprint",
    "vocabulary_digest",
]

log = structlog.get_logger("avatario.inference.state_store")

FORMAT_VERSION = 1
CONVERSATION_ERASED = "CONVERSATION_ERASED"
_MAGIC = b"AVST"
# magic, format version, tensor count, model fingerprint, prefix hash, consumed tokens
_HEADER = struct.Struct("<4sHH16s16sQ")
_TENSOR = struct.Struct("<BQ")  # dtype code, element count
_DTYPES: dict[torch.dtype, int] = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3,
                                   torch.float64: 4}
_CODES = {v: k for k, v in _DTYPES.items()}
_SAMPLE = 4096  # elements hashed per weight tensor (evenly strided)


# --------------------------------------------------------------------------- fingerprint


def vocabulary_digest(tokenizer: Any) -> bytes:
    """blake2b over every id's text (id, length, UTF-8 bytes) and the vocabulary size."""
    h = hashlib.blake2b(digest_size=16)
    h.update(struct.pack("<Q", int(tokenizer.vocab_size)))
    for i in range(int(tokenizer.vocab_size)):
        piece = tokenizer.decode([i]).encode("utf-8", "surrogatepass")
        h.update(struct.pack("<QQ", i, len(piece)))
        h.update(piece)
    return h.digest()


def model_fingerprint(weights: Mapping[str, torch.Tensor], vocabulary: bytes,
                      placement: Sequence[tuple[str, str, int]], strategy: str) -> bytes:
    """16 bytes naming what a state is valid for: the weights (every tensor's name, shape and
    dtype, and `_SAMPLE` evenly strided values of it: any fine-tune or other checkpoint
    changes them), the vocabulary (`vocabulary_digest`), the state layout (device, dtype
    and size of every state slot, i.e. each layer's placement and dtype) and the strategy."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"format={FORMAT_VERSION};strategy={strategy}\n".encode())
    h.update(vocabulary)
    for device, dtype, n in placement:
        h.update(f"slot {device} {dtype} {n}\n".encode())
    for name in sorted(weights):
        t = weights[name]
        if not isinstance(t, torch.Tensor):
            continue
        h.update(f"{name} {tuple(t.shape)} {t.dtype}\n".encode())
        flat = t.detach().reshape(-1)
        if flat.numel() > _SAMPLE:
            flat = flat[:: flat.numel() // _SAMPLE][:_SAMPLE]
        h.update(flat.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.digest()


# --------------------------------------------------------------------------- entry format


class EntryRejected(Exception):
    """A stored entry this node must not use; `reason` is a metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_entry(entry: CacheEntry, fingerprint: bytes) -> bytes:
    """The entry's state as bytes (header, per-tensor dtype and size, raw data); no logits."""
    parts: list[bytes | memoryview] = [_HEADER.pack(
        _MAGIC, FORMAT_VERSION, len(entry.state), fingerprint,
        bytes.fromhex(entry.prefix_hash), entry.token_count)]
    data: list[memoryview] = []
    for t in entry.state:
        code = _DTYPES.get(t.dtype)
        if code is None:
            raise ValueError(f"state dtype {t.dtype} has no wire code")
        parts.append(_TENSOR.pack(code, t.numel()))
        data.append(memoryview(t.detach().cpu().contiguous().view(torch.uint8).numpy()))
    return b"".join([*parts, *data])


def decode_entry(blob: bytes, fingerprint: bytes) -> CacheEntry:
    """Parse `encode_entry`'s bytes; EntryRejected("format" | "fingerprint" | "corrupt")."""
    if len(blob) < _HEADER.size:
        raise EntryRejected("corrupt")
    magic, version, count, fp, digest, tokens = _HEADER.unpack_from(blob)
    if magic != _MAGIC or version != FORMAT_VERSION:
        raise EntryRejected("format")
    if fp != fingerprint:
        raise EntryRejected("fingerprint")
    pos = _HEADER.size
    specs = []
    for _ in range(count):
        if pos + _TENSOR.size > len(blob):
            raise EntryRejected("corrupt")
        code, numel = _TENSOR.unpack_from(blob, pos)
        pos += _TENSOR.size
        if code not in _CODES:
            raise EntryRejected("corrupt")
        specs.append((_CODES[code], numel))
    need = pos + sum(n * torch.empty((), dtype=dt).element_size() for dt, n in specs)
    if need != len(blob) or tokens < 1:
        raise EntryRejected("corrupt")
    raw = bytearray(blob[pos:])  # one writable copy; the tensors are views of it
    state: list[torch.Tensor] = []
    off = 0
    for dt, n in specs:
        size = n * torch.empty((), dtype=dt).element_size()
        state.append(torch.frombuffer(raw, dtype=dt, count=n, offset=off) if n else
                     torch.empty(0, dtype=dt))
        off += size
    return CacheEntry(state=tuple(state), logits=None, token_count=int(tokens),
                      prefix_hash=digest.hex())


# --------------------------------------------------------------------------- Redis


class StoreError(Exception):
    """A shared-store call failed: `op` (get, put, forget), `kind` (timeout, connection,
    backoff, error)."""

    def __init__(self, op: str, kind: str, detail: str = "") -> None:
        super().__init__(f"state store {op}: {kind}" + (f" ({detail})" if detail else ""))
        self.op = op
        self.kind = kind


def _id_digest(conv_id: str) -> str:
    return hashlib.blake2b(conv_id.encode(), digest_size=16).hexdigest()


# KEYS[1] entry, KEYS[2] tombstone; ARGV[1] bytes, ARGV[2] TTL in ms. 1: written, 0: erased.
_PUT_UNLESS_ERASED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class RedisStateStore:
    """Entries and tombstones in Redis (redis.asyncio), every call bounded by `timeout_s`."""

    def __init__(self, url: str, *, prefix: str = "avatario:inference:", ttl_s: float = 86400,
                 tombstone_s: float = 3600, timeout_s: float = 0.25, retry_s: float = 2.0,
                 client: Any = None, clock: Any = time.monotonic) -> None:
        if client is None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = aioredis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=30,
                max_connections=64, client_name="avatario-inference")
        self._r = client
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.tombstone_ms = int(tombstone_s * 1000)
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._clock = clock
        self._down_until = 0.0
        self._put = self._r.register_script(_PUT_UNLESS_ERASED)

    def entry_key(self, conv_id: str) -> str:
        digest = _id_digest(conv_id)
        return f"{self.prefix}state:{{{digest[:8]}}}:{conv_id}"

    def tombstone_key(self, conv_id: str) -> str:
        digest = _id_digest(conv_id)
        return f"{self.prefix}erased:{{{digest[:8]}}}:{digest}"

    async def _call(self, op: str, coro: Any, *, skip_when_down: bool = True) -> Any:
        if skip_when_down and self._clock() < self._down_until:
            coro.close()
            raise StoreError(op, "backoff")
        try:
            async with asyncio.timeout(self.timeout_s * 2):  # a bound beyond the socket's
                result = await coro
        except TimeoutError as exc:
            self._down_until = self._clock() + self.retry_s
            raise StoreError(op, "timeout") from exc
        except Exception as exc:  # noqa: BLE001 - every client failure degrades the same way
            import redis.exceptions as rexc

            kind = ("timeout" if isinstance(exc, rexc.TimeoutError) else
                    "connection" if isinstance(exc, (rexc.ConnectionError, OSError)) else "error")
            self._down_until = self._clock() + self.retry_s
            raise StoreError(op, kind, type(exc).__name__) from exc
        self._down_until = 0.0
        return result

    async def get(self, conv_id: str) -> tuple[bytes | None, bool]:
        """(the entry's bytes or None, whether the conversation is erased)."""
        blob, erased = await self._call(
            "get", self._r.mget([self.entry_key(conv_id), self.tombstone_key(conv_id)]))
        return blob, erased is not None

    async def put(self, conv_id: str, blob: bytes) -> bool:
        """Write with the TTL unless the conversation is erased (False then)."""
        done = await self._call("put", self._put(
            keys=[self.entry_key(conv_id), self.tombstone_key(conv_id)],
            args=[blob, self.ttl_ms]))
        return bool(done)

    async def forget(self, conv_ids: Sequence[str], *, erased: bool) -> list[str]:
        """Delete entries (and, for an erasure, set tombstones first, in the same
        transaction); returns the ids that had an entry. Tried even during a back-off."""

        async def run() -> list[Any]:
            async with self._r.pipeline(transaction=True) as pipe:
                for cid in conv_ids:
                    if erased:
                        pipe.set(self.tombstone_key(cid), b"1", px=self.tombstone_ms)
                    pipe.delete(self.entry_key(cid))
                return await pipe.execute()

        results = await self._call("forget", run(), skip_when_down=False)
        deleted = results[1::2] if erased else results
        return [cid for cid, n in zip(conv_ids, deleted, strict=True) if n]

    async def aclose(self) -> None:
        await self._r.aclose()


# --------------------------------------------------------------------------- the tier


class StoreMetrics(Protocol):
    def store_seconds(self, op: str, seconds: float) -> None: ...
    def store_error(self, op: str, kind: str) -> None: ...
    def store_rejected(self, reason: str) -> None: ...


class _NoMetrics:
    def store_seconds(self, op: str, seconds: float) -> None: ...
    def store_error(self, op: str, kind: str) -> None: ...
    def store_rejected(self, reason: str) -> None: ...


class ConversationErased(FailedPrecondition):
    def __init__(self, conv_id: str) -> None:
        super().__init__("the conversation was erased; start a new conversation",
                         violation_type=CONVERSATION_ERASED, subject="conversation_id",
                         metadata={"conversation_id": conv_id})


class StateTier:
    """The local cache and the optional shared store, as the chat flow uses them.

    `check_turn` before a turn; `resume` for the entry to hand the engine (None on a local
    hit, without a store, or when the store has nothing usable); `publish` after a turn was
    closed (in the background: `publish_soon`); `forget` for ForgetConversations."""

    def __init__(self, cache: StateCache, store: RedisStateStore | None, fingerprint: bytes,
                 *, max_entry_bytes: int = 64 << 20, metrics: StoreMetrics | None = None) -> None:
        self.cache = cache
        self.store = store
        self.fingerprint = fingerprint
        self.max_entry_bytes = max_entry_bytes
        self.metrics: StoreMetrics = metrics or _NoMetrics()
        self._pending: set[asyncio.Task[bool]] = set()

    def check_turn(self, conv_id: str) -> None:
        """ConversationErased when this replica holds a tombstone for the conversation."""
        if conv_id in self.cache.tombstones:
            raise ConversationErased(conv_id)

    async def _timed(self, op: str, coro: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await coro
        except StoreError as exc:
            self.metrics.store_error(op, exc.kind)
            if exc.kind != "backoff":
                log.warning("state_store_failed", op=op, kind=exc.kind, error=str(exc))
            raise
        finally:
            self.metrics.store_seconds(op, time.perf_counter() - t0)

    async def resume(self, conv_id: str, tokens: Sequence[int]) -> CacheEntry | None:
        """The shared entry that resumes `tokens` when the local cache would miss, else None.
        Raises ConversationErased when the store holds the conversation's tombstone."""
        if self.store is None or self.cache.would_hit(conv_id, tokens):
            return None
        try:
            blob, erased = await self._timed("get", self.store.get(conv_id))
        except StoreError:
            return None
        if erased:
            self.cache.forget([conv_id], tombstone=True)
            raise ConversationErased(conv_id)
        if blob is None:
            return None
        try:
            entry = await asyncio.to_thread(decode_entry, blob, self.fingerprint)
        except EntryRejected as exc:
            self.metrics.store_rejected(exc.reason)
            return None
        if not resumes(entry, tokens):
            self.metrics.store_rejected("prefix")  # the history the caller sent diverged
            return None
        return entry

    async def publish(self, conv_id: str) -> bool:
        """Write the conversation's local entry to the store; False when not written."""
        if self.store is None or conv_id in self.cache.tombstones:
            return False
        entry = self.cache.peek(conv_id)
        if entry is None:
            return False
        blob = await asyncio.to_thread(encode_entry, entry, self.fingerprint)
        if len(blob) > self.max_entry_bytes:
            self.metrics.store_rejected("size")
            return False
        try:
            written = await self._timed("put", self.store.put(conv_id, blob))
        except StoreError:
            return False
        if not written:  # erased on another replica meanwhile
            self.cache.forget([conv_id], tombstone=True)
        return written

    def publish_soon(self, conv_id: str) -> None:
        """`publish` in the background (the reply is not held up by the write)."""
        if self.store is None:
            return
        task = asyncio.get_running_loop().create_task(self.publish(conv_id))
        self._pending.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[bool]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug, never a store error
            log.error("state_store_publish_failed", error=repr(task.exception()))

    async def forget(self, conv_ids: Iterable[str], *, erased: bool) -> int:
        """Drop the conversations' state here and in the store (an erasure also leaves
        tombstones); returns how many had state in either. An erasure that cannot reach the
        store raises Unavailable (retry); a plain forget only logs."""
        ids = list(dict.fromkeys(conv_ids))
        had = {cid for cid in ids if cid in self.cache}
        self.cache.forget(ids, tombstone=erased)
        if self.store is not None and ids:
            try:
                had.update(await self._timed("forget", self.store.forget(ids, erased=erased)))
            except StoreError as exc:
                if erased:
                    raise Unavailable("the shared state store is unreachable; retry the "
                                      "erasure") from exc
        return len(had)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Let pending writes finish (bounded), then close the store's connections."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)
        if self.store is not None:
            await self.store.aclose()
