from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.inference.sampling import (
    IncrementalDecoder,
    Sampler,
    SamplingParams,
    StopChecker,
    sample_batch,
)

V = 64


def test_defaults_are_valid_and_chatrwkv_like() -> None:
    p = SamplingParams()
    p.validate()
    assert (p.temperature, p.top_p, p.top_k) == (1.0, 0.85, 0)
    assert (p.presence_penalty, p.frequency_penalty, p.penalty_decay) == (0.2, 0.2, 0.996)
    SamplingParams(temperature=0.0, top_p=1.0, max_tokens=1).validate()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature": -0.1}, "params.temperature"),
        ({"temperature": float("nan")}, "params.temperature"),
        ({"top_p": 0.0}, "params.top_p"),
        ({"top_p": 1.01}, "params.top_p"),
        ({"top_k": -1}, "params.top_k"),
        ({"max_tokens": 0}, "params.max_tokens"),
        ({"max_tokens": 1025}, "params.max_tokens"),
        ({"presence_penalty": 2.5}, "params.presence_penalty"),
        ({"frequency_penalty": -3.0}, "params.frequency_penalty"),
        ({"penalty_decay": 0.0}, "params.penalty_decay"),
        ({"penalty_decay": 1.5}, "params.penalty_decay"),
        ({"stop": ("",)}, "params.stop[0]"),
        ({"stop": ("a",) * 9}, "params.stop"),
    ],
)
def test_validate_names_the_field(change: dict, field: str) -> None:
    p = dataclasses.replace(SamplingParams(), **change)
    with pytest.raises(InvalidArgument) as ei:
        p.validate(max_tokens_limit=1024)
    assert field in ei.value.fields


def test_validate_reports_every_bad_field_and_custom_limit() -> None:
    p = SamplingParams(temperature=-1, top_p=0, max_tokens=50)
    with pytest.raises(InvalidArgument) as ei:
        p.validate(max_tokens_limit=10, field_prefix="")
    assert set(ei.value.fields) == {"temperature", "top_p", "max_tokens"}


def test_greedy_is_argmax_after_penalties() -> None:
    logits = torch.zeros(V)
    logits[5], logits[6] = 3.0, 2.9
    s = Sampler(SamplingParams(temperature=0, presence_penalty=0.2, frequency_penalty=0.0), V)
    assert s.sample(logits) == 5
    assert s.sample(logits) == 6  # 5 now carries the presence penalty


def test_penalties_follow_chatrwkv_occurrence_dict() -> None:
    p = SamplingParams(temperature=0, presence_penalty=0.3, frequency_penalty=0.7,
                       penalty_decay=0.9)
    s = Sampler(p, V)
    occurrence: dict[int, float] = {}
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        logits = torch.randn(V, generator=g)
        ref = logits.clone()
        for t, c in occurrence.items():
            ref[t] -= p.presence_penalty + c * p.frequency_penalty
        assert torch.allclose(s.penalised(logits), ref, atol=1e-5)
        tok = s.sample(logits)
        assert tok == int(torch.argmax(ref))
        for t in occurrence:
            occurrence[t] *= p.penalty_decay
        occurrence[tok] = occurrence.get(tok, 0.0) + 1


def test_seed_reproduces_and_differs() -> None:
    logits = torch.randn(V, generator=torch.Generator().manual_seed(1))

    def draw(seed: int) -> list[int]:
        s = Sampler(SamplingParams(temperature=1.0, top_p=1.0, seed=seed), V)
        return [s.sample(logits) for _ in range(40)]

    assert draw(123) == draw(123)
    assert draw(123) != draw(124)


def test_top_p_and_top_k_restrict_the_support() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05] + [1e-9] * (V - 4)))
    p_nucleus = Sampler(SamplingParams(top_p=0.7, presence_penalty=0, frequency_penalty=0,
                                       seed=0), V)
    assert {p_nucleus.sample(logits) for _ in range(300)} == {0, 1}
    k1 = Sampler(SamplingParams(top_p=1.0, top_k=1, presence_penalty=0, frequency_penalty=0), V)
    assert {k1.sample(logits) for _ in range(50)} == {0}
    k3 = Sampler(SamplingParams(top_p=1.0, top_k=3, presence_penalty=0, frequency_penalty=0,
                                seed=0), V)
    assert {k3.sample(logits) for _ in range(300)} == {0, 1, 2}


def test_low_temperature_concentrates_without_underflow() -> None:
    logits = torch.randn(V, generator=torch.Generator().manual_seed(3)) * 5
    s = Sampler(SamplingParams(temperature=0.01, top_p=1.0, presence_penalty=0,
                               frequency_penalty=0, seed=0), V)
    assert {s.sample(logits) for _ in range(20)} == {int(torch.argmax(logits))}


class _Bytes:
    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class _Strict(_Bytes):
    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8")  # raises on partial characters


@pytest.mark.parametrize("tok", [_Bytes(), _Strict()])
def test_incremental_decoder_never_emits_partial_utf8(tok) -> None:
    text = "héllo 你好 😀!"
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(b) for b in tok.encode(text)]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + dec.flush() == text


def test_incremental_decoder_gives_up_on_invalid_bytes() -> None:
    dec = IncrementalDecoder(_Bytes(), max_pending=3)
    out = dec.push(0xE4) + dec.push(0xBD) + dec.push(0xE4)
    assert out.startswith("\ufffd")


def test_stop_checker_split_across_pieces() -> None:
    sc = StopChecker([("\n\n", "stop"), ("Bob:", "stop_sequence")])
    out = []
    for piece in ["Hi the", "re\n", "B", "o", "b", ":", " more"]:
        emit, reason = sc.push(piece)
        out.append(emit)
        if reason:
            break
    assert "".join(out) == "Hi there\n" and reason == "stop_sequence"


def test_stop_checker_earliest_wins_and_flush() -> None:
    sc = StopChecker([("\n\n", "stop"), ("xy", "stop_sequence")])
    assert sc.push("ab\n") == ("ab", None)
    assert sc.push("\nxy") == ("", "stop")
    sc2 = StopChecker([("abc", "stop_sequence")])
    assert sc2.push("zab") == ("z", None)
    assert sc2.flush() == ("ab", None)
    # "B::" could still complete when ":" is seen, so the ":" stop waits for more text.
    sc3 = StopChecker([(":", "r0"), ("B::", "r1")])
    assert sc3.push("B:") == ("", None)
    assert sc3.push(":") == ("", "r1")
    sc4 = StopChecker([(":", "r0"), ("B::", "r1")])
    assert sc4.push("B:") == ("", None)
    assert sc4.flush() == ("B", "r0")


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(alphabet="ab\nBo:", max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=10),
    stops=st.lists(st.text(alphabet="ab\nBo:", min_size=1, max_size=4), min_size=1, max_size=3),
)
def test_stop_checker_property(text: str, cuts: list[int], stops: list[str]) -> None:
    sc = StopChecker([(s, f"r{i}") for i, s in enumerate(stops)])
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    emitted, reason = "", None
    for a, b in zip(bounds, bounds[1:], strict=False):
        e, reason = sc.push(text[a:b])
        emitted += e
        assert not any(s in emitted for s in stops)
        if reason:
            break
    if reason is None:  # end of text: the held tail may still hold a stop
        tail, reason = sc.flush()
        emitted += tail
    hits = [(text.find(s), i) for i, s in enumerate(stops) if s in text]
    if hits:
        first = min(h[0] for h in hits)
        assert reason is not None and emitted == text[:first]
        assert text.find(stops[int(reason[1:])]) == first
    else:
        assert reason is None and emitted == text


# ----- batched sampling (one [B, V] pass for a decode step)


def _sort_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Reference top-p: sort, float64 cumulative sum, keep probs >= the crossing prob."""
    probs = torch.softmax(logits.double(), dim=-1).float()
    sp, _ = torch.sort(probs, descending=True)
    cum = torch.cumsum(sp.double(), dim=-1)
    idx = int(torch.searchsorted(cum, torch.tensor([top_p], dtype=torch.float64)).item())
    return probs >= sp[min(idx, sp.numel() - 1)]


@pytest.mark.parametrize("vocab", [64, 50277, 65536])
@pytest.mark.parametrize("top_p", [0.3, 0.7, 0.85])
def test_nucleus_matches_sorting_reference(vocab: int, top_p: float) -> None:
    from services.inference.sampling import _nucleus_cutoff

    g = torch.Generator().manual_seed(vocab)
    x = torch.randn(6, vocab, generator=g) * torch.tensor([[0.5], [1], [2], [3], [5], [8]])
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    cut = _nucleus_cutoff(e, [top_p] * 6)
    for r in range(6):
        ref = _sort_nucleus(x[r], top_p)
        mine = e[r] >= cut[r]
        # Summation order may move a token sitting exactly at the boundary, nothing more.
        assert int((ref ^ mine).sum()) <= 1, (r, int(ref.sum()), int(mine.sum()))


def test_nucleus_fast_path_agrees_with_the_histogram() -> None:
    """Peaked rows take the gathered-candidates path, flat ones the histogram; a peaked row
    whose nucleus reaches past the candidates falls back. All agree with the histogram."""
    from services.inference import sampling as smp

    g = torch.Generator().manual_seed(3)
    v = 50277
    x = torch.randn(9, v, generator=g) * torch.tensor(
        [[0.5], [1], [3], [6], [9], [12], [20], [40], [0.01]])
    x[7, :2000] += 25.0  # many near-equal heavy tokens: a flat top
    x[8] += math.log(3e-4)  # peaked total (~16), but the nucleus is in the long tail
    x[8, 0] = 0.0
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    totals = smp._row_totals(e)
    assert bool((totals <= smp._FAST_TOTAL).any()) and bool((totals > smp._FAST_TOTAL).any())
    assert float(totals[8]) <= smp._FAST_TOTAL
    for top_p in (0.3, 0.7, 0.95):
        cut = smp._nucleus_cutoff(e, [top_p] * 9)
        ref = smp._histogram_cutoff(e, top_p * totals)
        for r in range(9):
            assert int(((e[r] >= cut[r]) ^ (e[r] >= ref[r])).sum()) <= 1, (top_p, r)
        assert int((e[8] >= cut[8]).sum()) > smp._FAST_MAX  # went past the candidates
        for r in range(9):  # alone, the same cut as in the batch
            assert float(smp._nucleus_cutoff(e[r : r + 1], [top_p])[0]) == float(cut[r])


def test_batched_rows_equal_rows_sampled_alone() -> None:
    """A request's draws do not depend on its batchmates: same seeds, same tokens."""
    v = 2048
    params = [
        SamplingParams(temperature=1.0, top_p=0.7, seed=1),
        SamplingParams(temperature=0.0, presence_penalty=0.5, seed=2),
        SamplingParams(temperature=0.8, top_p=0.9, top_k=20, seed=3),
        SamplingParams(temperature=1.3, top_p=1.0, frequency_penalty=-0.5, seed=4),
        SamplingParams(temperature=1.0, top_p=1.0, top_k=5, presence_penalty=0, seed=5),
    ]
    g = torch.Generator().manual_seed(9)
    batch = [Sampler(p, v) for p in params]
    alone = [Sampler(p, v) for p in params]
    for _ in range(25):
        logits = torch.randn(len(params), v, generator=g) * 3
        raw = logits.clone()
        got = sample_batch(batch, logits)
        assert torch.equal(logits, raw)  # the caller's logits are not modified
        assert got == [s.sample(logits[i]) for i, s in enumerate(alone)]


def test_batched_support_and_distribution() -> None:
    """Empirical frequencies follow softmax(logp / T) over the top-p ∩ top-k support."""
    v = 16
    x = torch.randn(v, generator=torch.Generator().manual_seed(5)) * 1.5
    for temperature, top_p, top_k in [(1.0, 0.6, 0), (0.7, 0.9, 6), (1.3, 1.0, 0)]:
        p = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k,
                           presence_penalty=0, frequency_penalty=0)
        rows = 4000
        samplers = [Sampler(dataclasses.replace(p, seed=i), v) for i in range(rows)]
        toks = sample_batch(samplers, x.expand(rows, v).contiguous())
        freq = torch.bincount(torch.tensor(toks), minlength=v).double() / rows
        keep = _sort_nucleus(x, top_p)
        if top_k:
            keep &= x >= torch.topk(x, top_k).values[-1]
        want = torch.softmax(torch.where(keep, x.double() / temperature, -torch.inf), dim=-1)
        assert bool((freq[~keep] == 0).all())
        assert float((freq - want).abs().max()) < 0.03


def test_sparse_penalties_equal_dense_occurrences() -> None:
    v = 300
    p = SamplingParams(temperature=0, presence_penalty=0.3, frequency_penalty=0.4,
                       penalty_decay=0.95)
    s = Sampler(p, v)
    dense = torch.zeros(v)
    seen = torch.zeros(v)
    for tok in [5, 7, 5, 5, 299, 7, 0]:
        s.observe(tok)
        dense *= p.penalty_decay
        dense[tok] += 1
        seen[tok] = 1
    logits = torch.randn(v)
    want = logits - (p.presence_penalty * seen + p.frequency_penalty * dense)
    assert torch.allclose(s.penalised(logits), want, atol=1e-5)
    batch = torch.stack([logits, logits])
    assert sample_batch([s, Sampler(p, v)], batch)[0] == int(torch.argmax(want))


def test_sample_batch_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        sample_batch([Sampler(SamplingParams(), V)], torch.zeros(2, V))
    assert sample_batch([], torch.zeros(0, V)) == []
