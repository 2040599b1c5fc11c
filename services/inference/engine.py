"""Continuous-batching generation engine: one engine thread, asyncio handles for callers.

Each engine step: reap cancelled / timed-out requests, spend a bounded prefill budget
(turn-closing work first, then admitting queued requests with chunked prefill; the round's
pieces of every prefilling sequence go through the model in one pass), then one batched
decode step for every decoding sequence, sampling per request. Events go to each
handle's asyncio.Queue through `loop.call_soon_threadsafe`; the event loop never runs torch.

Cache contract (conversation state cache). A request carries the FULL prompt token ids
(system + context + history + new message, ending where the reply starts). On a cache
entry for the conversation whose consumed tokens are a prefix of the prompt (checked by
token count and blake2b hash), only the rest of the prompt is prefilled, so the logits equal
a full re-prefill. When a reply ends with 'stop', 'stop_sequence' or 'length', the cached
state has consumed exactly

    prompt_tokens + tokenizer.encode(FinishEvent.text) + terminator

where terminator = request.turn_terminator_tokens (default tokenizer.encode("\\n\\n")).
Build the next turn's prompt by concatenating per-segment encodings so it starts with those
tokens; any other prompt is a clean miss (full prefill), never a wrong resume. Cancelled or
failed replies are not cached (an older entry stays valid for its own prefix).

Settled replies (`GenerationRequest.settle_reply`). The text a caller sends back as history
is often not the engine's text: the safety guard rewrites claims and appends notes, control
characters are dropped, a reply with a blank line is normalised. Closing the turn with the
engine's text then makes the next turn miss. With `settle_reply`, a reply that ends with
'stop', 'stop_sequence' or 'length' keeps its final state (`FinishEvent.closable`) until the
caller settles it: `await handle.close_turn(reply_tokens)` closes the turn with exactly
those tokens (the tokens the next prompt will hold for the reply) + terminator, from the
live state when they continue what was sampled, else from the post-prompt state, and
returns the number of tokens the cached state consumed (0: not cached).

Tiers (`FinishEvent.cache_tier`): "local" when the state cache resumed the prompt, "shared"
when `GenerationRequest.resume` (an entry read from the shared state store by the caller)
did, "miss" when the whole prompt was prefilled; "" when the request does not use the cache.

Scoring requests (`GenerationRequest.score_only`, or `Engine.score`): the prompt is prefilled
on a fresh state (the state cache is neither read nor written), through the same queue,
slots, prefill rounds, deadlines and cancellation as a chat; nothing is sampled. The request
finishes with reason "scored" and `FinishEvent.scores`: the next-token logits after the
prompt (float32, [vocab]), or the log-probabilities of `score_token_ids` when given. The
logits are those of the engine's prefill path, which agrees with the package's forward.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
import torch

from services.common.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.inference.decode_slots import MAX_BUCKET, DecodeSlots, supports_slots
from services.inference.device_sampling import sample_batch_device
from services.inference.model_family import as_batched
from services.inference.reasoning import ReasoningFilter
from services.inference.rwkv_batched import State, StateBatch
from services.inference.sampling import (
    DEFAULT_MAX_TOKENS_LIMIT,
    IncrementalDecoder,
    Sampler,
    SamplingParams,
    StopChecker,
    Tokenizer,
    sample_batch,
)
from services.inference.state_cache import CacheEntry, StateCache, prefix_hash, resumes

__all__ = [
    "Engine",
    "EngineCallbacks",
    "EngineConfig",
    "DEADLINE_EXCEEDED",
    "FinishEvent",
    "FinishReason",
    "GenerationRequest",
    "RequestHandle",
    "ScoreFailed",
    "TokenEvent",
    "CacheTier",
]

log = structlog.get_logger("avatario.inference.engine")

FinishReason = Literal["stop", "length", "stop_sequence", "cancelled", "error", "scored"]
CacheTier = Literal["local", "shared", "miss", ""]
_CACHEABLE = ("stop", "length", "stop_sequence")
DEADLINE_EXCEEDED = "deadline_exceeded"  # FinishEvent.detail of a request stopped at its deadline


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_running: int = 16  # sequences prefilling or decoding at once
    max_queue: int = 64  # requests waiting for a running slot
    prefill_chunk_len: int = 256  # a sequence's tokens per prefill round
    prefill_tokens_per_step: int = 512  # a round's tokens (all sequences), between decode steps
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT
    max_prompt_tokens: int = 16384
    turn_end: str = "\n\n"  # Raven/World turn end: finish 'stop', not part of the text
    eos_token_id: int | None = 0  # <|endoftext|>: finish 'stop'
    retry_after_s: float = 1.0  # floor of the ResourceExhausted retry hint
    idle_wait_s: float = 0.05
    # torch intra-op threads while a single sequence decodes on the CPU (0: leave torch's
    # setting): one row is bound by memory, not cores, and the other cores serve the event
    # loop meanwhile. Set when a lone sequence starts decoding and restored when a batch
    # forms, a prompt is prefilled or the engine stops (not around every step: changing the
    # thread count costs about a millisecond). Models whose head is on a GPU keep every thread.
    single_row_threads: int = 1
    # RWKV-7 G1: a `<think>...</think>` block the model opens is never streamed nor part of
    # the reply's text (services/inference/reasoning.py).
    reasoning_block: bool = False
    # GPU speed (issue 15). slot_decode: decode states in preallocated slots, steps padded
    # to batch-size buckets (decode_slots.py); "auto" = where the head and states are on a
    # GPU and the model has the slot interface. cuda_graphs: on the slot path, capture each bucket's
    # step in a CUDA graph where every state and the head are on one CUDA device
    # (AVATARIO_INFERENCE_CUDA_GRAPHS). device_sampling: sample on the logits' device
    # (device_sampling.py); "auto" = on the slot path with the head on a GPU (on the CPU the
    # host sampler is faster: bench/bench_sampler.py).
    slot_decode: Literal["auto", "on", "off"] = "auto"
    cuda_graphs: bool = True
    device_sampling: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        if min(self.max_running, self.prefill_chunk_len, self.prefill_tokens_per_step,
               self.max_tokens_limit, self.max_prompt_tokens) < 1 or self.max_queue < 0:
            raise ValueError("EngineConfig limits must be positive (max_queue >= 0)")
        if self.single_row_threads < 0:
            raise ValueError("EngineConfig.single_row_threads must be >= 0")
        for name in ("slot_decode", "device_sampling"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ValueError(f"EngineConfig.{name} must be auto, on or off")


@dataclass(slots=True)
class GenerationRequest:
    conversation_id: str
    prompt_tokens: list[int]  # the full prompt; see the module docstring for the cache contract
    params: SamplingParams = field(default_factory=SamplingParams)
    deadline: float | None = None  # on the engine clock (time.monotonic by default)
    use_cache: bool = True
    store_cache: bool = True
    turn_terminator_tokens: list[int] | None = None  # default: encode(config.turn_end)
    request_id: str = ""
    # Scoring (see the module docstring): prefill only, fresh state, never cached; finish
    # with the logits after the prompt, or the log-probs of these ids when given.
    score_only: bool = False
    score_token_ids: tuple[int, ...] | None = None
    # The shared tier: an entry the caller read from the shared store, used when the local
    # cache misses and it resumes the prompt (hash-checked like a local entry).
    resume: CacheEntry | None = None
    # The caller closes the turn with the settled reply's tokens (see the module docstring).
    settle_reply: bool = False


@dataclass(frozen=True, slots=True)
class TokenEvent:
    text: str
    token_ids: tuple[int, ...]  # tokens sampled since the previous event


@dataclass(frozen=True, slots=True)
class FinishEvent:
    reason: FinishReason
    text: str  # the whole reply as streamed (stop strings excluded)
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens served from the state cache
    cache_hit: bool
    ttft_s: float
    tokens_per_second: float
    detail: str = ""  # e.g. DEADLINE_EXCEEDED, or the error message
    cached_state_tokens: int = 0  # tokens the state stored for the next turn consumed (0: none)
    scores: torch.Tensor | None = None  # reason "scored": logits [vocab] or log-probs [ids]
    cache_tier: CacheTier = ""  # where the prompt's state came from (module docstring)
    closable: bool = False  # settle_reply: the handle's close_turn can cache the turn


Event = TokenEvent | FinishEvent


class ScoreFailed(Exception):
    """`Engine.score` ended without scores: `reason` is the FinishEvent's ("cancelled",
    "error") and `detail` its detail (e.g. DEADLINE_EXCEEDED, "shutdown")."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"scoring request {reason}" + (f": {detail}" if detail else ""))
        self.reason = reason
        self.detail = detail


class EngineCallbacks:
    """Metric hooks (no-ops here; subclass to wire Prometheus). Called on the engine thread."""

    def on_step(self, batch_size: int, step_seconds: float) -> None: ...
    def on_tokens(self, n: int) -> None: ...
    def on_prefill(self, n_tokens: int, seconds: float) -> None: ...
    def on_finish(self, event: FinishEvent) -> None: ...
    def on_admit(self, prompt_tokens: int, cached_tokens: int) -> None:
        """A request got a running slot: its prompt length and how much the cache served."""

    def on_inter_token(self, gaps_s: Sequence[float]) -> None:
        """Seconds between each decoding sequence's previous token and the one just sampled
        (one value per sequence in the step)."""

    def on_cache_lookup(self, tier: str) -> None:
        """A request using the cache was admitted: the tier that served it (local, shared,
        miss)."""


class RequestHandle:
    """Caller's side of one request: `async for event in handle`, `cancel()`."""

    def __init__(self, engine: Engine, request: GenerationRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.request_id = request.request_id
        self._engine = engine
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = False
        self.final: FinishEvent | None = None
        self._parked: _Seq | None = None  # settle_reply: the ended sequence awaiting close_turn

    def cancel(self) -> None:
        """Ask the engine to drop this request; its slot frees within one engine step."""
        self.cancelled = True
        self._parked = None
        self._engine._wake.set()

    async def close_turn(self, reply_tokens: Sequence[int] | None) -> int:
        """Settle a `closable` reply: cache the state after prompt + reply_tokens +
        terminator. Returns the tokens that state consumed, 0 when nothing was cached (not
        closable, None given, an erased conversation, over the budget, engine stopping)."""
        s, self._parked = self._parked, None
        if s is None or reply_tokens is None:
            return 0
        future: asyncio.Future[int] = self._loop.create_future()
        s.close_future = future
        if not self._engine._submit_close(s, list(reply_tokens)):
            return 0
        return await future

    def _deliver(self, ev: Event) -> None:  # engine thread
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, ev)
        except RuntimeError:  # loop closed: nobody listens any more
            self.cancelled = True

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while self.final is None:
            ev = await self._queue.get()
            if isinstance(ev, FinishEvent):
                self.final = ev
            yield ev

    async def result(self) -> FinishEvent:
        """Drain the stream and return the final event."""
        async for _ in self:
            pass
        assert self.final is not None
        return self.final


class _Seq:
    """Engine-thread bookkeeping of one request."""

    def __init__(self, handle: RequestHandle, sampler: Sampler, decoder: IncrementalDecoder,
                 stopper: StopChecker, t_submit: float) -> None:
        self.handle = handle
        self.req = handle.request
        self.sampler = sampler
        self.decoder = decoder
        self.stopper = stopper
        self.t_submit = t_submit
        self.t_first = 0.0
        self.t_last = 0.0
        self.todo: list[int] = []  # tokens still to prefill (prompt, then turn closing)
        self.state: State | None = None
        self.logits: torch.Tensor | None = None
        self.prompt_state: State | None = None
        self.generated: list[int] = []
        self.fed = 0  # generated tokens already fed to the model
        self.text: list[str] = []
        self.ids_since_event: list[int] = []
        self.cache_hit = False
        self.cached_tokens = 0
        self.cache_tier: CacheTier = ""
        self.close_future: asyncio.Future[int] | None = None  # settle_reply: close_turn's
        self.reason: FinishReason | None = None
        self.done = False
        self.detail = ""
        self.close_tokens: list[int] | None = None  # full token list the cached state consumes
        self.reasoning: ReasoningFilter | None = None  # EngineConfig.reasoning_block
        self.prefill_failed = False


class Engine:
    """Owns one engine thread; `submit` from the event loop, iterate the returned handle."""

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        *,
        cache: StateCache | None = None,
        config: EngineConfig | None = None,
        callbacks: EngineCallbacks | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bm = as_batched(model)  # RWKV-4 or RWKV-7 (services/inference/model_family.py)
        self.tokenizer = tokenizer
        self.cache = cache
        self.config = config or EngineConfig()
        self.callbacks = callbacks or EngineCallbacks()
        self.clock = clock
        self._terminator = list(tokenizer.encode(self.config.turn_end)) if self.config.turn_end else []
        self._inbox: queue.SimpleQueue[_Seq] = queue.SimpleQueue()
        self._close_inbox: queue.SimpleQueue[tuple[_Seq, list[int]]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._outstanding = 0
        self._waiting: deque[_Seq] = deque()
        self._prefilling: list[_Seq] = []
        self._closing: list[_Seq] = []
        self._decoding: list[_Seq] = []
        self._slots = self._slot_batch()
        cfg = self.config
        self._device_sampling = cfg.device_sampling == "on" or (
            cfg.device_sampling == "auto" and self._slots is not None
            and not self.bm.head_on_cpu)
        self._batch: StateBatch = self._fresh_batch()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._stop_at: float | None = None  # clock time after which everything is cancelled
        self._avg_request_s = 1.0
        self.steps = 0
        self._wide_threads = 0  # torch threads when the engine thread started (0: not yet)
        self._threads_now = 0

    def _slot_batch(self) -> DecodeSlots | None:
        """The preallocated slot states (EngineConfig.slot_decode), or None."""
        mode, cap = self.config.slot_decode, self.config.max_running
        fits = supports_slots(self.bm) and cap <= MAX_BUCKET
        if mode == "on" and not fits:
            raise ValueError("slot_decode='on' needs a batched model with the slot interface "
                             f"(state_layout, step_states) and max_running <= {MAX_BUCKET}")
        if mode == "off" or not fits:
            return None
        if mode == "auto" and (self.bm.head_on_cpu or not any(
                torch.device(d).type == "cuda" for d, _dt, _w in self.bm.state_layout())):
            return None
        return DecodeSlots(self.bm, cap, cuda_graphs=self.config.cuda_graphs)

    def _fresh_batch(self) -> StateBatch:
        if self._slots is not None:
            self._slots.clear()
            return self._slots
        return self.bm.new_batch()

    # ----- caller side

    def start(self) -> None:
        if self._thread is not None:
            return
        self._accepting = True
        self._stop_at = None
        self._thread = threading.Thread(target=self._run, name="inference-engine", daemon=True)
        self._thread.start()

    def warmup(self, token: int = 0) -> float:
        """The readiness check, before serving: a 1-token forward through the package, a
        2-token prefill, and decode steps for a batch of one and of two (twice each: the
        package's TorchScript profiles on the first call and optimises on the next, so the
        first requests do not pay for it). Every output must be finite logits over the
        vocabulary. Call before `start()`. Returns the seconds it took; raises RuntimeError
        naming what failed."""
        if self._thread is not None:
            raise RuntimeError("warmup() must run before start()")
        t0 = time.perf_counter()
        v = self.bm.vocab_size
        tok = min(max(int(token), 0), v - 1)

        def check(what: str, logits: torch.Tensor, rows: int) -> None:
            if logits.dim() not in (1, 2) or logits.shape[-1] != v or logits.numel() != rows * v:
                raise RuntimeError(f"warm-up {what}: logits of shape {tuple(logits.shape)}, "
                                   f"expected {rows} x {v}")
            if not bool(torch.isfinite(logits).all()):
                raise RuntimeError(f"warm-up {what}: non-finite logits (NaN or inf); check "
                                   "the checkpoint and the strategy's dtype")

        logits, state = self.bm.prefill([tok], None, 1)
        check("1-token forward", logits, 1)
        logits, _ = self.bm.prefill([tok, tok], None, 2)
        check("2-token prefill", logits, 1)
        for rows in (1, 2):
            batch = self.bm.new_batch([state] * rows)
            for _ in range(2):
                check(f"decode step of {rows}", self.bm.step([tok] * rows, batch), rows)
        graphs = 0
        if self._slots is not None:  # the slot path, its graphs captured now
            graphs = self._slots.capture_all()
            for rows in (1, 2):
                self._slots.extend([state] * rows)
                check(f"slot decode step of {rows}", self._slots.step([tok] * rows), rows)
                self._slots.clear()
        seconds = time.perf_counter() - t0
        log.info("engine_warmed_up", seconds=round(seconds, 3), batched=self.bm.batched,
                 slots=self._slots is not None, cuda_graphs=graphs,
                 device_sampling=self._device_sampling)
        return seconds

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Queue a request (call from the event loop). Raises InvalidArgument,
        ResourceExhausted (queue full) or Unavailable (not running)."""
        cfg = self.config
        if not self._accepting:
            raise Unavailable("inference engine is not running")
        request.params.validate(cfg.max_tokens_limit)
        toks = request.prompt_tokens
        if not toks:
            raise InvalidArgument.field("prompt_tokens", "must not be empty")
        if len(toks) > cfg.max_prompt_tokens:
            raise InvalidArgument.field("prompt_tokens", f"at most {cfg.max_prompt_tokens} tokens")
        v = self.bm.vocab_size
        if min(toks) < 0 or max(toks) >= v:
            raise InvalidArgument.field("prompt_tokens", f"token ids must be in [0, {v})")
        ids = request.score_token_ids
        if ids is not None:
            if not request.score_only:
                raise InvalidArgument.field("score_token_ids", "only for a scoring request")
            if not ids or min(ids) < 0 or max(ids) >= v:
                raise InvalidArgument.field("score_token_ids", f"1 or more ids in [0, {v})")
        if request.score_only:  # a fresh state, never cached (see the module docstring)
            request.use_cache = request.store_cache = False
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._accepting:
                raise Unavailable("inference engine is stopping")
            if self._outstanding >= cfg.max_running + cfg.max_queue:
                backlog = self._outstanding - cfg.max_running + 1
                retry = max(cfg.retry_after_s, self._avg_request_s * backlog / cfg.max_running)
                raise ResourceExhausted("inference queue is full", retry_after_s=min(retry, 60.0))
            if not request.request_id:
                request.request_id = f"gen-{next(self._ids)}"
            handle = RequestHandle(self, request, loop)
            p = request.params
            stops = [(cfg.turn_end, "stop")] + [(s, "stop_sequence") for s in p.stop]
            seq = _Seq(handle, Sampler(p, v), IncrementalDecoder(self.tokenizer),
                       StopChecker(stops), self.clock())
            if cfg.reasoning_block:
                seq.reasoning = ReasoningFilter()
            self._outstanding += 1
            self._inbox.put(seq)  # under the lock: stop() cannot slip in between
        self._wake.set()
        return handle

    async def score(self, prompt_tokens: Sequence[int],
                    token_ids: Sequence[int] | None = None, *,
                    deadline: float | None = None, request_id: str = "") -> torch.Tensor:
        """Prefill `prompt_tokens` on a fresh state and return the next-token logits
        (float32 [vocab]), or the log-probs of `token_ids` (in their order). Queued like a
        chat (ResourceExhausted when full); `deadline` on the engine clock. Raises
        ScoreFailed when the engine cancels it (deadline, shutdown) or its prefill fails;
        a cancelled caller cancels the request, which frees its slot within one step."""
        handle = self.submit(GenerationRequest(
            conversation_id="", prompt_tokens=list(prompt_tokens), deadline=deadline,
            request_id=request_id, score_only=True,
            # nothing is generated: ask for one token so any max_tokens limit admits it
            params=SamplingParams(max_tokens=1),
            score_token_ids=tuple(int(t) for t in token_ids) if token_ids is not None else None))
        try:
            final = await handle.result()
        except BaseException:  # cancelled (e.g. asyncio.timeout): drop it in the engine too
            handle.cancel()
            raise
        if final.reason != "scored" or final.scores is None:
            raise ScoreFailed(final.reason, final.detail)
        return final.scores

    def turn_tokens(self, prompt_tokens: Sequence[int], reply_text: str,
                    terminator: Sequence[int] | None = None) -> list[int]:
        """The exact tokens a cached state consumed after a reply: prompt + encode(reply) +
        terminator (default encode(config.turn_end)). The next turn's prompt must start so."""
        term = self._terminator if terminator is None else terminator
        reply = list(self.tokenizer.encode(reply_text)) if reply_text else []
        return [*prompt_tokens, *reply, *term]

    def forget(self, conversation_ids: Sequence[str], *, tombstone: bool = False) -> int:
        if self.cache is None:
            return 0
        return self.cache.forget(conversation_ids, tombstone=tombstone)

    def _submit_close(self, s: _Seq, reply_tokens: list[int]) -> bool:
        """Queue a parked sequence's turn closing (from RequestHandle.close_turn)."""
        with self._lock:
            if not self._accepting:
                return False
            self._close_inbox.put((s, reply_tokens))  # under the lock, as in submit
        self._wake.set()
        return True

    def queue_depth(self) -> int:
        """Requests accepted but not yet admitted to a running slot (approximate)."""
        return len(self._waiting) + self._inbox.qsize()

    def outstanding(self) -> int:
        """Requests accepted and not yet finished (queued, prefilling or decoding)."""
        with self._lock:
            return self._outstanding

    def running_count(self) -> int:
        return len(self._prefilling) + len(self._decoding)

    def stop(self, grace_s: float = 0.0, join_timeout: float | None = 30.0) -> None:
        """Stop accepting; let requests finish for up to grace_s, cancel the rest, join."""
        with self._lock:
            self._accepting = False
        self._stop_at = self.clock() + max(0.0, grace_s)
        self._wake.set()
        if self._thread is not None:
            self._thread.join(join_timeout)
            self._thread = None
        while True:  # closings that came after the thread's last look: nothing cached
            try:
                s, _ = self._close_inbox.get_nowait()
            except queue.Empty:
                break
            self._resolve_close(s, 0)

    async def astop(self, grace_s: float = 0.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop, grace_s)

    # ----- engine thread

    def _run(self) -> None:
        self._wide_threads = self._threads_now = torch.get_num_threads()
        try:
            self._loop()
        finally:
            self._use_threads(self._wide_threads)

    def _use_threads(self, n: int) -> None:
        if n != self._threads_now:
            torch.set_num_threads(n)
            self._threads_now = n

    def _decode_threads(self, rows: int) -> int:
        single = self.config.single_row_threads
        if rows == 1 and 0 < single < self._wide_threads and self.bm.head_on_cpu:
            return single
        return self._wide_threads

    def _loop(self) -> None:
        while True:
            self._wake.clear()
            self._take_inbox()
            if self._stop_at is not None and self._idle():
                self._take_inbox()  # anything accepted before stop() took the lock
                if self._idle():
                    return
                continue
            try:
                worked = self._step()
            except Exception as exc:  # noqa: BLE001 - never let the thread die
                log.exception("engine_step_failed")
                self._fail_all(f"engine error: {exc}")
                worked = True
            if not worked:
                self._wake.wait(self.config.idle_wait_s)

    def _idle(self) -> bool:
        return not (self._waiting or self._prefilling or self._decoding or self._closing)

    def _take_inbox(self) -> None:
        while True:
            try:
                self._waiting.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        while True:
            try:
                s, reply = self._close_inbox.get_nowait()
            except queue.Empty:
                return
            self._close(s, reply)

    def _step(self) -> bool:
        self._reap()
        worked = self._prefill_phase()
        if self._decoding:
            self._decode_step()
            worked = True
        return worked

    def _reap(self) -> None:
        now = self.clock()
        force = self._stop_at is not None and now >= self._stop_at

        def dead(s: _Seq) -> bool:
            if s.handle.cancelled or force:
                s.detail = "shutdown" if force and not s.handle.cancelled else ""
                return True
            if s.req.deadline is not None and now >= s.req.deadline:
                s.detail = DEADLINE_EXCEEDED
                return True
            return False

        for s in [s for s in self._waiting if dead(s)]:
            self._waiting.remove(s)
            self._finalize(s, "cancelled")
        for s in [s for s in self._prefilling if dead(s)]:
            self._prefilling.remove(s)
            self._finalize(s, "cancelled")
        gone = [s for s in self._decoding if dead(s)]
        if gone:
            keep = [i for i, s in enumerate(self._decoding) if s not in gone]
            self._decoding = [self._decoding[i] for i in keep]
            self._batch.keep(keep)
            for s in gone:
                self._finalize(s, "cancelled")

    def _admit(self, s: _Seq) -> None:
        prompt = s.req.prompt_tokens
        entry = None
        if self.cache is not None and s.req.use_cache and not s.req.score_only:
            entry = self.cache.lookup(s.req.conversation_id, prompt)
            s.cache_tier = "local"
            shared = s.req.resume
            if entry is None and shared is not None and resumes(shared, prompt):
                entry, s.cache_tier = shared, "shared"
            if entry is None:
                s.cache_tier = "miss"
            s.req.resume = None  # the request holds no state copy past its admission
            self._cb("on_cache_lookup", s.cache_tier)
        if entry is not None:
            s.cache_hit = True
            s.cached_tokens = entry.token_count
            s.state = self.bm.to_model(entry.state)
            s.logits = entry.logits
            s.todo = list(prompt[entry.token_count :])
        else:
            s.todo = list(prompt)
        self._prefilling.append(s)
        self._cb("on_admit", len(prompt), s.cached_tokens)

    def _prefill_phase(self) -> bool:
        """Admit waiting requests, prefill this round's pieces, and move the sequences whose
        prompt (or turn closing) is done on: to decoding, or to the cache and their end.

        A round takes each pending sequence's next piece (at most `prefill_chunk_len`
        tokens), in order, until `prefill_tokens_per_step` tokens, and feeds all the pieces
        in one `prefill_many` call: a burst of new conversations costs about one pass over
        their tokens, not one pass per conversation. Then one decode step runs."""
        cfg = self.config
        while self._waiting and self.running_count() < cfg.max_running:
            self._admit(self._waiting.popleft())
        if not (self._closing or self._prefilling):
            return False
        budget = cfg.prefill_tokens_per_step
        jobs: list[tuple[_Seq, int]] = []
        for s in (*self._closing, *self._prefilling):
            if s.todo and budget > 0:
                n = min(cfg.prefill_chunk_len, budget, len(s.todo))
                jobs.append((s, n))
                budget -= n
        if jobs:
            self._use_threads(self._wide_threads)
            self._prefill_pieces(jobs)
        for group in (self._closing, self._prefilling):
            for s in [s for s in group if not s.todo]:
                group.remove(s)
                if s.prefill_failed and s.close_future is not None:
                    self._resolve_close(s, 0)  # a settled reply's closing failed: not cached
                elif s.prefill_failed:  # a failed turn closing keeps the reply's reason
                    self._finalize(s, s.reason or "error")
                elif group is self._closing:
                    self._store_and_finalize(s)
                elif s.req.score_only:
                    self._finish_score(s)
                else:
                    self._start_decoding(s)
        return True

    def _prefill_pieces(self, jobs: list[tuple[_Seq, int]]) -> None:
        """Feed jobs' pieces (sequence, tokens from its todo) in one pass. If that pass
        fails, each piece is retried alone, so only the sequences that fail by themselves
        end with an error."""
        t0 = time.perf_counter()
        results: list[tuple[torch.Tensor, State] | Exception]
        try:
            results = list(self.bm.prefill_many([(s.todo[:n], s.state) for s, n in jobs]))
        except Exception:  # noqa: BLE001
            log.exception("prefill_batch_failed", sequences=len(jobs))
            results = []
            for s, n in jobs:
                try:
                    results.append(self.bm.prefill(s.todo[:n], s.state, n))
                except Exception as exc:  # noqa: BLE001
                    log.exception("prefill_failed", request_id=s.req.request_id)
                    results.append(exc)
        fed = 0
        for (s, n), res in zip(jobs, results, strict=True):
            if isinstance(res, Exception):
                s.todo, s.prefill_failed = [], True
                s.detail = f"prefill error: {res}"
            else:
                s.logits, s.state = res
                del s.todo[:n]
                fed += n
        if fed:
            self._cb("on_prefill", fed, time.perf_counter() - t0)

    def _finish_score(self, s: _Seq) -> None:
        """A scoring request's prompt is prefilled: answer with its logits, sample nothing."""
        assert s.logits is not None
        logits = s.logits.float()
        ids = s.req.score_token_ids
        if ids is not None:
            scores = torch.log_softmax(logits, dim=-1)[list(ids)].clone()
        else:
            scores = logits.clone()
        self._finalize(s, "scored", scores=scores)

    def _start_decoding(self, s: _Seq) -> None:
        assert s.logits is not None and s.state is not None
        s.prompt_state = s.state
        if self._device_sampling:
            tok = sample_batch_device([s.sampler], s.logits.reshape(1, -1), [0])[0]
        else:
            tok = s.sampler.sample(s.logits)
        self._accept(s, tok)
        self._cb("on_tokens", 1)
        if s.reason is None:
            self._batch.append(s.state)
            self._decoding.append(s)
            s.state = None
        else:
            self._end(s, s.state)

    def _decode_step(self) -> None:
        t0 = time.perf_counter()
        seqs = self._decoding
        tokens = [s.generated[-1] for s in seqs]
        self._use_threads(self._decode_threads(len(seqs)))
        if self._slots is not None:  # valid until the next step
            logits = self._slots.step(tokens)
        else:
            logits = self.bm.step(tokens, self._batch)
        samplers = [s.sampler for s in seqs]
        if self._device_sampling:  # a request's k-th token draws with counter k
            sampled = sample_batch_device(samplers, logits, [len(s.generated) for s in seqs])
        else:
            sampled = sample_batch(samplers, logits.float().cpu())
        keep: list[int] = []
        ended: list[tuple[_Seq, State | None]] = []
        gaps: list[float] = []
        for i, (s, tok) in enumerate(zip(seqs, sampled, strict=True)):
            s.fed += 1
            before = s.t_last
            self._accept(s, tok)
            gaps.append(s.t_last - before)
            if s.reason is None:
                keep.append(i)
            else:
                # the cached turn may resume from them (a host copy)
                s.logits = logits[i].to("cpu", torch.float32, copy=True)
                ended.append((s, self._batch.get(i) if s.reason in _CACHEABLE else None))
        n = len(seqs)
        if ended:
            self._decoding = [seqs[i] for i in keep]
            self._batch.keep(keep)
            for s, state in ended:
                self._end(s, state)
        self.steps += 1
        self._cb("on_tokens", n)
        self._cb("on_inter_token", gaps)
        self._cb("on_step", n, time.perf_counter() - t0)

    def _accept(self, s: _Seq, tok: int) -> None:
        """Record a sampled token: stream its text, check stops, max_tokens and end of text."""
        now = self.clock()
        if not s.generated:
            s.t_first = now
        s.t_last = now
        s.generated.append(tok)
        s.ids_since_event.append(tok)
        eos = self.config.eos_token_id
        if eos is not None and tok == eos:
            self._emit(s, s.decoder.flush(), final=True)
            s.reason = s.reason or "stop"
            return
        self._emit(s, s.decoder.push(tok))
        if s.reason is None and len(s.generated) >= s.req.params.max_tokens:
            self._emit(s, s.decoder.flush(), final=True)
            s.reason = s.reason or "length"

    def _emit(self, s: _Seq, text: str, final: bool = False) -> None:
        if s.reasoning is not None:  # a reasoning block never reaches the stop checker
            text = s.reasoning.push(text) + (s.reasoning.flush() if final else "")
        out, reason = s.stopper.push(text)
        if reason is None and final:
            tail, reason = s.stopper.flush()
            out += tail
        if reason is not None:
            s.reason = reason  # type: ignore[assignment]
        if out:
            s.text.append(out)
            s.handle._deliver(TokenEvent(out, tuple(s.ids_since_event)))
            s.ids_since_event = []

    def _end(self, s: _Seq, state: State | None) -> None:
        """Generation ended: queue turn-closing prefill for the cache, park the state for
        the caller's close_turn (settle_reply), or finalize now."""
        assert s.reason is not None
        if state is None or self.cache is None or not s.req.store_cache:
            self._finalize(s, s.reason)
            return
        s.state = state
        if s.req.settle_reply:
            s.handle._parked = s
            self._finalize(s, s.reason, closable=True)
            return
        reply = self.tokenizer.encode(text) if (text := "".join(s.text)) else []
        self._prepare_close(s, list(reply))
        if s.todo:
            self._closing.append(s)
        else:
            self._store_and_finalize(s)

    def _close(self, s: _Seq, reply: list[int]) -> None:
        """A parked sequence's close_turn: prefill what the settled reply needs, then store."""
        if s.state is None or s.prompt_state is None:
            self._resolve_close(s, 0)
            return
        self._prepare_close(s, reply)
        if s.todo:
            self._closing.append(s)
        else:
            self._store_and_finalize(s)

    def _prepare_close(self, s: _Seq, reply: list[int]) -> None:
        """Set the tokens the cached state will have consumed (prompt + reply + terminator)
        and what is left to prefill for them: from the live state when the reply continues
        what was sampled and fed, else from the post-prompt state."""
        prompt = s.req.prompt_tokens
        term = self._terminator if s.req.turn_terminator_tokens is None else s.req.turn_terminator_tokens
        s.close_tokens = [*prompt, *reply, *term]
        assert s.state is not None
        state = s.state
        target = s.close_tokens[len(prompt) :]
        fed = s.generated[: s.fed]
        if target[: len(fed)] == fed:  # usual case: continue from the live state
            s.state, s.todo = state, target[len(fed) :]
        else:  # the reply's tokens differ from what was sampled: redo from the prompt
            s.state, s.todo = s.prompt_state, list(target)
            s.logits = None  # the live state's logits are not the redone state's

    def _store_and_finalize(self, s: _Seq) -> None:
        assert self.cache is not None and s.close_tokens is not None and s.state is not None
        toks = s.close_tokens
        logits = s.logits if s.logits is not None and s.logits.dim() == 1 else None
        stored = self.cache.put(s.req.conversation_id, s.state, logits, len(toks),
                                prefix_hash(toks))
        n = len(toks) if stored else 0
        if s.close_future is not None:  # a settled reply: its FinishEvent went out already
            self._resolve_close(s, n)
        else:
            self._finalize(s, s.reason or "stop", cached_state_tokens=n)

    def _resolve_close(self, s: _Seq, n: int) -> None:
        """Answer a close_turn (engine thread) and drop the sequence's states."""
        fut, s.close_future = s.close_future, None
        s.state = s.prompt_state = s.logits = None
        if fut is None:
            return

        def done() -> None:
            if not fut.done():
                fut.set_result(n)

        try:
            s.handle._loop.call_soon_threadsafe(done)
        except RuntimeError:  # loop closed: nobody waits
            pass

    def _finalize(self, s: _Seq, reason: FinishReason, cached_state_tokens: int = 0,
                  scores: torch.Tensor | None = None, closable: bool = False) -> None:
        if s.done:
            return
        s.done = True
        s.reason = reason
        if not closable:  # a parked reply keeps its states for close_turn
            s.state = s.prompt_state = s.logits = None
        n = len(s.generated)
        dt = s.t_last - s.t_first
        ev = FinishEvent(
            reason=reason,
            text="".join(s.text),
            prompt_tokens=len(s.req.prompt_tokens),
            completion_tokens=n,
            cached_tokens=s.cached_tokens,
            cache_hit=s.cache_hit,
            ttft_s=max(0.0, s.t_first - s.t_submit) if n else 0.0,
            tokens_per_second=(n - 1) / dt if n > 1 and dt > 0 else 0.0,
            detail=s.detail,
            cached_state_tokens=cached_state_tokens,
            scores=scores,
            cache_tier=s.cache_tier,
            closable=closable,
        )
        with self._lock:
            self._outstanding -= 1
            total = max(0.0, self.clock() - s.t_submit)
            self._avg_request_s = 0.9 * self._avg_request_s + 0.1 * total
        self._cb("on_finish", ev)
        s.handle._deliver(ev)

    def _fail_all(self, msg: str) -> None:
        for group in (self._prefilling, self._decoding, self._closing):
            for s in group:
                s.detail = msg
                if s.close_future is not None:
                    self._resolve_close(s, 0)
                self._finalize(s, "error" if s.reason not in _CACHEABLE else s.reason)
            group.clear()
        self._batch = self._fresh_batch()

    def _cb(self, name: str, *args: Any) -> None:
        try:
            getattr(self.callbacks, name)(*args)
        except Exception:  # noqa: BLE001 - metrics must not break generation
            log.warning("engine_callback_failed", callback=name)
