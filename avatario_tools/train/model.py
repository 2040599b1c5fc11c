"""RWKV-4 as a trainable nn.Module whose state_dict is the raw `.pth` layout.

Parameter names, shapes and meanings are those of the published RWKV-4 checkpoints (and of
services.inference.checkpoint.build_random_checkpoint): `time_decay` is stored raw (the
`rwkv` package turns it into -exp(time_decay) at load), `time_mix_*` are (1, 1, C), matrices
are (out, in), and `blocks.0.ln0` normalises the embeddings (the package folds it into
`emb.weight` at load). So `export` writes a file the package and the node load unchanged, and
`load_raw` reads any raw RWKV-4 file back for fine-tuning.

The forward pass follows the package's att_seq/ffn_seq formula for formula (layer norms,
token shift, sigmoid receptance, squared-ReLU channel mix, WKV in float32), over a batch, with
the recurrent state carried in and out so a long context can be trained in segments.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from avatario_tools.train.config import TrainError
from avatario_tools.train.wkv import State, empty_state, wkv_chunked, wkv_step

# One layer's recurrent state: (att token-shift x, (aa, bb, pp), ffn token-shift x).
LayerState = tuple[torch.Tensor, State, torch.Tensor]


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    vocab_size: int
    n_ffn: int = 0

    @property
    def ffn(self) -> int:
        return self.n_ffn or 4 * self.n_embd

    def params(self) -> int:
        c, f, v = self.n_embd, self.ffn, self.vocab_size
        per_block = 4 * c * c + 2 * c * f + c * c + 12 * c
        return 2 * v * c + self.n_layer * per_block + 4 * c


class TimeMix(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.time_decay = nn.Parameter(torch.zeros(c))
        self.time_first = nn.Parameter(torch.zeros(c))
        self.time_mix_k = nn.Parameter(torch.zeros(1, 1, c))
        self.time_mix_v = nn.Parameter(torch.zeros(1, 1, c))
        self.time_mix_r = nn.Parameter(torch.zeros(1, 1, c))
        self.key = nn.Linear(c, c, bias=False)
        self.value = nn.Linear(c, c, bias=False)
        self.receptance = nn.Linear(c, c, bias=False)
        self.output = nn.Linear(c, c, bias=False)

    def forward(self, xx: torch.Tensor, shift: torch.Tensor, wkv_state: State, chunk: int,
                step_form: bool = False) -> tuple[torch.Tensor, State]:
        sx = torch.cat((shift[:, None, :], xx[:, :-1]), dim=1)
        kx = xx * self.time_mix_k + sx * (1 - self.time_mix_k)
        vx = xx * self.time_mix_v + sx * (1 - self.time_mix_v)
        rx = xx * self.time_mix_r + sx * (1 - self.time_mix_r)
        r = torch.sigmoid(self.receptance(rx))
        k = self.key(kx).float()
        v = self.value(vx).float()
        decay = -torch.exp(self.time_decay.float())
        first = self.time_first.float()
        if step_form:
            y, wkv_state = wkv_step(decay, first, k, v, wkv_state)
        else:
            y, wkv_state = wkv_chunked(decay, first, k, v, wkv_state, chunk)
        return self.output(r * y.to(r.dtype)), wkv_state


class ChannelMix(nn.Module):
    def __init__(self, c: int, f: int) -> None:
        super().__init__()
        self.time_mix_k = nn.Parameter(torch.zeros(1, 1, c))
        self.time_mix_r = nn.Parameter(torch.zeros(1, 1, c))
        self.key = nn.Linear(c, f, bias=False)
        self.receptance = nn.Linear(c, c, bias=False)
        self.value = nn.Linear(f, c, bias=False)

    def forward(self, xx: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        sx = torch.cat((shift[:, None, :], xx[:, :-1]), dim=1)
        kx = xx * self.time_mix_k + sx * (1 - self.time_mix_k)
        rx = xx * self.time_mix_r + sx * (1 - self.time_mix_r)
        r = torch.sigmoid(self.receptance(rx))
        return r * self.value(torch.relu(self.key(kx)) ** 2)


class Block(nn.Module):
    def __init__(self, shape: Shape, layer_id: int) -> None:
        super().__init__()
        c = shape.n_embd
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(c)
        self.ln1 = nn.LayerNorm(c)
        self.ln2 = nn.LayerNorm(c)
        self.att = TimeMix(c)
        self.ffn = ChannelMix(c, shape.ffn)

    def forward(self, x: torch.Tensor, att_x: torch.Tensor, aa: torch.Tensor, bb: torch.Tensor,
                pp: torch.Tensor, ffn_x: torch.Tensor, chunk: int, step_form: bool = False,
                dropout: float = 0.0):
        xx = self.ln1(x)
        out, (aa, bb, pp) = self.att(xx, att_x, (aa, bb, pp), chunk, step_form)
        x = x + F.dropout(out, dropout, self.training)
        xf = self.ln2(x)
        x = x + F.dropout(self.ffn(xf, ffn_x), dropout, self.training)
        return x, xx[:, -1], aa, bb, pp, xf[:, -1]


class RWKV4(nn.Module):
    """RWKV-4 over a batch: forward(idx (B, T), state) -> (logits (B, T, V), state)."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape
        self.emb = nn.Embedding(shape.vocab_size, shape.n_embd)
        self.blocks = nn.ModuleList(Block(shape, i) for i in range(shape.n_layer))
        self.ln_out = nn.LayerNorm(shape.n_embd)
        self.head = nn.Linear(shape.n_embd, shape.vocab_size, bias=False)
        self.wkv_chunk = 8
        self.grad_checkpoint = False
        # dropout on each block's time-mix and channel-mix outputs, in training mode only
        # (the trainer sets it; model.eval() or 0.0 gives the package's forward exactly)
        self.dropout = 0.0

    def empty_state(self, batch: int) -> list[LayerState]:
        dev = self.emb.weight.device
        c = self.shape.n_embd
        dtype = self.emb.weight.dtype
        return [(torch.zeros(batch, c, device=dev, dtype=dtype), empty_state(batch, c, dev),
                 torch.zeros(batch, c, device=dev, dtype=dtype))
                for _ in range(self.shape.n_layer)]

    def forward(self, idx: torch.Tensor, state: list[LayerState] | None = None, *,
                step_form: bool = False) -> tuple[torch.Tensor, list[LayerState]]:
        if state is None:
            state = self.empty_state(idx.shape[0])
        x = self.blocks[0].ln0(self.emb(idx))
        new_state: list[LayerState] = []
        for block, (att_x, (aa, bb, pp), ffn_x) in zip(self.blocks, state, strict=True):
            args = (x, att_x.to(x.dtype), aa, bb, pp, ffn_x.to(x.dtype), self.wkv_chunk,
                    step_form, self.dropout)
            if self.grad_checkpoint and torch.is_grad_enabled():
                x, att_x, aa, bb, pp, ffn_x = checkpoint(block, *args, use_reentrant=False)
            else:
                x, att_x, aa, bb, pp, ffn_x = block(*args)
            new_state.append((att_x, (aa, bb, pp), ffn_x))
        return self.head(self.ln_out(x)), new_state


def decay_groups(model: RWKV4, params: list[nn.Parameter], weight_decay: float
                 ) -> list[dict]:
    """AdamW parameter groups: decoupled weight decay on the weight matrices (the blocks'
    linear layers, the head, LoRA adapters), none on the embeddings, layer norms and the
    per-channel time parameters (time_decay, time_first, time_mix_*)."""
    emb = model.emb.weight
    decay = [p for p in params if p.ndim == 2 and p is not emb]
    ids = {id(p) for p in decay}
    rest = [p for p in params if id(p) not in ids]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": rest, "weight_decay": 0.0}) if g["params"]]


def detach_state(state: list[LayerState]) -> list[LayerState]:
    return [(a.detach(), (aa.detach(), bb.detach(), pp.detach()), f.detach())
            for a, (aa, bb, pp), f in state]


def init_weights(model: RWKV4, seed: int) -> None:
    """RWKV-4's initialisation (as in RWKV-LM's v4 trainer): decay speeds spread from slow to
    fast over channels and layers, token-shift mixes ramping over channels, tiny embeddings,
    orthogonal matrices, zero for the att key/receptance/output and the ffn receptance/value
    (each block starts as the identity), the head orthogonal at gain 0.5."""
    gen = torch.Generator().manual_seed(seed)
    s = model.shape
    c = s.n_embd
    ch = torch.arange(c, dtype=torch.float32)
    with torch.no_grad():
        nn.init.uniform_(model.emb.weight, -1e-4, 1e-4, generator=gen)
        for i, block in enumerate(model.blocks):
            r01 = i / max(s.n_layer - 1, 1)
            r10 = 1.0 - i / s.n_layer
            ramp = ch / c
            att, ffn = block.att, block.ffn
            att.time_decay.copy_(-5 + 8 * (ch / max(c - 1, 1)) ** (0.7 + 1.3 * r01))
            att.time_first.copy_(math.log(0.3) + ((ch + 1) % 3 - 1) * 0.5)
            att.time_mix_k.copy_((ramp ** r10).view(1, 1, c))
            att.time_mix_v.copy_((ramp ** r10 + 0.3 * r01).view(1, 1, c))
            att.time_mix_r.copy_((ramp ** (0.5 * r10)).view(1, 1, c))
            ffn.time_mix_k.copy_((ramp ** r10).view(1, 1, c))
            ffn.time_mix_r.copy_((ramp ** r10).view(1, 1, c))
            for lin in (att.key, att.receptance, att.output, ffn.receptance, ffn.value):
                nn.init.zeros_(lin.weight)
            for lin in (att.value, ffn.key):
                _orthogonal(lin.weight, 1.0, gen)
            for ln in (block.ln1, block.ln2, getattr(block, "ln0", None)):
                if ln is not None:
                    nn.init.ones_(ln.weight)
                    nn.init.zeros_(ln.bias)
        nn.init.ones_(model.ln_out.weight)
        nn.init.zeros_(model.ln_out.bias)
        _orthogonal(model.head.weight, 0.5, gen)


def _orthogonal(w: torch.Tensor, scale: float, gen: torch.Generator) -> None:
    rows, cols = w.shape
    gain = math.sqrt(rows / cols) if rows > cols else 1.0
    nn.init.orthogonal_(w, gain=gain * scale, generator=gen)


def new_model(shape: Shape, seed: int) -> RWKV4:
    model = RWKV4(shape)
    init_weights(model, seed)
    return model


def _shape_of(sd: dict[str, torch.Tensor], path: Path) -> Shape:
    if "_strategy" in sd:
        raise TrainError(f"{path} is pre-converted for strategy {sd['_strategy']!r} (transposed, "
                         "maybe quantised); train from the raw .pth it was converted from")
    if "emb.weight" not in sd or "blocks.0.att.key.weight" not in sd:
        raise TrainError(f"{path} is not an RWKV checkpoint (no emb.weight / blocks.0.att)")
    if any("ln_x" in k or "time_maa" in k or "gate.weight" in k for k in sd):
        raise TrainError(f"{path} is not an RWKV-4 checkpoint (RWKV-5/6 keys); the trainer "
                         "trains RWKV-4")
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    vocab, c = sd["emb.weight"].shape
    att = sd["blocks.0.att.key.weight"].shape
    if tuple(att) != (c, c):
        raise TrainError(f"{path}: att.key is {tuple(att)}; the trainer needs dim_att = "
                         f"n_embd ({c})")
    return Shape(n_layer, int(c), int(vocab), int(sd["blocks.0.ffn.key.weight"].shape[0]))


def read_raw(path: Path) -> tuple[Shape, dict[str, torch.Tensor]]:
    """A raw RWKV-4 .pth as (shape, state dict); TrainError if missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"checkpoint not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # unreadable / not a torch file
        raise TrainError(f"{path}: not a readable .pth ({exc})") from exc
    if not isinstance(sd, dict):
        raise TrainError(f"{path}: not a state dict")
    return _shape_of(sd, path), sd


def build_model(shape: Shape, sd: dict[str, torch.Tensor], where: Path) -> RWKV4:
    """The module holding a raw RWKV-4 state dict (fp32 master weights)."""
    model = RWKV4(shape)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise TrainError(f"{where}: keys differ from RWKV-4 {shape}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise TrainError(f"{where}: {k} is {tuple(sd[k].shape)}, expected {tuple(v.shape)}")
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model


def load_raw(path: Path) -> RWKV4:
    """Build the module from a raw RWKV-4 .pth."""
    shape, sd = read_raw(path)
    return build_model(shape, sd, path)


def raw_state_dict(model: RWKV4, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", dtype).contiguous().clone()
            for k, v in model.state_dict().items()}


def save_atomic(obj: object, path: Path) -> None:
    """torch.save to a temporary name, then rename: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export(model: RWKV4, path: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write the raw `.pth` the package and the node load."""
    if path.suffix != ".pth":
        raise TrainError(f"output must end in .pth (the rwkv package appends it): {path}")
    save_atomic(raw_state_dict(model, dtype), path)
    return path


def forward_tokens(model: RWKV4, tokens: list[int]) -> torch.Tensor:
    """Logits (T, V) of one sequence from an empty state, float32, no gradient."""
    with torch.no_grad():
        idx = torch.tensor([tokens], dtype=torch.long, device=model.emb.weight.device)
        return model(idx)[0][0].float()
