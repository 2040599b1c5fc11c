"""Latency of the safety guard's model second opinion (layer 3, issue 11) on the CPU.

For each model, a random RWKV-4 checkpoint with the World vocabulary (65536) on `cpu fp32`:
the devstack's demo shape (4 layers x 128) and a mid-size one (12 x 768), this measures

- one second opinion: `ModelSecondOpinion.score(message)` end to end (prompt building,
  tokenising, the engine's scoring prefill, the softmax over the labels), p50 and p99;
- the baseline, measured in the same run on the same engine and interleaved with it: the
  time to first token of a plain chat turn (a fresh first turn: the system header and the
  same message, `max_tokens=1`, no state cache), p50 and p99;

and reports the ratio opinion / chat TTFT. Both are one prefill of a prompt of about the same
length (the opinion's instruction is a little shorter than the chat header), so the ratio
should sit near the ratio of their token counts, shown too. The opinion runs only for
borderline messages, before the reply: its p50 is what such a message's TTFT grows by.

The numbers are on a shared 2-core machine: compare ratios, not seconds. p99 over
BENCH_OPINION_REPEATS samples (default 40 for the small model, 16 for the mid-size one) is
close to the maximum. BENCH_OPINION_QUICK=1 shrinks everything for a smoke run.

Run: python -m bench model_opinion      Writes bench/results/model_opinion.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import print_table, write_result
from services.inference.checkpoint import build_random_checkpoint
from services.inference.engine import Engine, GenerationRequest
from services.inference.prompt import ChildContext, PromptBuilder
from services.inference.rwkv_batched import BatchedRWKV, load_rwkv
from services.inference.safety.model_opinion import ModelSecondOpinion, build_opinion_prompt
from services.inference.sampling import SamplingParams
from services.inference.tokenizer import load_tokenizer

QUICK = os.environ.get("BENCH_OPINION_QUICK") == "1"
VOCAB = 65536
MODELS = [("demo 4x128", 4, 128, 40), ("mid 12x768", 12, 768, 16)]
if QUICK:
    MODELS = [("quick 2x64", 2, 64, 6)]
REPEATS = os.environ.get("BENCH_OPINION_REPEATS")
MESSAGES = [
    "My daughter has been wearing long sleeves all summer and I found cuts on her arm.",
    "He gave away his favourite games to his friends and wrote them goodbye letters.",
    "Her coach texts her late at night and told her to keep it a secret from us.",
    "His lips are swelling after he ate a cookie at the party and he sounds wheezy.",
    "Can I lower his ADHD medicine dose myself on weekends without asking the doctor?",
    "She fell off the trampoline yesterday, threw up twice and is very sleepy now.",
    "We talked about grandpa's funeral today and she asked if she will die too.",
    "How do I store the children's paracetamol safely away from the little one?",
]
CHILD = {"nickname": "Sam", "age_months": 96,
         "summary": "Memory games: steady. Emotion games: fewer correct than last month."}


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def _measure(eng: Engine, tokenizer: Any, repeats: int) -> dict[str, Any]:
    opinion = ModelSecondOpinion(eng, tokenizer, "world", deadline_s=60.0)
    child = ChildContext(**CHILD)
    chat = PromptBuilder(tokenizer, "world")  # the servicer's prompt for a first turn
    greedy = SamplingParams(temperature=0.0, max_tokens=1)
    op_s: list[float] = []
    ttft_s: list[float] = []
    op_tokens: list[int] = []
    chat_tokens: list[int] = []
    # warm both paths (JIT profiling of new prompt lengths, allocator)
    for msg in MESSAGES[:2]:
        await opinion.score(msg)
        await eng.submit(GenerationRequest("w", chat.tokens(msg, child=child, max_tokens=4096),
                                           greedy, use_cache=False, store_cache=False)).result()
    for i in range(repeats):
        msg = MESSAGES[i % len(MESSAGES)]
        t0 = time.perf_counter()
        scores = await opinion.score(msg)
        op_s.append(time.perf_counter() - t0)
        assert scores, "the second opinion gave no answer"
        op_tokens.append(len(tokenizer.encode(build_opinion_prompt("world", msg))))
        prompt = chat.tokens(msg, child=child, max_tokens=4096)
        chat_tokens.append(len(prompt))
        fin = await eng.submit(GenerationRequest(f"c{i}", prompt, greedy, use_cache=False,
                                                 store_cache=False)).result()
        assert fin.completion_tokens == 1, fin
        ttft_s.append(fin.ttft_s)
    return {"opinion_p50_s": _pct(op_s, 0.5), "opinion_p99_s": _pct(op_s, 0.99),
            "chat_ttft_p50_s": _pct(ttft_s, 0.5), "chat_ttft_p99_s": _pct(ttft_s, 0.99),
            "opinion_prompt_tokens": statistics.mean(op_tokens),
            "chat_prompt_tokens": statistics.mean(chat_tokens), "samples": repeats}


def main() -> int:
    torch.manual_seed(0)
    tokenizer = load_tokenizer("world")
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for name, n_layer, n_embd, repeats in MODELS:
            repeats = int(REPEATS) if REPEATS else repeats
            path = build_random_checkpoint(Path(d) / f"m{n_layer}x{n_embd}", n_layer=n_layer,
                                           n_embd=n_embd, vocab_size=VOCAB, seed=3)
            model = load_rwkv(path, "cpu fp32")
            eng = Engine(BatchedRWKV(model), tokenizer)
            eng.warmup()
            eng.start()
            try:
                r = asyncio.run(_measure(eng, tokenizer, repeats))
            finally:
                eng.stop()
            del eng, model
            path.unlink()
            details[name] = r
            ratio = r["opinion_p50_s"] / r["chat_ttft_p50_s"]
            rows.append({
                "model": name,
                "opinion p50 ms": round(r["opinion_p50_s"] * 1e3, 1),
                "opinion p99 ms": round(r["opinion_p99_s"] * 1e3, 1),
                "chat TTFT p50 ms": round(r["chat_ttft_p50_s"] * 1e3, 1),
                "chat TTFT p99 ms": round(r["chat_ttft_p99_s"] * 1e3, 1),
                "opinion / TTFT (p50)": round(ratio, 2),
                "prompt tokens (opinion / chat)":
                    f"{r['opinion_prompt_tokens']:.0f} / {r['chat_prompt_tokens']:.0f}",
                "samples": repeats,
            })
    print_table(f"model second opinion vs chat TTFT, cpu fp32, {torch.get_num_threads()} "
                "threads", rows)
    out = write_result("model_opinion", rows, strategy="cpu fp32", vocab_size=VOCAB,
                       threads=torch.get_num_threads(), quick=QUICK, details=details)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
