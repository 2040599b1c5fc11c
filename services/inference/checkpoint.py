"""RWKV checkpoints: build small random ones (tests, benches) and inspect real ones cheaply.

`build_random_checkpoint` writes a state dict with the real RWKV-4 key names and shapes, and
`build_random_checkpoint7` one with the real RWKV-7 ("x070", Goose / G1) names and shapes, as
found in the published `.pth` files, so the `rwkv` package loads them like real models.
`inspect_checkpoint` reads only shapes and dtypes (memory-mapped), tells the generation from
the key names (`detect_generation`: RWKV-7 has `blocks.0.att.r_k`, `att.a0`...; RWKV-4 has
`att.time_first`), refuses a file that mixes generations or lacks keys of its own, and
recognises files pre-converted by the package's convert-and-save (`_strategy` key,
transposed matrices). Nothing here imports the `rwkv` package: the node decides the package's
import-time switches (RWKV_V7_ON) from this answer (services/inference/model_family.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from services.common.errors import ConfigError

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "Lora7",
    "build_random_checkpoint",
    "build_random_checkpoint7",
    "detect_generation",
    "inspect_checkpoint",
    "lora_dims7",
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
    # RWKV architecture version detected from the key names (4, 5, 5.1, 5.2, 6, 7).
    version: float = 4.0
    n_ffn: int = 0
    # RWKV-7: heads x head size (from blocks.0.att.r_k) and the low-rank widths; else 0 / None
    n_head: int = 0
    head_size: int = 0
    lora: Lora7 | None = None

    @property
    def generation(self) -> int:
        """4 or 7 (the generations this node serves); 5 and 6 for the others."""
        return int(self.version)


class CheckpointError(ConfigError):
    """A file the node will not load: mixed generations, missing keys, an unknown layout."""


@dataclass(frozen=True, slots=True)
class Lora7:
    """RWKV-7's low-rank widths: decay (w1/w2), in-context rate (a1/a2), value residual
    (v1/v2) and gate (g1/g2)."""

    decay: int
    aaa: int
    mv: int
    gate: int

    def params(self, n_embd: int) -> int:
        """Weights of the four low-rank pairs of one block (each C x D + D x C)."""
        return 2 * n_embd * (self.decay + self.aaa + self.mv + self.gate)


def lora_dims7(n_embd: int) -> Lora7:
    """The widths RWKV-LM's RWKV-7 trainer derives from n_embd (rounded to multiples of 32):
    768 -> 64/64/32/128 (the 0.1B G1), 4096 -> 128/128/96/480."""

    def r(x: float) -> int:
        return max(32, int(round(x / 32)) * 32)

    c = float(n_embd)
    return Lora7(r(1.8 * c**0.5), r(1.8 * c**0.5), r(1.3 * c**0.5), r(0.6 * c**0.8))


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
    return _save_random(path, w, dtype, seed=seed, n_layer=n_layer, n_embd=n_embd,
                        vocab_size=vocab_size, built_by="build_random_checkpoint")


def build_random_checkpoint7(
    path: str | Path,
    *,
    n_layer: int,
    n_embd: int,
    vocab_size: int = 65536,
    head_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    lora: Lora7 | None = None,
) -> Path:
    """Write a random RWKV-7 ("x070") `.pth` with the published key names and shapes and
    return its path: per block `att.{x_r,x_w,x_k,x_v,x_a,x_g}` [1,1,C], `att.{w0,a0,v0}`
    [1,1,C] with their low-rank pairs `w1/w2`, `a1/a2`, `v1/v2`, the gate pair `g1/g2`,
    `att.{k_k,k_a}` [1,1,C], `att.r_k` [H, N], `att.{receptance,key,value,output}.weight`
    [C,C], `att.ln_x.{weight,bias}` [C], `ffn.x_k` [1,1,C], `ffn.key.weight` [4C,C],
    `ffn.value.weight` [C,4C], `ln1`/`ln2` (and `ln0` on block 0), `emb`, `ln_out`, `head`.

    The values are random but shaped like a trained model's ranges: mixes in (0, 1), decay
    biases spread over channels, value-residual gates near the middle, output projections
    smaller than input ones, so logits have a spread of a few units.
    """
    if n_layer < 1 or vocab_size < 2 or head_size < 1 or n_embd < head_size:
        raise ValueError("n_layer >= 1, vocab_size >= 2, n_embd >= head_size >= 1 required")
    if n_embd % head_size:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of head_size ({head_size})")
    path = Path(path)
    if path.suffix != ".pth":  # the rwkv package appends ".pth" to the name it is given
        path = path.with_name(path.name + ".pth")
    gen = torch.Generator().manual_seed(seed)
    c, f, h = n_embd, 4 * n_embd, n_embd // head_size
    dims = lora or lora_dims7(c)
    ramp = torch.arange(c, dtype=torch.float32) / max(c - 1, 1)

    def vec(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, 1, c).clone()

    def uni(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(c, generator=gen)

    w: dict[str, torch.Tensor] = {"emb.weight": _rand(gen, vocab_size, c, std=1e-2)}
    for i in range(n_layer):
        depth = i / max(n_layer - 1, 1)
        b, a, m = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        if i == 0:
            w[b + "ln0.weight"] = torch.ones(c) + _rand(gen, c, std=0.02)
            w[b + "ln0.bias"] = _rand(gen, c, std=0.02)
        for ln in ("ln1", "ln2"):
            w[b + f"{ln}.weight"] = torch.ones(c) + _rand(gen, c, std=0.05)
            w[b + f"{ln}.bias"] = _rand(gen, c, std=0.02)
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            w[a + name] = vec(uni(0.05, 0.95))
        w[a + "w0"] = vec(-6.0 + 7.0 * ramp ** (0.7 + 1.3 * depth))
        w[a + "w1"] = _rand(gen, c, dims.decay, std=0.1)
        w[a + "w2"] = _rand(gen, dims.decay, c, std=0.1)
        w[a + "a0"] = vec(_rand(gen, c, std=0.5))
        w[a + "a1"] = _rand(gen, c, dims.aaa, std=0.1)
        w[a + "a2"] = _rand(gen, dims.aaa, c, std=0.1)
        w[a + "v0"] = vec(torch.ones(c) + _rand(gen, c, std=0.2))
        w[a + "v1"] = _rand(gen, c, dims.mv, std=0.1)
        w[a + "v2"] = _rand(gen, dims.mv, c, std=0.1)
        w[a + "g1"] = _rand(gen, c, dims.gate, std=1.0 / math.sqrt(c))
        w[a + "g2"] = _rand(gen, dims.gate, c, std=1.0 / math.sqrt(dims.gate))
        w[a + "k_k"] = vec(uni(0.7, 1.0))
        w[a + "k_a"] = vec(uni(0.8, 1.2))
        w[a + "r_k"] = _rand(gen, h, head_size, std=0.1)
        for name in ("receptance", "key", "value"):
            w[a + f"{name}.weight"] = _rand(gen, c, c, std=1.0 / math.sqrt(c))
        w[a + "output.weight"] = _rand(gen, c, c, std=0.5 / math.sqrt(c))
        w[a + "ln_x.weight"] = torch.ones(c) + _rand(gen, c, std=0.05)
        w[a + "ln_x.bias"] = _rand(gen, c, std=0.02)
        w[m + "x_k"] = vec(uni(0.05, 0.95))
        w[m + "key.weight"] = _rand(gen, f, c, std=1.0 / math.sqrt(c))
        w[m + "value.weight"] = _rand(gen, c, f, std=0.5 / math.sqrt(f))
    w["ln_out.weight"] = torch.ones(c)
    w["ln_out.bias"] = torch.zeros(c)
    w["head.weight"] = _rand(gen, vocab_size, c, std=2.0 / math.sqrt(c))
    return _save_random(path, w, dtype, generation=7, seed=seed, n_layer=n_layer,
                        n_embd=n_embd, head_size=head_size, vocab_size=vocab_size,
                        built_by="build_random_checkpoint7")


def _save_random(path: Path, w: dict[str, torch.Tensor], dtype: torch.dtype, *,
                 built_by: str, **facts: int) -> Path:
    """Save random weights in `dtype` and the `.random.json` marker beside them (the node's
    "this is a demo model" signal)."""
    out = {k: v.to(dtype).contiguous() for k, v in w.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    marker = {"random": True, **facts, "built_by": f"services.inference.checkpoint.{built_by}"}
    random_marker_path(path).write_text(json.dumps(marker) + "\n")
    return path


def random_marker_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + RANDOM_MARKER_SUFFIX)


def is_random_checkpoint(path: str | Path) -> bool:
    """Whether `build_random_checkpoint` wrote this file (its marker file is beside it)."""
    return random_marker_path(path).is_file()


# Key-name markers of each generation (suffixes of "blocks.N." keys).
_V7_MARKERS = ("att.r_k", "att.a0", "att.w0", "att.k_k", "att.x_r")
_OLD_MARKERS = ("att.time_first", "att.time_faaaa", "att.time_maa_x", "att.time_mix_k",
                "att.time_decay")
# Every RWKV-7 block holds these (block 0's v0/v1/v2 are optional: the package ignores them).
_V7_BLOCK_KEYS = (
    "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias",
    "att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g",
    "att.w0", "att.w1", "att.w2", "att.a0", "att.a1", "att.a2", "att.g1", "att.g2",
    "att.k_k", "att.k_a", "att.r_k", "att.receptance.weight", "att.key.weight",
    "att.value.weight", "att.output.weight", "att.ln_x.weight", "att.ln_x.bias",
    "ffn.x_k", "ffn.key.weight", "ffn.value.weight",
)
_V7_VALUE_RESIDUAL = ("att.v0", "att.v1", "att.v2")  # blocks 1.. (block 0 keeps v_first)
_V7_TOP_KEYS = ("emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias", "ln_out.weight",
                "ln_out.bias", "head.weight")


def _examples(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def detect_generation(keys: list[str], shapes: dict[str, tuple[int, ...]] | None = None,
                      *, where: str = "checkpoint") -> float:
    """The RWKV version a state dict's key names say (4, 5, 5.1, 5.2, 6 or 7), without
    loading anything. RWKV-7 is told by its own keys (`att.r_k`, `att.a0`, ...) before the
    `ln_x` it shares with RWKV-5/6. A file with keys of RWKV-7 and of an older generation,
    or an RWKV-7 file missing keys, raises CheckpointError naming what was found."""
    block_keys = [k for k in keys if _BLOCK_RE.match(k)]
    v7 = [k for k in block_keys if k.endswith(_V7_MARKERS)]
    old = [k for k in block_keys if k.endswith(_OLD_MARKERS)]
    if v7 and old:
        raise CheckpointError(
            f"{where} mixes RWKV generations: RWKV-7 keys ({_examples(v7)}) and keys of an "
            f"older generation ({_examples(old)}); it is not one model")
    if v7:
        _check_v7_keys(keys, where)
        return 7.0
    shapes = shapes or {}
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
            shape = shapes.get(k, ())
            if k.endswith("att.time_decay") and len(shape) > 1 and shape[1] > 1:
                version = 5.2
                break
    return version


def _check_v7_keys(keys: list[str], where: str) -> None:
    have = set(keys)
    n_layer = 1 + max((int(m.group(1)) for k in keys if (m := _BLOCK_RE.match(k))), default=-1)
    missing = [k for k in _V7_TOP_KEYS if k not in have]
    for i in range(n_layer):
        want = _V7_BLOCK_KEYS + (_V7_VALUE_RESIDUAL if i else ())
        missing += [f"blocks.{i}.{k}" for k in want if f"blocks.{i}.{k}" not in have]
    if missing:
        raise CheckpointError(
            f"{where} has RWKV-7 keys but is not a complete RWKV-7 checkpoint: "
            f"{_examples(missing, 5)} missing")


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read shapes/dtypes of a `.pth` without materialising it (torch.load with mmap)."""
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same answer
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    try:
        if not isinstance(sd, dict) or "emb.weight" not in sd:
            raise CheckpointError(f"{path}: not an RWKV checkpoint (no emb.weight)")
        converted = sd.get("_strategy")
        converted_strategy = str(converted) if converted is not None else None
        tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        version = detect_generation(list(tensors), shapes, where=str(path))
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
        n_head = head_size = 0
        lora: Lora7 | None = None
        if version == 7.0:
            n_head, head_size = shapes["blocks.0.att.r_k"]
            if n_head * head_size != n_embd:
                raise CheckpointError(
                    f"{path}: blocks.0.att.r_k is {n_head} x {head_size} but n_embd is {n_embd}")
            # block 0's value-residual pair may be absent (the package ignores it)
            mv = next((shapes[k][1] for k in ("blocks.1.att.v1", "blocks.0.att.v1")
                       if k in shapes), 0)
            lora = Lora7(shapes["blocks.0.att.w1"][1], shapes["blocks.0.att.a1"][1], mv,
                         shapes["blocks.0.att.g1"][1])
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
            version=version,
            n_ffn=int(n_ffn),
            n_head=int(n_head),
            head_size=int(head_size),
            lora=lora,
        )
    finally:
        del sd
