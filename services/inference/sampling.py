"""Per-request sampling, incremental detokenisation and stop-sequence handling.

Sampling follows ChatRWKV: penalties first (logits -= presence + occurrence * frequency for
every token generated so far, occurrences decayed by `penalty_decay` per token), then top-p
and top-k cuts on the untempered distribution, then temperature, then a draw from a seeded
`torch.Generator`. Temperature 0 is greedy argmax (after penalties).

A decode step samples all its sequences at once (`sample_batch`) on the [B, V] logits, each
row with its own request's settings and generator: penalties are sparse (O(tokens generated)),
the top-p cut is found in O(V) per row from a histogram instead of a sort of the vocabulary,
and the draw is an inverse-CDF with one uniform from the request's generator, so a request's
tokens do not depend on its batchmates.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch.nn import functional as F

from services.common.errors import InvalidArgument
from services.inference.rwkv7_kernel import nucleus_op

__all__ = [
    "DEFAULT_MAX_TOKENS_LIMIT",
    "IncrementalDecoder",
    "Sampler",
    "sample_batch",
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
    """Sampling state of one request: its RNG and the decayed occurrences of generated tokens.

    Occurrences are kept sparse (the distinct tokens generated so far and their decayed
    counts), so penalties cost O(generated tokens), not O(vocabulary), per step.
    """

    def __init__(self, params: SamplingParams, vocab_size: int) -> None:
        self.params = params
        self.vocab_size = vocab_size
        self.generator = torch.Generator(device="cpu")
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()
        self._penalise = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
        self._slot: dict[int, int] = {}  # token -> index into _ids / _occ
        self._ids = torch.zeros(0, dtype=torch.long)
        self._occ = torch.zeros(0, dtype=torch.float32)

    def penalty(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(token ids, amount to subtract) for the tokens generated so far; None if nothing."""
        if not self._penalise or not self._slot:
            return None
        p = self.params
        return self._ids, self._occ * p.frequency_penalty + p.presence_penalty

    def penalised(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits after presence/frequency penalties (a new tensor when any apply)."""
        x = logits.float()
        pen = self.penalty()
        if pen is not None:
            x = x.clone()
            x.index_add_(0, pen[0], pen[1], alpha=-1.0)
        return x

    def sample(self, logits: torch.Tensor) -> int:
        """Pick the next token from 1-D logits and record it for the penalties."""
        return sample_batch([self], logits.reshape(1, -1))[0]

    def pick(self, x: torch.Tensor) -> int:
        """Draw from 1-D logits that already carry the penalties (records nothing)."""
        t = x.float().reshape(1, -1)
        return _pick_rows([self.params], [self.generator], t - t.amax())[0]

    def observe(self, token: int) -> None:
        if not self._penalise:
            return
        if self._slot:
            self._occ.mul_(self.params.penalty_decay)
        if not 0 <= token < self.vocab_size:
            return
        i = self._slot.get(token)
        if i is None:
            self._slot[token] = len(self._slot)
            self._ids = torch.cat([self._ids, torch.tensor([token], dtype=torch.long)])
            self._occ = torch.cat([self._occ, torch.ones(1, dtype=torch.float32)])
        else:
            self._occ[i] += 1.0


def sample_batch(samplers: Sequence[Sampler], logits: torch.Tensor) -> list[int]:
    """Sample one token per row of `logits` [B, V], row i with `samplers[i]`, and record it.

    The same per-request semantics as sampling each row alone (penalties, top-p, top-k,
    temperature, the request's own generator with one uniform draw per sampled token), so a
    request's tokens do not depend on which requests share its batch; but the work is done
    on the whole [B, V] tensor at once, in O(V) per row, in reused buffers. `logits` is not
    modified.
    """
    if logits.dim() != 2 or logits.shape[0] != len(samplers):
        raise ValueError(f"logits {tuple(logits.shape)} for {len(samplers)} samplers")
    if not samplers:
        return []
    x = logits.float()
    v = x.shape[1]
    # t = penalised logits relative to the row's best token (max 0): exp(t) cannot overflow
    # and the best token's weight is 1. Penalties are sparse; a row is re-centred only when
    # they moved its maximum (its best token was penalised, or a penalty is a bonus).
    t = torch.sub(x, x.amax(dim=-1, keepdim=True), out=_ws.get("t", x.shape, torch.float32))
    flat_idx: list[torch.Tensor] = []
    flat_val: list[torch.Tensor] = []
    moved: set[int] = set()
    for r, s in enumerate(samplers):
        pen = s.penalty()
        if pen is not None:
            flat_idx.append(pen[0] + r * v if r else pen[0])
            flat_val.append(pen[1])
            if min(s.params.presence_penalty, s.params.frequency_penalty) < 0:
                moved.add(r)
    if flat_idx:
        idx = torch.cat(flat_idx)
        flat = t.view(-1)
        moved.update((idx[flat[idx] == 0.0] // v).tolist())  # a best token was penalised
        flat.index_add_(0, idx, torch.cat(flat_val), alpha=-1.0)
        for r in moved:
            t[r].sub_(t[r].max())
    tokens = _pick_rows([s.params for s in samplers], [s.generator for s in samplers], t)
    for s, tok in zip(samplers, tokens, strict=True):
        s.observe(tok)
    return tokens


class _Workspace(threading.local):
    """Scratch tensors reused from step to step (per thread): sampling a batch touches a few
    [B, V] buffers, and fresh allocations of that size cost page faults on every step."""

    def __init__(self) -> None:
        self.bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
        n = math.prod(shape)
        buf = self.bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype)
            self.bufs[name] = buf
        return buf[:n].view(shape)


_ws = _Workspace()
# Inverse-CDF draw in two levels (block, then token) so that cumulative sums stay short.
_BLOCK = 256
# Top-p histogram: bins are the top bits of the float32 weights (sign 0, 8 exponent bits,
# 4 mantissa bits), so bin order is value order and a bin spans a factor of 2 ** (1 / 16).
# Weights are in [0, 1], whose top bits are at most those of 1.0: bins are numbered down
# from that one (bin 0 holds the heaviest tokens), so the mass from the top is a plain
# cumulative sum.
_SHIFT = 19
_TOP_BIN = int(torch.tensor(1.0).view(torch.int32)) >> _SHIFT
_NBINS = _TOP_BIN + 1
# Top-p fast path (see _nucleus_cutoff): rows of total weight <= _FAST_TOTAL (the best token
# weighs 1), candidates = tokens of weight >= total / _FAST_MAX, so at most _FAST_MAX of them.
_FAST_TOTAL = 32.0
_FAST_MAX = 4096


def _pick_rows(params: Sequence[SamplingParams], gens: Sequence[torch.Generator],
               t: torch.Tensor) -> list[int]:
    """Draw one token per row of t [B, V]: penalised logits minus the row's maximum (float32;
    used as scratch space and overwritten)."""
    out = [0] * len(params)
    greedy = [r for r, p in enumerate(params) if p.temperature == 0.0]
    rows = [r for r, p in enumerate(params) if p.temperature != 0.0]
    if greedy:
        sel = t if len(greedy) == len(params) else t[greedy]
        for r, tok in zip(greedy, torch.argmax(sel, dim=-1).tolist(), strict=True):
            out[r] = int(tok)
    if not rows:
        return out
    if len(params) == 1:  # one stream: the same steps with scalars, fewer tensor ops
        out[0] = _pick_one(params[0], gens[0], t[0])
        return out
    ps = [params[r] for r in rows]
    ts = t if len(rows) == len(params) else t[rows]
    n, v = ts.shape
    # e = probabilities relative to the row's best token, in (0, 1]: top-p and top-k are
    # decided on them (untempered, as ChatRWKV does); the draw weighs by w = e ** (1 / T).
    temps = [p.temperature for p in ps]
    if all(tt == 1.0 for tt in temps):
        e = w = ts.exp_()
    else:
        w = torch.div(ts, torch.tensor(temps, dtype=torch.float32).unsqueeze(1),
                      out=_ws.get("w", (n, v), torch.float32)).exp_()
        e = ts.exp_()
    cutoff = torch.zeros(n, dtype=torch.float32)  # keep e >= cutoff
    cut_rows = [i for i, p in enumerate(ps) if p.top_p < 1.0]
    k_rows = [i for i, p in enumerate(ps) if 0 < p.top_k < v]
    op = nucleus_op()
    if op is not None and w is e and len(cut_rows) == n and not k_rows and e.is_contiguous():
        # every row cut by top-p alone: the compiled cutoff also zeroes the weights below it
        op(e, _top_p_target(e, [p.top_p for p in ps])[1], True)
        cut_rows = []
    elif cut_rows:
        cutoff[cut_rows] = _nucleus_cutoff(e if len(cut_rows) == n else e[cut_rows],
                                           [ps[i].top_p for i in cut_rows])
    if k_rows:
        sub = e if len(k_rows) == n else e[k_rows]
        kth = torch.topk(sub, max(ps[i].top_k for i in k_rows), dim=-1).values
        kth = kth.gather(1, torch.tensor([[ps[i].top_k - 1] for i in k_rows])).squeeze(1)
        cutoff[k_rows] = torch.maximum(cutoff[k_rows], kth)
    cut = [i for i, c in enumerate(cutoff.tolist()) if c > 0.0]
    if cut and w is e:
        # threshold_ keeps x > th: th = the largest float32 below the cutoff.
        th = torch.nextafter(cutoff, torch.zeros_like(cutoff)).tolist()
        for i in cut:
            F.threshold_(w[i], th[i], 0.0)
    elif cut:
        w.masked_fill_(e < cutoff.unsqueeze(1), 0.0)
    # One uniform in [0, 1) per sampled token, from the request's own generator.
    u = torch.cat([torch.rand(1, generator=gens[r], dtype=torch.float64) for r in rows])
    for i, tok in enumerate(_inverse_cdf(w, u).tolist()):
        out[rows[i]] = int(tok)
    return out


def _pick_one(p: SamplingParams, gen: torch.Generator, t: torch.Tensor) -> int:
    """`_pick_rows` for a single row t [V] (overwritten), with Python scalars in between."""
    v = t.shape[0]
    if p.temperature == 1.0:
        e = w = t.exp_()
    else:
        w = torch.div(t, p.temperature, out=_ws.get("w", (v,), torch.float32)).exp_()
        e = t.exp_()
    cutoff = 0.0
    if p.top_p < 1.0:
        cutoff = float(_nucleus_cutoff(e.unsqueeze(0), [p.top_p])[0])
    if 0 < p.top_k < v:
        cutoff = max(cutoff, float(torch.topk(e, p.top_k).values[-1]))
    if cutoff > 0.0:
        if w is e:
            F.threshold_(w, float(torch.nextafter(torch.tensor(cutoff), torch.tensor(0.0))), 0.0)
        else:
            w.masked_fill_(e < cutoff, 0.0)
    u = torch.rand(1, generator=gen, dtype=torch.float64)
    return int(_inverse_cdf(w.unsqueeze(0), u)[0])


def _below(t: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """t clamped into [0, limit)."""
    return torch.minimum(t.clamp(min=0.0), torch.nextafter(limit, torch.zeros_like(limit)))


def _inverse_cdf(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the index i with cum[i-1] <= u * total < cum[i] over weights w [n, V] >= 0.

    Two levels: a block of _BLOCK tokens from the block sums, then a token inside it (sums
    in float64). A token of zero weight is never picked.
    """
    n, v = w.shape
    cum_b = _block_cumsum(w)
    nb = cum_b.shape[1]
    total = cum_b[:, -1]
    t = _below(u * total, total)
    b = torch.searchsorted(cum_b, t.unsqueeze(1), right=True).clamp_(max=nb - 1)
    before = torch.where(b > 0, cum_b.gather(1, (b - 1).clamp(min=0)), 0.0).squeeze(1)
    idx = b * _BLOCK + torch.arange(_BLOCK, device=w.device)
    inner = w.gather(1, idx.clamp(max=v - 1)).to(torch.float64).masked_fill_(idx >= v, 0.0)
    inner = inner.cumsum_(dim=-1)
    rem = _below(t - before, inner[:, -1])
    i = torch.searchsorted(inner, rem.unsqueeze(1), right=True).clamp_(max=_BLOCK - 1)
    return (b * _BLOCK + i).squeeze(1)


def _nucleus_cutoff(e: torch.Tensor, top_p: Sequence[float]) -> torch.Tensor:
    """Per row of weights e [n, V] (float32, in [0, 1], the best token at 1), the top-p
    cutoff: the weight at the first rank, in descending order, where the cumulative mass
    reaches top_p of the row's total; keeping e >= cutoff keeps the nucleus (and its ties), as
    sorting would.

    O(V) per row instead of a sort of the vocabulary. A peaked row (total weight at most
    _FAST_TOTAL) usually has its nucleus among its heaviest tokens: those of weight >= total /
    _FAST_MAX (at most _FAST_MAX of them) are gathered and sorted. Other rows, and peaked rows
    whose nucleus reaches further, take a histogram of the mass over the weights' top bits,
    which finds the bin where the mass crosses top_p; only that bin's tokens are sorted. Both
    ways give the same cutoff; the choice, and every sum that decides the cut, depends on the
    row alone, so a row's cutoff does not depend on the other rows of the batch.

    Where the CPU kernel library is loaded (services/inference/rwkv7_kernel.py, checked
    against this torch version when it loads), the histogram and the bin's sort run there,
    one row per thread in one pass over the weights, several times faster than the tensor
    operations (bench/bench_sampler.py).
    """
    totals, target = _top_p_target(e, top_p)
    op = nucleus_op()
    if op is not None and e.device.type == "cpu" and e.dtype == torch.float32 \
            and e.is_contiguous():
        return op(e, target, False)
    return _torch_cutoff(e, totals, target)


def _top_p_target(e: torch.Tensor, top_p: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row totals, top-p mass target) of the rows of e [n, V], in float64."""
    totals = _row_totals(e)
    return totals, torch.tensor(top_p, dtype=torch.float64, device=e.device) * totals


def sorted_crossing(srt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row of srt [n, V] (each row sorted descending), the weight where the running
    float64 mass first reaches target [n] (the last weight when it never does)."""
    csum = srt.to(torch.float64).cumsum_(dim=-1)
    first = (csum < target.unsqueeze(1)).sum(dim=-1).clamp_(max=srt.shape[1] - 1)
    return srt.gather(1, first.unsqueeze(1)).squeeze(1)


def sorted_cutoff(e: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The top-p cutoff by its definition, for checks: sort each row of e [n, V] descending
    and take `sorted_crossing`."""
    return sorted_crossing(torch.sort(e, dim=-1, descending=True).values, target)


def _torch_cutoff(e: torch.Tensor, totals: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    n, v = e.shape
    cutoff = torch.zeros(n, dtype=torch.float32)
    reached = [False] * n
    rows = [r for r, t in enumerate(totals.tolist()) if t <= _FAST_TOTAL]
    if rows:
        es = e if len(rows) == n else e[rows]
        floor = (totals[rows] / _FAST_MAX).to(torch.float32).unsqueeze(1)
        rr, cc = torch.ge(es, floor, out=_ws.get("hi", es.shape, torch.bool)).nonzero(
            as_tuple=True)
        cut, ok = _crossing(rr, es[rr, cc], torch.zeros(len(rows), dtype=torch.float64),
                            target[rows], len(rows))
        cutoff[rows] = cut
        for i, good in zip(rows, ok.tolist(), strict=True):
            reached[i] = good
    slow = [r for r in range(n) if not reached[r]]
    if slow:
        cutoff[slow] = _histogram_cutoff(e if len(slow) == n else e[slow], target[slow])
    return cutoff


def _block_cumsum(w: torch.Tensor) -> torch.Tensor:
    """Per row of w [n, V], the running float64 sum over its _BLOCK-token blocks [n, blocks]:
    an order of summation fixed by the row alone, whatever else is in the batch."""
    n, v = w.shape
    full = v // _BLOCK
    sums = [w[:, : full * _BLOCK].view(n, full, _BLOCK).sum(dim=-1)] if full else []
    if full * _BLOCK < v:
        sums.append(w[:, full * _BLOCK :].sum(dim=-1, keepdim=True))
    return torch.cat(sums, dim=1).to(torch.float64).cumsum_(dim=-1)


def _row_totals(e: torch.Tensor) -> torch.Tensor:
    """Sum of each row of e [n, V] in float64 (see `_block_cumsum`)."""
    return _block_cumsum(e)[:, -1]


def _crossing(rr: torch.Tensor, cand: torch.Tensor, above: torch.Tensor, target: torch.Tensor,
              n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates cand (row rr) of n rows, each row's candidates the next in descending order
    after a mass `above`: per row, the first candidate (descending) where above + the mass so
    far reaches target, and whether one did (else the row's smallest candidate, 0 for none)."""
    cutoff = torch.zeros(n, dtype=torch.float32)
    if not rr.numel():
        return cutoff, torch.zeros(n, dtype=torch.bool)
    # ordered by (row, weight descending): two stable sorts
    o = torch.sort(cand, descending=True, stable=True).indices
    o = o[torch.sort(rr[o], stable=True).indices]
    rr, cand = rr[o], cand[o]
    csum = cand.to(torch.float64).cumsum(0)
    counts = torch.bincount(rr, minlength=n)
    ends = counts.cumsum(0)
    starts = ends - counts
    before = torch.where(starts > 0, csum[(starts - 1).clamp(min=0)], 0.0)
    hit = above[rr] + (csum - before[rr]) >= target[rr]
    m = rr.numel()
    pos = torch.where(hit, torch.arange(m), m)
    first = torch.full((n,), m, dtype=torch.long).scatter_reduce_(0, rr, pos, "amin")
    ok = first < m
    first = torch.where(ok, first, ends - 1)
    has = counts > 0
    cutoff[has] = cand[first[has]]
    return cutoff, ok


def _histogram_cutoff(e: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`_nucleus_cutoff` by a histogram of the mass over the weights' top bits."""
    n, v = e.shape
    # bin of e[r, i] in row r's block of _NBINS bins: r * _NBINS + _TOP_BIN - (top bits)
    top = (torch.arange(n, dtype=torch.int32) * _NBINS + _TOP_BIN).unsqueeze(1)
    bins = torch.bitwise_right_shift(e.view(torch.int32), _SHIFT,
                                     out=_ws.get("bins", (n, v), torch.int32))
    bins = torch.sub(top, bins, out=bins)
    # bincount adds in index order, one row's tokens after another's: per-row sums
    mass = torch.bincount(bins.view(-1), weights=e.reshape(-1), minlength=n * _NBINS)
    desc = mass.view(n, _NBINS).to(torch.float64).cumsum_(dim=-1)  # from the top bin down
    k = torch.searchsorted(desc, target.unsqueeze(1)).clamp_(max=_NBINS - 1)
    above = torch.where(k > 0, desc.gather(1, (k - 1).clamp(min=0)), 0.0).squeeze(1)
    hit = torch.eq(bins, top - _TOP_BIN + k.to(torch.int32),
                   out=_ws.get("hit", (n, v), torch.bool))
    rr, cc = hit.nonzero(as_tuple=True)
    # Rounding may leave nothing to cut (keep everything) or no candidate reaching the
    # target (keep the whole bin): both are what `_crossing` answers when it does not reach.
    return _crossing(rr, e[rr, cc], above, target, n)[0]


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
