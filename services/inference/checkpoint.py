"""RWKV-4 checkpoints: build small random ones (tests, benches) and inspect real ones cheaply.

`build_random_checkpoint` writes a state dict with the real RWKV-4 key names and shapes, as
found in the published `.pth` files, so the `rwkv` package loads it like a real model.
`inspect_checkpoint` reads only shapes and dtypes (memory-mapped), and recognises files
pre-converted by the package's convert-and-save (`_strategy` key, transposed matrices).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "CheckpointInfo",
    "build_random_checkpoint",
    "inspect_checkpoint",
    "is_random_checkpoint",
    "random_marker_path",
]

# Written next to every checkpoint `build_random_checkpoint` makes ("<file>.random.json"):
# the file itself cannot carry it (the rwkv package treats every key as a weight). The node
# reads it to know it serves random weights (e.g. no model second opinion for the guard).
RANDOM_MARKER_SUFFIX = ".random.json"

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What a checkpoint file holds, without placing it anywhere."""

    n_layer: int
    n_embd: int
    vocab_size: int
    # Dtype of the layer matrices ("float32", "bfloat16", "float16", "uint8" for int8 files).
    dtype: str
    # Sum of tensor sizes in the file (bytes).
    param_bytes: int
    # The strategy a pre-converted file was converted for, else None.
    converted_strategy: str | None
    # RWKV architecture version detected from the key names (4, 5, 5.1, 5.2, 6).
    version: float = 4.0
    n_ffn: int = 0


def _rand(gen: torch.Generator, *shape: int, std: float) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * std


def build_random_checkpoint(
    path: str | Path,
    *,
    n_layer: int,
    n_embd: int,
    vocab_size: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random RWKV-4 `.pth` (raw, unconverted layout) and return its path.

    Initialisation follows RWKV-4's spirit: tiny embeddings (ln0 normalises them), decay
    speeds spread from slow to fast across channels, mixes ramping over channels, layer
    norms at 1, and projections scaled so logits have a spread of a few units.
    """
    if n_layer < 1 or n_embd < 2 or vocab_size < 2:
        raise ValueError("n_layer >= 1, n_embd >= 2, vocab_size >= 2 required")
    path = Path(path)
    if path.suffix != ".pth":  # the rwkv package appends ".pth" to names lacking it
        path = path.with_name(path.name + ".pth")
    gen = torch.Generator().manual_seed(seed)
    c, f = n_embd, 4 * n_embd
    ch = torch.arange(c, dtype=torch.float32)
    ramp = ch / max(c - 1, 1)  # 0 .. 1 over channels
    w: dict[str, torch.Tensor] = {}
    w["emb.weight"] = _rand(gen, vocab_size, c, std=1e-2)
    for i in range(n_layer):
        depth = i / max(n_layer - 1, 1)  # 0 .. 1 over layers
        b = f"blocks.{i}."
        if i == 0:
            w[b + "ln0.weight"] = torch.ones(c) + _rand(gen, c, std=0.02)
            w[b + "ln0.bias"] = _rand(gen, c, std=0.02)
        for ln in ("ln1", "ln2"):
            w[b + f"{ln}.weight"] = torch.ones(c) + _rand(gen, c, std=0.05)
            w[b + f"{ln}.bias"] = _rand(gen, c, std=0.02)
        # Decay speed: -5 (slow) .. 3 (fast); stored as the log-log form the package exps.
        w[b + "att.time_decay"] = -5.0 + 8.0 * ramp ** (0.7 + 1.3 * depth)
        zigzag = ((ch + 1) % 3 - 1) * 0.5
        w[b + "att.time_first"] = torch.full((c,), math.log(0.3)) + zigzag
        mix = ramp ** (1.0 - 0.5 * (1 - depth))
        w[b + "att.time_mix_k"] = mix.reshape(1, 1, c).clone()
        w[b + "att.time_mix_v"] = (mix + 0.3 * depth).clamp(0, 1).reshape(1, 1, c)
        w[b + "att.time_mix_r"] = (0.5 * mix).reshape(1, 1, c)
        for name in ("key", "value", "receptance"):
            w[b + f"att.{name}.weight"] = _rand(gen, c, c, std=1.0 / math.sqrt(c))
        w[b + "att.output.weight"] = _rand(gen, c, c, std=0.5 / math.sqrt(c))
        w[b + "ffn.time_mix_k"] = mix.reshape(1, 1, c).clone()
        w[b + "ffn.time_mix_r"] = mix.reshape(1, 1, c).clone()
        w[b + "ffn.key.weight"] = _rand(gen, f, c, std=1.0 / math.sqrt(c))
        w[b + "ffn.receptance.weight"] = _rand(gen, c, c, std=1.0 / math.sqrt(c))
        w[b + "ffn.value.weight"] = _rand(gen, c, f, std=0.5 / math.sqrt(f))
    w["ln_out.weight"] = torch.ones(c)
    w["ln_out.bias"] = torch.zeros(c)
    w["head.weight"] = _rand(gen, vocab_size, c, std=2.0 / math.sqrt(c))
    out = {k: v.to(dtype).contiguous() for k, v in w.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    random_marker_path(path).write_text(json.dumps(
        {"random": True, "seed": seed, "n_layer": n_layer, "n_embd": n_embd,
         "vocab_size": vocab_size, "built_by": "services.inference.checkpoint."
         "build_random_checkpoint"}) + "\n")
    return path


def random_marker_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + RANDOM_MARKER_SUFFIX)


def is_random_checkpoint(path: str | Path) -> bool:
    """Whether `build_random_checkpoint` wrote this file (its marker file is beside it)."""
    return random_marker_path(path).is_file()


def _detect_version(keys: list[str], shapes: dict[str, tuple[int, ...]]) -> float:
    version = 4.0
    for k in keys:
        if "ln_x" in k:
            version = max(version, 5.0)
        if "gate.weight" in k:
            version = max(version, 5.1)
        if "time_maa" in k:
            version = max(version, 6.0)
    if version in (5.0, 5.1):
        for k in keys:
            if k.endswith("att.time_decay") and len(shapes[k]) > 1 and shapes[k][1] > 1:
                version = 5.2
                break
    return version


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read shapes/dtypes of a `.pth` without materialising it (torch.load with mmap)."""
    path = Path(path)
    sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    try:
        if "emb.weight" not in sd:
            raise ValueError(f"{path}: not an RWKV checkpoint (no emb.weight)")
        converted = sd.get("_strategy")
        converted_strategy = str(converted) if converted is not None else None
        tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        n_layer = 0
        for k in tensors:
            m = _BLOCK_RE.match(k)
            if m:
                n_layer = max(n_layer, int(m.group(1)) + 1)
        vocab_size, n_embd = shapes["emb.weight"]
        key_w = "blocks.0.ffn.key.weight"
        n_ffn = 0
        if key_w in shapes:
            # Raw layout (out, in) = (F, C); converted layout is transposed (C, F).
            a, b = shapes[key_w]
            n_ffn = b if converted_strategy is not None else a
        ref = "blocks.0.att.key.weight"
        dtype_t = tensors[ref].dtype if ref in tensors else tensors["emb.weight"].dtype
        param_bytes = sum(v.numel() * v.element_size() for v in tensors.values())
        return CheckpointInfo(
            n_layer=n_layer,
            n_embd=int(n_embd),
            vocab_size=int(vocab_size),
            dtype=str(dtype_t).removeprefix("torch."),
            param_bytes=int(param_bytes),
            converted_strategy=converted_strategy,
            version=_detect_version(list(tensors), shapes),
            n_ffn=int(n_ffn),
        )
    finally:
        del sd
