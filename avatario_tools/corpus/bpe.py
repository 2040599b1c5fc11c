"""The demo model's byte-level BPE tokenizer, trained on the corpus with `tokenizers`.

Byte-level like GPT-NeoX's 20B tokenizer (any text encodes, nothing is unknown), with
``<|endoftext|>`` as id 0, the id the node treats as end of text. Training is deterministic:
the same texts give the same JSON, byte for byte. Samples are encoded piece by piece
(`encode_samples`), as the node encodes a prompt, with end of text between samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = ["END_OF_TEXT", "END_OF_TEXT_ID", "encode_samples", "encode_weighted", "save_tokenizer",
           "train_tokenizer"]

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 0


def train_tokenizer(texts: Iterable[str], vocab_size: int = 3072,
                    min_frequency: int = 2) -> Tokenizer:
    if vocab_size < 300:
        raise ValueError("vocab_size must be >= 300 (256 bytes, end of text and some merges)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=[END_OF_TEXT],  # first special token: id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    if tok.token_to_id(END_OF_TEXT) != END_OF_TEXT_ID:
        raise AssertionError("end of text must be id 0")
    return tok


def save_tokenizer(tok: Tokenizer, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path), pretty=False)
    return path


def encode_samples(tok: Tokenizer, samples: Sequence[Sequence[str]]) -> np.ndarray:
    """One int32 stream: each sample's pieces encoded separately, end of text after each."""
    return encode_weighted(tok, samples, [[1.0] * len(p) for p in samples])[0]


def encode_weighted(tok: Tokenizer, samples: Sequence[Sequence[str]],
                    weights: Sequence[Sequence[float]],
                    heads: Sequence[Sequence[tuple[int, float]]] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`encode_samples` plus a float32 loss weight per token: each token gets its piece's
    weight; the end of text after a sample gets 0 (nothing is generated past a turn). With
    `heads` (one (n, weight) per piece, like `weights`), a piece's first n tokens weigh
    `weight` instead (n = 0: none)."""
    out: list[int] = []
    w: list[float] = []
    for i, (pieces, piece_weights) in enumerate(zip(samples, weights, strict=True)):
        piece_heads = heads[i] if heads is not None else [(0, 0.0)] * len(pieces)
        for piece, weight, (n, head) in zip(pieces, piece_weights, piece_heads, strict=True):
            ids = tok.encode(piece, add_special_tokens=False).ids
            out.extend(ids)
            k = min(n, len(ids))
            w.extend([head] * k + [weight] * (len(ids) - k))
        out.append(END_OF_TEXT_ID)
        w.append(0.0)
    return np.asarray(out, dtype=np.int32), np.asarray(w, dtype=np.float32)
