"""Batched RWKV-4 decode over the weights the `rwkv` package loaded and placed.

The package's `RWKV.forward` runs one sequence at a time. `BatchedRWKV.step` runs one decode
token for B sequences at once with the same math, layer by layer on each layer's device and
activation dtype (as `model.strategy[i]` says), so each weight matrix is read once per step
for the whole batch. Layouts the batched path does not cover (int8 layers, streamed layers,
RWKV-5/6) fall back to per-sequence `model.forward`, which is always correct.

Per-sequence state is the package's own: a list of 5 tensors per layer, in this order:
att_xx (n_embd, atype), att_aa, att_bb, att_pp (n_att, float32; pp starts at -1e30),
ffn_xx (n_embd, atype), each on the layer's device.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
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
    """Load a checkpoint with `rwkv.model.RWKV(path, strategy)` after setting the env switches."""
    mod = _import_rwkv_model()
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


class BatchedRWKV:
    """Batched decode for a loaded `rwkv.model.RWKV` (RWKV-4), with a per-sequence fallback."""

    def __init__(self, model: Any) -> None:
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
        self.batched_steps = 0
        self.fallback_steps = 0

    @property
    def batched(self) -> bool:
        return self.fallback_reason is None

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
        logits = self.step(tokens, batch)
        return logits, [batch.get(i) for i in range(len(batch))]

    def step(self, tokens: Sequence[int], batch: StateBatch) -> torch.Tensor:
        """Feed tokens[i] to row i of `batch` (updated in place); return logits [B, V] on CPU."""
        if len(tokens) != len(batch):
            raise ValueError(f"{len(tokens)} tokens for a batch of {len(batch)}")
        if not tokens:
            return torch.empty((0, self.vocab_size), dtype=torch.float32)
        if isinstance(batch, StackedStates):
            self.batched_steps += 1
            return self._step_stacked(tokens, batch)
        assert isinstance(batch, ListStates)
        self.fallback_steps += 1
        outs: list[torch.Tensor] = []
        with torch.no_grad():
            for r, tok in enumerate(tokens):
                out, batch.states[r] = self.model.forward([int(tok)], list(batch.states[r]))
                outs.append(out.float().cpu())
        return torch.stack(outs)

    def _step_stacked(self, tokens: Sequence[int], sb: StackedStates) -> torch.Tensor:
        w = self.w
        emb = w["emb.weight"]
        idx = torch.as_tensor(list(tokens), dtype=torch.long, device=emb.device)
        with torch.no_grad():
            x = emb.index_select(0, idx)
            t = sb.t
            for i in range(self.n_layer):
                dd = self.strategy[i]
                x = x.to(dtype=dd.atype, device=dd.device)
                b = f"blocks.{i}."
                s = i * 5
                x, t[s], t[s + 1], t[s + 2], t[s + 3] = self._att(
                    x, t[s], t[s + 1], t[s + 2], t[s + 3], b
                )
                x, t[s + 4] = self._ffn(x, t[s + 4], b)
                if self.rescale_layer > 0 and (i + 1) % self.rescale_layer == 0:
                    x = x / 2
            dd = self.strategy[self.n_layer]
            x = x.to(dtype=dd.atype, device=dd.device)
            x = F.layer_norm(x, (self.n_embd,), weight=w["ln_out.weight"], bias=w["ln_out.bias"])
            x = x @ w["head.weight"]
            return x.float().cpu()

    def _att(
        self,
        x: torch.Tensor,
        sx: torch.Tensor,
        aa: torch.Tensor,
        bb: torch.Tensor,
        pp: torch.Tensor,
        b: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        w = self.w
        a = b + "att."
        xx = F.layer_norm(x, (x.shape[-1],), weight=w[b + "ln1.weight"], bias=w[b + "ln1.bias"])
        k_mix, v_mix, r_mix = w[a + "time_mix_k"], w[a + "time_mix_v"], w[a + "time_mix_r"]
        kx = xx * k_mix + sx * (1 - k_mix)
        vx = xx * v_mix + sx * (1 - v_mix)
        rx = xx * r_mix + sx * (1 - r_mix)
        r = torch.sigmoid(rx @ w[a + "receptance.weight"])
        k = (kx @ w[a + "key.weight"]).float()
        v = (vx @ w[a + "value.weight"]).float()
        # WKV with the running-max trick, fp32 throughout.
        ww = w[a + "time_first"] + k
        p = torch.maximum(pp, ww)
        e1 = torch.exp(pp - p)
        e2 = torch.exp(ww - p)
        wkv = ((e1 * aa + e2 * v) / (e1 * bb + e2)).to(dtype=x.dtype)
        ww = w[a + "time_decay"] + pp
        p = torch.maximum(ww, k)
        e1 = torch.exp(ww - p)
        e2 = torch.exp(k - p)
        out = (r * wkv) @ w[a + "output.weight"]
        return x + out, xx, e1 * aa + e2 * v, e1 * bb + e2, p

    def _ffn(self, x: torch.Tensor, sx: torch.Tensor, b: str) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.w
        f = b + "ffn."
        xx = F.layer_norm(x, (x.shape[-1],), weight=w[b + "ln2.weight"], bias=w[b + "ln2.bias"])
        k_mix, r_mix = w[f + "time_mix_k"], w[f + "time_mix_r"]
        kx = xx * k_mix + sx * (1 - k_mix)
        rx = xx * r_mix + sx * (1 - r_mix)
        r = torch.sigmoid(rx @ w[f + "receptance.weight"])
        vx = torch.relu(kx @ w[f + "key.weight"]) ** 2
        return x + r * (vx @ w[f + "value.weight"]), xx
