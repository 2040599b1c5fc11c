"""One CUDA check of the inference node, well under 10 minutes, printing one table.

Run it whenever a CUDA machine is at hand (from the repository root):

    python bench/gpu_check.py                # or: python -m bench.gpu_check
    python bench/gpu_check.py --allow-cpu    # the same code path on the CPU, tiny model

What it checks:
  1. NVML inventory (`services.inference.gpu`) and the strategy planner on it, for the
     synthetic model below and the Raven 7B / 14B shapes;
  2. a synthetic fp16 RWKV-4 checkpoint on `cuda` (24 layers x 2048, World vocabulary 65536,
     random weights) loaded by the `rwkv` package with strategy "cuda fp16";
  3. batched-vs-package logits on CUDA: `BatchedRWKV.step` for 3 and 17 sequences of
     different histories against the package's `model.forward`, max abs difference;
  4. throughput: the package's single-sequence loop vs the Engine at 1, 16 and 64 streams
     (temperature 1.0, top-p 0.7), decode tokens/s;
  5. where one decode step's time goes at 64 rows: the batched forward on the device vs
     sampling the [64, vocab] logits on the host;
  6. a split placement (first half of the layers `cuda fp16`, the rest and the head
     `cpu fp32`) on a small model: batched-vs-package logits across the device boundary;
  7. the NVML metrics scrape: `NvmlCollector` through a CollectorRegistry to text;
  8. the safety guard's model second opinion (issue 11, layer 3) on the synthetic model:
     p50/p99 of `ModelSecondOpinion.score` next to a plain chat turn's time to first token
     in the same run, and its label log-probs against the package's forward.
  9. one LoRA training step of the trainer (issue 16; bench/bench_train.py lora_step) on
     24 x 2048, World vocabulary, bf16 base, rank 16, ctx 512 x batch 4: tokens/s, peak memory.
 10. issue 15's table (rows marked [15]; prompt 64, output 256): the 24 x 2048 engine (slot
     decode, CUDA graphs, device sampling) at 1 / 64 / 256 streams vs the package loop;
     device sampling of 64 x 65536 in ms; host time per decode step at 64 rows; then a
     32 x 4096 checkpoint (~15 GB, built here; --skip-7b leaves it out): 1 stream against
     the HBM roofline (weight bytes / timed device copy bandwidth), 64 streams vs the
     package loop.

Without CUDA it prints why and exits 2 without running anything, unless --allow-cpu, which
runs every step on the CPU with a tiny fp32 model (a smoke test of this script).
Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA.
Writes bench/results/gpu_check.json (or --json PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.bench_engine import engine_streams, package_loop  # noqa: E402
from bench.common import RESULTS, print_table, write_result  # noqa: E402

RAVEN = {"raven-7b": (32, 4096, 50277), "raven-14b": (40, 5120, 50277)}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--allow-cpu", action="store_true",
                   help="without CUDA, run the same steps on the CPU with a tiny fp32 model")
    p.add_argument("--layers", type=int, default=None, help="synthetic model layers (24)")
    p.add_argument("--embd", type=int, default=None, help="synthetic model width (2048)")
    p.add_argument("--vocab", type=int, default=65536, help="vocabulary (World: 65536)")
    p.add_argument("--tokens", type=int, default=None, help="decode tokens per stream (32)")
    p.add_argument("--rtol", type=float, default=0.02,
                   help="fp16 logits: pass if max |diff| <= rtol * std(logits) (0.02)")
    p.add_argument("--skip-7b", action="store_true",
                   help="leave out the 32 x 4096 rows of issue 15 (a 15 GB checkpoint)")
    p.add_argument("--json", type=Path, default=RESULTS / "gpu_check.json")
    return p.parse_args(argv)


class Checks:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}
        self.failed = False

    def add(self, check: str, result: str, detail: str = "", ok: bool | None = True) -> None:
        self.rows.append({"check": check, "result": result, "detail": detail,
                          "ok": "-" if ok is None else ("PASS" if ok else "FAIL")})
        if ok is False:
            self.failed = True
        print(f"[{self.rows[-1]['ok']:>4}] {check}: {result} {detail}", flush=True)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_planner(c: Checks, gpus: list[Any], synthetic: tuple[int, int, int]) -> str:
    from services.inference.planner import ModelShape, plan_strategy

    plans = {}
    for name, (n_layer, n_embd, vocab) in {"synthetic": synthetic, **RAVEN}.items():
        plan = plan_strategy(ModelShape(n_layer, n_embd, vocab, dtype_bytes=2), gpus)
        per_dev = ", ".join(f"{d} {_gib(b)}" for d, b in plan.device_bytes().items())
        plans[name] = {"strategy": plan.strategy, "reason": plan.reason,
                       "device_bytes": plan.device_bytes(), "warnings": plan.warnings}
        c.add(f"plan {name} {n_layer}x{n_embd}", plan.strategy, f"{per_dev}; {plan.reason}",
              None)
    c.data["plans"] = plans
    return plans["synthetic"]["strategy"]


def check_logits(c: Checks, model: Any, bm: Any, device: str, fp16: bool, rtol: float) -> None:
    from services.inference.rwkv_batched import prefill

    g = torch.Generator().manual_seed(1)
    worst = {}
    for b in (3, 17):
        states = []
        for i in range(b):
            prompt = torch.randint(1, bm.vocab_size, (1 + i % 5,), generator=g).tolist()
            states.append(prefill(model, prompt, None, chunk_len=len(prompt))[1])
        tokens = torch.randint(1, bm.vocab_size, (b,), generator=g).tolist()
        got = bm.step(tokens, bm.new_batch(states)).clone()
        ref = torch.stack([model.forward([t], list(s))[0].float().cpu()
                           for t, s in zip(tokens, states, strict=True)])
        diff = float((got - ref).abs().max())
        std = float(ref.std())
        top1 = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
        limit = rtol * std if fp16 else 1e-4
        worst[b] = {"max_abs_diff": diff, "logits_std": std, "top1_agreement": top1}
        c.add(f"batched vs package logits, B={b}", f"max |diff| {diff:.2e}",
              f"limit {limit:.1e} (logits std {std:.2f}), top-1 agree {top1:.0%}, {device}",
              diff <= limit)
    c.data["logits"] = worst


def check_throughput(c: Checks, model: Any, bm: Any, tokenizer: Any, tokens: int) -> None:
    vocab = bm.vocab_size
    package_loop(model, 2, vocab)
    pkg = max(package_loop(model, tokens, vocab) for _ in range(2))
    c.add("package loop, 1 sequence", f"{pkg:.1f} tok/s", "model.forward, greedy", None)
    out = {"package_tok_s": pkg}
    for streams in (1, 16, 64):
        rate = max(asyncio.run(engine_streams(bm, tokenizer, streams, tokens))[0]
                   for _ in range(2))
        out[f"engine_{streams}_tok_s"] = rate
        c.add(f"engine, {streams} stream{'s' if streams > 1 else ''}", f"{rate:.1f} tok/s",
              f"{rate / pkg:.2f}x the package loop (T=1, top-p 0.7)", rate > 0)
    c.data["throughput"] = out


def check_step_breakdown(c: Checks, bm: Any, rows: int = 64, steps: int = 8) -> None:
    """Time the batched forward alone and the host sampler alone at `rows` rows."""
    from services.inference.sampling import Sampler, SamplingParams, sample_batch

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    g = torch.Generator().manual_seed(3)
    batch = bm.new_batch([bm.zero_state() for _ in range(rows)])
    tokens = torch.randint(1, bm.vocab_size, (rows,), generator=g).tolist()
    params = SamplingParams(temperature=1.0, top_p=0.7, max_tokens=10**6, seed=1)
    samplers = [Sampler(params, bm.vocab_size) for _ in range(rows)]
    logits = bm.step(tokens, batch).clone()
    sample_batch(samplers, logits)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        logits = bm.step(tokens, batch)
    sync()
    fwd = (time.perf_counter() - t) / steps
    logits = logits.clone()
    t = time.perf_counter()
    for _ in range(steps):
        sample_batch(samplers, logits)
    smp = (time.perf_counter() - t) / steps
    c.data["step_breakdown"] = {"rows": rows, "forward_ms": fwd * 1e3, "sample_ms": smp * 1e3}
    c.add(f"one step at {rows} rows", f"forward {fwd * 1e3:.1f} ms, sampling {smp * 1e3:.1f} ms",
          f"sampling is {smp / (fwd + smp):.0%} of the step (host, {torch.get_num_threads()} "
          "threads)", None)


def _engine_rate(bm: Any, tokenizer: Any, streams: int, tokens: int, prompt_len: int
                 ) -> float:
    """Decode tokens/s of `streams` concurrent requests (prompt `prompt_len`, `tokens` out,
    T=1 / top-p 0.7 / default penalties) through the Engine as the node configures it."""
    from bench.bench_engine import StepRecorder
    from services.inference.engine import Engine, EngineConfig, GenerationRequest
    from services.inference.sampling import SamplingParams

    rec = StepRecorder()
    cfg = EngineConfig(max_running=streams, max_queue=streams, turn_end="", eos_token_id=None,
                       prefill_tokens_per_step=max(512, prompt_len * streams),
                       max_tokens_limit=max(tokens, 1))

    async def run() -> None:
        eng = Engine(bm, tokenizer, config=cfg, callbacks=rec)
        eng.warmup()
        eng.start()
        try:
            g = torch.Generator().manual_seed(streams)
            hs = [eng.submit(GenerationRequest(
                f"s{i}", torch.randint(1, bm.vocab_size, (prompt_len,), generator=g).tolist(),
                SamplingParams(temperature=1.0, top_p=0.7, max_tokens=tokens, seed=i),
                use_cache=False, store_cache=False)) for i in range(streams)]
            for h in hs:
                await h.result()
        finally:
            eng.stop()

    asyncio.run(run())
    return rec.decode_rate(streams)


def copy_bandwidth(cuda: bool) -> float:
    """Device memory bandwidth in bytes/s from timed copies of a 1 GiB buffer (read + write)."""
    n = (1 << 30) if cuda else (64 << 20)
    dev = "cuda" if cuda else "cpu"
    a = torch.empty(n, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    b.copy_(a)
    sync()
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        b.copy_(a)
    sync()
    return 2 * n * reps / (time.perf_counter() - t)


def _host_split(bm: Any, rows: int, cuda: bool) -> dict[str, float]:
    """One decode step at `rows` rows as the engine runs it on a GPU (slot step + device
    sampler + ids to the host), timed on the host clock, against the device time of the
    same work replayed back to back (so the device is never waiting on the host): host
    time = step - device time."""
    from services.inference.decode_slots import DecodeSlots
    from services.inference.device_sampling import RowParams, device_pick, sample_batch_device
    from services.inference.sampling import Sampler, SamplingParams

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    slots = DecodeSlots(bm, rows)
    slots.capture_all()
    slots.extend([bm.zero_state() for _ in range(rows)])
    params = SamplingParams(temperature=1.0, top_p=0.7, max_tokens=10**6)
    samplers = [Sampler(dataclasses.replace(params, seed=i), bm.vocab_size) for i in range(rows)]
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(1, bm.vocab_size, (rows,), generator=g).tolist()
    history, steps = (64, 20) if cuda else (2, 2)
    for i in range(history):  # a history for the penalties
        sample_batch_device(samplers, slots.step(tokens), [i] * rows)
    sync()
    t = time.perf_counter()
    for i in range(steps):
        tokens = sample_batch_device(samplers, slots.step(tokens), [history + i] * rows)
    sync()
    step = (time.perf_counter() - t) / steps
    logits = slots.step(tokens)
    rp = RowParams.of([s.params for s in samplers], logits.device)
    u = torch.rand(rows, dtype=torch.float64, device=logits.device)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        slots.step(tokens)
    sync()
    fwd = (time.perf_counter() - t) / steps
    t = time.perf_counter()
    for _ in range(steps):
        device_pick(logits, rp, u)
    sync()
    smp = (time.perf_counter() - t) / steps
    device = fwd + smp if cuda else step
    return {"rows": rows, "step_ms": step * 1e3, "forward_ms": fwd * 1e3,
            "sample_ms": smp * 1e3, "host_ms": max(0.0, step - device) * 1e3,
            "host_share": max(0.0, step - device) / step, "graphs": slots.graphs_enabled}


def check_issue15(c: Checks, model: Any, bm: Any, tokenizer: Any, cuda: bool,
                  tokens: int, prompt_len: int, streams: tuple[int, ...], *,
                  step_rows: bool = True) -> None:
    """Issue 15's table for the loaded shape: package loop, engine at each stream count;
    with `step_rows`, device sampling of 64 x 65536 and host time per decode step at 64."""
    from services.inference.device_sampling import RowParams, device_pick

    shape = f"{bm.n_layer}x{bm.n_embd}"
    package_loop(model, 2, bm.vocab_size)
    pkg = package_loop(model, tokens, bm.vocab_size)
    out: dict[str, Any] = {"shape": shape, "package_tok_s": pkg, "tokens": tokens,
                           "prompt": prompt_len}
    c.add(f"[15] {shape} package loop", f"{pkg:.1f} tok/s", "model.forward, greedy", None)
    for n in streams:
        rate = _engine_rate(bm, tokenizer, n, tokens, prompt_len)
        out[f"engine_{n}_tok_s"] = rate
        goal = {1: "goal >= 400 and >= 2x", 64: "goal >= 15,000", 256: "goal >= 30,000"}
        c.add(f"[15] {shape} engine, {n} stream(s)", f"{rate:,.0f} tok/s",
              f"{rate / pkg:.1f}x the package loop; {goal.get(n, '')}", rate > 0)
    if step_rows:
        dev = "cuda" if cuda else "cpu"
        v = 65536
        logits = (torch.randn(64, v, generator=torch.Generator().manual_seed(1)) * 4).to(dev)
        from services.inference.sampling import SamplingParams

        rp = RowParams.of([SamplingParams(top_p=0.7)] * 64, dev)
        u = torch.rand(64, dtype=torch.float64).to(dev)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        device_pick(logits, rp, u)
        sync()
        t = time.perf_counter()
        reps = 20 if cuda else 2
        for _ in range(reps):
            device_pick(logits, rp, u)
        sync()
        ms = (time.perf_counter() - t) / reps * 1e3
        out["device_sampling_64x65536_ms"] = ms
        c.add("[15] device sampling 64 x 65536", f"{ms:.3f} ms", f"on {dev}; goal <= 0.5 ms",
              None)
        split = _host_split(bm, 64, cuda)
        out["host_split_64"] = split
        c.add(f"[15] {shape} host time per step, 64 rows", f"{split['host_ms']:.2f} ms of "
              f"{split['step_ms']:.2f} ms ({split['host_share']:.0%})",
              f"forward {split['forward_ms']:.2f} ms, sampling {split['sample_ms']:.2f} ms; "
              f"graphs {'on' if split['graphs'] else 'off'}; goal <= 20 %", None)
    c.data.setdefault("issue15", {})[shape] = out


def check_issue15_7b(c: Checks, args: argparse.Namespace, tokenizer: Any, cuda: bool,
                     tokens: int, prompt_len: int) -> None:
    """32 x 4096 (7B-class) fp16: 1 stream against the HBM roofline (weight bytes / copy
    bandwidth) and 64 streams against the package loop. Without CUDA a tiny stand-in."""
    from services.inference.checkpoint import build_random_checkpoint
    from services.inference.rwkv_batched import BatchedRWKV, load_rwkv

    n_layer, n_embd = (32, 4096) if cuda else (2, 96)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        path = build_random_checkpoint(Path(d) / "b7", n_layer=n_layer, n_embd=n_embd,
                                       vocab_size=args.vocab,
                                       dtype=torch.float16 if cuda else torch.float32)
        model = load_rwkv(path, "cuda fp16" if cuda else "cpu fp32")
    bm = BatchedRWKV(model)
    built = time.perf_counter() - t
    dev_type = "cuda" if cuda else "cpu"
    weight_bytes = sum(w.numel() * w.element_size() for w in model.w.values()
                       if w.device.type == dev_type)
    bw = copy_bandwidth(cuda)
    roof = bw / weight_bytes
    c.add(f"[15] {n_layer}x{n_embd} checkpoint", f"{_gib(weight_bytes)} of weights on "
          f"{dev_type}", f"built and loaded in {built:.0f} s; copy bandwidth "
          f"{bw / 1e9:,.0f} GB/s, roofline {roof:,.0f} tok/s", None)
    check_issue15(c, model, bm, tokenizer, cuda, tokens, prompt_len, (1, 64), step_rows=False)
    r = c.data["issue15"][f"{n_layer}x{n_embd}"]
    r.update({"weight_bytes": weight_bytes, "copy_bytes_per_s": bw, "roofline_tok_s": roof})
    c.add(f"[15] {n_layer}x{n_embd} 1 stream vs roofline",
          f"{r['engine_1_tok_s'] / roof:.0%} of {roof:,.0f} tok/s", "goal >= 70 %", None)
    c.add(f"[15] {n_layer}x{n_embd} 64 streams vs package",
          f"{r['engine_64_tok_s'] / r['package_tok_s']:.1f}x", "goal >= 40x", None)
    del bm, model
    if cuda:
        torch.cuda.empty_cache()


def check_split(c: Checks, vocab: int, rtol: float) -> None:
    """First half of the layers on CUDA in fp16, the rest and the head on the CPU in fp32."""
    from services.inference.checkpoint import build_random_checkpoint
    from services.inference.rwkv_batched import BatchedRWKV, load_rwkv, prefill

    n_layer, n_embd = 6, 512
    strategy = f"cuda fp16 *{n_layer // 2} -> cpu fp32"
    with tempfile.TemporaryDirectory() as d:
        path = build_random_checkpoint(Path(d) / "split", n_layer=n_layer, n_embd=n_embd,
                                       vocab_size=vocab, dtype=torch.float32)
        model = load_rwkv(path, strategy)
    bm = BatchedRWKV(model)
    g = torch.Generator().manual_seed(2)
    states = [prefill(model, torch.randint(1, vocab, (2 + i,), generator=g).tolist(), None,
                      chunk_len=8)[1] for i in range(3)]
    tokens = torch.randint(1, vocab, (3,), generator=g).tolist()
    got = bm.step(tokens, bm.new_batch(states)).clone()
    ref = torch.stack([model.forward([t], list(s))[0].float().cpu()
                       for t, s in zip(tokens, states, strict=True)])
    diff, std = float((got - ref).abs().max()), float(ref.std())
    c.data["split"] = {"strategy": strategy, "max_abs_diff": diff, "logits_std": std,
                       "batched": bm.batched}
    c.add(f"split {strategy!r}, B=3", f"max |diff| {diff:.2e}",
          f"limit {rtol * std:.1e}; {'batched' if bm.batched else bm.fallback_reason}",
          bm.batched and diff <= rtol * std)


def check_model_opinion(c: Checks, model: Any, bm: Any, tokenizer: Any, repeats: int = 20
                        ) -> None:
    """Time the second opinion (one scoring prefill) against a chat turn's TTFT."""
    from bench.bench_model_opinion import MESSAGES
    from services.inference.engine import Engine, GenerationRequest
    from services.inference.prompt import PromptBuilder
    from services.inference.safety.model_opinion import ModelSecondOpinion, build_opinion_prompt
    from services.inference.sampling import SamplingParams

    def pct(v: list[float], q: float) -> float:
        return sorted(v)[round(q * (len(v) - 1))]

    async def run() -> tuple[list[float], list[float], torch.Tensor]:
        eng = Engine(bm, tokenizer)
        eng.start()
        try:
            op = ModelSecondOpinion(eng, tokenizer, "world", deadline_s=60.0)
            one = SamplingParams(temperature=0.0, max_tokens=1)
            ops, ttfts = [], []
            for i in range(repeats + 2):  # the first two warm up
                msg = MESSAGES[i % len(MESSAGES)]
                t = time.perf_counter()
                await op.score(msg)
                dt = time.perf_counter() - t
                fin = await eng.submit(GenerationRequest(
                    f"c{i}", PromptBuilder(tokenizer, "world").tokens(msg, max_tokens=4096), one,
                    use_cache=False, store_cache=False)).result()
                if i >= 2:
                    ops.append(dt)
                    ttfts.append(fin.ttft_s)
            got = await eng.score(op.prompt_tokens(MESSAGES[0]), op.token_ids)
            return ops, ttfts, got
        finally:
            eng.stop()

    ops, ttfts, got = asyncio.run(run())
    label_ids = ModelSecondOpinion(None, tokenizer, "world").token_ids  # type: ignore[arg-type]
    ref_logits, _ = model.forward(tokenizer.encode(build_opinion_prompt("world", MESSAGES[0])),
                                  None)
    ref = torch.log_softmax(ref_logits.float().cpu(), -1)[label_ids]
    diff = float((got - ref).abs().max())
    r = {"opinion_p50_ms": pct(ops, 0.5) * 1e3, "opinion_p99_ms": pct(ops, 0.99) * 1e3,
         "chat_ttft_p50_ms": pct(ttfts, 0.5) * 1e3, "chat_ttft_p99_ms": pct(ttfts, 0.99) * 1e3,
         "label_logprob_max_abs_diff": diff, "samples": repeats}
    c.data["model_opinion"] = r
    c.add("safety second opinion", f"p50 {r['opinion_p50_ms']:.1f} ms, p99 "
          f"{r['opinion_p99_ms']:.1f} ms", f"chat TTFT p50 {r['chat_ttft_p50_ms']:.1f} ms "
          f"(ratio {r['opinion_p50_ms'] / r['chat_ttft_p50_ms']:.2f}); label log-probs vs "
          f"package max |diff| {diff:.2e}", diff <= 0.05)


def check_nvml_scrape(c: Checks, expect_gpus: bool) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from services.inference.gpu import GpuInventory, NvmlCollector

    inv = GpuInventory()
    try:
        reg = CollectorRegistry()
        reg.register(NvmlCollector(inv))
        text = generate_latest(reg).decode()
    finally:
        inv.close()
    samples = {f.name: f.samples for f in text_string_to_metric_families(text)}
    dcgm = sum(len(v) for k, v in samples.items() if k.startswith("DCGM_FI_DEV_"))
    count = samples.get("avatario_inference_gpus")
    gpus = int(count[0].value) if count else -1
    used = samples.get("DCGM_FI_DEV_FB_USED", [])
    ok = count is not None and (gpus >= 1 and len(used) == gpus if expect_gpus else True)
    detail = (f"FB used {used[0].value:.0f} MiB on {dict(used[0].labels)}" if used
              else "no DCGM_FI_DEV_FB_USED (no GPU: a normal state)")
    c.add("NVML metrics scrape",
          f"{gpus} GPU(s), {dcgm} DCGM samples" if count else "no avatario_inference_gpus",
          detail, ok)
    c.data["nvml_scrape"] = text


def check_lora_step(c: Checks, device: str, vocab: int, cuda: bool) -> None:
    """Issue 16: one LoRA training step (the trainer's code) on the check's device."""
    from bench.bench_train import lora_step

    layers, embd, ctx, batch = (24, 2048, 512, 4) if cuda else (2, 64, 32, 2)
    try:
        r = lora_step(layers, embd, vocab, device=device, ctx=ctx, batch=batch,
                      steps=3 if cuda else 1)
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        c.add("LoRA training step", "failed", repr(exc)[:200], False)
        return
    c.data["lora_step"] = r
    c.add("LoRA training step", f"{r['shape']} rank {r['rank']}: {r['tokens_per_s']:,.0f} tok/s",
          f"ctx {ctx} x batch {batch}, {r['step_s']:.2f} s/step, peak "
          f"{r.get('peak_gib', float('nan')):.1f} GiB, loss {r['loss']:.2f}",
          r["loss"] == r["loss"])


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_check: no CUDA device is visible to torch "
              f"(torch {torch.__version__}, cuda build {torch.version.cuda}); nothing was "
              "checked. Run it on a CUDA machine, or pass --allow-cpu to smoke-test this "
              "script on the CPU.", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    device = "cuda" if cuda else "cpu"
    n_layer = args.layers or (24 if cuda else 2)
    n_embd = args.embd or (2048 if cuda else 64)
    tokens = args.tokens or (32 if cuda else 4)
    fp16 = cuda
    c = Checks()
    c.add("device", torch.cuda.get_device_name(0) if cuda else "cpu (--allow-cpu)",
          f"torch {torch.__version__}, cuda {torch.version.cuda}", None)

    from services.inference.gpu import GpuInventory
    from services.inference.rwkv_batched import BatchedRWKV, load_rwkv
    from services.inference.tokenizer import load_tokenizer

    inv = GpuInventory()
    try:
        gpus = inv.gpus()
    finally:
        inv.close()
    c.add("NVML inventory", f"{len(gpus)} GPU(s)",
          "; ".join(f"{g.index}: {g.name} {_gib(g.free_bytes)} free of {_gib(g.total_bytes)}"
                    for g in gpus) or "none (no driver / no NVML)", bool(gpus) or not cuda)
    c.data["gpus"] = [dataclasses.asdict(g) for g in gpus]
    planned = check_planner(c, gpus, (n_layer, n_embd, args.vocab))
    strategy = "cuda fp16" if cuda else "cpu fp32"

    from services.inference.checkpoint import build_random_checkpoint

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        path = build_random_checkpoint(Path(d) / "gpu_check", n_layer=n_layer, n_embd=n_embd,
                                       vocab_size=args.vocab,
                                       dtype=torch.float16 if fp16 else torch.float32)
        built = time.perf_counter() - t
        t = time.perf_counter()
        model = load_rwkv(path, strategy)
        if cuda:
            torch.cuda.synchronize()
        loaded = time.perf_counter() - t
    mem = f", {_gib(torch.cuda.memory_allocated())} on the GPU" if cuda else ""
    c.add("synthetic checkpoint", f"{n_layer}x{n_embd} vocab {args.vocab}, {strategy}",
          f"built {built:.1f} s, loaded {loaded:.1f} s{mem}; planner chose {planned!r}", None)
    bm = BatchedRWKV(model)
    c.add("batched path", "batched" if bm.batched else "per-sequence fallback",
          bm.fallback_reason or "", bm.batched)
    tokenizer = load_tokenizer("world")
    from services.inference.engine import Engine

    c.add("warm-up (readiness)", f"{Engine(bm, tokenizer).warmup():.2f} s", "", True)
    check_logits(c, model, bm, device, fp16, args.rtol)
    check_throughput(c, model, bm, tokenizer, tokens)
    check_step_breakdown(c, bm)
    # issue 15's table: fp16, World vocabulary, prompt 64, output 256 (tiny on the CPU)
    i15_tokens, i15_prompt = (256, 64) if cuda else (args.tokens or 4, 8)
    check_issue15(c, model, bm, tokenizer, cuda, i15_tokens, i15_prompt,
                  (1, 64, 256) if cuda else (1, 4, 8))
    check_model_opinion(c, model, bm, tokenizer, repeats=20 if cuda else 4)
    if cuda:
        del bm, model
        torch.cuda.empty_cache()
        check_split(c, args.vocab, args.rtol)
    check_nvml_scrape(c, expect_gpus=cuda)
    check_lora_step(c, device, args.vocab, cuda)
    if not args.skip_7b:
        check_issue15_7b(c, args, tokenizer, cuda, i15_tokens, i15_prompt)
    total = time.perf_counter() - t0
    print_table(f"gpu_check on {device}: {'FAILED' if c.failed else 'all passed'} "
                f"in {total:.0f} s", c.rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    out = write_result(args.json.stem, c.rows, device=device, cuda=cuda, strategy=strategy,
                       model={"n_layer": n_layer, "n_embd": n_embd, "vocab_size": args.vocab},
                       total_s=round(total, 1), torch=torch.__version__, **c.data)
    if out.resolve() != args.json.resolve():
        args.json.write_text(out.read_text())
        out.unlink()
        out = args.json
    print(f"wrote {out}")
    return 1 if c.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
