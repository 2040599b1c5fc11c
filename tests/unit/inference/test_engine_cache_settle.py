"""Settled replies and the shared tier through the engine (issue 13).

The turn-2 misses: the engine used to close a turn with its own text, while the caller sends
back the reply as it was settled (the output guard's note or rewrite, control characters
dropped, a blank line normalised). With `settle_reply` the caller closes the turn with the
settled reply's tokens, so the next turn always resumes. And an entry from the shared tier
resumes a prompt exactly like the local cache.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from services.inference.engine import EngineCallbacks, GenerationRequest
from services.inference.rwkv_batched import BatchedRWKV, prefill
from services.inference.sampling import SamplingParams
from services.inference.state_cache import StateCache
from services.inference.state_store import decode_entry, encode_entry

GREEDY = SamplingParams(temperature=0.0, presence_penalty=0.0, frequency_penalty=0.0,
                        max_tokens=12)
FP = bytes(16)


def _req(prompt: list[int], conv: str = "conv", **kw: Any) -> GenerationRequest:
    return GenerationRequest(conversation_id=conv, prompt_tokens=prompt, params=GREEDY, **kw)


class _Tiers(EngineCallbacks):
    def __init__(self) -> None:
        self.tiers: list[str] = []
        self.prefilled = 0

    def on_cache_lookup(self, tier: str) -> None:
        self.tiers.append(tier)

    def on_prefill(self, n_tokens: int, seconds: float) -> None:
        self.prefilled += n_tokens


async def _settled_turn(eng: Any, tok: Any, prompt: list[int], settle: Any, conv: str = "conv",
                        **kw: Any) -> tuple[Any, list[int], int]:
    """One turn closed with settle(text): (FinishEvent, the next prompt's prefix, cached)."""
    h = eng.submit(_req(prompt, conv, settle_reply=True, **kw))
    fin = await h.result()
    reply = tok.encode(settle(fin.text))
    cached = await h.close_turn(reply)
    return fin, [*prompt, *reply, *tok.encode("\n\n")], cached


# The ways a settled reply differs from the engine's text, as the servicer makes them.
SETTLERS = {
    "verbatim": lambda t: t,
    "note appended": lambda t: t + " This is general guidance, not a diagnosis.",
    "rewritten": lambda t: "Only a professional can tell.",
    "control dropped": lambda t: "".join(ch for ch in t if ch >= " " or ch == "\n"),
    "empty": lambda t: "",
}


@pytest.mark.parametrize("how", list(SETTLERS))
@pytest.mark.parametrize("tok_name", ["tokenizer", "bytes_tokenizer"])
async def test_a_settled_reply_always_resumes_with_the_exact_state(
        make_engine, model_fp32, request, how: str, tok_name: str) -> None:
    tok = request.getfixturevalue(tok_name)
    cache = StateCache(1 << 22)
    rec = _Tiers()
    eng = make_engine(tok=tok, cache=cache, callbacks=rec, eos_token_id=None)
    p1 = tok.encode("Bob: tell me a story\n\nAlice:")
    fin, history, cached = await _settled_turn(eng, tok, p1, SETTLERS[how])
    assert fin.closable and fin.cached_state_tokens == 0  # cached by close_turn, not before
    assert cached == len(history)
    entry = cache.peek("conv")
    assert entry is not None and entry.token_count == len(history)
    # the state is that of a full prefill of the settled history
    ref_logits, ref_state = prefill(model_fp32, history, None, chunk_len=64)
    a, _ = model_fp32.forward([42], BatchedRWKV(model_fp32).to_model(entry.state))
    b, _ = model_fp32.forward([42], ref_state)
    assert float((a - b).abs().max()) <= 1e-5
    if entry.logits is not None:
        assert float((entry.logits - ref_logits).abs().max()) <= 1e-5
    # and the next turn, whose history carries the settled reply, resumes
    p2 = history + tok.encode("Bob: and then?\n\nAlice:")
    f2 = await eng.submit(_req(p2)).result()
    assert f2.cache_tier == "local" and f2.cached_tokens == len(history)
    assert rec.tiers == ["miss", "local"]


async def test_without_settling_an_edited_reply_misses(make_engine, tokenizer) -> None:
    """The old behaviour (the engine's own text): a note appended by the guard is a miss."""
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, eos_token_id=None)
    p1 = tokenizer.encode("Bob: hi\n\nAlice:")
    f1 = await eng.submit(_req(p1)).result()
    history = p1 + tokenizer.encode(f1.text + " This is general guidance.") + \
        tokenizer.encode("\n\n")
    f2 = await eng.submit(_req(history + tokenizer.encode("Bob: ok\n\nAlice:"))).result()
    assert f2.cache_tier == "miss" and not f2.cache_hit


async def test_close_turn_none_cancel_and_unsettled_requests(make_engine, tokenizer) -> None:
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, eos_token_id=None)
    p = tokenizer.encode("Bob: hi\n\nAlice:")
    h = eng.submit(_req(p, settle_reply=True))
    await h.result()
    assert await h.close_turn(None) == 0 and "conv" not in cache
    assert await h.close_turn(tokenizer.encode("x")) == 0  # only once
    h = eng.submit(_req(p, settle_reply=True))
    await h.result()
    h.cancel()  # the caller went away before settling: the parked state is dropped
    assert await h.close_turn(tokenizer.encode("x")) == 0 and "conv" not in cache
    h = eng.submit(_req(p))  # not settled: closed by the engine, close_turn has nothing
    fin = await h.result()
    assert not fin.closable and fin.cached_state_tokens > 0
    assert await h.close_turn(tokenizer.encode("x")) == 0


async def test_a_cancelled_settled_reply_is_not_closable(make_engine, tokenizer) -> None:
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, turn_end="", eos_token_id=None)
    h = eng.submit(GenerationRequest("conv", [1, 2, 3], settle_reply=True,
                                     params=SamplingParams(temperature=0.0, max_tokens=1000)))
    async for _ in h:
        break
    h.cancel()
    fin = await h.result()
    assert fin.reason == "cancelled" and not fin.closable
    assert await h.close_turn([5]) == 0 and "conv" not in cache


async def test_an_erased_conversation_is_not_put_back_by_its_running_turn(
        make_engine, tokenizer) -> None:
    cache = StateCache(1 << 22)
    eng = make_engine(cache=cache, eos_token_id=None)
    p = tokenizer.encode("Bob: hi\n\nAlice:")
    h = eng.submit(_req(p, settle_reply=True))
    fin = await h.result()
    eng.forget(["conv"], tombstone=True)  # erased between the reply and its closing
    assert await h.close_turn(tokenizer.encode(fin.text)) == 0
    assert "conv" not in cache
    f = await eng.submit(_req(p)).result()  # the engine itself never stores it again
    assert f.cached_state_tokens == 0 and "conv" not in cache
    eng.forget(["other"])  # a plain forget leaves no tombstone
    assert (await eng.submit(_req(p, conv="other")).result()).cached_state_tokens > 0


async def test_a_shared_entry_resumes_exactly_like_a_full_reprefill(
        make_engine, model_fp32, tokenizer) -> None:
    """Turn 1 on one engine; its entry through the wire format; turn 2 on an engine that
    never saw the conversation: tier 'shared', logits <= 1e-5 from a full re-prefill, and
    the same greedy reply as an engine without any cache."""
    first = make_engine(cache=StateCache(1 << 22), eos_token_id=None)
    p1 = tokenizer.encode("Bob: tell me a story\n\nAlice:")
    _, history, cached = await _settled_turn(first, tokenizer, p1, SETTLERS["verbatim"])
    assert cached
    entry = decode_entry(encode_entry(first.cache.peek("conv"), FP), FP)
    assert entry.logits is None and entry.token_count == len(history)
    p2 = history + tokenizer.encode("Bob: and then?\n\nAlice:")

    # logits: resume the decoded state with the new tokens vs prefill everything
    bm = BatchedRWKV(model_fp32)
    resumed, _ = prefill(model_fp32, p2[len(history):], bm.to_model(entry.state), chunk_len=64)
    full, _ = prefill(model_fp32, p2, None, chunk_len=64)
    assert float((resumed.float() - full.float()).abs().max()) <= 1e-5

    rec = _Tiers()
    other = make_engine(cache=StateCache(1 << 22), callbacks=rec, eos_token_id=None)
    h2 = other.submit(_req(p2, resume=entry, settle_reply=True))
    f2 = await h2.result()
    assert f2.cache_tier == "shared" and f2.cache_hit and f2.cached_tokens == len(history)
    assert rec.prefilled == len(p2) - len(history)  # only the new message
    await h2.close_turn(tokenizer.encode(f2.text))
    ref = await make_engine(eos_token_id=None).submit(_req(p2, use_cache=True)).result()
    assert ref.cache_tier == "" and ref.text == f2.text
    # a shared entry that is not a prefix of the prompt is not used
    wrong = await other.submit(_req(p2[:5] + [7] + p2[6:], conv="c2", resume=entry)).result()
    assert wrong.cache_tier == "miss" and not wrong.cache_hit
    # the local cache comes first
    f3 = await other.submit(_req(p2 + tokenizer.encode(f2.text + "\n\nBob: ok\n\nAlice:"),
                                 resume=entry)).result()
    assert f3.cache_tier == "local"
    assert rec.tiers == ["shared", "miss", "local"]


def test_resume_state_tensors_are_exact(model_fp32) -> None:
    """The wire format keeps every bit of the state (fp32 and fp16 slots)."""
    state = [torch.randn(32), torch.randn(32).half(), torch.randn(32).bfloat16()]
    from services.inference.state_cache import CacheEntry, prefix_hash

    e = CacheEntry(tuple(state), None, 3, prefix_hash([1, 2, 3]))
    back = decode_entry(encode_entry(e, FP), FP)
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(state, back.state,
                                                                          strict=True))
