"""Inference engine benchmark: the four "Performance" measurements of issue 4, in one run.

Model: a random RWKV-4 checkpoint, 12 layers x 768, World vocabulary (65536), strategy
`cpu fp32`. The baseline, measured in the same run on the same loaded model, is the `rwkv`
package's own single-sequence loop: `out, state = model.forward([token], state)` with a greedy
argmax (the cheapest possible loop: no sampling cost at all).

1. one stream: engine decode tokens/s (temperature 1.0, top-p 0.7, ChatRWKV's default
   penalties, real World detokenising) / the package loop. Goal >= 0.95.
2. 4, 16 and 64 concurrent streams, same sampling: aggregate engine decode tokens/s / the
   package loop (goals: >= 8x at 16, >= 16x at 64), and as a fraction of the fp32 matmul
   rate measured in the same run (a `torch.mm` probe: the compute roofline), counting
   2 x (matrix parameters incl. the head) FLOPs per token.
3. time to first token at turn 30 of a conversation vs turn 1, with the state cache (goal
   <= 1.1x) and without it (the history re-fed) for comparison.
4. load time of the raw checkpoint vs one pre-converted for the strategy (`convert.py`).
Also: a burst of new prompts (BURST: 16 of 24 tokens) prefilled in one `prefill_many` pass vs
one after another through the package's forward.

Decode rates count only decode steps: tokens sampled by the engine's batched steps over the
time from the first such step's start to the last one's end (prefill excluded, as it is for
the package loop, which is timed after its prompt). The wall rate (submit to last token,
prefill included) is reported next to it.

Threads: torch's default (one per core), as the node runs; BENCH_ENGINE_THREADS overrides.
The package loop is timed at that count and at one thread, interleaved with the engine runs,
and the baseline is its best result (its one-token forward is bound by memory, not cores,
and on these shared 2-vCPU machines the two-thread loop swings widely from run to run). Every
number is the best of BENCH_ENGINE_REPEATS runs, and the goals are ratios.
BENCH_ENGINE_QUICK=1 shrinks everything for a smoke run (numbers then mean nothing).

Run: python -m bench engine      Writes bench/results/engine.json.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.common import print_table, write_result
from services.inference.checkpoint import build_random_checkpoint
from services.inference.convert import convert_checkpoint
from services.inference.engine import Engine, EngineCallbacks, EngineConfig, GenerationRequest
from services.inference.planner import ModelShape
from services.inference.rwkv_batched import BatchedRWKV, load_rwkv, prefill
from services.inference.sampling import SamplingParams
from services.inference.state_cache import StateCache
from services.inference.tokenizer import load_tokenizer

QUICK = os.environ.get("BENCH_ENGINE_QUICK") == "1"
N_LAYER, N_EMBD = (2, 64) if QUICK else (12, 768)
VOCAB = 65536
STRATEGY = "cpu fp32"
THREADS = int(os.environ.get("BENCH_ENGINE_THREADS", str(torch.get_num_threads())))
REPEATS = int(os.environ.get("BENCH_ENGINE_REPEATS", "2" if QUICK else "4"))
STREAMS = (4, 16, 64)
ONE_TOKENS = 8 if QUICK else 40  # decode tokens per one-stream run
MULTI_TOKENS = {4: 24, 16: 16, 64: 12} if not QUICK else {4: 4, 16: 4, 64: 3}
PROMPT_LEN = 4
BURST = (4, 8) if QUICK else (16, 24)  # new prompts arriving together x tokens each
TURNS = 30
REPLY_TOKENS = 8
SAMPLING = SamplingParams(temperature=1.0, top_p=0.7)  # default penalties (0.2 / 0.2)
# No stop at "\n\n" or end of text in the throughput runs: every request runs max_tokens.
RAW = EngineConfig(max_running=64, max_queue=64, prefill_tokens_per_step=PROMPT_LEN * 64,
                   turn_end="", eos_token_id=None)

SYSTEM = ("System: You are a careful assistant for parents. You explain child development "
          "in plain words, you never diagnose, and you suggest talking to a pediatrician "
          "when something worries the parent.\n\n")
QUESTIONS = [
    "My son is seven and forgets his homework every day. What can we try at home?",
    "She gets upset when a game ends. Is that normal at her age?",
    "How much screen time is reasonable on school days?",
    "He counts well but struggles with reading. Should I worry?",
    "What are good routines before bedtime?",
]


class StepRecorder(EngineCallbacks):
    """Decode steps as (start, end, batch size) on the perf_counter clock."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float, int]] = []

    def on_step(self, batch_size: int, step_seconds: float) -> None:
        end = time.perf_counter()
        self.steps.append((end - step_seconds, end, batch_size))

    def decode_rate(self, batch: int | None = None) -> float:
        """Tokens/s over the steps of `batch` rows (all steps: None). If no step had that
        many (very short replies can finish before the last request joins), the steps of
        the largest batch there was."""
        if batch is not None and self.steps and all(s[2] != batch for s in self.steps):
            batch = max(s[2] for s in self.steps)
        steps = [s for s in self.steps if batch is None or s[2] == batch]
        if not steps:
            return 0.0
        span = max(e for _, e, _ in steps) - min(s for s, _, _ in steps)
        return sum(b for _, _, b in steps) / span if span > 0 else 0.0


def best(values: Sequence[float], *, low: bool = False) -> float:
    return min(values) if low else max(values)


# ----- measurements


def matmul_gflops(n: int = 256 if QUICK else 1536, reps: int = 5) -> float:
    """fp32 torch.mm rate on an n x n x n product: the compute roofline of this CPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    dt = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / dt / 1e9


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def package_loop(model: Any, tokens: int, vocab: int = VOCAB) -> float:
    """The package's own single-sequence decode loop (greedy argmax), tokens/s."""
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, vocab, (PROMPT_LEN,), generator=g).tolist()
    with torch.inference_mode():
        out, state = model.forward(prompt, None)
        tok = int(torch.argmax(out))
        t0 = time.perf_counter()
        for _ in range(tokens):
            out, state = model.forward([tok], state)
            tok = int(torch.argmax(out))
        return tokens / (time.perf_counter() - t0)


async def engine_streams(bm: BatchedRWKV, tokenizer: Any, streams: int, tokens: int
                         ) -> tuple[float, float]:
    """(decode tokens/s, wall tokens/s) of `streams` concurrent requests of `tokens` each."""
    rec = StepRecorder()
    eng = Engine(bm, tokenizer, config=RAW, callbacks=rec)
    eng.start()
    try:
        g = torch.Generator().manual_seed(streams)
        t0 = time.perf_counter()
        handles = [eng.submit(GenerationRequest(
            f"s{i}", torch.randint(1, bm.vocab_size, (PROMPT_LEN,), generator=g).tolist(),
            SamplingParams(**{**_params_dict(SAMPLING), "max_tokens": tokens, "seed": i})))
            for i in range(streams)]
        finals = [await h.result() for h in handles]
        wall = time.perf_counter() - t0
    finally:
        eng.stop()
    assert all(f.reason == "length" and f.completion_tokens == tokens for f in finals), finals
    return rec.decode_rate(streams), sum(f.completion_tokens for f in finals) / wall


def burst_prefill(bm: BatchedRWKV, model: Any, prompts: int = BURST[0], length: int = BURST[1]
                  ) -> tuple[float, float]:
    """Seconds to prefill `prompts` new prompts of `length` tokens: (in one `prefill_many`
    pass, one after another through the package's forward)."""
    g = torch.Generator().manual_seed(prompts)
    jobs = [(torch.randint(1, bm.vocab_size, (length,), generator=g).tolist(), None)
            for _ in range(prompts)]
    together = _timed(lambda: bm.prefill_many(jobs))
    alone = _timed(lambda: [prefill(model, toks, None, length) for toks, _ in jobs])
    return together, alone


def _params_dict(p: SamplingParams) -> dict[str, Any]:
    return {f: getattr(p, f) for f in p.__dataclass_fields__}


async def _conversation(bm: BatchedRWKV, tokenizer: Any) -> dict[str, Any]:
    """30 turns with the state cache, then TTFT at turn 1 vs turn 30, cached and re-fed."""
    eng = Engine(bm, tokenizer, cache=StateCache(1 << 30),
                 config=EngineConfig(max_running=4, max_queue=8))
    eng.start()
    try:
        def params(seed: int) -> SamplingParams:
            return SamplingParams(**{**_params_dict(SAMPLING), "max_tokens": REPLY_TOKENS,
                                     "seed": seed})

        async def turn(prompt: list[int], conv: str, seed: int, **kw: Any) -> Any:
            return await eng.submit(GenerationRequest(conv, prompt, params(seed), **kw)).result()

        def user(i: int) -> list[int]:
            q = QUESTIONS[i % len(QUESTIONS)]
            return tokenizer.encode(f"User: {q}\n\nAssistant:")

        first = tokenizer.encode(SYSTEM) + user(0)
        prompt = list(first)
        hits = 0
        for i in range(1, TURNS):  # turns 1..29, each cached for the next
            fin = await turn(prompt, "conv", i)
            hits += fin.cache_hit
            prompt = eng.turn_tokens(prompt, fin.text) + user(i)
        # `prompt` is now turn 30's. Repeats store nothing, so the turn-29 entry stays.
        t1, t30, t30_refed = [], [], []
        cached = 0
        for r in range(REPEATS + 2):
            f1 = await turn(first, f"fresh{r}", 1, use_cache=False, store_cache=False)
            f30 = await turn(prompt, "conv", TURNS, store_cache=False)
            f30r = await turn(prompt, "conv", TURNS, use_cache=False, store_cache=False)
            assert f30.cache_hit and not f30r.cache_hit
            cached = f30.cached_tokens
            t1.append(f1.ttft_s)
            t30.append(f30.ttft_s)
            t30_refed.append(f30r.ttft_s)
        return {"ttft_turn1_s": best(t1, low=True), "ttft_turn30_cached_s": best(t30, low=True),
                "ttft_turn30_refed_s": best(t30_refed, low=True), "turn1_prompt": len(first),
                "turn30_prompt": len(prompt), "turn30_prefilled": len(prompt) - cached,
                "cache_hits_turns_2_29": hits}
    finally:
        eng.stop()


def load_times(raw: Path, workdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    report = convert_checkpoint(raw, workdir / "converted.pth", STRATEGY, overwrite=True)
    convert_s = time.perf_counter() - t0
    raw_s, conv_s = [], []
    for _ in range(2):  # both files are in the page cache after the first pass
        raw_s.append(_timed(lambda: load_rwkv(raw, STRATEGY)))
        conv_s.append(_timed(lambda: load_rwkv(report.output, STRATEGY)))
    return {"load_raw_s": min(raw_s), "load_converted_s": min(conv_s), "convert_s": convert_s,
            "raw_bytes": raw.stat().st_size, "converted_bytes": report.file_bytes}


# ----- report


def _row(measure: str, value: float, unit: str, ratio: float | None = None, goal: str = "",
         met: bool | None = None) -> dict[str, Any]:
    return {"measure": measure, "value": round(value, 3), "unit": unit,
            "ratio": "" if ratio is None else round(ratio, 3), "goal": goal,
            "met": "" if met is None else ("yes" if met else "NO")}


def main() -> int:
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    t_start = time.perf_counter()
    shape = ModelShape(N_LAYER, N_EMBD, VOCAB)
    flops_per_token = 2 * (N_LAYER * shape.layer_matrix_params() + VOCAB * N_EMBD)
    tokenizer = load_tokenizer("world")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        raw = build_random_checkpoint(work / "bench", n_layer=N_LAYER, n_embd=N_EMBD,
                                      vocab_size=VOCAB, dtype=torch.bfloat16)
        loads = load_times(raw, work)
        model = load_rwkv(raw, STRATEGY)
    bm = BatchedRWKV(model)
    warm_s = Engine(bm, tokenizer).warmup()
    package_loop(model, 2)

    roof = pkg = pkg1 = one = 0.0
    one_wall = 0.0
    multi: dict[int, tuple[float, float]] = {}
    burst_together = burst_alone = float("inf")
    for _ in range(REPEATS):  # interleaved: a noisy neighbour hits both sides alike
        roof = max(roof, matmul_gflops())
        pkg = max(pkg, package_loop(model, ONE_TOKENS))
        d1, w1 = asyncio.run(engine_streams(bm, tokenizer, 1, ONE_TOKENS))
        one, one_wall = max(one, d1), max(one_wall, w1)
        if THREADS > 1:  # the package loop is memory-bound: one thread may do as well
            torch.set_num_threads(1)
            pkg1 = max(pkg1, package_loop(model, ONE_TOKENS))
            torch.set_num_threads(THREADS)
        for b in STREAMS:
            d, w = asyncio.run(engine_streams(bm, tokenizer, b, MULTI_TOKENS[b]))
            old = multi.get(b, (0.0, 0.0))
            multi[b] = (max(old[0], d), max(old[1], w))
        together, alone = burst_prefill(bm, model)
        burst_together, burst_alone = min(burst_together, together), min(burst_alone, alone)
    conv = asyncio.run(_conversation(bm, tokenizer))

    pkg_n = pkg
    pkg = max(pkg, pkg1)  # the baseline: the package's best, at 1 or THREADS threads
    pkg_gflops = pkg * flops_per_token / 1e9
    rows = [
        _row("fp32 mm roofline", roof, "GFLOP/s"),
        _row("package loop = baseline", pkg, "tok/s", pkg_gflops / roof, "(of roofline)"),
        _row("1 stream / baseline", one, "tok/s", one / pkg, ">= 0.95", one / pkg >= 0.95),
    ]
    goals = {16: 8.0, 64: 16.0}
    for b in STREAMS:
        rate = multi[b][0]
        goal = goals.get(b)
        rows.append(_row(f"{b} streams / baseline", rate, "tok/s", rate / pkg,
                         f">= {goal:g}" if goal else "", rate / pkg >= goal if goal else None))
        rows.append(_row(f"{b} streams / roofline", rate * flops_per_token / 1e9,
                         "GFLOP/s", rate * flops_per_token / 1e9 / roof, "(of roofline)"))
        rows.append(_row(f"{b} streams wall / baseline", multi[b][1], "tok/s",
                         multi[b][1] / pkg, "(prefill incl.)"))
    t1, t30, t30r = (conv["ttft_turn1_s"], conv["ttft_turn30_cached_s"],
                     conv["ttft_turn30_refed_s"])
    rows += [
        _row(f"burst prefill {BURST[0]}x{BURST[1]}: one pass", burst_together, "s"),
        _row("  one by one / one pass", burst_alone, "s", burst_alone / burst_together,
             "(compare)"),
        _row("TTFT turn 1", t1, "s"),
        _row("TTFT t30 cached / t1", t30, "s", t30 / t1, "<= 1.1", t30 / t1 <= 1.1),
        _row("TTFT t30 re-fed / t1", t30r, "s", t30r / t1, "(compare)"),
        _row("load raw", loads["load_raw_s"], "s"),
        _row("load converted / raw", loads["load_converted_s"], "s",
             loads["load_converted_s"] / loads["load_raw_s"], "(compare)"),
    ]
    total_s = time.perf_counter() - t_start
    print_table(f"RWKV-4 {N_LAYER}x{N_EMBD} vocab {VOCAB}, {STRATEGY}, {THREADS} torch "
                f"threads, best of {REPEATS}, {total_s:.0f} s", rows)
    details = {
        "package_loop_gflops": round(pkg_gflops, 2),
        "package_loop_tok_s": {f"{THREADS}_threads": round(pkg_n, 2),
                               **({"1_thread": round(pkg1, 2)} if THREADS > 1 else {})},
        "one_stream_wall_tok_s": round(one_wall, 2),
        "multi_stream_wall_tok_s": {b: round(multi[b][1], 2) for b in STREAMS},
        "burst_prefill": {"prompts": BURST[0], "tokens": BURST[1],
                          "one_pass_s": round(burst_together, 4),
                          "one_by_one_s": round(burst_alone, 4)},
        "decode_tokens": {"one": ONE_TOKENS, **{str(b): MULTI_TOKENS[b] for b in STREAMS}},
        "flops_per_token": flops_per_token,
        "kernels": {"onednn": bm.onednn, "packed_weights": bm.packed_weights,
                    "extra_host_bytes": bm.extra_bytes},
        "warmup_s": round(warm_s, 3),
        "conversation": {k: round(v, 4) if isinstance(v, float) else v for k, v in conv.items()},
        "load": {k: round(v, 3) if isinstance(v, float) else v for k, v in loads.items()},
        "total_s": round(total_s, 1),
    }
    out = write_result("engine", rows, model={"n_layer": N_LAYER, "n_embd": N_EMBD,
                                              "vocab_size": VOCAB, "strategy": STRATEGY},
                       baseline="rwkv package model.forward loop, one sequence, greedy",
                       sampling={"temperature": 1.0, "top_p": 0.7,
                                 "presence_penalty": SAMPLING.presence_penalty,
                                 "frequency_penalty": SAMPLING.frequency_penalty},
                       repeats=REPEATS, torch_threads=torch.get_num_threads(),
                       torch=torch.__version__, quick=QUICK, details=details)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
