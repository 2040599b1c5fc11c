"""The engine serving RWKV-7: concurrent greedy chats equal the package's own loop, the G1
chat format round-trips through the state cache, reasoning blocks never reach the parent."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from services.inference.checkpoint import build_random_checkpoint7
from services.inference.engine import Engine, EngineConfig, GenerationRequest, TokenEvent
from services.inference.model_family import load_rwkv7
from services.inference.prompt import PromptBuilder, prompt_header
from services.inference.reasoning import ReasoningFilter
from services.inference.sampling import SamplingParams
from services.inference.state_cache import StateCache
from services.inference.tokenizer import load_tokenizer

from .conftest import greedy_reference


@pytest.fixture(scope="module")
def g1(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = build_random_checkpoint7(tmp_path_factory.mktemp("g1") / "m", n_layer=2, n_embd=128,
                                    vocab_size=65536, head_size=64, seed=3)
    return load_rwkv7(path, "cpu fp32")


@pytest.fixture(scope="module")
def world() -> Any:
    return load_tokenizer("world", chat_format="g1")


GREEDY = SamplingParams(temperature=0.0, max_tokens=6, presence_penalty=0.0,
                        frequency_penalty=0.0)


def test_concurrent_rwkv7_chats_equal_the_package_loop(g1: Any, world: Any) -> None:
    """Requests of different lengths arrive together: prefill and decode batches mix."""
    rng = random.Random(1)
    prompts = [[rng.randrange(1, 65536) for _ in range(n)] for n in (3, 17, 1, 9, 30)]

    async def run() -> list[list[int]]:
        eng = Engine(g1, world, config=EngineConfig(turn_end="", eos_token_id=None,
                                                     prefill_chunk_len=8))
        eng.start()
        try:
            handles = [eng.submit(GenerationRequest(f"c{i}", p, GREEDY))
                       for i, p in enumerate(prompts)]
            out = []
            for h in handles:
                ids: list[int] = []
                async for ev in h:
                    if isinstance(ev, TokenEvent):
                        ids += ev.token_ids
                out.append(ids)
            return out
        finally:
            eng.stop()

    got = asyncio.run(run())
    assert got == [greedy_reference(g1.model, p, 6) for p in prompts]


def test_the_g1_chat_format_round_trips_through_the_cache(g1: Any, world: Any) -> None:
    builder = PromptBuilder(world, "g1")
    assert prompt_header("g1").startswith("System: ")
    first = builder.tokens("How is reading going?", max_tokens=4096)
    assert world.decode(first).endswith("\n\nUser: How is reading going?\n\nAssistant:")

    async def run() -> tuple[Any, Any, Any]:
        cache = StateCache(1 << 30)
        eng = Engine(g1, world, cache=cache,
                     config=EngineConfig(reasoning_block=True, eos_token_id=None))
        eng.start()
        try:
            p = SamplingParams(temperature=0.0, max_tokens=5)
            one = await eng.submit(GenerationRequest("conv", first, p)).result()
            second = builder.tokens("And sleep?", [("parent", "How is reading going?"),
                                                   ("assistant", one.text)], max_tokens=4096)
            two = await eng.submit(GenerationRequest("conv", second, p)).result()
            fresh = await eng.submit(GenerationRequest("other", second, p,
                                                       use_cache=False)).result()
            return one, two, fresh
        finally:
            eng.stop()

    one, two, fresh = asyncio.run(run())
    assert one.cached_state_tokens > len(first)
    assert two.cache_hit and two.cache_tier == "local" and two.cached_tokens == one.cached_state_tokens
    assert two.text == fresh.text  # resumed from the RWKV-7 state == re-prefilled


SCRIPT = " <think>The parent asks about sleep.\n\nKeep it short.</think>\n Try a calm bedtime.\n\n"


def test_a_reasoning_block_never_streams(tokenizer: Any, scripted: Any) -> None:
    async def run(reasoning: bool) -> tuple[list[str], Any]:
        eng = Engine(scripted(tokenizer.encode(SCRIPT)), tokenizer,
                     config=EngineConfig(reasoning_block=reasoning))
        eng.start()
        try:
            h = eng.submit(GenerationRequest("c", tokenizer.encode("User: hi\n\nAssistant:"),
                                             SamplingParams(temperature=0.0, max_tokens=200)))
            chunks = [ev.text async for ev in h if isinstance(ev, TokenEvent)]
            return chunks, h.final
        finally:
            eng.stop()

    chunks, final = asyncio.run(run(True))
    assert "".join(chunks) == final.text == " Try a calm bedtime."
    assert final.reason == "stop"
    assert not any("think" in c or "<" in c or "sleep" in c for c in chunks)
    # without the filter the block's blank line would have ended the turn inside it
    chunks, final = asyncio.run(run(False))
    assert final.text == " <think>The parent asks about sleep."


@pytest.mark.parametrize("text, shown", [
    (" <think>a\n\nb</think>\n Hello there", " Hello there"),
    ("<think>\n</think> Hi", "Hi"),  # the "skip reasoning" form
    ("</think>\nHi", "Hi"),  # a closing tag left from the prompt
    ("Use a <thinking> cap", "Use a <thinking> cap"),  # not a tag
    ("Hello <think>unfinished", "Hello "),  # a block left open is dropped whole
    ("a < b and c <th", "a < b and c <th"),  # a partial tag at the end is text
])
def test_the_reasoning_filter_at_every_split(text: str, shown: str) -> None:
    for cut in range(len(text) + 1):
        for cut2 in range(cut, len(text) + 1):
            f = ReasoningFilter()
            out = f.push(text[:cut]) + f.push(text[cut:cut2]) + f.push(text[cut2:]) + f.flush()
            assert out == shown, (cut, cut2)
    f = ReasoningFilter()
    streamed = ""
    for ch in text:  # what is streamed is never taken back
        streamed += f.push(ch)
        assert shown.startswith(streamed)
    assert streamed + f.flush() == shown
