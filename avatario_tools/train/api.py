"""The trainer's stable Python API (the demo model's build codes against this module).

    from avatario_tools.train.api import TokenData, TrainConfig, train_model

    result = train_model(TrainConfig(n_layer=4, n_embd=256, vocab_size=4096, steps=2000),
                         TokenData(train=ids_train, validation=ids_val),
                         Path("var/models/demo.pth"), progress=True)
    result.path, result.val_loss, result.val_perplexity, result.tokens_per_s

`out` is the exported `.pth` (raw RWKV-4 layout: `rwkv.model.RWKV(path, "cpu fp32")` and the
node load it unchanged). Training state goes to `<out>.ckpt/` every `checkpoint_every` steps;
a later call with the same config and data resumes from it (same losses as an uninterrupted
run). Bad input raises TrainError (a ValueError) whose message names the field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from avatario_tools.train.config import (
    LORA_TARGETS,
    LoraConfig,
    TokenData,
    TrainConfig,
    TrainError,
    TrainResult,
)

__all__ = [
    "LORA_TARGETS",
    "LoraConfig",
    "TokenData",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "evaluate_model",
    "train_lora",
    "train_model",
]

# Called after each checkpoint is on disk, with (step, checkpoint file).
CheckpointHook = Callable[[int, Path], None]


def train_model(config: TrainConfig, data: TokenData, out: Path, *, progress: bool = False,
                resume: bool = True, on_checkpoint: CheckpointHook | None = None) -> TrainResult:
    """Train a new model of config's shape (or fine-tune `config.init`) and export `out`.

    resume: continue from `<out>.ckpt/` when it holds a checkpoint of this same config and
    data (otherwise start afresh and replace it).
    """
    from avatario_tools.train.loop import run_full

    return run_full(config, data, Path(out), progress=progress, resume=resume,
                    on_checkpoint=on_checkpoint)


def train_lora(base: Path, lora: LoraConfig, config: TrainConfig, data: TokenData, out: Path,
               *, progress: bool = False, resume: bool = True,
               on_checkpoint: CheckpointHook | None = None) -> TrainResult:
    """Train LoRA adapters on a frozen raw RWKV-4 `base` and save them alone to `out`.

    config's shape fields must match the base (TrainError otherwise); `config.init` is unused.
    Merge with `python -m avatario_tools.train merge` or at load time in the node
    (AVATARIO_INFERENCE_LORA=path[:alpha]).
    """
    from avatario_tools.train.loop import run_lora

    return run_lora(Path(base), lora, config, data, Path(out), progress=progress,
                    resume=resume, on_checkpoint=on_checkpoint)


def evaluate_model(path: Path, tokens, *, ctx_len: int = 256, device: str = "cpu",
                   max_tokens: int = 65536, lora: str | None = None, weights=None) -> float:
    """Mean next-token loss (nats) of a raw `.pth` on a token array (numpy int32);
    `lora`: an adapter spec "path[:alpha]" merged first; `weights`: per-token loss weights
    (float32, see TokenData)."""
    from avatario_tools.train.loop import evaluate_file

    return evaluate_file(Path(path), tokens, ctx_len=ctx_len, device=device,
                         max_tokens=max_tokens, lora=lora, weights=weights)
