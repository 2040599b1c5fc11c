"""Trainer: training tokens/s on CPU (demo shape, 12 x 768 World) and peak memory vs context.

    python -m bench train [--quick]

1. Training tokens/s (forward + backward + AdamW, fp32, CPU) of the chunked parallel WKV
   against the step-by-step WKV (the package's loop form) measured in the same run: the
   ratio is the point, these machines are shared and noisy. Shapes: the demo model
   (4 x 256, vocab 4096) and 12 x 768 with the World vocabulary (65536).
2. Peak memory of one training step against the context length, each in its own process
   (peak RSS minus the RSS after building the model and optimizer): full BPTT, truncated
   BPTT (bptt_len 128, the state carried) and per-block gradient checkpointing.
3. One LoRA step (rank 16, bf16 base) for a shape given on the command line; the GPU
   check (bench/gpu_check.py) runs it on CUDA for 24 x 2048.
4. The demo model's first-use training time (`make run`), estimated from its parts measured
   in this run: corpus + tokenizer, training steps (tokens/s of the demo shape), validation
   passes on the stream the trainer selects on, checkpoint writes. `--demo-only` runs just
   this part.

Writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import print_table, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _model(n_layer: int, n_embd: int, vocab: int, device: str = "cpu"):
    """A trainer module with random weights, built on `device` (the RWKV-4 init's orthogonal
    matrices are slow to make for big shapes and change nothing about speed or memory)."""
    from avatario_tools.train.model import RWKV4, Shape

    with torch.device(device):
        model = RWKV4(Shape(n_layer, n_embd, vocab))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("time_decay"):
                p.copy_(torch.linspace(-5, 3, p.numel(), device=p.device))
            elif "time_mix" in name:
                p.fill_(0.5)
    return model


def train_rate(n_layer: int, n_embd: int, vocab: int, *, ctx: int, batch: int, steps: int,
               step_form: bool = False) -> dict[str, Any]:
    """Training tokens/s of full fine-tuning (fp32, CPU) after one warm-up step."""
    from avatario_tools.train.config import TrainConfig
    from avatario_tools.train.loop import batch_loss

    model = _model(n_layer, n_embd, vocab)
    if step_form:  # route every block through the step-by-step WKV
        forward = model.forward
        model.forward = lambda idx, state=None: forward(idx, state, step_form=True)
    cfg = TrainConfig(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab, ctx_len=ctx,
                      batch_size=batch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 1):
        batch_ids = torch.randint(0, vocab, (batch, ctx + 1), generator=gen)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        batch_loss(model, batch_ids, cfg, backward=True)
        opt.step()
        times.append(time.perf_counter() - t)
    per_step = sorted(times[1:])[len(times[1:]) // 2]  # median, warm-up dropped
    return {"tokens_per_s": batch * ctx / per_step, "step_s": per_step}


def lora_step(n_layer: int, n_embd: int, vocab: int, *, device: str, ctx: int, batch: int,
              steps: int = 3, rank: int = 16, grad_checkpoint: bool = False) -> dict[str, Any]:
    """LoRA training tokens/s and peak memory: base frozen in bf16, adapters fp32, bf16
    autocast (as `python -m avatario_tools.train lora --dtype bf16`)."""
    from avatario_tools.train.config import LoraConfig, TrainConfig
    from avatario_tools.train.loop import batch_loss
    from avatario_tools.train.lora import add_lora, lora_parameters

    cuda = device.startswith("cuda")
    model = _model(n_layer, n_embd, vocab, device).to(torch.bfloat16)
    model.grad_checkpoint = grad_checkpoint
    wrapped = add_lora(model, LoraConfig(rank=rank, alpha=2.0 * rank), seed=0)
    params = lora_parameters(wrapped)
    cfg = TrainConfig(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab, ctx_len=ctx,
                      batch_size=batch, dtype="bf16", device=device)
    opt = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps + 1):
        ids = torch.randint(0, vocab, (batch, ctx + 1), generator=gen).to(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = batch_loss(model, ids, cfg, backward=True)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    per_step = sorted(times[1:])[len(times[1:]) // 2]
    out = {"shape": f"{n_layer}x{n_embd}", "vocab": vocab, "device": device, "ctx": ctx,
           "batch": batch, "rank": rank, "grad_checkpoint": grad_checkpoint,
           "tokens_per_s": batch * ctx / per_step, "step_s": per_step,
           "loss": loss, "lora_params": sum(p.numel() for p in params),
           "base_params": sum(p.numel() for p in model.parameters()) - sum(
               p.numel() for p in params)}
    if cuda:
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(args: argparse.Namespace) -> None:
    """One training step in this process; prints peak RSS over the post-setup RSS (MiB)."""
    from avatario_tools.train.config import TrainConfig
    from avatario_tools.train.loop import batch_loss

    torch.set_num_threads(1)
    model = _model(args.layers, args.embd, args.vocab)
    model.grad_checkpoint = args.grad_checkpoint
    cfg = TrainConfig(n_layer=args.layers, n_embd=args.embd, vocab_size=args.vocab,
                      ctx_len=args.ctx, batch_size=args.batch, bptt_len=args.bptt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, args.vocab, (args.batch, args.ctx + 1))
    # Optimizer state and gradients exist before the measured step.
    batch_loss(model, ids[:, :3], cfg, backward=True)
    opt.step()
    base = _status_mib("VmRSS")
    # Reset this process's peak RSS (VmHWM) to the current RSS (Linux clear_refs "5"):
    # getrusage's ru_maxrss would also count the parent's memory before exec.
    Path("/proc/self/clear_refs").write_text("5")
    batch_loss(model, ids, cfg, backward=True)
    opt.step()
    peak = _status_mib("VmHWM")
    print(json.dumps({"base_mib": base, "peak_mib": peak, "step_mib": peak - base}))


def memory_at(ctx: int, *, bptt: int, grad_checkpoint: bool, layers: int, embd: int, vocab: int,
              batch: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_train", "--memory-child", "--ctx", str(ctx),
           "--bptt", str(bptt), "--layers", str(layers), "--embd", str(embd),
           "--vocab", str(vocab), "--batch", str(batch)]
    if grad_checkpoint:
        cmd.append("--grad-checkpoint")
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def demo_budget(steps: int = 6) -> dict[str, Any]:
    """First-use training time of the demo model (avatario_tools.corpus.demo.DemoConfig), from
    its parts measured here: wall time = prepare + steps x step + evaluations x eval + saves."""
    import tempfile

    import numpy as np

    from avatario_tools.corpus.demo import DemoConfig, prepare_tokens
    from avatario_tools.train.loop import evaluate
    from avatario_tools.train.model import Shape, new_model, save_atomic

    cfg = DemoConfig()
    t = time.perf_counter()
    data = prepare_tokens(cfg)
    prepare_s = time.perf_counter() - t
    tcfg = cfg.train_config(data.vocab_size)
    rate = train_rate(cfg.n_layer, cfg.n_embd, data.vocab_size, ctx=cfg.ctx_len,
                      batch=cfg.batch_size, steps=steps)
    held_out = data.validation_turns if cfg.select_on == "turns" else data.validation
    model = new_model(Shape(cfg.n_layer, cfg.n_embd, data.vocab_size), cfg.seed)
    t = time.perf_counter()
    evaluate(model, np.asarray(held_out), tcfg)
    eval_s = time.perf_counter() - t
    def copy() -> dict[str, torch.Tensor]:  # distinct storages: torch.save writes each one
        return {k: v.clone() for k, v in model.state_dict().items()}

    # what a checkpoint holds: the weights, AdamW's two moments, the best weights
    state = {"trainable": copy(), "optimizer": [copy(), copy()],
             "best": copy() if cfg.keep_best else None}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        save_atomic(state, Path(tmp) / "step.pt")
        save_s = time.perf_counter() - t
    every = cfg.eval_every or cfg.checkpoint_every
    evals = cfg.steps // every + (1 if cfg.steps % every else 0)
    saves = cfg.steps // cfg.checkpoint_every
    train_s = cfg.steps * rate["step_s"]
    return {"shape": f"{cfg.n_layer}x{cfg.n_embd}", "vocab": data.vocab_size,
            "steps": cfg.steps, "tokens_per_step": cfg.batch_size * cfg.ctx_len,
            "train_tokens": len(data.train), "held_out_tokens": len(held_out),
            "tok_s": rate["tokens_per_s"], "prepare_s": prepare_s, "train_s": train_s,
            "evals": evals, "eval_s": eval_s, "saves": saves, "save_s": save_s,
            "estimate_s": prepare_s + train_s + evals * eval_s + saves * save_s}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and contexts")
    p.add_argument("--lora-shape", default="4x256", help="LAYERSxEMBD of the CPU LoRA step")
    p.add_argument("--demo-only", action="store_true", help="only the demo first-use estimate")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ctx", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--bptt", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--layers", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--embd", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, default=4096, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--grad-checkpoint", action="store_true", help=argparse.SUPPRESS)
    args, _ = p.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(sys.argv[1:] if argv is None else argv)
    if args.memory_child:
        memory_child(args)
        return 0
    steps = 2 if args.quick else 4
    demo = [demo_budget(steps=3 if args.quick else 8)]
    print_table("demo model first use: estimated training time from measured parts (CPU)", demo)
    if args.demo_only:
        out = write_result("train_demo", demo, threads=torch.get_num_threads(),
                           torch=torch.__version__)
        print(f"wrote {out}")
        return 0
    speed = []
    shapes = [("demo 4x256", 4, 256, 4096, 128, 8), ("12x768 World", 12, 768, 65536, 128, 4)]
    for name, layers, embd, vocab, ctx, batch in shapes:
        chunked = train_rate(layers, embd, vocab, ctx=ctx, batch=batch, steps=steps)
        step = train_rate(layers, embd, vocab, ctx=ctx, batch=batch, steps=max(1, steps // 2),
                          step_form=True)
        speed.append({"shape": name, "vocab": vocab, "ctx": ctx, "batch": batch,
                      "chunked_tok_s": chunked["tokens_per_s"],
                      "step_form_tok_s": step["tokens_per_s"],
                      "speedup": chunked["tokens_per_s"] / step["tokens_per_s"]})
    print_table("training tokens/s, CPU fp32 (chunked WKV vs step form, same run)", speed)

    memory = []
    contexts = [128, 512, 1024] if args.quick else [128, 256, 512, 1024, 2048]
    for ctx in contexts:
        row: dict[str, Any] = {"ctx": ctx}
        for label, bptt, ckpt in (("full_bptt", 0, False), ("bptt128", 128, False),
                                  ("grad_ckpt", 0, True)):
            row[f"{label}_mib"] = memory_at(ctx, bptt=bptt, grad_checkpoint=ckpt, layers=4,
                                            embd=256, vocab=4096, batch=4)["step_mib"]
        memory.append(row)
    print_table("peak memory of one training step above the model + optimizer (MiB), "
                "demo 4x256, batch 4", memory)

    layers, embd = (int(x) for x in args.lora_shape.split("x"))
    lora = [lora_step(layers, embd, 4096, device="cpu", ctx=128, batch=4, steps=steps)]
    print_table("LoRA step (bf16 base, CPU)", lora)
    out = write_result("train", speed, memory=memory, lora=lora, demo=demo,
                       threads=torch.get_num_threads(), torch=torch.__version__)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
