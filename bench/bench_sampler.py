"""Sampler speed: the device sampler (device_sampling.py) against the host sampler on the
same [rows, vocab] logits in the same run, per decode step.

Both draw one token per row with ChatRWKV's chat defaults (temperature 1.0, top-p 0.85,
presence / frequency penalties 0.2 after 64 generated tokens per row) on random logits of a
peaked and a flat shape. On the CPU this decides whether the engine samples with the device
sampler there too (engine.py: only where it is not slower); on CUDA (`--device cuda`) the
device sampler runs on the GPU and the host sampler on a copy of the logits in host memory
(the copy is counted, as the engine would pay it).

    python -m bench sampler [--rows 64] [--vocab 65536] [--steps 10] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench.common import print_table, write_result
from services.inference.device_sampling import sample_batch_device
from services.inference.sampling import Sampler, SamplingParams, sample_batch


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--vocab", type=int, default=65536)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--history", type=int, default=64, help="tokens generated per row before")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_known_args(argv)[0]  # the bench runner leaves its own names in argv


def _samplers(rows: int, vocab: int, history: int) -> list[Sampler]:
    g = torch.Generator().manual_seed(0)
    out = []
    for r in range(rows):
        s = Sampler(SamplingParams(max_tokens=10**6, seed=r), vocab)
        for tok in torch.randint(0, vocab, (history,), generator=g).tolist():
            s.observe(tok)
        out.append(s)
    return out


def compare(rows: int, vocab: int, steps: int, device: str, history: int = 64,
            scale: float = 4.0) -> dict[str, Any]:
    """Milliseconds per step of each sampler on logits randn * scale (scale 4: a peaked
    chat-like row; 0.5: a flat one), best of two rounds of `steps`."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    logits = (torch.randn(rows, vocab, generator=torch.Generator().manual_seed(1)) * scale
              ).to(dev)
    host = _samplers(rows, vocab, history)
    devs = _samplers(rows, vocab, history)

    def host_step(i: int) -> None:
        sample_batch(host, logits.float().cpu())

    def dev_step(i: int) -> None:
        sample_batch_device(devs, logits, [history + i] * rows)

    out = {}
    for name, fn in (("host", host_step), ("device", dev_step)):
        fn(0)  # warm-up
        sync()
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            for i in range(steps):
                fn(i)
            sync()
            best = min(best, (time.perf_counter() - t) / steps)
        out[f"{name}_ms"] = best * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    rows = []
    for shape, scale in (("peaked", 4.0), ("flat", 0.5)):
        r = compare(args.rows, args.vocab, args.steps, args.device, args.history, scale)
        rows.append({"logits": shape, "rows x vocab": f"{args.rows} x {args.vocab}",
                     "device": args.device, "host ms": round(r["host_ms"], 2),
                     "device-sampler ms": round(r["device_ms"], 2),
                     "device / host": round(r["device_ms"] / r["host_ms"], 2)})
    print_table(f"sampler per step ({torch.get_num_threads()} threads, torch "
                f"{torch.__version__})", rows)
    write_result("sampler", rows, threads=torch.get_num_threads(), torch=torch.__version__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
