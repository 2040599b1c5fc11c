"""The device sampler (services/inference/device_sampling.py) on CPU tensors.

Equivalence with the host sampler is checked token for token: given the uniform the host
sampler draws from the request's generator (read from a copy of that generator), the device
sampler picks the same token, over many steps with penalties building up, greedy and sampled
rows, top-p, top-k and temperatures mixed in one batch. Its own uniforms are checked for
uniformity (chi-square) and its draws for the distribution they must follow (chi-square).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from scipy import stats

from services.common.errors import InvalidArgument
from services.inference.device_sampling import (
    RowParams,
    counter_uniforms,
    device_pick,
    penalised,
    sample_batch_device,
)
from services.inference.sampling import Sampler, SamplingParams, sample_batch

PARAMS = [
    SamplingParams(temperature=1.0, top_p=0.85, seed=1),
    SamplingParams(temperature=0.0, presence_penalty=0.5, frequency_penalty=0.3, seed=2),
    SamplingParams(temperature=0.8, top_p=0.9, top_k=20, seed=3),
    SamplingParams(temperature=1.3, top_p=1.0, frequency_penalty=-0.5, seed=4),
    SamplingParams(temperature=1.0, top_p=1.0, top_k=5, presence_penalty=0, seed=5),
    SamplingParams(temperature=0.5, top_p=0.3, presence_penalty=1.5, penalty_decay=0.9, seed=6),
    SamplingParams(temperature=2.0, top_p=0.99, top_k=300, seed=7),
]


def _penalty(samplers: list[Sampler], v: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    idx, val = [], []
    for r, s in enumerate(samplers):
        pen = s.penalty()
        if pen is not None:
            idx.append(pen[0] + r * v)
            val.append(pen[1])
    return (torch.cat(idx), torch.cat(val)) if idx else None


@pytest.mark.parametrize(("v", "scale", "steps"), [(2048, 3.0, 30), (65536, 4.0, 6),
                                                   (1000, 0.3, 20)])
def test_same_token_as_the_host_sampler_given_its_uniform(v: int, scale: float,
                                                          steps: int) -> None:
    g = torch.Generator().manual_seed(v)
    host = [Sampler(p, v) for p in PARAMS]
    dev = [Sampler(p, v) for p in PARAMS]
    rp = RowParams.of(PARAMS, "cpu")
    for _ in range(steps):
        logits = torch.randn(len(PARAMS), v, generator=g) * scale
        # the uniform each sampled row's generator is about to give the host sampler
        u = torch.zeros(len(PARAMS), dtype=torch.float64)
        for r, s in enumerate(host):
            if s.params.temperature != 0.0:
                twin = torch.Generator()
                twin.set_state(s.generator.get_state())
                u[r] = torch.rand(1, generator=twin, dtype=torch.float64)
        raw = logits.clone()
        got = device_pick(logits, rp, u, _penalty(dev, v)).tolist()
        assert torch.equal(logits, raw)  # not modified
        want = sample_batch(host, logits)
        assert got == want
        for s, tok in zip(dev, got, strict=True):
            s.observe(tok)


def test_penalties_equal_the_host_samplers() -> None:
    v = 500
    g = torch.Generator().manual_seed(4)
    samplers = [Sampler(p, v) for p in PARAMS]
    for s in samplers:
        for tok in torch.randint(0, v, (40,), generator=g).tolist():
            s.observe(tok)
    logits = torch.randn(len(PARAMS), v, generator=g) * 2
    got = penalised(logits, _penalty(samplers, v))
    for r, s in enumerate(samplers):
        want = s.penalised(logits[r])
        assert torch.allclose(got[r], want - want.max(), atol=1e-6)
    # the greedy row picks the argmax of its penalised logits
    rp = RowParams.of([dataclasses.replace(p, temperature=0.0) for p in PARAMS], "cpu")
    toks = device_pick(logits, rp, torch.zeros(len(PARAMS), dtype=torch.float64),
                       _penalty(samplers, v))
    assert toks.tolist() == [int(s.penalised(logits[r]).argmax())
                             for r, s in enumerate(samplers)]


def _generate(params: list[SamplingParams], rows_logits: torch.Tensor, steps: int,
              seed_rows: list[int]) -> list[list[int]]:
    """Tokens of each row over `steps` steps of the same logits (penalties build up)."""
    v = rows_logits.shape[1]
    samplers = [Sampler(p, v) for p in params]
    out: list[list[int]] = [[] for _ in params]
    for step in range(steps):
        toks = sample_batch_device(samplers, rows_logits, [step] * len(params))
        for r, t in enumerate(toks):
            out[r].append(t)
    return [out[r] for r in seed_rows]


def test_a_rows_tokens_do_not_depend_on_its_batch_position_or_batchmates() -> None:
    v = 4096
    g = torch.Generator().manual_seed(11)
    x = torch.randn(v, generator=g) * 2
    p = SamplingParams(temperature=1.0, top_p=0.95, seed=42)
    alone = _generate([p], x.unsqueeze(0), 25, [0])[0]
    mates = [SamplingParams(temperature=t, top_p=tp, top_k=k, seed=s)
             for t, tp, k, s in [(0.7, 0.5, 0, 1), (0.0, 1.0, 0, 2), (1.5, 1.0, 10, 3),
                                 (1.0, 0.8, 0, None)]]
    for pos in (0, 2, 4):
        params = [*mates[:pos], p, *mates[pos:]]
        logits = torch.randn(len(params), v, generator=g) * 3
        logits[pos] = x
        assert _generate(params, logits, 25, [pos])[0] == alone


def test_seeds_reproduce_and_differ() -> None:
    v = 1000
    x = torch.randn(v, generator=torch.Generator().manual_seed(1)).unsqueeze(0)

    def draw(seed: int | None) -> list[int]:
        p = SamplingParams(temperature=1.0, top_p=1.0, seed=seed)
        return _generate([p], x, 30, [0])[0]

    assert draw(123) == draw(123)
    assert draw(123) != draw(124)
    assert draw(-5) == draw(-5)  # negative seeds are valid (two's complement)
    assert draw(None) != draw(None)  # an unseeded request draws its own seed


def test_counter_uniforms_are_uniform_and_positional() -> None:
    seeds = torch.randint(0, 2**32, (40000, 2), generator=torch.Generator().manual_seed(0))
    steps = torch.arange(40000) % 97
    u = counter_uniforms(seeds, steps)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    counts = torch.histc(u.float(), bins=40, min=0.0, max=1.0)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    # one seed across steps: uniform too
    one = counter_uniforms(torch.tensor([[7, 0]]).expand(40000, 2), torch.arange(40000))
    assert stats.chisquare(torch.histc(one.float(), 40, 0.0, 1.0).numpy()).pvalue > 1e-3
    # a row's uniform is a function of its own (seed, step) only
    assert torch.equal(counter_uniforms(seeds[5:9], steps[5:9]), u[5:9])
    assert torch.equal(counter_uniforms(seeds.flip(0), steps.flip(0)), u.flip(0))


@pytest.mark.parametrize(("temperature", "top_p", "top_k"),
                         [(1.0, 0.6, 0), (0.7, 0.9, 6), (1.3, 1.0, 0), (1.0, 1.0, 3)])
def test_draws_follow_the_tempered_nucleus_distribution(temperature: float, top_p: float,
                                                        top_k: int) -> None:
    """Chi-square of 20,000 draws (one per seed) against softmax(logits / T) over the top-p
    and top-k support, computed here from a full sort."""
    v = 24
    x = torch.randn(v, generator=torch.Generator().manual_seed(5)) * 1.5
    rows = 20000
    p = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, presence_penalty=0,
                       frequency_penalty=0)
    samplers = [Sampler(dataclasses.replace(p, seed=i), v) for i in range(rows)]
    toks = sample_batch_device(samplers, x.expand(rows, v), [0] * rows)
    counts = torch.bincount(torch.tensor(toks), minlength=v).double()
    prob = torch.softmax(x.double(), -1)
    order = prob.argsort(descending=True)
    keep = torch.zeros(v, dtype=torch.bool)
    mass = 0.0
    for i in order.tolist():  # the reference: ranks until the mass reaches top_p
        keep[i] = True
        mass += float(prob[i])
        if mass >= top_p:
            break
    if top_k:
        keep &= x >= torch.topk(x, top_k).values[-1]
    want = torch.softmax(torch.where(keep, x.double() / temperature, -torch.inf), -1)
    assert bool((counts[~keep] == 0).all())
    k = keep.nonzero().squeeze(1)
    res = stats.chisquare(counts[k].numpy(), want[k].numpy() * rows)
    assert res.pvalue > 1e-3, (res, counts[k], want[k] * rows)


def test_greedy_and_all_rows_sampled_in_one_call() -> None:
    v = 64
    logits = torch.randn(3, v, generator=torch.Generator().manual_seed(2)) * 5
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.01, top_p=1.0,
                                                              seed=1),
              SamplingParams(temperature=1.0, top_k=1, seed=2)]
    toks = sample_batch_device([Sampler(p, v) for p in params], logits, [0, 0, 0])
    assert toks == logits.argmax(-1).tolist()


def test_bad_params_and_shapes_are_refused_naming_the_field() -> None:
    bad = [SamplingParams(), SamplingParams(temperature=-1.0), SamplingParams(top_p=0.0,
                                                                              top_k=-2)]
    with pytest.raises(InvalidArgument) as ei:
        RowParams.of(bad, "cpu")
    assert set(ei.value.fields) == {"params[1].temperature", "params[2].top_p",
                                    "params[2].top_k"}
    with pytest.raises(InvalidArgument) as ei:
        sample_batch_device([Sampler(SamplingParams(penalty_decay=2.0), 8)], torch.zeros(1, 8),
                            [0])
    assert ei.value.fields == ["params[0].penalty_decay"]
    rp = RowParams.of([SamplingParams()] * 2, "cpu")
    with pytest.raises(ValueError, match="u has shape"):
        device_pick(torch.zeros(2, 8), rp, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[B, V\]"):
        device_pick(torch.zeros(8), rp, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="2 samplers and 1 steps"):
        sample_batch_device([Sampler(SamplingParams(), 8)] * 2, torch.zeros(2, 8), [0])
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        counter_uniforms(torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    assert sample_batch_device([], torch.zeros(0, 8), []) == []
