"""Batched RWKV-4 decode over the weights the `rwkv` package loaded and placed.

The package's `RWKV.forward` runs one sequence at a time. `BatchedRWKV.step` runs one decode
token for B sequences at once with the same math, layer by layer on each layer's device and
activation dtype (as `model.strategy[i]` says), so each weight matrix is read once per step
for the whole batch. Layouts the batched path does not cover (int8 layers, streamed layers,
RWKV-5/6) fall back to per-sequence `model.forward`, which is always correct.

Speed: each block's tensors are gathered once at start-up (no per-step dict lookups), the
step runs under `torch.inference_mode`, the logits go into a buffer reused from step to step,
and the CPU head is laid out for the batch size (see `BatchedRWKV`). A batch of one takes the
batched kernels when they are faster than the package's one-token forward (CPU fp32, with
the contiguous head copy) and `model.forward` otherwise.

Per-sequence state is the package's own: a list of 5 tensors per layer, in this order:
att_xx (n_embd, atype), att_aa, att_bb, att_pp (n_att, float32; pp starts at -1e30),
ffn_xx (n_embd, atype), each on the layer's device.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.nn import functional as F

__all__ = [
    "RWKV_CUDA_ON",
    "RWKV_JIT_ON",
    "BatchedRWKV",
    "ListStates",
    "StackedStates",
    "State",
    "StateBatch",
    "clone_state",
    "load_rwkv",
    "prefill",
    "state_nbytes",
    "state_to",
]

# The one place the package's import-time switches are chosen. JIT on (the package's default,
# faster per-sequence forward); the custom CUDA kernel off (it compiles with nvcc at import).
# Turning it on is safe for this module's callers: its sequence kernel updates aa/bb/pp in
# place, but `prefill` clones the incoming state and the cache stores copies.
RWKV_JIT_ON = "1"
RWKV_CUDA_ON = "0"

State = list[torch.Tensor]
HEAD_BLOCK = 1024  # vocabulary columns per product of the CPU head (see _step_stacked)
# Packed oneDNN weights (see _Mat) are laid out for batches of about this many rows (any
# batch size works).
PACK_BATCH_HINT = 64
_JIT_DEPRECATED = r".*torch\.jit\..* is deprecated"
_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)


def _import_rwkv_model() -> Any:
    mod = sys.modules.get("rwkv.model")
    if mod is not None:
        if os.environ.get("RWKV_CUDA_ON") != RWKV_CUDA_ON or os.environ.get("RWKV_JIT_ON") != RWKV_JIT_ON:
            warnings.warn(
                "rwkv.model was imported before load_rwkv with other RWKV_JIT_ON/RWKV_CUDA_ON",
                RuntimeWarning,
                stacklevel=3,
            )
        return mod
    os.environ["RWKV_JIT_ON"] = RWKV_JIT_ON
    os.environ["RWKV_CUDA_ON"] = RWKV_CUDA_ON
    with warnings.catch_warnings():  # the package scripts with torch.jit, deprecated upstream
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=DeprecationWarning)
        import rwkv.model as mod  # noqa: PLC0415  (must follow the env settings)

    return mod


def load_rwkv(path: str | os.PathLike[str], strategy: str, *, verbose: bool = False) -> Any:
    """Load a checkpoint with `rwkv.model.RWKV(path, strategy)` after setting the env switches
    (the RWKV-4 class: services/inference/rwkv_package.py)."""
    from services.inference.rwkv_package import import_rwkv_model  # noqa: PLC0415

    mod = import_rwkv_model(4)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=DeprecationWarning)
        return mod.RWKV(str(path), strategy, verbose=verbose)


def clone_state(state: Sequence[torch.Tensor]) -> State:
    return [t.clone() for t in state]


def state_to(state: Sequence[torch.Tensor], device: str | torch.device) -> State:
    """Copy a state to one device (e.g. "cpu" for the cache); always a fresh copy."""
    return [t.to(device=device, copy=True) for t in state]


def state_nbytes(state: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state)


def prefill(
    model: Any, tokens: Sequence[int], state: Sequence[torch.Tensor] | None, chunk_len: int = 256
) -> tuple[torch.Tensor, State]:
    """Feed one sequence's tokens through `model.forward` in chunks; return (last logits, state).

    Logits are float32 on the CPU. The input state is not modified.
    """
    if not tokens:
        raise ValueError("prefill needs at least one token")
    if chunk_len < 1:
        raise ValueError("chunk_len must be >= 1")
    st: State | None = clone_state(state) if state is not None else None
    out: torch.Tensor | None = None
    with torch.no_grad():
        for i in range(0, len(tokens), chunk_len):
            out, st = model.forward(list(tokens[i : i + chunk_len]), st, full_output=False)
    assert out is not None and st is not None
    return out.float().cpu(), st


class StateBatch(Protocol):
    """Live states of the sequences in a decode batch, row i = sequence i."""

    def __len__(self) -> int: ...
    def append(self, state: Sequence[torch.Tensor]) -> None: ...
    def keep(self, rows: Sequence[int]) -> None: ...
    def get(self, row: int) -> State: ...


class ListStates:
    """Per-sequence states kept as separate lists (fallback path)."""

    def __init__(self, states: Sequence[Sequence[torch.Tensor]] = ()) -> None:
        self.states: list[State] = [list(s) for s in states]

    def __len__(self) -> int:
        return len(self.states)

    def append(self, state: Sequence[torch.Tensor]) -> None:
        self.states.append(list(state))

    def keep(self, rows: Sequence[int]) -> None:
        self.states = [self.states[r] for r in rows]

    def get(self, row: int) -> State:
        return list(self.states[row])


class StackedStates:
    """States stacked per slot: 5 tensors of shape (B, C) per layer, on the layer's device."""

    def __init__(self, layout: Sequence[tuple[torch.device | str, torch.dtype, int]]) -> None:
        # layout[j] = (device, dtype, width) of state slot j (5 per layer).
        self.layout = list(layout)
        self.t: list[torch.Tensor] = [
            torch.empty((0, n), dtype=dt, device=dev) for dev, dt, n in self.layout
        ]

    def __len__(self) -> int:
        return int(self.t[0].shape[0]) if self.t else 0

    def extend(self, states: Sequence[Sequence[torch.Tensor]]) -> None:
        if not states:
            return
        for j, (dev, dt, _n) in enumerate(self.layout):
            rows = [s[j].to(device=dev, dtype=dt).reshape(1, -1) for s in states]
            self.t[j] = torch.cat([self.t[j], *rows], dim=0)

    def append(self, state: Sequence[torch.Tensor]) -> None:
        self.extend([state])

    def keep(self, rows: Sequence[int]) -> None:
        if len(rows) == len(self) and list(rows) == list(range(len(self))):
            return
        for j, t in enumerate(self.t):
            idx = torch.as_tensor(list(rows), dtype=torch.long, device=t.device)
            self.t[j] = t.index_select(0, idx)

    def get(self, row: int) -> State:
        return [t[row].clone() for t in self.t]


def _onednn_linear() -> Any:
    """oneDNN's fp32 linear (`x @ w_out_in.T`), the kernel torch's own CPU compiler emits, or
    None where this torch has no oneDNN. On these CPUs it runs the decode shapes (a few to 64
    rows against 768 to 65536 columns) 1.5-4x faster than the BLAS `x @ w` (see
    `_cpu_kernel_ok`, which checks it against `x @ w` before it is used)."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


_LINEAR = _onednn_linear()


@functools.cache
def _cpu_kernel_ok() -> bool:
    """One product on random data: oneDNN against `x @ w` (fp32, relative 1e-5)."""
    if _LINEAR is None:
        return False
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 80, generator=g)
    x = torch.randn(5, 80, generator=g)
    try:
        got = _LINEAR(x, w, None, "none", [], "")
    except RuntimeError:
        return False
    want = x @ w.t()
    return bool(got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5))


class _Mat:
    """One weight matrix of the batched step: `m(x)` = `x @ m.w` for x [B, in], where m.w is
    the package's [in, out] tensor.

    On the CPU in fp32, where m.w is the transposed view of a contiguous [out, in] tensor (how
    the package keeps every CPU matrix), the product runs through oneDNN on that tensor (no
    copy) unless the caller says `dnn=False` (a single row on one thread, where the BLAS
    product is faster); with `packed`, on a copy of the matrix reordered once for oneDNN's
    kernels (`_reorder_linear_weight`), which saves the reorder each product otherwise does.
    Everything else is `x @ m.w`.
    """

    __slots__ = ("w", "wt", "packed")

    def __init__(self, w: torch.Tensor, onednn: bool, packed: bool = False) -> None:
        self.w = w
        wt = w.t()
        use = (onednn and w.device.type == "cpu" and w.dtype == torch.float32
               and wt.is_contiguous())
        self.wt: torch.Tensor | None = wt if use else None
        self.packed: torch.Tensor | None = None
        if use and packed:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(wt, PACK_BATCH_HINT)

    @property
    def packed_nbytes(self) -> int:
        return 0 if self.packed is None else self.w.numel() * self.w.element_size()

    def __call__(self, x: torch.Tensor, dnn: bool = True) -> torch.Tensor:
        if dnn and self.wt is not None and x.dtype == torch.float32:
            if self.packed is not None:
                return _LINEAR(x, self.packed, None, "none", [], "")
            return _LINEAR(x, self.wt, None, "none", [], "")
        return x @ self.w


class _Layer:
    """One block's tensors for the batched step, gathered once at start-up (no per-step
    dict lookups or key formatting). Everything is the package's own tensor (no copies)
    except the stacked token-shift mixes, three and two vectors per block, and the packed
    matrices where `packed` (each matrix is a `_Mat`)."""

    __slots__ = ("device", "atype", "to_here", "ln1", "att_mix", "decay", "first", "kw", "vw",
                 "rw", "ow", "ln2", "ffn_mix", "fkw", "frw", "fvw", "rescale")
    MATS = ("kw", "vw", "rw", "ow", "fkw", "frw", "fvw")

    def __init__(self, w: dict[str, torch.Tensor], i: int, dd: Any, prev: Any,
                 rescale_layer: int, onednn: bool, packed: bool) -> None:
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        self.device, self.atype = dd.device, dd.atype
        self.to_here = prev is None or (prev.device, prev.atype) != (dd.device, dd.atype)
        self.ln1 = (w[b + "ln1.weight"], w[b + "ln1.bias"])
        self.att_mix = torch.stack(
            [w[a + "time_mix_k"], w[a + "time_mix_v"], w[a + "time_mix_r"]]).unsqueeze(1)
        self.decay, self.first = w[a + "time_decay"], w[a + "time_first"]
        def mat(key: str) -> _Mat:
            return _Mat(w[key], onednn, packed)

        self.kw, self.vw = mat(a + "key.weight"), mat(a + "value.weight")
        self.rw, self.ow = mat(a + "receptance.weight"), mat(a + "output.weight")
        self.ln2 = (w[b + "ln2.weight"], w[b + "ln2.bias"])
        self.ffn_mix = torch.stack([w[f + "time_mix_k"], w[f + "time_mix_r"]]).unsqueeze(1)
        self.fkw, self.frw = mat(f + "key.weight"), mat(f + "receptance.weight")
        self.fvw = mat(f + "value.weight")
        self.rescale = rescale_layer > 0 and (i + 1) % rescale_layer == 0


@dataclass(frozen=True)
class TimeMajor:
    """Several sequences' tokens laid out time-major for one prefill pass (both
    generations' batched prefill use it). Sequences are ordered longest first, so those
    still running at time t are rows offs[t] .. offs[t] + n_run[t] - 1, the first n_run[t].

    prev: the row each row's token shift reads, (t - 1, j); at t = 0 the sequence's state
    row, which sits before the rows in torch.cat([state rows, rows]). last: each sequence's
    last row (in `order`)."""

    order: list[int]
    steps: int
    n_run: list[int]
    offs: list[int]
    flat: list[int]
    prev: list[int]
    last: list[int]


def time_major(jobs: Sequence[tuple[Sequence[int], Any]]) -> TimeMajor:
    k_jobs = len(jobs)
    order = sorted(range(k_jobs), key=lambda i: -len(jobs[i][0]))
    toks = [list(jobs[i][0]) for i in order]
    steps = len(toks[0])
    n_run = [sum(1 for tk in toks if len(tk) > t) for t in range(steps)]
    offs = [0] * (steps + 1)
    for t in range(steps):
        offs[t + 1] = offs[t] + n_run[t]
    flat = [toks[j][t] for t in range(steps) for j in range(n_run[t])]
    prev = list(range(n_run[0])) + [k_jobs + offs[t - 1] + j for t in range(1, steps)
                                    for j in range(n_run[t])]
    last = [offs[len(tk) - 1] + j for j, tk in enumerate(toks)]
    return TimeMajor(order, steps, n_run, offs, flat, prev, last)


class BatchedRWKV:
    """Batched decode for a loaded `rwkv.model.RWKV` (RWKV-4), with a per-sequence fallback.

    CPU fp32 products (the `cpu fp32` strategy, and CPU layers of a split one) go through
    oneDNN (see `_Mat`): on these CPUs its kernels run the decode shapes (a few to 64 rows
    against 768 to 65536 columns) 1.5-4x faster than the BLAS product the package uses, and
    with `packed_weights` (the default) batches of two or more read a copy of every matrix
    reordered once for those kernels, ~10-15% faster again. That copy costs as much host
    memory as the matrices (`extra_bytes`; `packed_weights=False` saves it).

    A batch of one is decided by the head (n_embd x vocab, the largest matrix): for one
    sequence a contiguous [n_embd, vocab] copy is ~1.6x faster than the package's transposed
    view. So on the CPU this class keeps that copy too (vocab x n_embd x 4 bytes: 200 MiB for
    the World vocabulary at 768; `contiguous_head=False` saves it). With it a batch of one goes
    through the batched kernels (faster than the package's own one-token forward); without
    it, through the package's `model.forward`. `single_via_package` forces either.
    """

    def __init__(self, model: Any, *, single_via_package: bool | None = None,
                 contiguous_head: bool = True, onednn: bool | None = None,
                 packed_weights: bool = True) -> None:
        self.model = model
        self.w: dict[str, torch.Tensor] = model.w
        self.args = model.args
        self.n_layer: int = int(model.args.n_layer)
        self.n_embd: int = int(model.args.n_embd)
        self.n_att: int = int(getattr(model.args, "n_att", self.n_embd))
        self.vocab_size: int = int(self.w["emb.weight"].shape[0])
        self.version: float = float(getattr(model, "version", 4))
        self.rescale_layer: int = int(getattr(model, "RESCALE_LAYER", 0))
        self.strategy = model.strategy
        self.fallback_reason: str | None = self._why_not_batched()
        # oneDNN for CPU fp32 products: None = when this torch has it and it checks out;
        # False = BLAS only (the node's AVATARIO_INFERENCE_ONEDNN=false).
        self.onednn: bool = _cpu_kernel_ok() if onednn is None else (onednn and _LINEAR is not None)
        self.packed_weights = packed_weights and self.onednn and self.batched
        head = self.w["head.weight"]
        self._head = _Mat(head, self.onednn, self.packed_weights)
        self._head_c: torch.Tensor | None = None
        if (contiguous_head and self.batched and head.device.type == "cpu"
                and head.dtype == torch.float32 and not head.is_contiguous()):
            self._head_c = head.contiguous()  # made once, here
        self.single_via_package = (self._head_c is None if single_via_package is None
                                   else single_via_package)
        self.batched_steps = 0  # steps of a stacked batch (a batch of one included)
        self.package_steps = 0  # of which: a batch of one through model.forward
        self.fallback_steps = 0  # per-sequence fallback steps
        self._layers: list[_Layer] = []
        self._logits_buf: torch.Tensor | None = None
        self._emb_copies: dict[torch.device, torch.Tensor] = {}  # see step_states
        if self.batched:
            prev = None
            for i in range(self.n_layer):
                dd = self.strategy[i]
                self._layers.append(_Layer(self.w, i, dd, prev, self.rescale_layer, self.onednn,
                                           self.packed_weights))
                prev = dd
        # Several sequences prefill in one pass (`prefill_many`) where every layer and the
        # head are CPU fp32, the layout checked against the package here; elsewhere (GPU
        # placements, half precision) each sequence goes through the package's own forward.
        self.batched_prefill = self.batched and all(
            str(dd.device) == "cpu" and dd.atype == torch.float32 and dd.wtype == torch.float32
            for dd in self.strategy[: self.n_layer + 1])

    @property
    def batched(self) -> bool:
        return self.fallback_reason is None

    @property
    def head_on_cpu(self) -> bool:
        """Whether the head (the largest product of a decode step) runs on the host."""
        return self.w["head.weight"].device.type == "cpu"

    @property
    def extra_bytes(self) -> int:
        """Host memory this class holds beyond the package's weights (head copy, packed)."""
        mats = [self._head] + [getattr(ly, n) for ly in self._layers for n in _Layer.MATS]
        head_c = 0 if self._head_c is None else self._head_c.numel() * 4
        return head_c + sum(m.packed_nbytes for m in mats)

    def _why_not_batched(self) -> str | None:
        if self.version != 4:
            return f"RWKV version {self.version} (batched path is RWKV-4 only)"
        for n, dd in enumerate(self.strategy):
            if getattr(dd, "stream", False):
                return f"layer {n} is streamed"
            if dd.wtype not in _FLOAT_TYPES:
                return f"layer {n} weights are {str(dd.wtype).removeprefix('torch.')}"
            if dd.atype not in _FLOAT_TYPES:
                return f"layer {n} activations are {dd.atype}"
        return None

    # ----- states

    def _layout(self) -> list[tuple[Any, torch.dtype, int]]:
        out: list[tuple[Any, torch.dtype, int]] = []
        for i in range(self.n_layer):
            dd = self.strategy[i]
            out += [
                (dd.device, dd.atype, self.n_embd),
                (dd.device, torch.float32, self.n_att),
                (dd.device, torch.float32, self.n_att),
                (dd.device, torch.float32, self.n_att),
                (dd.device, dd.atype, self.n_embd),
            ]
        return out

    def zero_state(self) -> State:
        """A fresh state laid out exactly as the package makes one (RWKV-4)."""
        if self.version != 4:
            raise NotImplementedError("zero_state is RWKV-4 only; pass None to model.forward")
        st: State = []
        for j, (dev, dt, n) in enumerate(self._layout()):
            t = torch.zeros(n, dtype=dt, device=dev)
            if j % 5 == 3:
                t = t - 1e30
            st.append(t.contiguous())
        return st

    def state_nbytes(self) -> int:
        return sum(n * torch.empty((), dtype=dt).element_size() for _d, dt, n in self._layout())

    def to_model(self, state: Sequence[torch.Tensor]) -> State:
        """Copy a state (e.g. from the CPU cache) onto each layer's device and dtype."""
        if self.version != 4:  # RWKV-5/6: 3 slots per layer; keep dtypes, match devices
            return [t.to(device=self.strategy[j // 3].device, copy=True) for j, t in enumerate(state)]
        return [
            t.to(device=dev, dtype=dt, copy=True)
            for t, (dev, dt, _n) in zip(state, self._layout(), strict=True)
        ]

    def new_batch(self, states: Sequence[Sequence[torch.Tensor]] = ()) -> StateBatch:
        if self.batched:
            sb = StackedStates(self._layout())
            sb.extend(states)
            return sb
        return ListStates(states)

    # ----- forward

    def prefill(
        self, tokens: Sequence[int], state: Sequence[torch.Tensor] | None, chunk_len: int = 256
    ) -> tuple[torch.Tensor, State]:
        return prefill(self.model, tokens, state, chunk_len)

    def prefill_many(
        self, jobs: Sequence[tuple[Sequence[int], Sequence[torch.Tensor] | None]]
    ) -> list[tuple[torch.Tensor, State]]:
        """Prefill several sequences together: jobs are (tokens, state or None for a fresh
        one); returns (last logits [V] float32 CPU, new state) per job, in order. The input
        states are not modified.

        With `batched_prefill`, one pass for all of them: every weight product runs once
        over all the jobs' tokens (time-major rows), the token shift and the WKV recurrence
        step through time for the sequences still running, and the head runs once for the
        jobs' last tokens; so a burst of short prompts costs about as much as one prompt of
        their total length. Otherwise each job goes through `prefill`."""
        if any(not toks for toks, _ in jobs):
            raise ValueError("prefill needs at least one token per sequence")
        if not self.batched_prefill:
            return [self.prefill(toks, st, len(toks)) for toks, st in jobs]
        return self._prefill_stacked(jobs) if jobs else []

    def forward_batch(
        self, tokens: Sequence[int], states: Sequence[Sequence[torch.Tensor] | None]
    ) -> tuple[torch.Tensor, list[State]]:
        """One decode token per sequence. Returns (logits [B, V] float32 CPU, new states)."""
        filled = [self.zero_state() if s is None and self.version == 4 else s for s in states]
        if any(s is None for s in filled):  # non-v4 with fresh states: the package makes them
            outs = [prefill(self.model, [t], s, 1) for t, s in zip(tokens, filled, strict=True)]
            self.fallback_steps += 1
            return torch.stack([o for o, _ in outs]), [s for _, s in outs]
        batch = self.new_batch(filled)  # type: ignore[arg-type]
        logits = self.step(tokens, batch).clone()
        return logits, [batch.get(i) for i in range(len(batch))]

    def step(self, tokens: Sequence[int], batch: StateBatch) -> torch.Tensor:
        """Feed tokens[i] to row i of `batch` (updated in place); return logits [B, V] float32
        on the CPU. The logits may live in a buffer the next `step` reuses: copy what must
        outlive it."""
        if len(tokens) != len(batch):
            raise ValueError(f"{len(tokens)} tokens for a batch of {len(batch)}")
        if not tokens:
            return torch.empty((0, self.vocab_size), dtype=torch.float32)
        if isinstance(batch, StackedStates):
            self.batched_steps += 1
            if len(tokens) == 1 and self.single_via_package:
                self.package_steps += 1
                return self._step_one(int(tokens[0]), batch)
            return self._step_stacked(tokens, batch)
        assert isinstance(batch, ListStates)
        self.fallback_steps += 1
        outs: list[torch.Tensor] = []
        with torch.inference_mode():
            for r, tok in enumerate(tokens):
                out, batch.states[r] = self.model.forward([int(tok)], list(batch.states[r]))
                outs.append(out.float().cpu())
        return torch.stack(outs)

    def _step_one(self, token: int, sb: StackedStates) -> torch.Tensor:
        """A batch of one: the package's own one-token forward on row 0's state (views, no
        copies); the state it returns becomes the batch's row."""
        with torch.inference_mode():
            out, st = self.model.forward([token], [t[0] for t in sb.t])
        sb.t = [t.unsqueeze(0) for t in st]
        return out.float().cpu().unsqueeze(0)

    def _logits_out(self, b: int) -> torch.Tensor:
        buf = self._logits_buf
        if buf is None or buf.shape[0] < b:
            buf = torch.empty((max(b, 1), self.vocab_size), dtype=torch.float32)
            self._logits_buf = buf
        return buf[:b]

    def state_layout(self) -> list[tuple[Any, torch.dtype, int]]:
        """(device, dtype, width) of each state tensor (5 per layer), as `step_states` takes
        them (services/inference/decode_slots.py preallocates its buffers from it)."""
        return self._layout()

    def _step_stacked(self, tokens: Sequence[int], sb: StackedStates) -> torch.Tensor:
        idx = torch.as_tensor(list(tokens), dtype=torch.long, device=self.w["emb.weight"].device)
        # oneDNN for the CPU products, except one row on one thread (BLAS is faster there)
        return self.step_states(idx, sb.t, dnn=len(tokens) > 1 or torch.get_num_threads() > 1)

    def step_states(self, idx: torch.Tensor, t: list[torch.Tensor], *, dnn: bool = True,
                    on_device: bool = False) -> torch.Tensor:
        """The batched decode step: token ids idx [B] (int64, on the embedding's device) fed
        to the states t (5 tensors [B, width] per layer, on the layers' devices), whose
        entries are replaced by the new states. Returns logits [B, V] float32 on the CPU, or
        with `on_device` on the head's device; no host sync on a GPU-only placement then (the
        step can be captured in a CUDA graph). Ids on another device than the embedding (the
        package keeps it in host memory) read a copy of it made there once."""
        w = self.w
        emb = w["emb.weight"]
        if idx.device != emb.device:
            emb = self._emb_copies.get(idx.device)
            if emb is None:
                emb = self._emb_copies[idx.device] = w["emb.weight"].to(idx.device)
        n_embd = (self.n_embd,)
        with torch.inference_mode():
            x = emb.index_select(0, idx)
            s = 0
            for ly in self._layers:
                if ly.to_here:
                    x = x.to(dtype=ly.atype, device=ly.device)
                # time mixing (attention): token shift, WKV with the running-max trick in fp32
                xx = F.layer_norm(x, n_embd, weight=ly.ln1[0], bias=ly.ln1[1])
                kvr = torch.lerp(t[s].unsqueeze(0), xx.unsqueeze(0), ly.att_mix)
                r = torch.sigmoid(ly.rw(kvr[2], dnn))
                k = ly.kw(kvr[0], dnn).float()
                v = ly.vw(kvr[1], dnn).float()
                aa, bb, pp = t[s + 1], t[s + 2], t[s + 3]
                ww = ly.first + k
                p = torch.maximum(pp, ww)
                e1 = torch.exp(pp - p)
                e2 = torch.exp(ww - p)
                wkv = ((e1 * aa + e2 * v) / (e1 * bb + e2)).to(dtype=x.dtype)
                ww = ly.decay + pp
                p = torch.maximum(ww, k)
                e1 = torch.exp(ww - p)
                e2 = torch.exp(k - p)
                x = x + ly.ow(r * wkv, dnn)
                t[s], t[s + 1], t[s + 2], t[s + 3] = xx, e1 * aa + e2 * v, e1 * bb + e2, p
                # channel mixing (feed-forward)
                xx = F.layer_norm(x, n_embd, weight=ly.ln2[0], bias=ly.ln2[1])
                kr = torch.lerp(t[s + 4].unsqueeze(0), xx.unsqueeze(0), ly.ffn_mix)
                r = torch.sigmoid(ly.frw(kr[1], dnn))
                kk = torch.relu(ly.fkw(kr[0], dnn)).square_()
                x = x + r * ly.fvw(kk, dnn)
                t[s + 4] = xx
                if ly.rescale:
                    x = x / 2
                s += 5
            return self._project(x, dnn, on_device)

    def _project(self, x: torch.Tensor, dnn: bool = True, on_device: bool = False
                 ) -> torch.Tensor:
        """Output norm and head for rows x [B, n_embd]: logits [B, V] float32 on the CPU (may
        be the reused logits buffer)."""
        w = self.w
        dd = self.strategy[self.n_layer]
        x = x.to(dtype=dd.atype, device=dd.device)
        x = F.layer_norm(x, (self.n_embd,), weight=w["ln_out.weight"], bias=w["ln_out.bias"])
        head = w["head.weight"]
        if x.dtype != torch.float32 or x.device.type != "cpu" or head.dtype != x.dtype:
            out = (x @ head).float()
            return out if on_device else out.cpu()
        if x.shape[0] <= 2 and self._head_c is not None:
            return torch.mm(x, self._head_c, out=self._logits_out(x.shape[0]))
        if self._head.wt is not None:
            return self._head(x, dnn)
        out = self._logits_out(x.shape[0])
        # The package's layout in column blocks written straight into the logits: 1.4-1.5x
        # the rate of one big product from 4 rows on (each logit is the same dot product).
        vocab, ch = head.shape[1], HEAD_BLOCK
        for c0 in range(0, vocab, ch):
            torch.mm(x, head[:, c0 : c0 + ch], out=out[:, c0 : c0 + ch])
        return out

    def _prefill_stacked(
        self, jobs: Sequence[tuple[Sequence[int], Sequence[torch.Tensor] | None]]
    ) -> list[tuple[torch.Tensor, State]]:
        """`prefill_many` in one pass (CPU fp32 layers). Sequences are ordered longest first
        and their tokens laid out time-major, so the sequences still running at time t are
        rows offs[t] .. offs[t] + n[t] - 1, the first n[t] of them."""
        k_jobs = len(jobs)
        lay = time_major(jobs)
        order, steps, n, offs, flat = lay.order, lay.steps, lay.n_run, lay.offs, lay.flat
        prev_idx = torch.tensor(lay.prev, dtype=torch.long)
        last_idx = torch.tensor(lay.last, dtype=torch.long)
        zero = self.zero_state()
        # the jobs' states, stacked per slot [k_jobs, width] (copies: inputs stay untouched)
        st = [torch.stack([(jobs[i][1] or zero)[j] for i in order])
              for j in range(5 * self.n_layer)]
        n_embd = (self.n_embd,)
        with torch.inference_mode():
            x = self.w["emb.weight"].index_select(0, torch.tensor(flat, dtype=torch.long))
            for li, ly in enumerate(self._layers):
                s0 = 5 * li
                xx = F.layer_norm(x, n_embd, weight=ly.ln1[0], bias=ly.ln1[1])
                sx = torch.cat([st[s0], xx]).index_select(0, prev_idx)
                kvr = torch.lerp(sx.unsqueeze(0), xx.unsqueeze(0), ly.att_mix)
                r = torch.sigmoid(ly.rw(kvr[2]))
                k = ly.kw(kvr[0])
                v = ly.vw(kvr[1])
                y = torch.empty_like(k)
                aa, bb, pp = st[s0 + 1], st[s0 + 2], st[s0 + 3]
                for t in range(steps):
                    m, o = n[t], offs[t]
                    kt, vt = k[o : o + m], v[o : o + m]
                    a, b, p_ = aa[:m], bb[:m], pp[:m]
                    ww = ly.first + kt
                    p = torch.maximum(p_, ww)
                    e1 = torch.exp(p_ - p)
                    e2 = torch.exp(ww - p)
                    y[o : o + m] = (e1 * a + e2 * vt) / (e1 * b + e2)
                    ww = ly.decay + p_
                    p = torch.maximum(ww, kt)
                    e1 = torch.exp(ww - p)
                    e2 = torch.exp(kt - p)
                    aa[:m] = e1 * a + e2 * vt
                    bb[:m] = e1 * b + e2
                    pp[:m] = p
                x = x + ly.ow(r * y)
                st[s0] = xx.index_select(0, last_idx)
                xx = F.layer_norm(x, n_embd, weight=ly.ln2[0], bias=ly.ln2[1])
                sx = torch.cat([st[s0 + 4], xx]).index_select(0, prev_idx)
                kr = torch.lerp(sx.unsqueeze(0), xx.unsqueeze(0), ly.ffn_mix)
                r = torch.sigmoid(ly.frw(kr[1]))
                kk = torch.relu(ly.fkw(kr[0])).square_()
                x = x + r * ly.fvw(kk)
                st[s0 + 4] = xx.index_select(0, last_idx)
                if ly.rescale:
                    x = x / 2
            logits = self._project(x.index_select(0, last_idx))
            out: list[tuple[torch.Tensor, State] | None] = [None] * k_jobs
            for j, i in enumerate(order):
                out[i] = (logits[j].clone(), [t[j].clone() for t in st])
        return out  # type: ignore[return-value]
