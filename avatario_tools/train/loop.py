"""The training loop shared by full training and LoRA, with checkpoints and resume.

One step: a batch of random windows (data.WindowSampler), forward and backward in segments of
`bptt_len` tokens with the recurrent state carried between them (truncated BPTT: activation
memory grows with bptt_len, not ctx_len), the mean token loss, global-norm gradient clipping,
AdamW, then the learning rate of a linear warm-up followed by a cosine decay to lr_final
(torch's LinearLR -> CosineAnnealingLR).

Every `checkpoint_every` steps the whole training state goes to `<out>.ckpt/step-NNNNNN.pt`
(written under a temporary name and renamed, so a kill leaves either the old or the new
file): trainable weights, optimizer and scheduler state, the batch generator's state, the
torch RNG state, the loss history. A run with the same config and data resumes from the
newest one and draws the very batches the uninterrupted run would have, so its losses are the
same (bit for bit on CPU fp32).
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from avatario_tools.train.config import LoraConfig, TokenData, TrainConfig, TrainError, TrainResult
from avatario_tools.train.data import WindowSampler, validation_windows
from avatario_tools.train.lora import adapter_tensors, add_lora, lora_parameters
from avatario_tools.train.model import (
    RWKV4,
    Shape,
    build_model,
    decay_groups,
    detach_state,
    export,
    new_model,
    read_raw,
    save_atomic,
)
from services.inference.lora import LoraError, load_adapter, merge_into, parse_spec, save_adapter

CKPT_FORMAT = "avatario-train-state"
_STEP_RE = re.compile(r"^step-(\d{6,})\.pt$")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class _Run:
    """What differs between full training and LoRA."""

    kind: str
    model: RWKV4
    params: list[torch.nn.Parameter]
    fingerprint: dict
    trainable_state: Callable[[], dict[str, torch.Tensor]]
    load_trainable: Callable[[dict[str, torch.Tensor]], None]
    export: Callable[[], Path]


def device_of(spec: str) -> torch.device:
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise TrainError(f"device {spec!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {spec!r}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise TrainError(f"device {spec!r}: the trainer runs on cpu or cuda")
    return dev


def _autocast(config: TrainConfig, dev: torch.device):
    if config.dtype == "bf16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return nullcontext()


def _check_shape(shape: Shape, config: TrainConfig, where: Path) -> None:
    for name in ("n_layer", "n_embd", "vocab_size"):
        if getattr(shape, name) != getattr(config, name):
            raise TrainError(f"{name}: {where} has {getattr(shape, name)}, the config says "
                             f"{getattr(config, name)}")


def _file_id(path: Path | None) -> str | None:
    if path is None:
        return None
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def ckpt_dir(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(found)


def _schedule(opt: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler:
    cosine = CosineAnnealingLR(opt, T_max=max(config.steps - config.warmup, 1),
                               eta_min=config.lr_final)
    if config.warmup == 0:
        return cosine
    warm = LinearLR(opt, start_factor=1.0 / config.warmup, end_factor=1.0,
                    total_iters=config.warmup)
    return SequentialLR(opt, [warm, cosine], milestones=[config.warmup])


def batch_loss(model: RWKV4, batch: torch.Tensor, config: TrainConfig, *, backward: bool,
               weights: torch.Tensor | None = None) -> float:
    """Mean next-token loss of a (B, ctx+1) batch, in bptt segments with the state carried;
    with backward, gradients accumulate into the parameters segment by segment. `weights`
    (B, ctx+1), aligned with the batch: predicting token j counts weights[:, j] (a weighted
    mean; a batch whose predicted tokens all weigh 0 has loss 0)."""
    x, y = batch[:, :-1], batch[:, 1:]
    w = None if weights is None else weights[:, 1:].to(device=batch.device, dtype=torch.float32)
    n = x.numel() if w is None else float(w.sum())
    if n == 0:
        return 0.0
    dev = model.emb.weight.device
    seg = config.effective_bptt
    state = None
    total = 0.0
    grad = torch.enable_grad() if backward else torch.no_grad()
    with grad:
        for s in range(0, x.shape[1], seg):
            with _autocast(config, dev):
                logits, state = model(x[:, s:s + seg], state)
            ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                 y[:, s:s + seg].reshape(-1), reduction="none")
            if w is not None:
                ce = ce * w[:, s:s + seg].reshape(-1)
            loss = ce.sum() / n
            if backward:
                loss.backward()
            state = detach_state(state)
            total += loss.item()
    return total


def evaluate(model: RWKV4, tokens: np.ndarray, config: TrainConfig,
             weights: np.ndarray | None = None) -> float:
    """Mean next-token loss on `tokens` (weighted by `weights`) in eval mode (no dropout);
    the mode is restored."""
    dev = model.emb.weight.device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for batch, w in validation_windows(tokens, config.ctx_len, config.eval_tokens,
                                           config.batch_size, weights):
            n = batch.shape[0] * (batch.shape[1] - 1) if w is None else float(w[:, 1:].sum())
            if n:
                total += batch_loss(model, batch.to(dev), config, backward=False,
                                    weights=w) * n
                count += n
    finally:
        model.train(was_training)
    return total / count if count else math.nan


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"),
                    TextColumn("val {task.fields[val]}"),
                    TextColumn("{task.fields[tps]:,.0f} tok/s"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def _fit(run: _Run, config: TrainConfig, data: TokenData, out: Path, *, progress: bool,
         resume: bool, on_checkpoint: Callable[[int, Path], None] | None) -> TrainResult:
    dev = device_of(config.device)
    model = run.model.to(dev)
    model.wkv_chunk = config.wkv_chunk
    model.grad_checkpoint = config.grad_checkpoint
    model.dropout = config.dropout
    model.train()
    torch.manual_seed(config.seed)
    sampler = WindowSampler(data.train, config.ctx_len, config.batch_size, config.seed,
                            data.train_weights)
    opt = torch.optim.AdamW(decay_groups(model, run.params, config.weight_decay),
                            lr=config.lr, betas=config.betas, eps=1e-8)
    sched = _schedule(opt, config)
    losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    # keep_best: (step, validation loss, trainable weights) of the best evaluation so far
    best: tuple[int, float, dict[str, torch.Tensor]] | None = None
    start = 0
    folder = ckpt_dir(out)
    saved = _checkpoints(folder)
    if saved and resume:
        state = torch.load(saved[-1][1], map_location="cpu", weights_only=True)
        if state.get("format") == CKPT_FORMAT and state.get("fingerprint") == run.fingerprint:
            run.load_trainable(state["trainable"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            sampler.restore(state["sampler"])
            torch.set_rng_state(state["torch_rng"])
            losses = list(state["losses"])
            val_losses = [(int(s), float(v)) for s, v in state["val_losses"]]
            if state.get("best") is not None:
                b = state["best"]
                best = (int(b["step"]), float(b["loss"]), b["trainable"])
            start = int(state["step"])
        else:
            print(f"trainer: {folder} holds another run's checkpoints; starting afresh",
                  file=sys.stderr)
    if start == 0:
        for _, p in saved:
            p.unlink()

    def checkpoint(step: int) -> None:
        path = folder / f"step-{step:06d}.pt"
        save_atomic({"format": CKPT_FORMAT, "version": 1, "kind": run.kind, "step": step,
                     "fingerprint": run.fingerprint, "trainable": run.trainable_state(),
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "sampler": sampler.state(), "torch_rng": torch.get_rng_state(),
                     "losses": losses, "val_losses": [list(v) for v in val_losses],
                     "best": None if best is None else {"step": best[0], "loss": best[1],
                                                        "trainable": best[2]}}, path)
        for _, old in _checkpoints(folder)[:-config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        if on_checkpoint is not None:
            on_checkpoint(step, path)

    def validate(step: int) -> None:
        nonlocal best
        loss = evaluate(model, data.validation, config, data.validation_weights)
        val_losses.append((step, loss))
        if config.keep_best and (best is None or loss < best[1]):
            # a copy: on the CPU the trainable state aliases the live weights
            best = (step, loss, {k: v.clone() for k, v in run.trainable_state().items()})

    tokens_per_step = config.batch_size * config.ctx_len
    busy = 0.0
    with _progress(progress) as bar:
        task = bar.add_task(run.kind, total=config.steps, completed=start,
                            loss=losses[-1] if losses else math.nan,
                            val=f"{val_losses[-1][1]:.4f}" if val_losses else "-", tps=0.0)
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            batch, weights = sampler.draw()
            opt.zero_grad(set_to_none=True)
            loss = batch_loss(model, batch.to(dev), config, backward=True, weights=weights)
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(run.params, config.grad_clip)
            opt.step()
            sched.step()
            busy += time.perf_counter() - t0
            losses.append(loss)
            done = step + 1
            if not math.isfinite(loss):
                raise TrainError(f"loss is {loss} at step {done}: lower lr or use fp32")
            at_ckpt = done % config.checkpoint_every == 0 or done == config.steps
            if at_ckpt or (config.eval_every and done % config.eval_every == 0):
                validate(done)
            if at_ckpt:
                checkpoint(done)
            bar.update(task, completed=done, loss=loss,
                       val=f"{val_losses[-1][1]:.4f}" if val_losses else "-",
                       tps=(done - start) * tokens_per_step / max(busy, 1e-9))
    if not val_losses or val_losses[-1][0] != config.steps:
        validate(config.steps)
    best_step, val_loss = val_losses[-1]
    if best is not None:
        best_step, val_loss = best[0], best[1]
        run.load_trainable(best[2])
    path = run.export()
    tail = losses[-10:]
    return TrainResult(path=path, steps=config.steps, train_loss=sum(tail) / len(tail),
                       val_loss=val_loss, best_step=best_step,
                       tokens_per_s=(config.steps - start) * tokens_per_step / busy
                       if busy else 0.0,
                       losses=losses, val_losses=val_losses, resumed_from=start)


def run_full(config: TrainConfig, data: TokenData, out: Path, *, progress: bool, resume: bool,
             on_checkpoint: Callable[[int, Path], None] | None = None) -> TrainResult:
    if out.suffix != ".pth":
        raise TrainError(f"out must end in .pth (the rwkv package appends it): {out}")
    data.check(config.vocab_size, config.ctx_len)
    if config.init is not None:
        shape, sd = read_raw(config.init)
        _check_shape(shape, config, config.init)
        model = build_model(shape, sd, config.init)
    else:
        model = new_model(Shape(config.n_layer, config.n_embd, config.vocab_size), config.seed)
    save_dtype = DTYPES[config.save_dtype or config.dtype]
    run = _Run(
        kind="train", model=model, params=list(model.parameters()),
        fingerprint={"kind": "train", "config": config.fingerprint(), "data": data.digest(),
                     "init": _file_id(config.init)},
        trainable_state=lambda: {k: v.detach().cpu() for k, v in model.state_dict().items()},
        load_trainable=lambda sd: model.load_state_dict(sd),
        export=lambda: export(model, out, save_dtype))
    return _fit(run, config, data, out, progress=progress, resume=resume,
                on_checkpoint=on_checkpoint)


def run_lora(base: Path, lora: LoraConfig, config: TrainConfig, data: TokenData, out: Path, *,
             progress: bool, resume: bool,
             on_checkpoint: Callable[[int, Path], None] | None = None) -> TrainResult:
    if out.suffix == ".pth":
        raise TrainError(f"out: {out} is an adapter, not a model; use another suffix (.pt)")
    shape, sd = read_raw(base)
    _check_shape(shape, config, base)
    data.check(config.vocab_size, config.ctx_len)
    model = build_model(shape, sd, base)
    del sd
    if config.dtype == "bf16":  # the frozen base in bf16 (half the memory); adapters in fp32
        model.to(torch.bfloat16)
    wrapped = add_lora(model, lora, config.seed)
    params = lora_parameters(wrapped)

    def trainable() -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in adapter_tensors(wrapped).items()}

    def load(sd: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for stem, lin in wrapped.items():
                lin.lora_A.copy_(sd[stem + ".lora_A"])
                lin.lora_B.copy_(sd[stem + ".lora_B"])

    run = _Run(
        kind="lora", model=model, params=params,
        fingerprint={"kind": "lora", "config": config.fingerprint(), "data": data.digest(),
                     "base": _file_id(base), "rank": lora.rank, "alpha": lora.alpha,
                     "targets": list(lora.targets)},
        trainable_state=trainable, load_trainable=load,
        export=lambda: save_adapter(out, adapter_tensors(wrapped), rank=lora.rank,
                                    alpha=lora.alpha, n_layer=shape.n_layer,
                                    n_embd=shape.n_embd, vocab_size=shape.vocab_size))
    return _fit(run, config, data, out, progress=progress, resume=resume,
                on_checkpoint=on_checkpoint)


def load_with_lora(path: Path, lora: str | None = None) -> RWKV4:
    """A raw .pth as the trainer's module, with an adapter "path[:alpha]" merged first."""
    shape, sd = read_raw(path)
    if lora:
        try:
            adapter_path, alpha = parse_spec(lora)
            sd = merge_into(dict(sd), load_adapter(adapter_path), alpha)
        except LoraError as exc:
            raise TrainError(str(exc)) from exc
    return build_model(shape, sd, path)


def evaluate_file(path: Path, tokens: np.ndarray, *, ctx_len: int, device: str,
                  max_tokens: int, lora: str | None = None,
                  weights: np.ndarray | None = None) -> float:
    model = load_with_lora(path, lora).to(device_of(device))
    s = model.shape
    config = TrainConfig(n_layer=s.n_layer, n_embd=s.n_embd, vocab_size=s.vocab_size,
                         ctx_len=ctx_len, eval_tokens=max_tokens, device=device)
    TokenData(train=tokens, validation=tokens, validation_weights=weights).check(
        s.vocab_size, ctx_len)
    return evaluate(model, tokens, config, weights)
