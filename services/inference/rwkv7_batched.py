"""Batched RWKV-7 ("x070", Goose / G1) decode and prefill over the `rwkv` package's weights,
placed by the node on one or more devices.

The package's RWKV-7 class (`rwkv.model.RWKV_x070`, imported with RWKV_V7_ON=1) runs one
sequence at a time, on one device in one dtype, and keeps its weights in `model.z` (matrices
transposed to [in, out], vectors squeezed, `r_k` flattened, the embedding already passed
through `blocks.0.ln0`). `BatchedRWKV7` runs the same math for B sequences at once, so each
weight is read once per step for the whole batch:

* time mix: token shift with the six mixes `x_r x_w x_k x_v x_a x_g`; r, k, v projections;
  the decay, in-context-rate, value-residual and gate low-rank pairs; `kk` (k * k_k,
  L2-normalised per head); `k * (1 + (a - 1) * k_a)`; the value residual towards layer 0's
  `v_first`; the per-head N x N state update
  `S = S * w + (S @ -kk) (kk * a)^T + v k^T` in float32 (the package writes the middle term
  as `S @ ab` with the rank-one `ab = -kk (kk * a)^T`; the product is the same, computed
  here without forming the N x N matrix); `S @ r`; the per-head group norm `ln_x` (eps
  64e-5); the `r * k * r_k` bonus; the gate; the output projection.
* channel mix: token shift with `x_k`, `relu(k @ K)^2 @ V`.

On the CPU in fp32 everything after the time mix's products up to the output projection
(the elementwise math above, the state update, `S @ r`, `ln_x`, the bonus and the gate) is
one compiled kernel call per layer (`rwkv7_kernel`: each (row, head) reads and writes its
N x N state once), built on first use where a C++ compiler is present; elsewhere the same
math runs as torch operations. The products go through oneDNN on copies packed once (the
head included), with the activations and residual adds fused into them.

Placement: `slots` gives each of the n_layer + 1 slots (the blocks, then the head) a device
and dtype; consecutive slots with the same (device, dtype) form a segment. The constructor
moves each block's tensors in `model.z` to its slot (the embedding goes with slot 0, `ln_out`
and `head` with the last). A step moves its activations (x and `v_first`) once at each
segment boundary. The package's own `forward` is only valid while everything stays on one
device and dtype (`single_device`); tests compare against it there, and against the
single-device result for split placements (`cpu -> cpu` runs the same code path).

State per sequence, three tensors per layer, in the package's order and shapes: att_x_prev
[C] (the layer's dtype), att_kv [H, N, N] (float32), ffn_x_prev [C] (the layer's dtype), each
on its layer's device. A batch keeps them stacked per slot as [B, width] rows (att_kv
flattened) in `StackedStates7`; `get` returns the package's shapes.

The slot-indexed decode path (services/inference/decode_slots.py, the GPU node's) uses
`state_layout` (the package's shapes: its buffers are [slots, H, N, N] for att_kv) and
`step_states` (ids and states already on the devices, logits left on the head's device, no
host sync), so on one GPU each batch-size bucket's step is captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from services.inference.rwkv7_kernel import (
    attention_core,
    attention_core_torch,
    load_kernel,
    wkv_torch,
)
from services.inference.rwkv_batched import (
    _LINEAR,
    PACK_BATCH_HINT,
    StackedStates,
    State,
    StateBatch,
    _cpu_kernel_ok,
    time_major,
)

__all__ = ["BatchedRWKV7", "Slot", "StackedStates7", "state_bytes7"]

_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)
_DECAY_SCALE = -0.606531  # -exp(-0.5), the package's constant
_LN_X_EPS = 64e-5


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one placement slot (a block, or the head) lives: device, dtype and the index
    of its strategy segment (`cpu fp32 *2 -> cpu fp32` is two segments on one device; the
    activations still cross the boundary, which is how CPU tests run the split path)."""

    device: torch.device
    dtype: torch.dtype
    segment: int = 0

    @classmethod
    def of(cls, device: str | torch.device, dtype: torch.dtype, segment: int = 0) -> Slot:
        return cls(torch.device(device), dtype, segment)


def state_bytes7(n_layer: int, n_embd: int, head_size: int, act_bytes: int) -> int:
    """Bytes of one conversation's RWKV-7 state: per layer two [C] vectors in the activation
    dtype and the [H, N, N] float32 matrix state (C = H * N)."""
    return n_layer * (2 * n_embd * act_bytes + n_embd * head_size * 4)


class StackedStates7(StackedStates):
    """`StackedStates` whose rows come back in the package's shapes ([H, N, N] for att_kv)."""

    def __init__(self, layout: Sequence[tuple[torch.device, torch.dtype, tuple[int, ...]]]) -> None:
        self.shapes = [shape for _d, _t, shape in layout]
        super().__init__([(d, t, math.prod(shape)) for d, t, shape in layout])

    def get(self, row: int) -> State:
        return [t[row].reshape(shape).clone() for t, shape in zip(self.t, self.shapes, strict=True)]


_ACT = {"none": lambda t: t, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


@functools.cache
def _fused_ops_ok() -> bool:
    """oneDNN's activation and `+ other` post-ops agree with torch on random data (fp32,
    1e-5); the products use them only then."""
    if _LINEAR is None:
        return False
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 24, generator=g)
    x, other = torch.randn(3, 24, generator=g), torch.randn(3, 40, generator=g)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, PACK_BATCH_HINT)
        got = [_LINEAR(x, packed, None, a, [], "") for a in _ACT]
        add = torch.ops.mkldnn._linear_pointwise.binary(x, other, packed, None, "add")
    except (RuntimeError, AttributeError):
        return False
    want = [f(x @ w.t()) for f in _ACT.values()]
    return all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(got, want, strict=True)
               ) and torch.allclose(add, other + x @ w.t(), rtol=1e-5, atol=1e-5)


class _Mat7:
    """One [in, out] matrix of the package (`x @ w`), or on the CPU in fp32 a copy packed
    once for oneDNN's kernels (`_reorder_linear_weight`, laid out for batches of about
    PACK_BATCH_HINT rows) that batched products use, with the activation after it (`act`)
    and the residual add (`add_to`) fused into the product where oneDNN's post-ops pass
    `_fused_ops_ok`; a single row on one thread (`dnn` False) keeps the package's product."""

    __slots__ = ("w", "packed", "post")

    def __init__(self, w: torch.Tensor, packed: bool) -> None:
        self.w = w
        self.packed: torch.Tensor | None = None
        if packed and w.device.type == "cpu" and w.dtype == torch.float32:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous(),
                                                                  PACK_BATCH_HINT)
        self.post = self.packed is not None and _fused_ops_ok()

    @property
    def packed_nbytes(self) -> int:
        return 0 if self.packed is None else self.w.numel() * self.w.element_size()

    def __call__(self, x: torch.Tensor, dnn: bool = True, act: str = "none") -> torch.Tensor:
        """act(x @ w), act one of `_ACT`."""
        if dnn and self.packed is not None and x.dtype == torch.float32:
            if self.post or act == "none":
                return _LINEAR(x, self.packed, None, act, [], "")
            return _ACT[act](_LINEAR(x, self.packed, None, "none", [], ""))
        return _ACT[act](x @ self.w)

    def add_to(self, x: torch.Tensor, other: torch.Tensor, dnn: bool = True) -> torch.Tensor:
        """other + x @ w (a new tensor)."""
        if dnn and self.post and x.dtype == torch.float32 and other.dtype == torch.float32:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, None, "add")
        return other + self(x, dnn)


class _Layer7:
    """One block's tensors gathered once (no per-step dict lookups); the package's tensors
    except the stacked six token-shift mixes."""

    __slots__ = ("slot", "to_here", "ln1", "att_mix", "w0", "w1", "w2", "a0", "a1", "a2",
                 "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k", "rw", "kw", "vw", "ow",
                 "ln_x", "ln2", "ffn_xk", "fkw", "fvw")
    MATS = ("rw", "kw", "vw", "ow", "fkw", "fvw")

    def __init__(self, z: dict[str, torch.Tensor], i: int, slot: Slot, to_here: bool,
                 mat: Any) -> None:
        b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        self.slot, self.to_here = slot, to_here
        self.ln1 = (z[b + "ln1.weight"], z[b + "ln1.bias"])
        self.ln2 = (z[b + "ln2.weight"], z[b + "ln2.bias"])
        self.att_mix = torch.stack(
            [z[a + n] for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")]).unsqueeze(1)
        self.w0, self.w1, self.w2 = z[a + "w0"], mat(z[a + "w1"]), mat(z[a + "w2"])
        self.a0, self.a1, self.a2 = z[a + "a0"], mat(z[a + "a1"]), mat(z[a + "a2"])
        # block 0 keeps v_first (the package empties its v0/v1/v2)
        self.v0, self.v1, self.v2 = ((z[a + "v0"], mat(z[a + "v1"]), mat(z[a + "v2"])) if i
                                     else (None,) * 3)
        self.g1, self.g2 = mat(z[a + "g1"]), mat(z[a + "g2"])
        self.k_k, self.k_a, self.r_k = z[a + "k_k"], z[a + "k_a"], z[a + "r_k"]
        self.rw, self.kw = mat(z[a + "receptance.weight"]), mat(z[a + "key.weight"])
        self.vw, self.ow = mat(z[a + "value.weight"]), mat(z[a + "output.weight"])
        self.ln_x = (z[a + "ln_x.weight"], z[a + "ln_x.bias"])
        self.ffn_xk = z[f + "x_k"]
        self.fkw, self.fvw = mat(z[f + "key.weight"]), mat(z[f + "value.weight"])


def _slot_of(key: str, n_layer: int) -> int:
    if key.startswith("blocks."):
        return int(key.split(".")[1])
    return 0 if key == "emb.weight" else n_layer  # ln_out, head: the last slot


class BatchedRWKV7:
    """Batched decode and prefill for a loaded `RWKV_x070`, placed on `slots` (None: where
    the package put it). Interface of `BatchedRWKV` (services/inference/rwkv_batched.py), so
    the engine serves either generation.

    CPU fp32 matrices go through oneDNN where this torch has it (`_Mat7`), on copies packed
    once in its layout when `packed_weights` (as much host memory again as those matrices,
    `extra_bytes`); every other product is the package's `x @ W`. CPU fp32 layers run their
    attention core through the compiled kernel (`fused_kernel`, on by default; `kernel` is
    None where it could not be built). A batch of one on a single device goes through the
    package's own one-token forward unless `single_via_package=False`."""

    version = 7.0
    fallback_reason: str | None = None
    batched = True
    batched_prefill = True

    def __init__(self, model: Any, slots: Sequence[Slot] | None = None, *,
                 onednn: bool | None = None, packed_weights: bool = True,
                 single_via_package: bool | None = None, strategy: str = "",
                 fused_kernel: bool = True) -> None:
        self.model = model
        self.z: dict[str, torch.Tensor] = model.z
        self.n_layer = int(model.n_layer)
        self.n_embd = int(model.n_embd)
        self.n_head = int(model.n_head)
        self.head_size = int(model.head_size)
        self.vocab_size = int(self.z["emb.weight"].shape[0])
        emb = self.z["emb.weight"]
        here = Slot(emb.device, emb.dtype)
        self.slots = list(slots) if slots is not None else [here] * (self.n_layer + 1)
        if len(self.slots) != self.n_layer + 1:
            raise ValueError(f"{len(self.slots)} slots for {self.n_layer} layers + head")
        for n, s in enumerate(self.slots):
            if s.dtype not in _FLOAT_TYPES:
                raise ValueError(f"slot {n}: RWKV-7 runs in fp32, fp16 or bf16, not {s.dtype}")
        self._lay = self._layout()
        self.strategy = strategy or " -> ".join(
            f"{d} {str(t).removeprefix('torch.')} *{count}" for d, t, _f, count in self.segments())
        self._place()
        self.single_device = len(set(self.slots)) == 1  # one segment
        self.onednn: bool = _cpu_kernel_ok() if onednn is None else bool(onednn) and _cpu_kernel_ok()
        self.packed_weights = packed_weights and self.onednn and _LINEAR is not None
        self._packed_bytes = 0
        self.single_via_package = (self.single_device if single_via_package is None
                                   else single_via_package and self.single_device)
        # the compiled attention core (rwkv7_kernel) for CPU fp32 layers, built on first use
        cpu32 = any(sl.device.type == "cpu" and sl.dtype == torch.float32 for sl in self.slots)
        self.kernel: Any | None = load_kernel() if fused_kernel and cpu32 else None
        self.kernel_calls = 0
        self.batched_steps = 0
        self.package_steps = 0
        self.fallback_steps = 0
        self.boundary_moves = 0  # activations moved between segments (x and v_first count 1)
        self._layers: list[_Layer7] = []
        prev: Slot | None = None
        for i in range(self.n_layer):
            slot = self.slots[i]
            self._layers.append(_Layer7(self.z, i, slot, prev is not None and slot != prev,
                                        self._mat))
            prev = slot
        self._head_move = self.slots[self.n_layer] != self.slots[self.n_layer - 1]
        self._head = self.z["head.weight"]  # [C, V] contiguous, as the package keeps it
        # the head packed for oneDNN too: from two rows on it runs 3-10x the rate of `x @ head`
        # on the package's [C, V] layout (a single row keeps the package's product)
        self._head_mat = self._mat(self._head)
        self._logits_buf: torch.Tensor | None = None
        self._emb_copies: dict[torch.device, torch.Tensor] = {}  # see _embedding_on

    # ----- placement

    def segments(self) -> list[tuple[torch.device, torch.dtype, int, int]]:
        """(device, dtype, first slot, slot count) of each run of equal slots."""
        out: list[tuple[torch.device, torch.dtype, int, int]] = []
        for n, s in enumerate(self.slots):
            if n and s == self.slots[n - 1]:
                d, t, first, count = out[-1]
                out[-1] = (d, t, first, count + 1)
            else:
                out.append((s.device, s.dtype, n, 1))
        return out

    def _place(self) -> None:
        """Move each tensor to its slot. `model.z` of the package's TorchScript module is a
        fresh dict on every read (sharing the tensors), so the placed dict is written back:
        the package then holds no copy where the tensors were loaded."""
        moved = False
        for key, t in list(self.z.items()):
            s = self.slots[_slot_of(key, self.n_layer)]
            if t.device != s.device or t.dtype != s.dtype:
                self.z[key] = t.to(device=s.device, dtype=s.dtype)
                moved = True
        if moved:
            self.model.z = self.z

    def _mat(self, w: torch.Tensor) -> _Mat7:
        m = _Mat7(w, self.packed_weights)
        self._packed_bytes += m.packed_nbytes
        return m

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        return self.z

    @property
    def head_on_cpu(self) -> bool:
        return self._head.device.type == "cpu"

    @property
    def extra_bytes(self) -> int:
        """Host memory held beyond the package's weights (oneDNN copies of the matrices)."""
        return self._packed_bytes

    # ----- states

    def _layout(self) -> list[tuple[torch.device, torch.dtype, tuple[int, ...]]]:
        if hasattr(self, "_lay"):
            return self._lay
        c, h, n = self.n_embd, self.n_head, self.head_size
        out: list[tuple[torch.device, torch.dtype, tuple[int, ...]]] = []
        for i in range(self.n_layer):
            s = self.slots[i]
            out += [(s.device, s.dtype, (c,)), (s.device, torch.float32, (h, n, n)),
                    (s.device, s.dtype, (c,))]
        return out

    def zero_state(self) -> State:
        """A fresh state, as the package's `generate_zero_state` makes one (per layer slot)."""
        return [torch.zeros(shape, dtype=dt, device=dev) for dev, dt, shape in self._layout()]

    def state_nbytes(self) -> int:
        return sum(math.prod(shape) * torch.empty((), dtype=dt).element_size()
                   for _d, dt, shape in self._layout())

    def to_model(self, state: Sequence[torch.Tensor]) -> State:
        """A state from the cache or the shared store (flat tensors are fine) on each layer's
        device and dtype, in the package's shapes."""
        if len(state) != 3 * self.n_layer:
            raise ValueError(f"RWKV-7 state has {len(state)} tensors, expected {3 * self.n_layer}")
        return [t.to(device=dev, dtype=dt, copy=True).reshape(shape)
                for t, (dev, dt, shape) in zip(state, self._layout(), strict=True)]

    def new_batch(self, states: Sequence[Sequence[torch.Tensor]] = ()) -> StateBatch:
        sb = StackedStates7(self._layout())
        sb.extend(states)
        return sb

    # ----- forward

    def prefill(self, tokens: Sequence[int], state: Sequence[torch.Tensor] | None,
                chunk_len: int = 256) -> tuple[torch.Tensor, State]:
        """One sequence's tokens in chunks of `chunk_len`: (last logits [V] float32 CPU, state)."""
        if not tokens:
            raise ValueError("prefill needs at least one token")
        if chunk_len < 1:
            raise ValueError("chunk_len must be >= 1")
        out: torch.Tensor | None = None
        st = state
        for i in range(0, len(tokens), chunk_len):
            out, st = self._prefill_stacked([(tokens[i : i + chunk_len], st)])[0]
        assert out is not None and st is not None
        return out, list(st)

    def prefill_many(self, jobs: Sequence[tuple[Sequence[int], Sequence[torch.Tensor] | None]]
                     ) -> list[tuple[torch.Tensor, State]]:
        """Several sequences in one pass (see `BatchedRWKV.prefill_many`); input states are
        not modified."""
        if any(not toks for toks, _ in jobs):
            raise ValueError("prefill needs at least one token per sequence")
        return self._prefill_stacked(jobs) if jobs else []

    def forward_batch(self, tokens: Sequence[int], states: Sequence[Sequence[torch.Tensor] | None]
                      ) -> tuple[torch.Tensor, list[State]]:
        """One decode token per sequence: (logits [B, V] float32 CPU, new states)."""
        batch = self.new_batch([self.zero_state() if s is None else s for s in states])
        logits = self.step(tokens, batch).clone()
        return logits, [batch.get(i) for i in range(len(batch))]

    def step(self, tokens: Sequence[int], batch: StateBatch) -> torch.Tensor:
        """Feed tokens[i] to row i of `batch` (updated in place); logits [B, V] float32 on the
        CPU, possibly in a buffer the next step reuses."""
        if len(tokens) != len(batch):
            raise ValueError(f"{len(tokens)} tokens for a batch of {len(batch)}")
        if not tokens:
            return torch.empty((0, self.vocab_size), dtype=torch.float32)
        assert isinstance(batch, StackedStates7)
        self.batched_steps += 1
        if len(tokens) == 1 and self.single_via_package:
            self.package_steps += 1
            return self._step_one(int(tokens[0]), batch)
        return self._step_stacked(tokens, batch)

    def _step_one(self, token: int, sb: StackedStates7) -> torch.Tensor:
        """A batch of one through the package's one-token forward on row 0 (views)."""
        st = [t[0].view(shape) for t, shape in zip(sb.t, sb.shapes, strict=True)]
        with torch.inference_mode():
            out, st = self.model.forward(token, st)
        sb.t = [t.reshape(1, -1) for t in st]
        return out.float().cpu().unsqueeze(0)

    def _logits_out(self, b: int) -> torch.Tensor:
        buf = self._logits_buf
        if buf is None or buf.shape[0] < b:
            buf = torch.empty((max(b, 1), self.vocab_size), dtype=torch.float32)
            self._logits_buf = buf
        return buf[:b]

    def _products(self, ly: _Layer7, i: int, xx: torch.Tensor, prev: torch.Tensor,
                  dnn: bool) -> tuple[torch.Tensor, ...]:
        """The time mix's products for rows xx [R, C] whose previous tokens' ln1 outputs are
        `prev` [R, C]: r, k, v, g and the low-rank outputs wl (before w0), al (before a0)
        and vl (before v0; None in layer 0)."""
        mixed = torch.addcmul(xx.unsqueeze(0), (prev - xx).unsqueeze(0), ly.att_mix)
        xr, xw, xk, xv, xa, xg = mixed.unbind(0)
        r = ly.rw(xr, dnn)
        k = ly.kw(xk, dnn)
        v = ly.vw(xv, dnn)
        wl = ly.w2(ly.w1(xw, dnn, "tanh"), dnn)
        al = ly.a2(ly.a1(xa, dnn), dnn)
        g = ly.g2(ly.g1(xg, dnn, "sigmoid"), dnn)
        vl = ly.v2(ly.v1(xv, dnn), dnn) if ly.v1 is not None else None
        return r, k, v, g, wl, al, vl

    def _fused(self, ly: _Layer7) -> bool:
        return (self.kernel is not None and ly.slot.device.type == "cpu"
                and ly.slot.dtype == torch.float32)

    def _core(self, ly: _Layer7, s: torch.Tensor, r: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor, g: torch.Tensor, wl: torch.Tensor, al: torch.Tensor,
              vl: torch.Tensor | None, v_first: torch.Tensor | None) -> torch.Tensor:
        """The attention core for rows of the state s [R, H, N, N] (see rwkv7_kernel): the
        compiled kernel on CPU fp32 layers where it was built, else torch."""
        if self._fused(ly):
            self.kernel_calls += 1
            return attention_core(self.kernel, s, r, k, v, g, wl, al, vl, v_first, ly)
        return attention_core_torch(s, r, k, v, g, wl, al, vl, v_first, ly)

    def _time_mix(self, ly: _Layer7, i: int, r: torch.Tensor, k: torch.Tensor,
                  v: torch.Tensor, wl: torch.Tensor, al: torch.Tensor, vl: torch.Tensor | None,
                  v_first: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The token-parallel elementwise part of the core (prefill on the torch path): w
        (float32 decay), k, v, -kk, kk * a."""
        h, n = self.n_head, self.head_size
        rows = r.shape[0]
        a = torch.sigmoid(ly.a0 + al)
        kk = F.normalize((k * ly.k_k).view(rows, h, n), dim=-1, p=2.0).view(rows, h * n)
        k = k * (1 + (a - 1) * ly.k_a)
        if i:
            assert v_first is not None and vl is not None
            v = v + (v_first - v) * torch.sigmoid(ly.v0 + vl)
        w = torch.exp(_DECAY_SCALE * torch.sigmoid((ly.w0 + wl).float()))
        return w, k, v, -kk, kk * a

    def _att_out(self, ly: _Layer7, y: torch.Tensor, r: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        rows, h, n = y.shape[0], self.n_head, self.head_size
        y = F.group_norm(y, h, weight=ly.ln_x[0], bias=ly.ln_x[1], eps=_LN_X_EPS)
        bonus = (r * k * ly.r_k).view(rows, h, n).sum(dim=-1, keepdim=True) * v.view(rows, h, n)
        return (y + bonus.view(rows, h * n)) * g

    def _channel_mix(self, ly: _Layer7, x: torch.Tensor, xx: torch.Tensor, prev: torch.Tensor,
                     dnn: bool) -> torch.Tensor:
        """x + the channel mix of its ln2 output xx (previous tokens' `prev`)."""
        kx = torch.addcmul(xx, prev - xx, ly.ffn_xk)
        return ly.fvw.add_to(ly.fkw(kx, dnn, "relu").square_(), x, dnn)

    def state_layout(self) -> list[tuple[torch.device, torch.dtype, tuple[int, ...]]]:
        """(device, dtype, shape) of each state tensor, 3 per layer in the package's shapes:
        att_x_prev [C], att_kv [H, N, N] (float32), ffn_x_prev [C]. `DecodeSlots`
        (decode_slots.py) allocates a buffer [capacity + 1, *shape] for each, so its `get`
        returns the package's shapes as `StackedStates7.get` does; `step_states` takes the
        stacked att_kv as [B, H, N, N] or flat [B, H * N * N] alike."""
        return list(self._lay)

    def _step_stacked(self, tokens: Sequence[int], sb: StackedStates) -> torch.Tensor:
        emb = self.z["emb.weight"]
        idx = torch.as_tensor(list(tokens), dtype=torch.long, device=emb.device)
        # oneDNN for the CPU products, except one row on one thread (BLAS is faster there)
        return self.step_states(idx, sb.t, dnn=len(tokens) > 1 or torch.get_num_threads() > 1)

    def _embedding_on(self, device: torch.device) -> torch.Tensor:
        """The embedding on `device`: the placed one (it lives with the first layer), or a
        copy made there once for ids given elsewhere."""
        emb = self.z["emb.weight"]
        if device == emb.device:
            return emb
        copy = self._emb_copies.get(device)
        if copy is None:
            copy = self._emb_copies[device] = emb.to(device)
        return copy

    def step_states(self, idx: torch.Tensor, t: list[torch.Tensor], *, dnn: bool = True,
                    on_device: bool = False) -> torch.Tensor:
        """The batched decode step: token ids idx [B] (int64, on the first layer's device)
        fed to the states t (3 tensors per layer, stacked [B, ...] as `state_layout` gives
        them or flat [B, width], on the layers' devices); t's entries are replaced by the
        new states (att_kv is updated in place). Returns logits [B, V] float32 on the CPU, or
        with `on_device` on the head's device. Nothing in it reads a device tensor on the
        host (no .item(), no lists from tensors, no .cpu() with `on_device`), so on a
        single-GPU placement the step can be captured in a CUDA graph; `dnn` as for
        `_Mat7` (CPU products only). The counters (`kernel_calls`, `boundary_moves`) count
        eager calls, not graph replays."""
        c = (self.n_embd,)
        b = idx.shape[0]
        h, n = self.n_head, self.head_size
        with torch.inference_mode():
            x = self._embedding_on(idx.device).index_select(0, idx)
            v_first: torch.Tensor | None = None
            for i, ly in enumerate(self._layers):
                if ly.to_here:
                    x, v_first = self._move(ly.slot, x, v_first)
                s = 3 * i
                xx = F.layer_norm(x, c, weight=ly.ln1[0], bias=ly.ln1[1])
                r, k, v, g, wl, al, vl = self._products(ly, i, xx, t[s], dnn)
                if i == 0:
                    v_first = v
                y = self._core(ly, t[s + 1].view(b, h, n, n), r, k, v, g, wl, al, vl, v_first)
                x = ly.ow.add_to(y, x, dnn)
                t[s] = xx
                xx = F.layer_norm(x, c, weight=ly.ln2[0], bias=ly.ln2[1])
                x = self._channel_mix(ly, x, xx, t[s + 2], dnn)
                t[s + 2] = xx
            return self._project(x, on_device)

    def _move(self, slot: Slot, x: torch.Tensor, v_first: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Activations to the next segment's device and dtype: once per boundary."""
        self.boundary_moves += 1
        x = x.to(device=slot.device, dtype=slot.dtype)
        if v_first is not None:
            v_first = v_first.to(device=slot.device, dtype=slot.dtype)
        return x, v_first

    def _project(self, x: torch.Tensor, on_device: bool = False) -> torch.Tensor:
        """ln_out and head for rows x [B, C]: logits [B, V] float32 on the CPU (may be the
        reused logits buffer), or with `on_device` on the head's device."""
        if self._head_move:
            x, _ = self._move(self.slots[self.n_layer], x, None)
        x = F.layer_norm(x, (self.n_embd,), weight=self.z["ln_out.weight"],
                         bias=self.z["ln_out.bias"])
        head = self._head
        if x.dtype == torch.float32 and x.device.type == "cpu" and head.dtype == torch.float32:
            if x.shape[0] > 1 and self._head_mat.packed is not None:
                return self._head_mat(x)
            return torch.mm(x, head, out=self._logits_out(x.shape[0]))
        out = (x @ head).float()
        return out if on_device else out.cpu()

    def _prefill_stacked(self, jobs: Sequence[tuple[Sequence[int], Sequence[torch.Tensor] | None]]
                         ) -> list[tuple[torch.Tensor, State]]:
        """`prefill_many` in one pass. Sequences are ordered longest first and their tokens
        laid out time-major, so the sequences still running at time t are rows
        offs[t] .. offs[t] + n[t] - 1, the first n[t] of them; every product runs once over
        all rows, the state recurrence steps through time for the running sequences."""
        lay = time_major(jobs)
        order, steps, n_run, offs, flat = lay.order, lay.steps, lay.n_run, lay.offs, lay.flat
        prev, last = lay.prev, lay.last
        index: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # once per device
        zero = self.zero_state()
        # the jobs' states stacked per slot [k_jobs, ...] on each layer's device (copies)
        st = [torch.stack([self._state_slot((jobs[i][1] or zero)[j], j) for i in order])
              for j in range(3 * self.n_layer)]
        c = (self.n_embd,)
        emb = self.z["emb.weight"]
        with torch.inference_mode():
            x = emb.index_select(0, torch.tensor(flat, dtype=torch.long, device=emb.device))
            v_first: torch.Tensor | None = None
            for i, ly in enumerate(self._layers):
                if ly.to_here:
                    x, v_first = self._move(ly.slot, x, v_first)
                dev = ly.slot.device
                if dev not in index:
                    index[dev] = (torch.tensor(prev, dtype=torch.long, device=dev),
                                  torch.tensor(last, dtype=torch.long, device=dev))
                prev_idx, last_idx = index[dev]
                s0 = 3 * i
                xx = F.layer_norm(x, c, weight=ly.ln1[0], bias=ly.ln1[1])
                sx = torch.cat([st[s0], xx]).index_select(0, prev_idx)
                r, k, v, g, wl, al, vl = self._products(ly, i, xx, sx, True)
                if i == 0:
                    v_first = v
                state = st[s0 + 1]
                y = torch.empty_like(r)
                if self._fused(ly):  # the whole core per time step, one kernel call each
                    for t in range(steps):
                        m, o = n_run[t], offs[t]
                        sl = slice(o, o + m)
                        y[sl] = self._core(ly, state[:m], r[sl], k[sl], v[sl], g[sl], wl[sl],
                                           al[sl], None if vl is None else vl[sl],
                                           None if v_first is None else v_first[sl])
                else:  # the elementwise part over all tokens at once, the state per step
                    w, k, v, nkk, kka = self._time_mix(ly, i, r, k, v, wl, al, vl, v_first)
                    for t in range(steps):
                        m, o = n_run[t], offs[t]
                        sl = slice(o, o + m)
                        y[sl] = wkv_torch(state[:m], r[sl], w[sl], k[sl], v[sl], nkk[sl],
                                          kka[sl])
                    y = self._att_out(ly, y, r, k, v, g)
                x = ly.ow.add_to(y, x, True)
                st[s0] = xx.index_select(0, last_idx)
                xx = F.layer_norm(x, c, weight=ly.ln2[0], bias=ly.ln2[1])
                sx = torch.cat([st[s0 + 2], xx]).index_select(0, prev_idx)
                x = self._channel_mix(ly, x, xx, sx, True)
                st[s0 + 2] = xx.index_select(0, last_idx)
            last_rows = torch.tensor(last, dtype=torch.long, device=x.device)
            logits = self._project(x.index_select(0, last_rows))
            out: list[tuple[torch.Tensor, State] | None] = [None] * len(jobs)
            for j, i in enumerate(order):
                out[i] = (logits[j].clone(), [t[j].clone() for t in st])
        return out  # type: ignore[return-value]

    def _state_slot(self, t: torch.Tensor, j: int) -> torch.Tensor:
        dev, dt, shape = self._lay[j]
        return t.to(device=dev, dtype=dt).reshape(shape)
