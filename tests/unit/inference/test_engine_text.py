"""Engine text handling with a scripted stand-in model (exact control over sampled tokens)."""

from __future__ import annotations

import torch

from services.inference.engine import GenerationRequest
from services.inference.prompt import ChildContext, PromptBuilder
from services.inference.sampling import SamplingParams
from services.inference.state_cache import StateCache
from services.inference.tokenizer import load_tokenizer

GREEDY = SamplingParams(temperature=0.0, presence_penalty=0.0, frequency_penalty=0.0,
                        max_tokens=200)


def req(params: SamplingParams = GREEDY, conv: str = "c") -> GenerationRequest:
    return GenerationRequest(conversation_id=conv, prompt_tokens=[1, 2, 3], params=params)


async def test_utf8_split_across_tokens_is_never_half_emitted(make_engine, scripted, tokenizer,
                                                               drain) -> None:
    text = "Hi 你好 😀 é!"
    script = tokenizer.encode(text)
    assert any("\ufffd" in tokenizer.decode([t]) for t in script)  # some tokens are fragments
    eng = make_engine(scripted(script), turn_end="\n\n")
    _, texts, fin = await drain(eng.submit(req()))
    assert all("\ufffd" not in t for t in texts)
    assert "".join(texts) == fin.text == text
    assert fin.reason == "stop"  # the script ends with end of text (id 0)
    assert fin.completion_tokens == len(script) + 1


async def test_turn_end_split_into_two_newlines(make_engine, scripted, tokenizer, drain) -> None:
    nl = tokenizer.encode("\n")[0]
    script = tokenizer.encode("Hello there") + [nl, nl] + tokenizer.encode("Bob: more")
    eng = make_engine(scripted(script))
    _, texts, fin = await drain(eng.submit(req()))
    assert fin.reason == "stop" and fin.text == "Hello there" == "".join(texts)
    assert fin.completion_tokens == len(tokenizer.encode("Hello there")) + 2


async def test_caller_stop_sequence_spanning_tokens(make_engine, scripted, tokenizer,
                                                    drain) -> None:
    body = "the cat sat on the mat"
    script = [tokenizer.encode(ch)[0] for ch in body]  # one character per token
    eng = make_engine(scripted(script))
    p = SamplingParams(temperature=0.0, max_tokens=100, stop=("on th", "zzz"))
    _, texts, fin = await drain(eng.submit(req(p)))
    assert fin.reason == "stop_sequence"
    assert fin.text == "".join(texts) == "the cat sat "
    # "o", "n", " " could start the stop; they were held back, never streamed early.
    assert all("o" not in t for t in texts)


async def test_length_flushes_held_back_text(make_engine, scripted, tokenizer, drain) -> None:
    script = tokenizer.encode("abcdef\n")
    eng = make_engine(scripted(script))
    p = SamplingParams(temperature=0.0, max_tokens=len(script))
    _, texts, fin = await drain(eng.submit(req(p)))
    assert fin.reason == "length" and fin.text == "abcdef\n" == "".join(texts)


async def test_end_of_text_is_stop_and_not_streamed(make_engine, scripted, tokenizer,
                                                    drain) -> None:
    eng = make_engine(scripted(tokenizer.encode("ok")))
    ids, texts, fin = await drain(eng.submit(req()))
    assert fin.reason == "stop" and fin.text == "ok" and 0 not in ids


async def test_model_error_fails_requests_and_engine_recovers(make_engine, scripted, tokenizer,
                                                              drain) -> None:
    bm = scripted(tokenizer.encode("abc"), fail_step=True)
    eng = make_engine(bm)
    _, _, fin = await drain(eng.submit(req()))
    assert fin.reason == "error" and "boom" in fin.detail
    bm.fail_step = False
    _, _, fin2 = await drain(eng.submit(req()))
    assert fin2.reason == "stop" and fin2.text == "abc"


async def test_callback_failures_do_not_break_generation(make_engine, scripted, tokenizer,
                                                         drain) -> None:
    class Bad:
        def on_step(self, *a: object) -> None:
            raise ValueError("metrics down")

        on_tokens = on_prefill = on_finish = on_step

    eng = make_engine(scripted(tokenizer.encode("abc")), callbacks=Bad())
    _, _, fin = await drain(eng.submit(req()))
    assert fin.text == "abc"


def test_scripted_stand_in_is_consistent(scripted) -> None:
    bm = scripted([5, 6])
    logits, st = bm.prefill([1, 2], None)
    assert int(torch.argmax(logits)) == 5
    batch = bm.new_batch([st])
    assert int(torch.argmax(bm.step([5], batch)[0])) == 6


async def test_the_next_turn_prefills_only_its_message(make_engine, scripted, drain) -> None:
    """The servicer's prompt builder and the engine's state cache together: after a turn,
    the next turn's prompt (history sent back verbatim) resumes from the cached state and
    prefills only the new message; a changed reply is a clean miss."""
    world = load_tokenizer("world")
    builder = PromptBuilder(world, "world")
    child = ChildContext("Mia", 50, "Memory: above age norm.")
    reply = " Keep a calm bedtime routine."
    eng = make_engine(scripted(world.encode(reply), vocab_size=world.vocab_size), world,
                      cache=StateCache(1 << 20))
    first = builder.tokens("How can I help her sleep?", (), child, max_tokens=4096)
    _, _, f1 = await drain(eng.submit(GenerationRequest("conv", first, GREEDY)))
    assert f1.text == reply and not f1.cache_hit

    history = [("parent", "How can I help her sleep?"), ("assistant", f1.text)]
    second = builder.tokens("And on weekends?", history, child, max_tokens=4096)
    _, _, f2 = await drain(eng.submit(GenerationRequest("conv", second, GREEDY,
                                                        store_cache=False)))
    assert f2.cache_hit
    assert f2.cached_tokens == len(first) + len(world.encode(reply)) + len(world.encode("\n\n"))
    assert len(second) - f2.cached_tokens == len(world.encode(
        "User: And on weekends?\n\nAssistant:"))

    edited = [history[0], ("assistant", " Something else.")]
    third = builder.tokens("And on weekends?", edited, child, max_tokens=4096)
    _, _, f3 = await drain(eng.submit(GenerationRequest("conv", third, GREEDY)))
    assert not f3.cache_hit and f3.cached_tokens == 0
