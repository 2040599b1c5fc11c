"""Engine behaviour with a real (tiny, random) RWKV-4 model."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

from services.common.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.inference.engine import EngineCallbacks, FinishEvent, GenerationRequest
from services.inference.sampling import SamplingParams

# No turn end / end-of-text: the model runs exactly max_tokens (clean comparisons).
RAW = {"turn_end": "", "eos_token_id": None}


def greedy(n: int, **kw: Any) -> SamplingParams:
    base = {"temperature": 0.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_tokens": n}
    return SamplingParams(**(base | kw))


def req(prompt: list[int], params: SamplingParams, conv: str = "c", **kw: Any) -> GenerationRequest:
    return GenerationRequest(conversation_id=conv, prompt_tokens=prompt, params=params, **kw)


class Recorder(EngineCallbacks):
    def __init__(self, clock: Any = None) -> None:
        self.steps = 0
        self.batch_sizes: list[int] = []
        self.tokens = 0
        self.prefill_tokens = 0
        self.finished: dict[str, int] = {}  # request id -> steps when finished
        self.clock = clock
        self.lock = threading.Lock()

    def on_step(self, batch_size: int, step_seconds: float) -> None:
        self.steps += 1
        self.batch_sizes.append(batch_size)
        if self.clock is not None:
            self.clock.now += 1.0

    def on_tokens(self, n: int) -> None:
        self.tokens += n

    def on_prefill(self, n_tokens: int, seconds: float) -> None:
        self.prefill_tokens += n_tokens

    def on_finish(self, event: FinishEvent) -> None:
        self.finished[event.detail or event.reason] = self.steps


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1, 512) for _ in range(n)]


async def test_greedy_equals_manual_loop(make_engine, model_fp32, greedy_ref, drain) -> None:
    eng = make_engine(**RAW)
    prompt = _prompt(random.Random(0), 12)
    ids, texts, fin = await drain(eng.submit(req(prompt, greedy(24))))
    assert ids == greedy_ref(model_fp32, prompt, 24)
    assert fin.reason == "length" and fin.completion_tokens == 24
    assert fin.prompt_tokens == 12 and not fin.cache_hit and fin.ttft_s >= 0
    assert fin.text == "".join(texts) == eng.tokenizer.decode(ids)


async def test_greedy_with_penalties_equals_manual_loop(make_engine, model_fp32, greedy_ref,
                                                        drain) -> None:
    eng = make_engine(**RAW)
    prompt = _prompt(random.Random(1), 7)
    p = greedy(30, presence_penalty=0.4, frequency_penalty=0.6, penalty_decay=0.9)
    ids, _, _ = await drain(eng.submit(req(prompt, p)))
    assert ids == greedy_ref(model_fp32, prompt, 30, presence=0.4, frequency=0.6, decay=0.9)


async def _greedy_requests_match(eng: Any, model: Any, greedy_ref: Any, drain: Any,
                                 rng: random.Random, count: int, tokens: tuple[int, int]
                                 ) -> tuple[list[tuple[list[int], int]], list[Any]]:
    """Submit `count` greedy requests at once (prompts of 1-40 tokens, replies of `tokens`
    [lo, hi]); each must give exactly the package's greedy tokens and end by length.
    Returns (the (prompt, reply length) jobs, their drained results)."""
    jobs = [(_prompt(rng, rng.randint(1, 40)), rng.randint(*tokens)) for _ in range(count)]
    handles = [eng.submit(req(p, greedy(n), conv=f"c{i}")) for i, (p, n) in enumerate(jobs)]
    results = await asyncio.gather(*(drain(h) for h in handles))
    for (prompt, n), (ids, _texts, fin) in zip(jobs, results, strict=True):
        assert ids == greedy_ref(model, prompt, n)
        assert fin.reason == "length" and fin.completion_tokens == n
    return jobs, results


async def test_concurrent_requests_stream_and_match(make_engine, model_fp32, greedy_ref,
                                                    drain) -> None:
    rec = Recorder()
    eng = make_engine(callbacks=rec, max_running=3, max_queue=10, prefill_chunk_len=8,
                      prefill_tokens_per_step=16, **RAW)
    jobs, results = await _greedy_requests_match(eng, model_fp32, greedy_ref, drain,
                                                 random.Random(2), 7, (4, 20))
    assert max(rec.batch_sizes) >= 2  # sequences really shared decode steps
    assert max(len(t) for _, t, _ in results) > 1  # text arrived in several events
    assert rec.tokens == sum(n for _, n in jobs)
    assert rec.prefill_tokens == sum(len(p) for p, _ in jobs)
    assert eng.running_count() == 0 and eng.queue_depth() == 0


async def test_seed_reproduces(make_engine, drain) -> None:
    eng = make_engine(**RAW)
    prompt = [5, 6, 7]

    async def run(seed: int) -> list[int]:
        p = SamplingParams(temperature=1.0, top_p=0.95, seed=seed, max_tokens=30)
        return (await drain(eng.submit(req(prompt, p))))[0]

    a, b, c = await run(42), await run(42), await run(43)
    assert a == b and a != c


async def test_cancel_frees_slot_within_one_step(make_engine, drain) -> None:
    rec = Recorder()
    eng = make_engine(callbacks=rec, max_running=1, max_queue=0, **RAW)
    h = eng.submit(req([1, 2, 3], greedy(1000)))
    with pytest.raises(ResourceExhausted):
        eng.submit(req([1], greedy(5)))
    async for _ev in h:  # wait until it streams, then cancel
        break
    at_cancel = rec.steps
    h.cancel()
    _, _, fin = await drain(h)
    assert fin.reason == "cancelled" and fin.completion_tokens < 1000
    assert rec.finished["cancelled"] - at_cancel <= 1
    _, _, fin2 = await drain(eng.submit(req([1], greedy(5))))  # the slot is free again
    assert fin2.reason == "length"


async def test_queue_full_raises_resource_exhausted(make_engine, drain) -> None:
    eng = make_engine(max_running=1, max_queue=2, retry_after_s=0.5, **RAW)
    hs = [eng.submit(req([1, 2], greedy(500), conv=f"c{i}")) for i in range(3)]
    with pytest.raises(ResourceExhausted) as ei:
        eng.submit(req([1, 2], greedy(5)))
    assert ei.value.retry_after_s >= 0.5
    for h in hs:
        h.cancel()
    finals = [(await drain(h))[2] for h in hs]
    assert all(f.reason == "cancelled" for f in finals)
    assert (await drain(eng.submit(req([3], greedy(2)))))[2].reason == "length"


async def test_deadline_honoured_while_running_and_queued(make_engine, drain) -> None:
    clock = FakeClock()
    rec = Recorder(clock=clock)  # every decode step advances the clock by 1 s
    eng = make_engine(callbacks=rec, clock=clock, max_running=1, **RAW)
    running = eng.submit(req([1, 2, 3], greedy(100), deadline=clock.now + 5.5))
    queued = eng.submit(req([4], greedy(10), conv="q", deadline=clock.now + 2.5))
    _, _, fr = await drain(running)
    _, _, fq = await drain(queued)
    assert fr.reason == "cancelled" and fr.detail == "deadline_exceeded"
    assert 1 <= fr.completion_tokens <= 8
    assert fq.reason == "cancelled" and fq.detail == "deadline_exceeded"
    assert fq.completion_tokens == 0


async def test_max_tokens_gives_length(make_engine, drain) -> None:
    eng = make_engine()
    ids, _, fin = await drain(eng.submit(req([9, 8, 7], greedy(1))))
    assert fin.completion_tokens == 1
    assert fin.reason in ("length", "stop")  # one token may already be "\n\n" / end of text
    eng2 = make_engine(**RAW)
    _, _, fin2 = await drain(eng2.submit(req([9, 8, 7], greedy(17))))
    assert fin2.reason == "length" and fin2.completion_tokens == 17


async def test_stop_sequence_split_across_tokens(make_engine, tokenizer, drain) -> None:
    eng = make_engine(**RAW)
    prompt = _prompt(random.Random(4), 6)
    ids, _, full = await drain(eng.submit(req(prompt, greedy(60))))
    text = full.text
    pieces = [tokenizer.decode([i]) for i in ids]
    stop = None
    for a, b in zip(pieces, pieces[1:], strict=False):
        if a.isascii() and b.isascii() and a.strip() and b.strip() and "\ufffd" not in a + b:
            stop = a[-1] + b[:1]  # straddles a token boundary
            break
    assert stop is not None, "model produced no usable ASCII pair"
    expected = text[: text.find(stop)]
    _, texts, fin = await drain(eng.submit(req(prompt, greedy(60, stop=(stop,)))))
    assert fin.reason == "stop_sequence"
    assert fin.text == "".join(texts) == expected
    assert all(stop not in t for t in texts)


async def test_invalid_requests(make_engine) -> None:
    eng = make_engine(max_tokens_limit=50, max_prompt_tokens=10)
    with pytest.raises(InvalidArgument) as ei:
        eng.submit(req([], greedy(5)))
    assert ei.value.fields == ["prompt_tokens"]
    with pytest.raises(InvalidArgument):
        eng.submit(req([1, 512], greedy(5)))  # out of vocabulary
    with pytest.raises(InvalidArgument):
        eng.submit(req(list(range(1, 12)), greedy(5)))  # too long
    with pytest.raises(InvalidArgument) as ei:
        eng.submit(req([1], greedy(51)))
    assert ei.value.fields == ["params.max_tokens"]


async def test_graceful_stop_cancels_running_and_refuses_new(make_engine, drain) -> None:
    eng = make_engine(**RAW)
    h = eng.submit(req([1, 2], greedy(1000)))
    async for _ in h:
        break
    await eng.astop(grace_s=0.0)
    _, _, fin = await drain(h)
    assert fin.reason == "cancelled" and fin.detail == "shutdown"
    with pytest.raises(Unavailable):
        eng.submit(req([1], greedy(2)))


async def test_graceful_stop_lets_short_requests_finish(make_engine, drain) -> None:
    eng = make_engine(**RAW)
    h = eng.submit(req([1, 2], greedy(5)))
    await eng.astop(grace_s=30.0)
    _, _, fin = await drain(h)
    assert fin.reason == "length"


async def test_real_vocab_and_20b_tokenizer_end_to_end(ckpt_dir, shared_tokenizer_path,
                                                       make_engine, drain) -> None:
    """Real shapes: vocab 50277 with the Raven 20B tokenizer, Bob/Alice prompt, cache on."""
    if shared_tokenizer_path is None:
        pytest.skip("20B_tokenizer.json not available")
    from tokenizers import Tokenizer

    from services.inference.checkpoint import build_random_checkpoint
    from services.inference.rwkv_batched import load_rwkv
    from services.inference.state_cache import StateCache

    hf = Tokenizer.from_file(str(shared_tokenizer_path))

    class Tok:
        def encode(self, text: str) -> list[int]:
            return hf.encode(text).ids

        def decode(self, ids: list[int]) -> str:
            return hf.decode(ids)

    path = build_random_checkpoint(ckpt_dir / "e2e50277", n_layer=2, n_embd=32,
                                   vocab_size=50277, seed=9)
    cache = StateCache(1 << 24)
    eng = make_engine(load_rwkv(path, "cpu fp32"), Tok(), cache=cache)
    prompt = Tok().encode("Bob: Hello! How are you?\n\nAlice:")
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=5, max_tokens=20)
    hs = [eng.submit(req(prompt, params, conv=f"c{i}")) for i in range(3)]
    outs = [await drain(h) for h in hs]
    assert outs[0][2].text == outs[1][2].text == outs[2][2].text  # same seed, same prompt
    for _, texts, fin in outs:
        assert fin.reason in ("stop", "length") and fin.text == "".join(texts)
        assert fin.cached_state_tokens > len(prompt)
    assert len(cache) == 3


async def test_many_requests_with_random_cancels_all_finish_once(make_engine) -> None:
    eng = make_engine(max_running=4, max_queue=40, prefill_tokens_per_step=24,
                      prefill_chunk_len=8)
    rng = random.Random(8)
    handles = [
        eng.submit(req(_prompt(rng, rng.randint(1, 30)),
                       SamplingParams(seed=i, max_tokens=rng.randint(1, 25)), conv=f"c{i}"))
        for i in range(30)
    ]
    for h in rng.sample(handles, 10):
        h.cancel()
    counts = []
    for h in handles:
        n_final = 0
        async for ev in h:
            n_final += isinstance(ev, FinishEvent)
        counts.append(n_final)
    assert counts == [1] * 30
    assert {h.final.reason for h in handles} <= {"stop", "length", "cancelled"}
    assert eng._outstanding == 0 and eng.running_count() == 0 and eng.queue_depth() == 0


async def test_single_sequence_decodes_on_fewer_threads_and_restores_them(
        make_engine, model_fp32, greedy_ref, drain) -> None:
    """A lone sequence decodes on `single_row_threads` torch threads (the same tokens);
    prefill and batches of two or more get every thread back, and so does the process when
    the engine stops. The count changes on those transitions only, not around every step."""
    import torch

    from services.inference.engine import EngineConfig
    from services.inference.rwkv_batched import BatchedRWKV

    during: list[tuple[int, int]] = []  # (batch size, threads) inside the model's step
    prefill_threads: list[int] = []
    changes: list[int] = []

    class Recording(BatchedRWKV):
        def step(self, tokens: Any, batch: Any) -> Any:
            during.append((len(tokens), torch.get_num_threads()))
            return super().step(tokens, batch)

        def prefill_many(self, *a: Any, **kw: Any) -> Any:
            prefill_threads.append(torch.get_num_threads())
            return super().prefill_many(*a, **kw)

    real_set = torch.set_num_threads

    def counting_set(n: int) -> None:
        changes.append(n)
        real_set(n)

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch, "set_num_threads", counting_set)
            eng = make_engine(Recording(model_fp32), single_row_threads=1, **RAW)
            prompt = _prompt(random.Random(7), 5)
            ids, _texts, _fin = await drain(eng.submit(req(prompt, greedy(6))))
            assert ids == greedy_ref(model_fp32, prompt, 6)
            assert changes == [1]  # narrowed once for the five lone steps
            handles = [eng.submit(req(_prompt(random.Random(i), 3), greedy(4), conv=f"c{i}"))
                       for i in range(3)]
            await asyncio.gather(*(drain(h) for h in handles))
            eng.stop()
        assert (1, 1) in during and any(b > 1 and t == 2 for b, t in during)
        assert all(t == 1 for b, t in during if b == 1)
        assert all(t == 2 for b, t in during if b > 1)
        assert prefill_threads and all(t == 2 for t in prefill_threads)
        assert changes[-1] == 2 and torch.get_num_threads() == 2  # restored at stop
        assert len(changes) < len(during)
    finally:
        torch.set_num_threads(old)
    with pytest.raises(ValueError, match="single_row_threads"):
        EngineConfig(single_row_threads=-1)


async def test_single_sequence_keeps_every_thread_when_the_head_is_on_a_gpu(
        make_engine, model_fp32, drain) -> None:
    """On a GPU the host threads do not bound a lone row's step: no narrowing at all."""
    import torch

    from services.inference.rwkv_batched import BatchedRWKV

    during: list[int] = []

    class HeadOnGpu(BatchedRWKV):
        head_on_cpu = False  # as when the strategy puts the head on cuda

        def step(self, tokens: Any, batch: Any) -> Any:
            during.append(torch.get_num_threads())
            return super().step(tokens, batch)

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        eng = make_engine(HeadOnGpu(model_fp32), single_row_threads=1, **RAW)
        await drain(eng.submit(req(_prompt(random.Random(3), 4), greedy(5))))
        assert during and all(t == 2 for t in during)
    finally:
        torch.set_num_threads(old)


async def test_a_burst_of_prompts_prefills_in_one_pass(make_engine, model_fp32, greedy_ref,
                                                       drain) -> None:
    """Requests that arrive together share prefill passes (several sequences per
    prefill_many call) and still produce exactly the package's greedy tokens."""
    from services.inference.rwkv_batched import BatchedRWKV

    calls: list[list[int]] = []

    class Recording(BatchedRWKV):
        def prefill_many(self, jobs: Any) -> Any:
            calls.append([len(toks) for toks, _ in jobs])
            return super().prefill_many(jobs)

    eng = make_engine(Recording(model_fp32), max_running=8, prefill_chunk_len=16,
                      prefill_tokens_per_step=64, **RAW)
    await _greedy_requests_match(eng, model_fp32, greedy_ref, drain, random.Random(9), 6, (2, 8))
    assert max(len(c) for c in calls) > 1
    assert all(max(c) <= 16 and sum(c) <= 64 for c in calls)


async def test_a_failing_prefill_pass_fails_only_the_bad_sequence(make_engine, model_fp32,
                                                                  greedy_ref, drain) -> None:
    """When the shared pass raises, each piece is retried alone: the sequence that fails by
    itself ends with an error, the others complete as if nothing happened."""
    from services.inference.rwkv_batched import BatchedRWKV

    poison = 13

    class Flaky(BatchedRWKV):
        def prefill_many(self, jobs: Any) -> Any:
            if any(poison in toks for toks, _ in jobs):
                raise RuntimeError("bad token in the pass")
            return super().prefill_many(jobs)

        def prefill(self, tokens: Any, state: Any, chunk_len: int = 256) -> Any:
            if poison in tokens:
                raise RuntimeError("bad token")
            return super().prefill(tokens, state, chunk_len)

    eng = make_engine(Flaky(model_fp32), max_running=4, **RAW)
    good = [[5, 6, 7, 8], [21, 22]]
    handles = [eng.submit(req(good[0], greedy(4), conv="g0")),
               eng.submit(req([1, poison, 2], greedy(4), conv="bad")),
               eng.submit(req(good[1], greedy(4), conv="g1"))]
    (ids0, _, f0), (_, _, fbad), (ids1, _, f1) = await asyncio.gather(
        *(drain(h) for h in handles))
    assert fbad.reason == "error" and "prefill error" in fbad.detail
    assert f0.reason == f1.reason == "length"
    assert ids0 == greedy_ref(model_fp32, good[0], 4) and ids1 == greedy_ref(model_fp32, good[1], 4)
    assert eng.running_count() == 0 and eng.outstanding() == 0
