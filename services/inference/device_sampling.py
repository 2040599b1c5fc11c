"""Sampling on the logits' device: the whole batch in a fixed set of tensor ops.

The host sampler (`sampling.sample_batch`) keeps the logits on the CPU and draws each
request's uniform from its own `torch.Generator`. On a GPU node that costs a device-to-host
copy of [B, V] float32 logits and host work per row every step. Here every row of the batch
is sampled with the same tensor ops on the logits' device, whatever each row's settings, and
only the chosen ids ([B] int64) cross to the host.

Semantics are the host sampler's (ChatRWKV's), op for op:

* penalties: logits[token] -= presence + occurrence * frequency for the tokens a request
  generated, occurrences decayed by `penalty_decay` per token (the host `Sampler` keeps
  them; `sample_batch_device` sends its sparse (ids, amounts) in one copy);
* top-p and top-k decided on the untempered probabilities relative to the row's best
  token, ties kept (keep e >= cutoff); the top-p cutoff is the weight at the first rank, in
  descending order, where the running mass reaches top_p of the row's total;
* temperature weighs the kept tokens by e ** (1 / T); temperature 0 is argmax after penalties;
* one uniform per row and an inverse-CDF pick in two levels (256-token blocks, then a token),
  summed in float64, the same as the host's.

Given the same uniform, the pick equals the host sampler's on the CPU (test_device_sampling
checks it token for token); on a GPU the float sums may round differently, which can move a
pick only when the uniform lands within rounding distance of a boundary of the CDF.

Uniforms. The host draws from the request's `torch.Generator`; a device cannot use a CPU
generator without a sync per row. Here a row's uniform is a counter-based hash of (seed,
step) in 32-bit integer arithmetic held in int64 tensors (no overflow anywhere, so the same
bits on every device): the same seed and step give the same uniform on the CPU and on CUDA,
and a row's draw depends on nothing else in the batch. So a seeded request gives the same
tokens wherever it sits in a batch and on either device, up to the float rounding above.
Its tokens are not the host sampler's for the same seed (a different generator): a seed is
reproducible per sampler, and a node uses one sampler per device kind (see engine.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from services.common.errors import InvalidArgument
from services.inference.sampling import (  # one inverse-CDF search for both samplers
    Sampler,
    SamplingParams,
    _block_cumsum,
    _inverse_cdf,
    sorted_crossing,
)

__all__ = [
    "RowParams",
    "counter_uniforms",
    "device_pick",
    "penalised",
    "sample_batch_device",
    "seed_of",
]

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


@dataclass(frozen=True, slots=True)
class RowParams:
    """Per-row sampling settings of a batch as tensors on the logits' device."""

    temperature: torch.Tensor  # [B] float32, 0 = greedy
    top_p: torch.Tensor  # [B] float64 in (0, 1]
    top_k: torch.Tensor  # [B] int64, 0 = no cut

    @classmethod
    def of(cls, params: Sequence[SamplingParams], device: torch.device | str) -> RowParams:
        """From each row's SamplingParams (validated: InvalidArgument names the row's field)."""
        bad: list[tuple[str, str]] = []
        for r, p in enumerate(params):
            try:
                p.validate(max_tokens_limit=max(p.max_tokens, 1), field_prefix=f"params[{r}].")
            except InvalidArgument as exc:
                bad += list(exc.violations)
        if bad:
            raise InvalidArgument(bad)
        return cls(
            torch.tensor([p.temperature for p in params], dtype=torch.float32).to(device),
            torch.tensor([p.top_p for p in params], dtype=torch.float64).to(device),
            torch.tensor([p.top_k for p in params], dtype=torch.int64).to(device),
        )


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    """(x * m) mod 2**32 for x in [0, 2**32), in int64 without overflow (16-bit halves of m)."""
    lo = x * (m & 0xFFFF)
    hi = ((x * (m >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xor-shift / multiply rounds) on values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def seed_of(seed: int) -> int:
    """A 64-bit seed (negative ones as two's complement) as the unsigned value hashed."""
    return seed & 0xFFFFFFFFFFFFFFFF


def counter_uniforms(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One float64 uniform in [0, 1) per row from (seed, step), on the tensors' device.

    seeds: [B, 2] int64, each row a 64-bit seed's (low, high) 32-bit halves; steps: [B]
    int64 >= 0 (the request's token count so far). The 53 bits of a uniform come from two
    hash words of the pair.
    """
    if seeds.dim() != 2 or seeds.shape[1] != 2 or steps.shape != seeds.shape[:1]:
        raise ValueError(f"seeds {tuple(seeds.shape)} must be [B, 2] and steps [B]")
    lo, hi = seeds[:, 0] & _M32, seeds[:, 1] & _M32
    s_lo, s_hi = steps & _M32, (steps >> 32) & _M32
    h = _mix32(lo ^ _GOLDEN)
    h = _mix32(h ^ hi)
    h = _mix32(h ^ s_lo)
    a = _mix32(h ^ s_hi)
    b = _mix32(a ^ _GOLDEN)
    bits = (a >> 6) * (1 << 27) + (b >> 5)  # 26 + 27 bits
    return bits.to(torch.float64) * (2.0 ** -53)


def _seed_pairs(seeds: Sequence[int], device: torch.device | str) -> torch.Tensor:
    vals = [seed_of(s) for s in seeds]
    return torch.tensor([[v & _M32, v >> 32] for v in vals], dtype=torch.int64).to(device)


def penalised(logits: torch.Tensor,
              penalty: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Logits [B, V] after the penalties (flat indices, amounts), relative to each row's best
    token (a new float32 tensor, max 0 per row): the host sampler's values bit for bit (its
    row minus its max, the penalties, then re-centred; re-centring a row whose maximum stayed
    at 0 changes nothing)."""
    x = logits.float()
    t = x - x.amax(dim=-1, keepdim=True)
    if penalty is not None and penalty[0].numel():
        t.view(-1).index_add_(0, penalty[0], penalty[1], alpha=-1.0)
        t.sub_(t.amax(dim=-1, keepdim=True))
    return t


def device_pick(logits: torch.Tensor, rp: RowParams, u: torch.Tensor,
                penalty: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Sample one token per row of logits [B, V] on their device; returns [B] int64 there.

    rp: the rows' settings; u: [B] float64 uniforms in [0, 1); penalty: (flat indices into
    the [B * V] logits, amounts to subtract), both on the device, or None. `logits` is not
    modified. Every row runs through the same ops (no Python loop over rows)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    n, v = logits.shape
    for name, t in (("temperature", rp.temperature), ("top_p", rp.top_p),
                    ("top_k", rp.top_k), ("u", u)):
        if t.shape != (n,):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected ({n},)")
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=logits.device)
    t = penalised(logits, penalty)
    greedy = torch.argmax(t, dim=-1)
    temp = rp.temperature
    hot = temp != 0.0
    w = torch.div(t, torch.where(hot, temp, 1.0).unsqueeze(1)).exp_()
    e = t.exp_()
    cutoff = _cutoffs(e, rp)
    w.masked_fill_(e < cutoff.unsqueeze(1), 0.0)
    drawn = _inverse_cdf(w, u)
    return torch.where(hot, drawn, greedy)


def _cutoffs(e: torch.Tensor, rp: RowParams) -> torch.Tensor:
    """Per row of e [n, V] (in [0, 1], the best token at 1): the largest of the top-p and
    top-k cutoffs (0 where neither cuts), from one descending sort of the batch."""
    n, v = e.shape
    p_cut = rp.top_p < 1.0
    k_cut = (rp.top_k > 0) & (rp.top_k < v)
    srt = torch.sort(e, dim=-1, descending=True).values
    p_val = sorted_crossing(srt, rp.top_p * _block_cumsum(e)[:, -1])
    k_val = srt.gather(1, (rp.top_k - 1).clamp(0, v - 1).unsqueeze(1)).squeeze(1)
    zero = torch.zeros_like(p_val)
    return torch.maximum(torch.where(p_cut, p_val, zero), torch.where(k_cut, k_val, zero))


def sample_batch_device(samplers: Sequence[Sampler], logits: torch.Tensor,
                        steps: Sequence[int]) -> list[int]:
    """`sampling.sample_batch` on the logits' device: row i with samplers[i] (its settings,
    penalties and seed), its uniform from (seed, steps[i]); records each token in its sampler.

    The seed is the request's `SamplingParams.seed`, else the random seed its generator was
    given (`Generator.initial_seed`), so a request's draws stay its own either way."""
    if logits.dim() != 2 or logits.shape[0] != len(samplers) or len(steps) != len(samplers):
        raise ValueError(f"logits {tuple(logits.shape)} for {len(samplers)} samplers and "
                         f"{len(steps)} steps")
    if not samplers:
        return []
    dev = logits.device
    v = logits.shape[1]
    rp = RowParams.of([s.params for s in samplers], dev)
    seeds = [s.params.seed if s.params.seed is not None else s.generator.initial_seed()
             for s in samplers]
    u = counter_uniforms(_seed_pairs(seeds, dev), torch.tensor(list(steps), dtype=torch.int64
                                                               ).to(dev))
    idx: list[torch.Tensor] = []
    val: list[torch.Tensor] = []
    for r, s in enumerate(samplers):
        pen = s.penalty()
        if pen is not None:
            idx.append(pen[0] + r * v)
            val.append(pen[1])
    penalty = None
    if idx:
        penalty = (torch.cat(idx).to(dev, non_blocking=True),
                   torch.cat(val).to(dev, non_blocking=True))
    tokens = device_pick(logits, rp, u, penalty).tolist()  # the one copy to the host
    for s, tok in zip(samplers, tokens, strict=True):
        s.observe(tok)
    return tokens
