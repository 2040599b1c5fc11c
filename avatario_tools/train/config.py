"""The trainer's value types: what to train, on which tokens, and what came out."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Dtype = Literal["fp32", "bf16"]

# The matrices LoRA may adapt (per block), as "<att|ffn>.<name>".
LORA_TARGETS = ("att.key", "att.value", "att.receptance", "att.output",
                "ffn.key", "ffn.receptance", "ffn.value")


class TrainError(ValueError):
    """Bad input to the trainer (shape, file, data, option): the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. The first block is the stable API; the rest have working defaults.

    Two runs with equal configs, equal data and equal devices produce the same losses
    (bit for bit on CPU fp32), interrupted and resumed or not.
    """

    n_layer: int
    n_embd: int
    vocab_size: int
    ctx_len: int = 256
    batch_size: int = 8
    steps: int = 1000
    lr: float = 6e-4
    warmup: int = 50
    seed: int = 0
    dtype: Dtype = "fp32"
    checkpoint_every: int = 100
    device: str = "cpu"
    # --- optimisation
    lr_final: float = 6e-5          # the cosine schedule ends here
    # AdamW's decoupled decay, on weight matrices only (not embeddings, norms, time_* params)
    weight_decay: float = 0.0
    dropout: float = 0.0            # on each block's time-mix and channel-mix outputs
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0          # max global gradient norm; 0 = no clipping
    # --- memory: truncated BPTT (state carried, gradient cut) every bptt_len tokens; 0 = ctx_len.
    # Activation memory grows with bptt_len, not ctx_len.
    bptt_len: int = 0
    wkv_chunk: int = 8              # tokens per parallel WKV chunk (work ~ chunk; 4-8 fastest)
    grad_checkpoint: bool = False   # recompute each block in backward (less memory, ~30% slower)
    # --- validation
    eval_every: int = 0             # 0 = at checkpoints and at the end
    eval_tokens: int = 65536        # validation tokens scored (from the start of the split)
    # export the weights of the evaluation with the lowest validation loss, not the last step's
    keep_best: bool = False
    # --- output
    save_dtype: Dtype | None = None  # dtype of the exported .pth; None = the training dtype
    init: Path | None = None         # fine-tune this raw RWKV-4 .pth instead of a new model
    keep_checkpoints: int = 2        # training-state files kept on disk

    def __post_init__(self) -> None:
        _check_positive(self, "n_layer", "n_embd", "ctx_len", "batch_size", "steps",
                        "checkpoint_every", "wkv_chunk", "keep_checkpoints", "eval_tokens")
        if self.vocab_size < 2:
            raise TrainError(f"vocab_size must be >= 2, got {self.vocab_size}")
        for name in ("warmup", "bptt_len", "eval_every"):
            if getattr(self, name) < 0:
                raise TrainError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "lr_final", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise TrainError(f"{name} must be a finite number >= 0, got {v}")
        if self.lr == 0:
            raise TrainError("lr must be > 0")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise TrainError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.dtype not in ("fp32", "bf16"):
            raise TrainError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.save_dtype not in (None, "fp32", "bf16"):
            raise TrainError(f"save_dtype must be fp32 or bf16, got {self.save_dtype!r}")
        if self.n_embd % 2:
            raise TrainError(f"n_embd must be even, got {self.n_embd}")

    @property
    def effective_bptt(self) -> int:
        return min(self.bptt_len or self.ctx_len, self.ctx_len)

    def fingerprint(self) -> dict:
        """What a resumable checkpoint must agree on (everything that changes the losses)."""
        d = asdict(self)
        d["init"] = str(self.init) if self.init is not None else None
        d["betas"] = list(self.betas)
        for k in ("keep_checkpoints", "save_dtype"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters: W' = W + (alpha / rank) * B @ A on each targeted matrix of every block."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise TrainError(f"rank must be >= 1, got {self.rank}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise TrainError(f"alpha must be a finite number > 0, got {self.alpha}")
        bad = [t for t in self.targets if t not in LORA_TARGETS]
        if bad or not self.targets:
            raise TrainError(f"targets: unknown {bad or 'empty list'}; choose from "
                             f"{', '.join(LORA_TARGETS)}")


@dataclass(frozen=True)
class TokenData:
    """Token ids (numpy int32) of the training split and the held-out validation split.

    Optional per-token loss weights (float32, one per token, >= 0): the loss of predicting
    token i counts weights[i] times (a weighted mean). With 0 on a chat's header and the
    parents' turns and 1 on the assistant's replies the model learns to answer, not to
    recite the prompt (supervised fine-tuning's usual loss mask). None: every token counts 1.
    """

    train: np.ndarray
    validation: np.ndarray
    train_weights: np.ndarray | None = None
    validation_weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("train", "validation"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.ndim != 1:
                raise TrainError(f"TokenData.{name} must be a 1-D numpy array")
            if a.dtype != np.int32:
                raise TrainError(f"TokenData.{name} must be int32, got {a.dtype}")
            w = getattr(self, f"{name}_weights")
            if w is None:
                continue
            field_name = f"TokenData.{name}_weights"
            if not isinstance(w, np.ndarray) or w.shape != a.shape or w.dtype != np.float32:
                raise TrainError(f"{field_name} must be a float32 array of the same length as "
                                 f"{name} ({len(a)})")
            if not np.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
                raise TrainError(f"{field_name} must be finite, >= 0 and not all 0")

    def check(self, vocab_size: int, ctx_len: int) -> None:
        for name in ("train", "validation"):
            a = getattr(self, name)
            if len(a) < ctx_len + 1:
                raise TrainError(f"TokenData.{name} has {len(a)} tokens; ctx_len {ctx_len} "
                                 f"needs at least {ctx_len + 1}")
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= vocab_size:
                raise TrainError(f"TokenData.{name} holds token ids {lo}..{hi}, outside the "
                                 f"vocabulary 0..{vocab_size - 1}")

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.train, self.validation, self.train_weights, self.validation_weights):
            if a is None:
                h.update(b"none")
                continue
            h.update(len(a).to_bytes(8, "little"))
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:32]


@dataclass
class TrainResult:
    """What a run produced: the exported file and its numbers."""

    path: Path                      # the .pth (train) or the adapter file (lora)
    steps: int
    train_loss: float               # mean loss of the last min(10, steps) steps
    val_loss: float                 # of the exported weights (the best one with keep_best)
    tokens_per_s: float             # training tokens per second of this process's steps
    losses: list[float] = field(default_factory=list)     # per step, resumed runs included
    val_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    resumed_from: int = 0           # the step a resumed run started from (0 = fresh)
    best_step: int = 0              # the step whose weights were exported (keep_best), else steps

    @property
    def val_perplexity(self) -> float:
        return math.exp(self.val_loss)


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise TrainError(f"{name} must be an integer >= 1, got {v!r}")
