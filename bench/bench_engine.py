"""Batched decode throughput vs sequential per-sequence `model.forward` (same run, same model).

A random RWKV-4 (6 layers x 256, vocab 50277) on the CPU. For batch sizes 1, 4 and 16:
  * sequential: B sequences each advanced by `model.forward([tok], state)`, one after another;
  * batched:    one `BatchedRWKV.step` for all B per token;
  * engine:     B concurrent greedy requests through `Engine` (sampling, detokenising, events).
Writes bench/results/engine.json. Run: python -m bench engine
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import print_table, write_result
from services.inference.checkpoint import build_random_checkpoint
from services.inference.engine import Engine, EngineConfig, GenerationRequest
from services.inference.rwkv_batched import BatchedRWKV, load_rwkv, prefill
from services.inference.sampling import SamplingParams

N_LAYER, N_EMBD, VOCAB = 6, 256, 50277
STRATEGY = "cpu fp32"
BATCHES = (1, 4, 16)
STEPS = int(os.environ.get("BENCH_ENGINE_STEPS", "16"))
# One intra-op thread by default: on a small shared CPU, OpenMP barriers stall whenever another
# process holds a core, which swamps the comparison. BENCH_ENGINE_THREADS overrides.
THREADS = int(os.environ.get("BENCH_ENGINE_THREADS", "1"))
REPEATS = 3
PROMPT_LEN = 16


class _ByteTok:
    """Stand-in tokenizer (ids < 256 decode as bytes, others as a short word)."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) if i < 128 else f"<{i}>" for i in ids)


def _prompts(b: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(b)
    return [torch.randint(1, VOCAB, (PROMPT_LEN,), generator=g).tolist() for _ in range(b)]


def _sequential(model: Any, b: int, steps: int) -> float:
    states = [prefill(model, p, None)[1] for p in _prompts(b)]
    toks = [1] * b
    t0 = time.perf_counter()
    for _ in range(steps):
        for i in range(b):
            out, states[i] = model.forward([toks[i]], states[i])
            toks[i] = int(torch.argmax(out))
    return b * steps / (time.perf_counter() - t0)


def _batched(model: Any, bm: BatchedRWKV, b: int, steps: int) -> float:
    batch = bm.new_batch([prefill(model, p, None)[1] for p in _prompts(b)])
    toks = [1] * b
    t0 = time.perf_counter()
    for _ in range(steps):
        logits = bm.step(toks, batch)
        toks = torch.argmax(logits, dim=-1).tolist()
    return b * steps / (time.perf_counter() - t0)


async def _engine(bm: BatchedRWKV, b: int, steps: int) -> float:
    eng = Engine(bm, _ByteTok(), config=EngineConfig(max_running=b, turn_end="",
                                                      eos_token_id=None))
    eng.start()
    try:
        params = SamplingParams(temperature=0.0, max_tokens=steps)
        t0 = time.perf_counter()
        hs = [eng.submit(GenerationRequest(f"c{i}", p, params)) for i, p in enumerate(_prompts(b))]
        done = [await h.result() for h in hs]
        dt = time.perf_counter() - t0
    finally:
        eng.stop()
    return sum(f.completion_tokens for f in done) / dt


def main() -> int:
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as d:
        path = build_random_checkpoint(Path(d) / "bench", n_layer=N_LAYER, n_embd=N_EMBD,
                                       vocab_size=VOCAB, dtype=torch.bfloat16)
        model = load_rwkv(path, STRATEGY)
    bm = BatchedRWKV(model)
    _sequential(model, 2, 3)  # warm up (JIT profiling runs, allocator)
    _batched(model, bm, 2, 3)
    rows: list[dict[str, Any]] = []
    for b in BATCHES:
        # Best of REPEATS, interleaved: the machine may be shared, the best run is the signal.
        seq = bat = eng = 0.0
        for _ in range(REPEATS):
            seq = max(seq, _sequential(model, b, STEPS))
            bat = max(bat, _batched(model, bm, b, STEPS))
            eng = max(eng, asyncio.run(_engine(bm, b, STEPS)))
        rows.append({
            "batch": b,
            "sequential_tok_s": round(seq, 1),
            "batched_tok_s": round(bat, 1),
            "speedup": round(bat / seq, 2),
            "engine_tok_s": round(eng, 1),
        })
    print_table(f"RWKV-4 {N_LAYER}x{N_EMBD} vocab {VOCAB}, {STRATEGY}, "
                f"{torch.get_num_threads()} threads, {STEPS} steps, best of {REPEATS}", rows)
    out = write_result("engine", rows, model={"n_layer": N_LAYER, "n_embd": N_EMBD,
                                              "vocab_size": VOCAB, "strategy": STRATEGY},
                       steps=STEPS, repeats=REPEATS, torch_threads=torch.get_num_threads(),
                       torch=torch.__version__)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
