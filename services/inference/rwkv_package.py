"""Importing the `rwkv` package for one generation: its import-time switches.

`rwkv.model` chooses at import what `RWKV` is: with `RWKV_V7_ON=1` it is the RWKV-7 class
(`RWKV_x070`, one device and dtype, weights in `.z`), otherwise the RWKV-4/5/6 class (strategy
strings, weights in `.w`). The switch is read once, so a process holds one generation under
the name `rwkv.model`: the node reads the checkpoint's keys first
(`services.inference.checkpoint.detect_generation`), sets the switch, then imports.

A process that needs the other generation after that (the test suite, a benchmark comparing
both) gets a private copy of the package's `model.py` executed with the other switch, under
its own module name (`rwkv.model_x070` / `rwkv.model_x040`); nothing of the first import
changes. A node never needs it: it loads one checkpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings
from types import ModuleType

import structlog

__all__ = ["V7_SWITCH", "import_rwkv_model", "is_v7_module"]

log = structlog.get_logger("avatario.inference.rwkv_package")

V7_SWITCH = "RWKV_V7_ON"
_JIT_DEPRECATED = r".*torch\.jit\..* is deprecated"


def is_v7_module(mod: ModuleType) -> bool:
    """Whether an imported `rwkv.model` was imported with RWKV_V7_ON=1."""
    v7 = getattr(mod, "RWKV_x070", None)
    return v7 is not None and getattr(mod, "RWKV", None) is v7


def import_rwkv_model(generation: int) -> ModuleType:
    """`rwkv.model` imported for `generation` (4 or 7): the module itself when it is not
    imported yet (the switch is set first) or was imported for the same generation, else
    the private copy for this generation (see the module docstring)."""
    if generation not in (4, 7):
        raise ValueError(f"the rwkv package serves generation 4 or 7 here, not {generation}")
    want_v7 = generation == 7
    mod = sys.modules.get("rwkv.model")
    if mod is None:
        os.environ[V7_SWITCH] = "1" if want_v7 else "0"
        from services.inference.rwkv_batched import _import_rwkv_model  # noqa: PLC0415

        mod = _import_rwkv_model()  # sets the JIT/CUDA switches, then imports
    if is_v7_module(mod) == want_v7:
        return mod
    return _private_copy(generation)


@functools.cache
def _private_copy(generation: int) -> ModuleType:
    spec = importlib.util.find_spec("rwkv.model")
    if spec is None or spec.origin is None:
        raise ImportError("the rwkv package is not installed")
    name = "rwkv.model_x070" if generation == 7 else "rwkv.model_x040"
    log.warning("rwkv_package.private_copy", generation=generation, module=name,
                reason="rwkv.model was imported for the other generation in this process")
    saved = os.environ.get(V7_SWITCH)
    os.environ[V7_SWITCH] = "1" if generation == 7 else "0"
    try:
        copy_spec = importlib.util.spec_from_file_location(name, spec.origin)
        assert copy_spec is not None and copy_spec.loader is not None
        mod = importlib.util.module_from_spec(copy_spec)
        sys.modules[name] = mod  # TorchScript resolves the module's globals through it
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_JIT_DEPRECATED, category=DeprecationWarning)
            copy_spec.loader.exec_module(mod)
    finally:
        if saved is None:
            os.environ.pop(V7_SWITCH, None)
        else:
            os.environ[V7_SWITCH] = saved
    return mod
