"""Batches for training (seeded random windows, resumable) and windows for validation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from avatario_tools.train.config import TokenData, TrainError


class WindowSampler:
    """Random windows of ctx_len + 1 tokens from the training split.

    The order is a function of the seed alone; `state()`/`restore()` carry the generator
    across a checkpoint so a resumed run draws exactly the batches the uninterrupted one would.
    """

    def __init__(self, tokens: np.ndarray, ctx_len: int, batch_size: int, seed: int,
                 weights: np.ndarray | None = None) -> None:
        self.tokens = tokens
        self.weights = weights
        self.ctx_len = ctx_len
        self.batch_size = batch_size
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._offsets = np.arange(ctx_len + 1)

    def next(self) -> torch.Tensor:
        return self.draw()[0]

    def draw(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch (B, ctx+1) of token ids and, with weights, their loss weights."""
        starts = self.rng.integers(0, len(self.tokens) - self.ctx_len, size=self.batch_size)
        idx = starts[:, None] + self._offsets
        ids = torch.from_numpy(self.tokens[idx].astype(np.int64))
        return ids, None if self.weights is None else torch.from_numpy(self.weights[idx])

    def state(self) -> dict:
        # 128-bit PCG64 words as strings: the checkpoint is read with weights_only=True.
        st = self.rng.bit_generator.state
        return {"state": str(st["state"]["state"]), "inc": str(st["state"]["inc"]),
                "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])}

    def restore(self, saved: dict) -> None:
        self.rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
            "has_uint32": saved["has_uint32"], "uinteger": saved["uinteger"]}


def validation_windows(tokens: np.ndarray, ctx_len: int, max_tokens: int, batch_size: int,
                       weights: np.ndarray | None = None
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Consecutive non-overlapping windows (ctx_len + 1 tokens, sharing one boundary token)
    from the start of the split, at most max_tokens predicted tokens, in batches; each with
    its loss weights (None without weights)."""
    n = min((len(tokens) - 1) // ctx_len, max(1, max_tokens // ctx_len))
    starts = np.arange(n) * ctx_len
    offsets = np.arange(ctx_len + 1)
    for i in range(0, n, batch_size):
        idx = starts[i:i + batch_size, None] + offsets
        yield (torch.from_numpy(tokens[idx].astype(np.int64)),
               None if weights is None else torch.from_numpy(weights[idx]))


def load_tokens(path: Path) -> np.ndarray:
    """A token array from .npy (any integer dtype) as int32."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"token file not found: {path}")
    if path.suffix != ".npy":
        raise TrainError(f"{path}: token files are .npy arrays of token ids")
    a = np.load(path, allow_pickle=False)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise TrainError(f"{path}: expected a 1-D integer array, got {a.dtype} {a.shape}")
    return a.astype(np.int32)


def tokenize_text(path: Path, tokenizer: str, val_fraction: float) -> tuple[TokenData, int]:
    """A UTF-8 text file tokenized with the node's tokenizer ("world" or a tokenizers JSON),
    split by paragraphs (blank lines): the last val_fraction of them is the validation split.
    Returns the data and the tokenizer's vocabulary size."""
    from services.inference.tokenizer import load_tokenizer

    path = Path(path)
    if not path.is_file():
        raise TrainError(f"text file not found: {path}")
    if not 0 < val_fraction < 1:
        raise TrainError(f"val_fraction must be in (0, 1), got {val_fraction}")
    try:
        tok = load_tokenizer(tokenizer)
    except (OSError, ValueError) as exc:
        raise TrainError(f"tokenizer {tokenizer!r}: {exc}") from exc
    paragraphs = [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        raise TrainError(f"{path}: needs at least two paragraphs (blank-line separated) "
                         "for a validation split")
    cut = min(len(paragraphs) - 1, max(1, round(len(paragraphs) * (1 - val_fraction))))

    def ids(parts: list[str]) -> np.ndarray:
        return np.asarray(tok.encode("\n\n".join(parts) + "\n\n"), dtype=np.int32)

    vocab = _vocab_size(tok)
    return TokenData(train=ids(paragraphs[:cut]), validation=ids(paragraphs[cut:])), vocab


def _vocab_size(tok) -> int:
    inner = getattr(tok, "_tok", None)
    if inner is not None and hasattr(inner, "get_vocab_size"):
        return int(inner.get_vocab_size())
    return 65536  # the World vocabulary


def tokenizer_vocab_size(spec: str) -> int:
    from services.inference.tokenizer import load_tokenizer

    try:
        return _vocab_size(load_tokenizer(spec))
    except (OSError, ValueError) as exc:
        raise TrainError(f"tokenizer {spec!r}: {exc}") from exc


def load_tokenize_all(path: Path, tokenizer: str) -> np.ndarray:
    """A whole .npy token array, or a whole text file tokenized (for `eval`)."""
    from services.inference.tokenizer import load_tokenizer

    path = Path(path)
    if path.suffix == ".npy":
        return load_tokens(path)
    if not path.is_file():
        raise TrainError(f"text file not found: {path}")
    try:
        tok = load_tokenizer(tokenizer)
    except (OSError, ValueError) as exc:
        raise TrainError(f"tokenizer {tokenizer!r}: {exc}") from exc
    return np.asarray(tok.encode(path.read_text(encoding="utf-8")), dtype=np.int32)
