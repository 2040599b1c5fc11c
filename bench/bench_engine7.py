"""RWKV-7 engine benchmark (issue 14): the batched RWKV-7 engine against the `rwkv` package's
own RWKV-7 loop and against `rwkvserve`, in one run.

Model: a random RWKV-7 checkpoint with the published key names and shapes, 12 layers x 768
(the 0.1B G1 shape: head size 64, low-rank widths 64/64/32/128), World vocabulary (65536),
`cpu fp32`. Measured in the same run, on the same cores:

1. one stream: engine decode tokens/s / the package's `model.forward` greedy loop (goal >= 0.95)
2. 16 and 64 streams (temperature 1.0, top-p 0.7): aggregate decode tokens/s / the package
   loop (goals >= 8x, >= 16x), and the fraction of the fp32 matmul roofline at 64 streams
   (2 x matrix parameters, low-rank pairs and head included, FLOPs per token, over a
   `torch.mm` probe's rate)
3. rwkvserve (PyPI, its own batching, `InferencePipeline.generate` over the list of prompts)
   serving the same file on the same cores with the same sampling, prompt and output lengths:
   our wall tokens/s (prefill included, as its API gives no step times) / its (goal >= 1.5x).
   rwkvserve is never a dependency of this project: it is imported from BENCH_RWKVSERVE_PATH
   (default /tmp/rs-pkgs: `pip install --no-deps --target /tmp/rs-pkgs rwkvserve`) in a child
   process; when it is absent or cannot load the file, the row says exactly why.
4. TTFT at turn 30 with the state cache / turn 1 (goal <= 1.1)
Also the state bytes of one conversation, computed for the G1 shapes (0.1B, 1.5B, 7.2B, 13.3B)
and measured for the bench model.

CPU fp32 decode runs the attention core through the compiled kernel of
services/inference/rwkv7_kernel.py where a C++ compiler is present (the title and the JSON
say which path ran).

Run: python -m bench engine7      Writes bench/results/engine7.json.
BENCH_ENGINE_QUICK=1 shrinks everything for a smoke run (numbers then mean nothing).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.bench_engine import (
    ONE_TOKENS,
    PROMPT_LEN,
    QUICK,
    REPEATS,
    SAMPLING,
    THREADS,
    _conversation,
    _row,
    best,
    engine_streams,
    matmul_gflops,
    package_loop,
)
from bench.common import print_table, write_result
from services.inference.checkpoint import build_random_checkpoint7, inspect_checkpoint, lora_dims7
from services.inference.model_family import load_rwkv7
from services.inference.planner import ModelShape
from services.inference.tokenizer import load_tokenizer

N_LAYER, N_EMBD, HEAD = (2, 128, 64) if QUICK else (12, 768, 64)
VOCAB = 65536
STRATEGY = "cpu fp32"
STREAMS = (16, 64)
RWKVSERVE_PATH = os.environ.get("BENCH_RWKVSERVE_PATH", "/tmp/rs-pkgs")
# Tokens per stream at 16 and 64 streams. 32, not the RWKV-4 bench's 16 / 12: when a reply
# ends, its RWKV-7 state (12 x [64, 64] float32 per row here, ~2.3 MiB) is copied out for the
# cache, and with every stream ending at the same step that copy (~0.13 s for 64 rows) weighed
# 7 % of a 12-token measurement; real replies are hundreds of tokens long.
MULTI_TOKENS = {16: 8, 64: 6} if QUICK else {16: 32, 64: 32}
G1_SHAPES = {"0.1B": (12, 768), "1.5B": (24, 2048), "7.2B": (32, 4096), "13.3B": (61, 4096)}

# The child process that runs rwkvserve: prints one JSON line {tokens, seconds} or {error}.
_RWKVSERVE_CHILD = r"""
import json, sys, time, torch
path, streams, tokens, threads, prompt_len = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(threads)
try:
    from rwkvserve.inference.pipeline import InferencePipeline
except Exception as exc:
    print(json.dumps({"error": f"import rwkvserve: {type(exc).__name__}: {exc}"})); sys.exit()
try:
    pipe = InferencePipeline(model_path=path, device="cpu", precision="fp32")
except Exception as exc:
    print(json.dumps({"error": f"load {path}: {type(exc).__name__}: {exc}"})); sys.exit()
prompt = " ".join(["hello"] * prompt_len)
prompts = [prompt] * streams
pipe.generate(prompts[:2], max_tokens=2, temperature=1.0, top_p=0.7)  # warm-up
t0 = time.perf_counter()
out = pipe.generate(prompts, max_tokens=tokens, temperature=1.0, top_p=0.7)
dt = time.perf_counter() - t0
n = sum(len(pipe.encode(o)) for o in out)
print(json.dumps({"tokens": n, "requested": streams * tokens, "seconds": dt}))
"""


def rwkvserve_rate(path: Path, streams: int, tokens: int) -> dict[str, Any]:
    if not Path(RWKVSERVE_PATH, "rwkvserve").is_dir():
        return {"error": f"rwkvserve not found under {RWKVSERVE_PATH} (install it there with "
                         "pip install --no-deps --target; never into the project)"}
    env = {**os.environ, "PYTHONPATH": RWKVSERVE_PATH}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RWKVSERVE_CHILD, str(path), str(streams), str(tokens),
             str(THREADS), str(PROMPT_LEN)], env=env, capture_output=True, text=True,
            timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "rwkvserve did not finish within 30 minutes"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"rwkvserve exited {done.returncode}: {done.stderr.strip()[-400:]}"}


def state_bytes_rows() -> list[dict[str, Any]]:
    rows = []
    for name, (layers, embd) in G1_SHAPES.items():
        shape = ModelShape(layers, embd, VOCAB, generation=7, head_size=64,
                           lora_params=lora_dims7(embd).params(embd))
        b = shape.state_bytes("fp16")
        rows.append(_row(f"state per conversation, RWKV-7 {name} (L{layers} D{embd}, fp16)",
                         b / 2**20, "MiB"))
    return rows


def main() -> int:
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    t_start = time.perf_counter()
    tokenizer = load_tokenizer("world")
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        path = build_random_checkpoint7(Path(d) / "bench7", n_layer=N_LAYER, n_embd=N_EMBD,
                                        vocab_size=VOCAB, head_size=HEAD)
        info = inspect_checkpoint(path)
        shape = ModelShape.from_info(info)
        flops_per_token = 2 * (N_LAYER * shape.layer_matrix_params() + VOCAB * N_EMBD)
        bm = load_rwkv7(path, STRATEGY)
        model = bm.model
        meta["attention_kernel"] = bm.kernel is not None  # rwkv7_kernel built and in use
        meta["packed_weight_bytes"] = bm.extra_bytes

        pkg: list[float] = []
        one: list[float] = []
        multi: dict[int, list[tuple[float, float]]] = {s: [] for s in STREAMS}
        # Interleaved, and as many engine runs as package runs (the package's best of both
        # thread counts; the engine chooses its own threads for one row): best of equal numbers.
        for _ in range(REPEATS):
            for threads in sorted({THREADS, 1}):
                torch.set_num_threads(threads)
                pkg.append(package_loop(model, ONE_TOKENS, VOCAB))
                torch.set_num_threads(THREADS)
                one.append(asyncio.run(engine_streams(bm, tokenizer, 1, ONE_TOKENS))[0])
        for s in STREAMS:
            for _ in range(max(1, REPEATS // 2)):
                multi[s].append(asyncio.run(engine_streams(bm, tokenizer, s, MULTI_TOKENS[s])))
        base, single = best(pkg), best(one)
        gflops = matmul_gflops()
        rows.append(_row("package loop (model.forward, greedy), 1 stream", base, "tok/s"))
        rows.append(_row("engine, 1 stream", single, "tok/s", single / base, ">= 0.95",
                         single / base >= 0.95))
        for s, goal in zip(STREAMS, (8, 16), strict=True):
            rate = best([r for r, _ in multi[s]])
            rows.append(_row(f"engine, {s} streams (aggregate decode)", rate, "tok/s",
                             rate / base, f">= {goal}x package", rate / base >= goal))
            meta[f"wall_{s}"] = best([w for _, w in multi[s]])
        rate64 = best([r for r, _ in multi[64]])
        roof = rate64 * flops_per_token / (gflops * 1e9)
        rows.append(_row("fp32 matmul roofline (torch.mm probe)", gflops, "GFLOP/s"))
        rows.append(_row("fraction of the roofline at 64 streams", roof, "", roof, "report"))

        for s in STREAMS:
            ours = meta[f"wall_{s}"]
            rs = rwkvserve_rate(path, s, MULTI_TOKENS[s])
            meta[f"rwkvserve_{s}"] = rs
            if "error" in rs:
                rows.append(_row(f"rwkvserve, {s} streams: not measured ({rs['error'][:160]})",
                                 0.0, "tok/s", None, ">= 1.5x"))
                continue
            theirs = rs["tokens"] / rs["seconds"]
            rows.append(_row(f"rwkvserve, {s} streams (wall, its batching)", theirs, "tok/s"))
            rows.append(_row(f"engine / rwkvserve, {s} streams (wall)", ours, "tok/s",
                             ours / theirs, ">= 1.5x", ours / theirs >= 1.5))

        conv = asyncio.run(_conversation(bm, tokenizer))
        ratio = conv["ttft_turn30_cached_s"] / conv["ttft_turn1_s"]
        rows.append(_row("TTFT turn 1", conv["ttft_turn1_s"] * 1e3, "ms"))
        rows.append(_row("TTFT turn 30, cached", conv["ttft_turn30_cached_s"] * 1e3, "ms",
                         ratio, "<= 1.1", ratio <= 1.1))
        rows.append(_row("TTFT turn 30, re-fed history", conv["ttft_turn30_refed_s"] * 1e3, "ms"))
        rows.append(_row("state per conversation, bench model (measured, fp32)",
                         bm.state_nbytes() / 2**20, "MiB"))
        rows += state_bytes_rows()
        meta.update(conv)
    kernel = "compiled attention kernel" if meta["attention_kernel"] else "torch attention"
    print_table(f"RWKV-7 engine, {N_LAYER}x{N_EMBD} vocab {VOCAB} {STRATEGY}, "
                f"{THREADS} threads, {kernel}", rows)
    write_result("engine7", rows, n_layer=N_LAYER, n_embd=N_EMBD, vocab=VOCAB,
                 threads=THREADS, sampling=str(SAMPLING), quick=QUICK,
                 seconds=round(time.perf_counter() - t_start, 1), **meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
