"""Engine scoring requests: one prefill on a fresh state, logits back, nothing sampled.

They must agree with the rwkv package's forward, never touch the conversation state cache,
honour deadlines and cancellation like a chat (freeing their slot), and leave the running
generations exactly as they would be without them."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import torch

from services.common.errors import InvalidArgument
from services.inference.engine import (
    DEADLINE_EXCEEDED,
    GenerationRequest,
    ScoreFailed,
    TokenEvent,
)
from services.inference.sampling import SamplingParams
from services.inference.state_cache import StateCache

VOCAB = 512
GREEDY = SamplingParams(temperature=0.0, max_tokens=24)
RAW = {"turn_end": "", "eos_token_id": None}  # generations run to max_tokens


def _prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1, VOCAB) for _ in range(n)]


def _reference(model: Any, tokens: list[int]) -> torch.Tensor:
    out, _ = model.forward(list(tokens), None)
    return out.float()


@pytest.mark.parametrize("length", [1, 7, 40, 300])
async def test_scores_equal_the_package_forward(make_engine, model_fp32, length: int) -> None:
    """300 tokens: longer than a prefill chunk (256), so it is fed in two rounds."""
    eng = make_engine()
    tokens = _prompt(random.Random(length), length)
    got = await eng.score(tokens)
    ref = _reference(model_fp32, tokens)
    assert got.shape == (VOCAB,) and got.dtype == torch.float32
    assert float((got - ref).abs().max()) <= 1e-4


async def test_scores_on_a_split_placement(make_engine, tiny_ckpt, load_model) -> None:
    model = load_model(tiny_ckpt, "cpu fp32 *3 -> cpu fp32")
    eng = make_engine(model)
    tokens = _prompt(random.Random(8), 33)
    got = await eng.score(tokens)
    assert float((got - _reference(model, tokens)).abs().max()) <= 1e-4


async def test_scores_in_one_prefill_round_with_others(make_engine, model_fp32) -> None:
    """Several scoring requests (and a chat) prefilled together in one pass: each equals the
    package forward of its own tokens alone."""
    eng = make_engine(max_running=8)
    rng = random.Random(3)
    prompts = [_prompt(rng, n) for n in (3, 11, 5, 29)]
    chat = eng.submit(GenerationRequest("c", _prompt(rng, 9), GREEDY))
    got = await asyncio.gather(*(eng.score(p) for p in prompts))
    await chat.result()
    for p, g in zip(prompts, got, strict=True):
        assert float((g - _reference(model_fp32, p)).abs().max()) <= 1e-4


async def test_log_probs_of_requested_ids(make_engine, model_fp32) -> None:
    eng = make_engine()
    tokens = _prompt(random.Random(5), 12)
    ids = [7, 300, 7, 42]
    got = await eng.score(tokens, ids)
    ref = torch.log_softmax(_reference(model_fp32, tokens), -1)[ids]
    assert got.shape == (4,)
    assert float((got - ref).abs().max()) <= 1e-4


async def test_scoring_works_under_a_small_max_tokens_limit(make_engine, model_fp32) -> None:
    # A node configured with max_tokens_limit below the sampling default still scores.
    eng = make_engine(max_tokens_limit=8)
    tokens = _prompt(random.Random(3), 12)
    got = await eng.score(tokens)
    assert torch.allclose(got, _reference(model_fp32, tokens), atol=1e-4)


async def test_scoring_never_touches_the_state_cache(make_engine) -> None:
    cache = StateCache(1 << 24)
    eng = make_engine(cache=cache)
    handle = eng.submit(GenerationRequest("conv", [5, 6, 7], score_only=True))
    final = await handle.result()
    assert final.reason == "scored" and final.completion_tokens == 0
    assert not final.cache_hit and final.cached_state_tokens == 0
    assert cache.stats().entries == 0 and cache.stats().hits == cache.stats().misses == 0
    assert eng.outstanding() == 0


async def test_bad_score_requests_name_the_field(make_engine) -> None:
    eng = make_engine()
    with pytest.raises(InvalidArgument) as bad:
        await eng.score([1, 2], [VOCAB])
    assert bad.value.fields == ["score_token_ids"]
    with pytest.raises(InvalidArgument) as bad:
        await eng.score([1, 2], [])
    assert bad.value.fields == ["score_token_ids"]
    with pytest.raises(InvalidArgument) as bad:
        eng.submit(GenerationRequest("c", [1, 2], score_token_ids=(3,)))
    assert bad.value.fields == ["score_token_ids"]
    with pytest.raises(InvalidArgument) as bad:
        await eng.score([])
    assert bad.value.fields == ["prompt_tokens"]
    assert eng.outstanding() == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _until(pred: Any, tries: int = 2000) -> None:
    for _ in range(tries):
        if pred():
            return
        await asyncio.sleep(0.005)
    assert pred()


async def _first_token(handle: Any) -> None:
    async for ev in handle:
        if isinstance(ev, TokenEvent):
            return


async def test_deadline_frees_the_slot(make_engine) -> None:
    """One running slot, held by a long generation: the scoring request waits in the queue
    and is dropped at its deadline (ScoreFailed, DEADLINE_EXCEEDED), its slot freed."""
    clock = FakeClock()
    eng = make_engine(clock=clock, max_running=1, **RAW)
    long = eng.submit(GenerationRequest("g", [5, 6, 7], SamplingParams(temperature=0.0,
                                                                      max_tokens=1000)))
    await _first_token(long)
    task = asyncio.create_task(eng.score([1, 2, 3], deadline=clock.now + 5))
    await _until(lambda: eng.outstanding() == 2)
    clock.now += 10
    with pytest.raises(ScoreFailed) as failed:
        await asyncio.wait_for(task, 10)
    assert failed.value.reason == "cancelled" and failed.value.detail == DEADLINE_EXCEEDED
    assert eng.outstanding() == 1  # only the generation
    long.cancel()
    await long.result()
    assert eng.outstanding() == 0


async def test_cancelled_caller_frees_the_slot(make_engine) -> None:
    eng = make_engine(max_running=1, **RAW)
    long = eng.submit(GenerationRequest("g", [5, 6, 7], SamplingParams(temperature=0.0,
                                                                      max_tokens=1000)))
    await _first_token(long)
    task = asyncio.create_task(eng.score([1, 2, 3]))
    await _until(lambda: eng.outstanding() == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: eng.outstanding() == 1)  # the engine drops it within a step
    long.cancel()
    await long.result()
    assert eng.outstanding() == 0


async def test_timeout_around_score_cancels_it(make_engine) -> None:
    """asyncio.timeout around Engine.score (what the second opinion does) frees the slot."""
    eng = make_engine(max_running=1, **RAW)
    long = eng.submit(GenerationRequest("g", [5], SamplingParams(temperature=0.0,
                                                                max_tokens=1000)))
    await _first_token(long)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await eng.score([1, 2, 3])
    await _until(lambda: eng.outstanding() == 1)
    long.cancel()
    await long.result()


async def _generations(eng: Any, prompts: list[list[int]], scores: int) -> list[list[int]]:
    """Greedy generations; `scores` scoring requests join once every one of them decodes."""
    handles = [eng.submit(GenerationRequest(f"c{i}", p, GREEDY)) for i, p in enumerate(prompts)]
    outs: list[list[int]] = [[] for _ in prompts]
    started = [asyncio.Event() for _ in prompts]

    async def read(i: int) -> None:
        async for ev in handles[i]:
            if isinstance(ev, TokenEvent):
                outs[i] += ev.token_ids
                started[i].set()

    readers = [asyncio.create_task(read(i)) for i in range(len(prompts))]
    await asyncio.gather(*(e.wait() for e in started))
    rng = random.Random(9)
    scored = await asyncio.gather(*(eng.score(_prompt(rng, 30 + 7 * k), [1, 2, 3])
                                    for k in range(scores)))
    await asyncio.gather(*readers)
    assert all(h.final.reason == "length" for h in handles)
    assert all(s.shape == (3,) for s in scored)
    return outs


async def test_scoring_under_load_leaves_generations_unchanged(make_engine) -> None:
    rng = random.Random(21)
    prompts = [_prompt(rng, n) for n in (4, 9, 15, 6, 12)]
    alone = await _generations(make_engine(max_running=8, **RAW), prompts, scores=0)
    with_scores = await _generations(make_engine(max_running=8, **RAW), prompts, scores=4)
    assert with_scores == alone
    assert all(len(o) == GREEDY.max_tokens for o in alone)
