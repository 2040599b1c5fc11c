"""The model families the node serves, behind one small interface.

RWKV-4 (Raven, Pile, World) and RWKV-7 (Goose: World and the G1 chat series) differ in how
the `rwkv` package is imported and loads them, how layers are placed, what a conversation's
state is and which chat format fits. The engine, the state cache and the shared state tier
only see the batched-model interface (`BatchedRWKV` / `BatchedRWKV7`: `step`, `prefill_many`,
`new_batch`, `to_model`, `zero_state`, `state_nbytes`, `vocab_size`, `weights`); everything
generation-specific is chosen here from the checkpoint, before the package is imported:

* `family_of(info)`: the family of an inspected checkpoint (RWKV-5/6 refused clearly).
* `load_batched(path, family, strategy)`: import the package with the family's switch
  (`rwkv_package.import_rwkv_model`), load, place, wrap in the batched engine's model.
* `as_batched(model)`: the engine's entry for a package model or a batched one.

One generation per process: the package's RWKV_V7_ON switch is read when `rwkv.model` is
imported, and the node serves one checkpoint, so it sets the switch from that file's keys.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.common.errors import ConfigError
from services.inference.planner import check_strategy7, parse_strategy
from services.inference.rwkv7_batched import BatchedRWKV7, Slot
from services.inference.rwkv_batched import BatchedRWKV
from services.inference.rwkv_package import import_rwkv_model

__all__ = ["FAMILIES", "Family", "as_batched", "family_of", "load_batched", "load_rwkv7",
           "slots_from_strategy"]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_JIT_DEPRECATED = r".*torch\.jit\..* is deprecated"


@dataclass(frozen=True, slots=True)
class Family:
    generation: int
    name: str
    # The chat format when the operator names none: RWKV-7 G1 models were trained on
    # "User: ...\n\nAssistant:" turns with a system line and may open a reasoning block.
    chat_format: str
    # A `<think>...</think>` block the model opens is never streamed (engine config).
    reasoning_block: bool
    # The `convert` command's pre-converted files (RWKV-4 only: see convert.py).
    convertible: bool


FAMILIES = {
    4: Family(4, "RWKV-4", "", reasoning_block=False, convertible=True),
    7: Family(7, "RWKV-7", "g1", reasoning_block=True, convertible=False),
}


def family_of(info: Any) -> Family:
    """The family of a `checkpoint.CheckpointInfo`; ConfigError for generations not served."""
    version = float(info.version)
    fam = FAMILIES.get(int(version)) if version in (4.0, 7.0) else None
    if fam is None:
        raise ConfigError(f"an RWKV-{version:g} checkpoint; this node serves RWKV-4 "
                          "(Raven, World) and RWKV-7 (Goose: World, G1) checkpoints")
    return fam


def slots_from_strategy(strategy: str, n_layer: int) -> list[Slot]:
    """The RWKV-7 slot placement a strategy names, with the planner's grammar and slot
    arithmetic (`cuda:0 fp16 *k -> cuda:1 fp16`: blocks 0..k-1 on cuda:0, the rest and the
    head on cuda:1); int8 and streaming are refused."""
    segments = parse_strategy(strategy, n_layer)
    check_strategy7(strategy, segments)
    slots: list[Slot] = []
    for i, seg in enumerate(segments):
        device = "cuda:0" if seg.device == "cuda" else seg.device
        slots += [Slot.of(device, _DTYPES[seg.atype], i)] * seg.layer_count
    return slots


def load_rwkv7(path: str | os.PathLike[str], strategy: str, *, onednn: bool | None = None,
               packed_weights: bool = True) -> BatchedRWKV7:
    """Load an RWKV-7 checkpoint with the package's `RWKV_x070` and place it per `strategy`.

    One segment: the package loads straight onto that device and dtype. Several: it loads
    into host memory (in the segments' dtype when they share one, else fp32) and the
    batched model moves each block to its device, so no single device ever holds the model.
    """
    slots = slots_from_strategy(strategy, _n_layer(path))
    devices = {(s.device, s.dtype) for s in slots}
    if len(devices) == 1:
        dev, dt = slots[0].device, slots[0].dtype
    else:
        dts = {s.dtype for s in slots}
        dev, dt = torch.device("cpu"), dts.pop() if len(dts) == 1 else torch.float32
    name = {v: k for k, v in _DTYPES.items()}[dt]
    mod = import_rwkv_model(7)
    stem = str(path)[: -len(".pth")] if str(path).endswith(".pth") else str(path)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=DeprecationWarning)
        model = mod.RWKV_x070(stem, f"{dev} {name}")  # the package prints; keep logs JSON
    return BatchedRWKV7(model, slots, onednn=onednn, packed_weights=packed_weights,
                        strategy=" -> ".join(p.strip() for p in strategy.split("->")))


def _n_layer(path: str | os.PathLike[str]) -> int:
    from services.inference.checkpoint import inspect_checkpoint  # noqa: PLC0415

    return inspect_checkpoint(Path(path)).n_layer


def load_batched(path: str | os.PathLike[str], family: Family, strategy: str, *,
                 onednn: bool | None = None, packed_weights: bool = True,
                 load_package_model: Any = None) -> BatchedRWKV | BatchedRWKV7:
    """The batched model for a checkpoint of `family` placed per `strategy`. RWKV-4 loads
    through `load_package_model(path, strategy)` (the runtime's, which merges a LoRA
    adapter) or `rwkv_batched.load_rwkv`."""
    if family.generation == 7:
        return load_rwkv7(path, strategy, onednn=onednn, packed_weights=packed_weights)
    if load_package_model is None:
        from services.inference.rwkv_batched import load_rwkv  # noqa: PLC0415

        load_package_model = load_rwkv
    model = load_package_model(path, strategy)
    return BatchedRWKV(model, onednn=onednn, packed_weights=packed_weights)


def as_batched(model: Any) -> BatchedRWKV | BatchedRWKV7:
    """A batched model as is; a package model (RWKV-4 `.w`, RWKV-7 `.z`) wrapped."""
    if isinstance(model, BatchedRWKV | BatchedRWKV7):
        return model
    if hasattr(model, "z") and not hasattr(model, "w"):
        return BatchedRWKV7(model)
    return BatchedRWKV(model)
