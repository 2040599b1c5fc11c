"""Slot-indexed decode state: preallocated per-layer buffers, bucketed steps, CUDA graphs.

`StackedStates` (rwkv_batched.py) keeps a decode batch as tensors [B, width] and rebuilds
them (cat / index_select) whenever a sequence joins or leaves. `DecodeSlots` keeps every
state tensor in a buffer [capacity + 1, ...] allocated once on its layer's device, one slot
per running sequence (the last slot is scratch):

* a sequence joining copies its state into a free slot (one row per tensor); one leaving
  frees its slot (no copy); `get(row)` copies one slot out;
* a step runs over a bucket of rows (1, 2, 4, ..., up to the capacity): the rows' slots,
  padded with the scratch slot, are gathered, stepped and scattered back, so a bucket's
  step has fixed shapes and fixed buffer addresses whatever sequences are in it;
* on a placement whose states and head are all on one CUDA device, each bucket's step is
  captured once in a `torch.cuda.CUDAGraph` and replayed (one launch instead of hundreds);
  anywhere else the same code runs eagerly (so the CPU tests exercise it).

The model side is a small interface (`SlotModel`): `state_layout()` (device, dtype, width
or shape of each state tensor), `step_states(idx, states, on_device=True)` (one decode step
over stacked states, replacing the list's entries, logits on the head's device), and
`vocab_size`; token ids are given on the first layer's device. `BatchedRWKV` (RWKV-4) has
it (with a copy of the embedding on that device: the package keeps it in host memory);
so does `BatchedRWKV7` (RWKV-7: state_layout gives the package's shapes, att_kv [H, N, N]). The padded rows compute on the scratch slot and are never read back, so a bucket's
rows equal an unpadded step's (test_decode_slots checks logits and states).

The class implements the engine's `StateBatch` protocol (len, append, keep, get), so the
engine's bookkeeping is unchanged; its `step(tokens)` replaces `model.step(tokens, batch)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import structlog
import torch

from services.inference.rwkv_batched import State

__all__ = ["DecodeSlots", "SlotModel", "bucket_for", "buckets", "supports_slots"]

MAX_BUCKET = 256
log = structlog.get_logger("avatario.inference.decode_slots")


class SlotModel(Protocol):
    vocab_size: int

    def state_layout(self) -> Sequence[tuple[Any, torch.dtype, Any]]: ...
    def step_states(self, idx: torch.Tensor, t: list[torch.Tensor], *,
                    on_device: bool = False) -> torch.Tensor: ...


def supports_slots(model: Any) -> bool:
    """Whether a batched model has the slot interface and its batched path is on."""
    return (callable(getattr(model, "state_layout", None))
            and callable(getattr(model, "step_states", None))
            and bool(getattr(model, "batched", False)))


def buckets(capacity: int) -> list[int]:
    """The batch sizes a step is padded to: powers of two below the capacity, then it."""
    if not 1 <= capacity <= MAX_BUCKET:
        raise ValueError(f"capacity must be in [1, {MAX_BUCKET}], got {capacity}")
    out, b = [], 1
    while b < capacity:
        out.append(b)
        b *= 2
    return [*out, capacity]


def bucket_for(n: int, capacity: int) -> int:
    """The smallest bucket holding n rows."""
    if not 1 <= n <= capacity:
        raise ValueError(f"{n} rows for a capacity of {capacity}")
    return next(b for b in buckets(capacity) if b >= n)


class DecodeSlots:
    """Live decode states in preallocated slots (see the module docstring)."""

    def __init__(self, model: SlotModel, capacity: int, *, cuda_graphs: bool = True) -> None:
        self.model = model
        self.capacity = capacity
        self.buckets = buckets(capacity)
        layout = list(model.state_layout())
        self.scratch = capacity
        self.bufs: list[torch.Tensor] = []
        for dev, dt, width in layout:
            shape = (width,) if isinstance(width, int) else tuple(width)
            self.bufs.append(torch.zeros((capacity + 1, *shape), dtype=dt, device=dev))
        self.devices = sorted({b.device for b in self.bufs}, key=str)
        self.emb_device = self.bufs[0].device  # token ids go to the first layer's device
        self.rows: list[int] = []  # slot of each row, in the engine's row order
        self._free = list(range(capacity - 1, -1, -1))  # pop() gives the lowest slot
        # per bucket: slot indices (per device) and token ids, static tensors
        self._idx: dict[int, dict[torch.device, torch.Tensor]] = {}
        self._tok: dict[int, torch.Tensor] = {}
        self._graphs: dict[int, tuple[Any, torch.Tensor]] = {}
        self._pool: Any = None
        one = len(self.devices) == 1 and self.devices[0].type == "cuda"
        self.graphs_enabled = bool(cuda_graphs and one and torch.cuda.is_available())
        self.copies = 0  # slot rows copied in or out (join / get), for tests and metrics
        self.steps = 0
        self.graph_replays = 0
        self.capture_error = ""  # why graphs were turned off, if a capture failed

    # ----- the StateBatch protocol

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, state: Sequence[torch.Tensor]) -> None:
        if not self._free:
            raise RuntimeError(f"all {self.capacity} decode slots are in use")
        if len(state) != len(self.bufs):
            raise ValueError(f"a state of {len(state)} tensors for {len(self.bufs)} slots")
        slot = self._free.pop()
        with torch.inference_mode():
            for buf, t in zip(self.bufs, state, strict=True):
                buf[slot].copy_(t.reshape(buf.shape[1:]))
        self.rows.append(slot)
        self.copies += 1

    def extend(self, states: Sequence[Sequence[torch.Tensor]]) -> None:
        for st in states:
            self.append(st)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep these rows, in this order; the others' slots are freed (nothing copied)."""
        kept = [self.rows[r] for r in rows]
        if len(set(kept)) != len(kept):
            raise ValueError("keep() got a row twice")
        gone = set(self.rows) - set(kept)
        self._free.extend(sorted(gone, reverse=True))
        self._free.sort(reverse=True)
        self.rows = kept

    def get(self, row: int) -> State:
        slot = self.rows[row]
        self.copies += 1
        return [b[slot].clone() for b in self.bufs]

    def clear(self) -> None:
        """Free every slot (the buffers and captured graphs stay)."""
        self.keep([])

    # ----- the step

    def _static(self, bucket: int) -> tuple[dict[torch.device, torch.Tensor], torch.Tensor]:
        if bucket not in self._idx:
            self._idx[bucket] = {d: torch.full((bucket,), self.scratch, dtype=torch.long,
                                               device=d) for d in self.devices}
            self._tok[bucket] = torch.zeros(bucket, dtype=torch.long, device=self.emb_device)
        return self._idx[bucket], self._tok[bucket]

    def _run(self, bucket: int) -> torch.Tensor:
        """Gather the bucket's slots, step them, scatter the new states back (the padding
        rows all read and write the scratch slot)."""
        idx, tok = self._static(bucket)
        with torch.inference_mode():
            t = [b.index_select(0, idx[b.device]) for b in self.bufs]
            logits = self.model.step_states(tok, t, on_device=True)
            for b, new in zip(self.bufs, t, strict=True):
                b.index_copy_(0, idx[b.device], new.to(dtype=b.dtype))
        return logits

    def _capture(self, bucket: int) -> tuple[Any, torch.Tensor]:
        """Capture the bucket's step (its static inputs pointing at the scratch slot, so the
        warm-up runs touch no live row)."""
        idx, tok = self._static(bucket)
        for t in idx.values():
            t.fill_(self.scratch)
        tok.zero_()
        stream = torch.cuda.Stream(device=self.devices[0])
        stream.wait_stream(torch.cuda.current_stream(self.devices[0]))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (lazy inits, cuBLAS handles)
                self._run(bucket)
        torch.cuda.current_stream(self.devices[0]).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._run(bucket)
        if self._pool is None:
            self._pool = graph.pool()
        return graph, out

    def capture_all(self) -> int:
        """Capture every bucket now (the engine's warm-up), so no request pays for it;
        returns how many graphs exist (0 where graphs are off)."""
        for b in self.buckets:
            if self.graphs_enabled and b not in self._graphs:
                self._try_capture(b)
        return len(self._graphs)

    def _try_capture(self, bucket: int) -> None:
        """Capture a bucket; a capture that fails turns graphs off (the eager step is the
        same computation), logged once."""
        try:
            self._graphs[bucket] = self._capture(bucket)
        except Exception as exc:  # noqa: BLE001 - graphs are an optimisation
            self.graphs_enabled = False
            self._graphs.clear()
            self.capture_error = repr(exc)[:300]
            log.warning("cuda_graph_capture_failed", bucket=bucket, error=self.capture_error)

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed tokens[i] to row i; return logits [rows, V] float32 on the head's device,
        valid until the next step (copy what must outlive it)."""
        n = len(self.rows)
        if len(tokens) != n:
            raise ValueError(f"{len(tokens)} tokens for {n} rows")
        if n == 0:
            return torch.empty((0, self.model.vocab_size), dtype=torch.float32)
        bucket = bucket_for(n, self.capacity)
        idx, tok = self._static(bucket)
        slots = torch.tensor(self.rows + [self.scratch] * (bucket - n), dtype=torch.long)
        for d, t in idx.items():
            t.copy_(slots.to(d), non_blocking=True)
        tok.copy_(torch.tensor(list(tokens) + [0] * (bucket - n), dtype=torch.long),
                  non_blocking=True)
        self.steps += 1
        if self.graphs_enabled:
            if bucket not in self._graphs:
                self._try_capture(bucket)
                # the capture's warm-up reset the static inputs: set them again
                for d, t in idx.items():
                    t.copy_(slots.to(d))
                tok.copy_(torch.tensor(list(tokens) + [0] * (bucket - n), dtype=torch.long))
        if self.graphs_enabled:
            graph, out = self._graphs[bucket]
            graph.replay()
            self.graph_replays += 1
            return out[:n]
        return self._run(bucket)[:n]
