"""Per-request sampling, incremental detokenisation and stop-sequence handling.

Sampling follows ChatRWKV: penalties first (logits -= presence + occurrence * frequency for
every token generated so far, occurrences decayed by `penalty_decay` per token), then top-p
and top-k cuts on the untempered distribution, then temperature, then a draw from a seeded
`torch.Generator`. Temperature 0 is greedy argmax (after penalties).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from services.common.errors import InvalidArgument

__all__ = [
    "DEFAULT_MAX_TOKENS_LIMIT",
    "IncrementalDecoder",
    "Sampler",
    "SamplingParams",
    "StopChecker",
    "Tokenizer",
]

DEFAULT_MAX_TOKENS_LIMIT = 1024
MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 64
MAX_TEMPERATURE = 5.0
PENALTY_RANGE = (-2.0, 2.0)


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """One request's sampling settings. Defaults are ChatRWKV's chat defaults."""

    temperature: float = 1.0
    top_p: float = 0.85
    top_k: int = 0
    presence_penalty: float = 0.2
    frequency_penalty: float = 0.2
    penalty_decay: float = 0.996
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)

    def validate(
        self, max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT, field_prefix: str = "params."
    ) -> None:
        """Raise InvalidArgument listing every bad field (paths like "params.top_p")."""
        bad: list[tuple[str, str]] = []

        def check(name: str, ok: bool, msg: str) -> None:
            if not ok:
                bad.append((field_prefix + name, msg))

        t = self.temperature
        check("temperature", math.isfinite(t) and 0.0 <= t <= MAX_TEMPERATURE,
              f"must be in [0, {MAX_TEMPERATURE}] (0 means greedy)")
        check("top_p", math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0, "must be in (0, 1]")
        check("top_k", self.top_k >= 0, "must be >= 0 (0 means no top-k cut)")
        lo, hi = PENALTY_RANGE
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            check(name, math.isfinite(v) and lo <= v <= hi, f"must be in [{lo}, {hi}]")
        d = self.penalty_decay
        check("penalty_decay", math.isfinite(d) and 0.0 < d <= 1.0, "must be in (0, 1]")
        check("max_tokens", 1 <= self.max_tokens <= max_tokens_limit,
              f"must be in [1, {max_tokens_limit}]")
        if self.seed is not None:
            check("seed", -(2**63) <= self.seed < 2**64, "must fit in 64 bits")
        check("stop", len(self.stop) <= MAX_STOP_SEQUENCES,
              f"at most {MAX_STOP_SEQUENCES} stop sequences")
        for i, s in enumerate(self.stop[:MAX_STOP_SEQUENCES]):
            check(f"stop[{i}]", 0 < len(s) <= MAX_STOP_CHARS,
                  f"must be 1 to {MAX_STOP_CHARS} characters")
        if bad:
            raise InvalidArgument(bad)


class Sampler:
    """Sampling state of one request: RNG and decayed token occurrences."""

    def __init__(self, params: SamplingParams, vocab_size: int) -> None:
        self.params = params
        self.vocab_size = vocab_size
        self.generator = torch.Generator(device="cpu")
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()
        self._penalise = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
        self._occurrence = torch.zeros(vocab_size, dtype=torch.float32)
        self._seen = torch.zeros(vocab_size, dtype=torch.float32)  # 1.0 once generated

    def penalised(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits after presence/frequency penalties (a new tensor when any apply)."""
        x = logits.float()
        if self._penalise:
            p = self.params
            x = x - (p.presence_penalty * self._seen + p.frequency_penalty * self._occurrence)
        return x

    def sample(self, logits: torch.Tensor) -> int:
        """Pick the next token from 1-D logits and record it for the penalties."""
        token = self.pick(self.penalised(logits))
        self.observe(token)
        return token

    def pick(self, x: torch.Tensor) -> int:
        p = self.params
        if p.temperature == 0.0:
            return int(torch.argmax(x).item())
        logp = torch.log_softmax(x, dim=-1)
        keep = torch.ones_like(logp, dtype=torch.bool)
        if p.top_p < 1.0:
            probs = logp.exp()
            sorted_p, _ = torch.sort(probs, descending=True)
            cum = torch.cumsum(sorted_p, dim=-1)
            idx = int(torch.searchsorted(cum, torch.tensor([p.top_p])).item())
            cutoff = sorted_p[min(idx, sorted_p.numel() - 1)]
            keep &= probs >= cutoff
        if 0 < p.top_k < logp.numel():
            kth = torch.topk(logp, p.top_k).values[-1]
            keep &= logp >= kth
        # probs ** (1 / T), renormalised; computed in log space so small T cannot underflow.
        z = torch.where(keep, logp / p.temperature, torch.full_like(logp, -math.inf))
        probs = torch.softmax(z, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator).item())

    def observe(self, token: int) -> None:
        if not self._penalise:
            return
        self._occurrence.mul_(self.params.penalty_decay)
        if 0 <= token < self.vocab_size:
            self._occurrence[token] += 1.0
            self._seen[token] = 1.0


class IncrementalDecoder:
    """Turns a token stream into text without emitting partial UTF-8 characters.

    Tokens are held until their decoded text no longer ends in U+FFFD (or the tokenizer no
    longer raises UnicodeDecodeError); after `max_pending` tokens the text goes out anyway.
    Assumes a byte-level tokenizer, where decoding a run of tokens is the concatenation of
    their bytes (true for the 20B BPE and the RWKV World tokenizers).
    """

    def __init__(self, tokenizer: Tokenizer, max_pending: int = 8) -> None:
        self.tokenizer = tokenizer
        self.max_pending = max_pending
        self.pending: list[int] = []

    def _decode(self, ids: list[int]) -> str | None:
        try:
            text = self.tokenizer.decode(ids)
        except UnicodeDecodeError:
            return None
        return None if text.endswith("\ufffd") else text

    def push(self, token: int) -> str:
        self.pending.append(token)
        text = self._decode(self.pending)
        if text is None:
            if len(self.pending) < self.max_pending:
                return ""
            return self.flush()
        self.pending = []
        return text

    def flush(self) -> str:
        """Whatever is held, decoded leniently (end of stream)."""
        if not self.pending:
            return ""
        ids, self.pending = self.pending, []
        try:
            return self.tokenizer.decode(ids)
        except UnicodeDecodeError:
            return "\ufffd"


class StopChecker:
    """Finds stop strings in streamed text, holding back any tail that could start one.

    The result does not depend on how the text is split: a stop that completed is reported
    only once no other stop that starts earlier can still complete.
    """

    def __init__(self, stops: Sequence[tuple[str, str]]) -> None:
        # (stop text, finish reason); empty strings are ignored.
        self.stops = [(s, r) for s, r in stops if s]
        self.buf = ""

    def _earliest(self) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for s, reason in self.stops:
            i = self.buf.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, reason)
        return best

    def _open_start(self, limit: int) -> int:
        """Earliest j < limit where the rest of the buffer is a proper prefix of a stop."""
        n = len(self.buf)
        for j in range(max(0, n - max(len(s) for s, _ in self.stops) + 1), min(limit, n)):
            tail = self.buf[j:]
            if any(len(s) > len(tail) and s.startswith(tail) for s, _ in self.stops):
                return j
        return min(limit, n)

    def push(self, text: str) -> tuple[str, str | None]:
        """Add text; return (text safe to emit, finish reason once a stop string is settled)."""
        self.buf += text
        if not self.stops:
            out, self.buf = self.buf, ""
            return out, None
        hit = self._earliest()
        limit = hit[0] if hit is not None else len(self.buf)
        j = self._open_start(limit)
        if hit is not None and j == limit:  # nothing earlier can still complete
            out, self.buf = self.buf[:limit], ""
            return out, hit[1]
        out, self.buf = self.buf[:j], self.buf[j:]
        return out, None

    def flush(self) -> tuple[str, str | None]:
        """End of text: the held tail, cut at a stop that completed (with its reason)."""
        hit = self._earliest() if self.stops else None
        out = self.buf if hit is None else self.buf[: hit[0]]
        self.buf = ""
        return out, None if hit is None else hit[1]
