"""Validation perplexity of the demo model against two baselines.

- trained: the demo model;
- untrained: a random RWKV-4 of the same shape and vocabulary
  (services.inference.checkpoint.build_random_checkpoint, what `--random-model` serves);
- unigram: token frequencies of the training split (add-one smoothed), no context at all.

Each is scored on two held-out streams of the validation split: whole conversations as the
node lays them out (header included: the fixed system text is easy to predict), and the
question/answer turns alone (no header), which is the part that says whether the model
learned anything about answering parents.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatario_tools.corpus.bpe import encode_samples
from avatario_tools.corpus.builder import Corpus
from avatario_tools.corpus.demo import DemoConfig, DemoModel, prepare_tokens

__all__ = ["Perplexities", "evaluate_demo", "turns_only", "unigram_loss"]


@dataclass(frozen=True)
class Perplexities:
    stream: str
    tokens: int
    trained: float
    untrained: float
    unigram: float


def unigram_loss(train: np.ndarray, validation: np.ndarray, vocab_size: int) -> float:
    """Mean next-token loss (nats) of add-one smoothed training-split frequencies."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[validation[1:]].mean())


def turns_only(corpus: Corpus, tokenizer) -> np.ndarray:
    """The validation question/answer turns without the header, one pair per sample."""
    from services.inference.prompt import TURN_END, build_turn_suffix, normalize_message

    fmt = corpus.config.chat_format
    pieces = [(build_turn_suffix(fmt, q), " " + normalize_message(a), TURN_END)
              for _, q, a in corpus.pairs["validation"]]
    return encode_samples(tokenizer, pieces)


def evaluate_demo(model: DemoModel, config: DemoConfig | None = None) -> list[Perplexities]:
    from avatario_tools.train.api import evaluate_model
    from services.inference.checkpoint import build_random_checkpoint

    cfg = config or DemoConfig()
    data = prepare_tokens(cfg)
    streams = {"conversations": data.validation, "turns only": turns_only(data.corpus,
                                                                          data.tokenizer)}
    out: list[Perplexities] = []
    with tempfile.TemporaryDirectory() as tmp:
        untrained = build_random_checkpoint(Path(tmp) / "untrained.pth", n_layer=cfg.n_layer,
                                            n_embd=cfg.n_embd, vocab_size=data.vocab_size,
                                            seed=cfg.seed)
        for name, tokens in streams.items():
            def ppl(path: Path, tokens: np.ndarray = tokens) -> float:
                return math.exp(evaluate_model(path, tokens, ctx_len=cfg.ctx_len,
                                               max_tokens=len(tokens)))

            out.append(Perplexities(
                name, len(tokens), ppl(model.model), ppl(untrained),
                math.exp(unigram_loss(data.train, tokens, data.vocab_size))))
    return out
