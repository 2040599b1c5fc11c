"""Conversation state cache through the engine: the multi-turn prompt contract."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from services.inference.engine import EngineCallbacks, GenerationRequest
from services.inference.rwkv_batched import BatchedRWKV, prefill
from services.inference.sampling import SamplingParams
from services.inference.state_cache import StateCache

GREEDY = SamplingParams(temperature=0.0, presence_penalty=0.0, frequency_penalty=0.0,
                        max_tokens=12)


def _req(prompt: list[int], conv: str = "conv", **kw: Any) -> GenerationRequest:
    return GenerationRequest(conversation_id=conv, prompt_tokens=prompt, params=GREEDY, **kw)


def _turn(tok: Any, who: str, text: str) -> list[int]:
    return tok.encode(f"{who}: {text}\n\nAlice:")


class _Prefills(EngineCallbacks):
    def __init__(self) -> None:
        self.tokens = 0

    def on_prefill(self, n_tokens: int, seconds: float) -> None:
        self.tokens += n_tokens


@pytest.mark.parametrize("tok_name", ["reversible_tokenizer", "tokenizer", "bytes_tokenizer"])
async def test_cached_state_is_exactly_the_documented_tokens(make_engine, model_fp32, drain,
                                                             request, tok_name: str) -> None:
    """State stored = prompt + encode(reply text) + encode("\\n\\n"), whether the sampled
    tokens re-encode the same way (continue from the live state) or not (redo from the
    post-prompt state)."""
    tok = request.getfixturevalue(tok_name)
    cache = StateCache(1 << 22)
    rec = _Prefills()
    eng = make_engine(tok=tok, cache=cache, callbacks=rec, eos_token_id=None)
    p1 = tok.encode("[300][301][302]") if tok_name.startswith("rev") else _turn(tok, "Bob", "hi")
    _, _, f1 = await drain(eng.submit(_req(p1)))
    assert f1.reason in ("stop", "length")
    consumed = p1 + tok.encode(f1.text) + tok.encode("\n\n")
    assert f1.cached_state_tokens == len(consumed)
    if tok_name.startswith("rev"):  # live state reused: only the unfed tail was prefilled
        unfed = 1 if f1.reason == "length" else 0
        assert rec.tokens == len(p1) + unfed + len(tok.encode("\n\n")) - (f1.reason == "stop")
    entry = cache.peek("conv")
    assert entry is not None and entry.token_count == len(consumed)
    ref_logits, ref_state = prefill(model_fp32, consumed, None, chunk_len=64)
    assert entry.logits is not None
    assert float((entry.logits - ref_logits).abs().max()) <= 1e-4
    bm = BatchedRWKV(model_fp32)
    a, _ = model_fp32.forward([42], bm.to_model(entry.state))
    b, _ = model_fp32.forward([42], ref_state)
    assert float((a - b).abs().max()) <= 1e-4


async def test_second_turn_hits_and_matches_full_reprefill(make_engine, tokenizer, drain) -> None:
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, eos_token_id=None)
    nocache = make_engine(eos_token_id=None)
    p1 = _turn(tokenizer, "Bob", "tell me a story")
    _, _, f1 = await drain(eng.submit(_req(p1)))
    history = p1 + tokenizer.encode(f1.text) + tokenizer.encode("\n\n")
    assert eng.turn_tokens(p1, f1.text) == history
    p2 = history + _turn(tokenizer, "Bob", "and then?")
    _, _, f2 = await drain(eng.submit(_req(p2)))
    assert f2.cache_hit and f2.cached_tokens == len(history) == f1.cached_state_tokens
    assert f2.prompt_tokens == len(p2)
    _, _, ref = await drain(nocache.submit(_req(p2)))
    assert not ref.cache_hit and ref.text == f2.text
    # Third turn continues from the second's cached state.
    p3 = p2 + tokenizer.encode(f2.text) + tokenizer.encode("\n\n") + _turn(tokenizer, "Bob", "ok")
    _, _, f3 = await drain(eng.submit(_req(p3)))
    _, _, ref3 = await drain(nocache.submit(_req(p3)))
    assert f3.cache_hit and f3.cached_tokens == f2.cached_state_tokens
    assert f3.text == ref3.text
    assert cache.stats().hits == 2


async def test_changed_history_is_a_miss(make_engine, tokenizer, drain) -> None:
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, eos_token_id=None)
    p1 = _turn(tokenizer, "Bob", "hi")
    _, _, f1 = await drain(eng.submit(_req(p1)))
    edited = tokenizer.encode(f1.text + " (edited)") + tokenizer.encode("\n\n")
    p2 = p1 + edited + _turn(tokenizer, "Bob", "next")
    _, _, f2 = await drain(eng.submit(_req(p2)))
    assert not f2.cache_hit and f2.cached_tokens == 0
    _, _, f3 = await drain(eng.submit(_req(p2, conv="other")))
    assert not f3.cache_hit


async def test_use_cache_false_forget_and_no_store(make_engine, tokenizer, drain) -> None:
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, eos_token_id=None)
    p1 = _turn(tokenizer, "Bob", "hi")
    _, _, f1 = await drain(eng.submit(_req(p1, store_cache=False)))
    assert f1.cached_state_tokens == 0 and "conv" not in cache
    _, _, f1 = await drain(eng.submit(_req(p1)))
    p2 = p1 + tokenizer.encode(f1.text) + tokenizer.encode("\n\n") + [5]
    _, _, f2 = await drain(eng.submit(_req(p2, use_cache=False)))
    assert not f2.cache_hit
    assert eng.forget(["conv"]) == 1
    _, _, f3 = await drain(eng.submit(_req(p2)))
    assert not f3.cache_hit


async def test_cancelled_reply_is_not_cached(make_engine, tokenizer, drain) -> None:
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, turn_end="", eos_token_id=None)
    p = SamplingParams(temperature=0.0, max_tokens=1000)
    h = eng.submit(GenerationRequest("conv", [1, 2, 3], params=p))
    async for _ in h:
        break
    h.cancel()
    _, _, fin = await drain(h)
    assert fin.reason == "cancelled" and fin.cached_state_tokens == 0 and "conv" not in cache


async def test_custom_terminator_and_concurrent_conversations(make_engine, tokenizer,
                                                              drain) -> None:
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, eos_token_id=None, max_running=4)
    rng = random.Random(3)
    term = tokenizer.encode("\n\n") + tokenizer.encode("Bob:")
    prompts = {f"c{i}": [rng.randrange(1, 512) for _ in range(rng.randint(3, 20))]
               for i in range(5)}
    handles = {c: eng.submit(_req(p, conv=c, turn_terminator_tokens=term))
               for c, p in prompts.items()}
    for c, h in handles.items():
        _, _, fin = await drain(h)
        want = len(prompts[c]) + len(tokenizer.encode(fin.text)) + len(term)
        assert fin.cached_state_tokens == want
        assert cache.peek(c).token_count == want
    assert torch.is_tensor(cache.peek("c0").state[0])
