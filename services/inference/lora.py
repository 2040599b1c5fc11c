"""LoRA adapters for RWKV-4 checkpoints: the file format, merging, and merging at load time.

An adapter file (written by `python -m avatario_tools.train lora`) is a torch file read with
`weights_only=True` (tensors, strings and numbers only; nothing is unpickled):

    {"format": "avatario-lora", "version": 1, "rank": r, "alpha": a,
     "n_layer": L, "n_embd": C, "vocab_size": V,
     "tensors": {"blocks.<i>.<att|ffn>.<name>.lora_A": (r, in), "...lora_B": (out, r)}}

Merging adds (alpha / rank) * B @ A to each adapted matrix `blocks.<i>.<att|ffn>.<name>.weight`
of the raw `.pth` (computed in float32, stored back in the matrix's dtype). `alpha` is the
LoRA alpha the adapter was trained with; `path:alpha` (the node's `--lora`) overrides it, so
`path:0` is the base model and twice the trained alpha doubles the adapter's effect.

The node merges before the `rwkv` package sees the weights: the package reads a file path
(`torch.load(path)` inside `RWKV.__init__`, no hook for a state dict), so `merged_load`
answers that one call with the merged state dict (the base memory-mapped, only the adapted
matrices materialised) instead of writing a merged copy of a 7B/14B file to disk.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

FORMAT = "avatario-lora"
VERSION = 1
_load_lock = threading.Lock()


class LoraError(ValueError):
    """A bad adapter spec or file, or one that does not fit the checkpoint."""


@dataclass(frozen=True)
class Adapter:
    path: Path
    rank: int
    alpha: float
    n_layer: int
    n_embd: int
    vocab_size: int
    tensors: dict[str, torch.Tensor]

    def pairs(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(weight key in the .pth, A, B) for each adapted matrix."""
        for key in sorted(self.tensors):
            if key.endswith(".lora_A"):
                stem = key.removesuffix(".lora_A")
                yield stem + ".weight", self.tensors[key], self.tensors[stem + ".lora_B"]


def parse_spec(spec: str) -> tuple[Path, float | None]:
    """"path" or "path:alpha" -> (path, alpha or None for the trained one)."""
    spec = spec.strip()
    if not spec:
        raise LoraError("empty LoRA spec; use path[:alpha]")
    path, sep, tail = spec.rpartition(":")
    if not sep:
        return Path(spec), None
    if not path:
        raise LoraError(f"LoRA spec {spec!r}: no path before ':'")
    try:
        alpha = float(tail)
    except ValueError:
        raise LoraError(f"LoRA spec {spec!r}: alpha {tail!r} is not a number "
                        "(use path[:alpha], e.g. adapter.pt:16)") from None
    if not math.isfinite(alpha) or alpha < 0:
        raise LoraError(f"LoRA spec {spec!r}: alpha must be a finite number >= 0, got {tail!r}")
    return Path(path), alpha


def save_adapter(path: Path, tensors: dict[str, torch.Tensor], *, rank: int, alpha: float,
                 n_layer: int, n_embd: int, vocab_size: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"format": FORMAT, "version": VERSION, "rank": int(rank), "alpha": float(alpha),
           "n_layer": int(n_layer), "n_embd": int(n_embd), "vocab_size": int(vocab_size),
           "tensors": {k: v.detach().to("cpu", torch.float32).contiguous().clone()
                       for k, v in tensors.items()}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_adapter(path: Path) -> Adapter:
    path = Path(path)
    if not path.is_file():
        raise LoraError(f"LoRA adapter not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LoraError(f"{path}: not a readable LoRA adapter ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise LoraError(f"{path}: not an {FORMAT} file")
    if obj.get("version") != VERSION:
        raise LoraError(f"{path}: adapter format version {obj.get('version')}, "
                        f"this node reads {VERSION}")
    tensors = obj["tensors"]
    rank = int(obj["rank"])
    for key, t in tensors.items():
        if not (key.endswith(".lora_A") or key.endswith(".lora_B")):
            raise LoraError(f"{path}: unexpected tensor {key}")
        other = key[:-1] + ("B" if key.endswith("A") else "A")
        if other not in tensors:
            raise LoraError(f"{path}: {key} has no {other}")
        if t.ndim != 2 or (t.shape[0] if key.endswith("A") else t.shape[1]) != rank:
            raise LoraError(f"{path}: {key} has shape {tuple(t.shape)}, rank is {rank}")
    return Adapter(path, rank, float(obj["alpha"]), int(obj["n_layer"]), int(obj["n_embd"]),
                   int(obj["vocab_size"]), tensors)


def merge_into(weights: dict[str, torch.Tensor], adapter: Adapter,
               alpha: float | None = None) -> dict[str, torch.Tensor]:
    """Add the adapter to a raw RWKV-4 state dict (in place; returned for convenience)."""
    if "_strategy" in weights:
        raise LoraError(f"cannot merge {adapter.path} into a pre-converted checkpoint "
                        "(transposed, maybe quantised): merge into the raw .pth")
    emb = weights.get("emb.weight")
    if emb is None or tuple(emb.shape) != (adapter.vocab_size, adapter.n_embd):
        got = tuple(emb.shape) if emb is not None else None
        raise LoraError(f"{adapter.path} was trained for vocab {adapter.vocab_size} x n_embd "
                        f"{adapter.n_embd}; the checkpoint's emb.weight is {got}")
    scale = (adapter.alpha if alpha is None else alpha) / adapter.rank
    for key, a, b in adapter.pairs():
        w = weights.get(key)
        if w is None:
            raise LoraError(f"{adapter.path}: the checkpoint has no {key}")
        if (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise LoraError(f"{adapter.path}: {key} is {tuple(w.shape)} in the checkpoint, "
                            f"the adapter is for {(b.shape[0], a.shape[1])}")
        weights[key] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
    return weights


def merged_weights(base: Path, adapter: Adapter, alpha: float | None = None
                   ) -> dict[str, torch.Tensor]:
    """The base .pth (memory-mapped) with the adapter merged."""
    sd = torch.load(base, map_location="cpu", weights_only=True, mmap=True)
    return merge_into(sd, adapter, alpha)


@contextmanager
def merged_load(base: Path, adapter: Adapter, alpha: float | None = None) -> Iterator[None]:
    """While open, `torch.load(<base>)` returns the merged state dict; every other
    `torch.load` call goes through unchanged. Wrap `rwkv.model.RWKV(base, strategy)` in it."""
    weights = merged_weights(base, adapter, alpha)
    target = Path(base).resolve()
    original = torch.load

    def load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and Path(f).resolve() == target:
            return weights
        return original(f, *args, **kwargs)

    with _load_lock:
        torch.load = load
        try:
            yield
        finally:
            torch.load = original
