"""`python -m avatario_tools.train`: train, fine-tune with LoRA, merge and evaluate RWKV-4.

    train  --out model.pth --data corpus.txt [--tokenizer tok.json] --shape 4x256 [--steps N]
    train  --out tuned.pth --data corpus.txt --init base.pth        (fine-tune every weight)
    lora   --base base.pth --out adapter.pt --data corpus.txt [--rank 8 --alpha 16]
    merge  base.pth adapter.pt[:alpha] --out merged.pth
    eval   model.pth --data held_out.txt [--lora adapter.pt[:alpha]]

Data: a UTF-8 text file (tokenized with --tokenizer; the last --val-fraction of its
blank-line-separated paragraphs is the validation split) or token ids as .npy (--data train.npy
--val val.npy). Training resumes from `<out>.ckpt/` after an interruption (--no-resume: afresh).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.console import Console

from avatario_tools.train.config import LORA_TARGETS, LoraConfig, TokenData, TrainConfig, TrainError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
err = Console(stderr=True)

# Named shapes: n_layer x n_embd of the published RWKV-4 sizes, and the demo's.
SHAPES = {"demo": (4, 256), "169m": (12, 768), "430m": (24, 1024), "1b5": (24, 2048),
          "3b": (32, 2560), "7b": (32, 4096), "14b": (40, 5120)}
_SHAPE_RE = re.compile(r"^(\d+)x(\d+)$")


def parse_shape(spec: str) -> tuple[int, int]:
    """"4x256" (n_layer x n_embd) or a name from SHAPES."""
    s = spec.strip().lower()
    if s in SHAPES:
        return SHAPES[s]
    m = _SHAPE_RE.match(s)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 2:
        raise TrainError(f"shape {spec!r}: unknown; use LAYERSxEMBD (e.g. 4x256) or one of "
                         f"{', '.join(SHAPES)}")
    return int(m.group(1)), int(m.group(2))


def _data(data: Path, val: Path | None, tokenizer: str, val_fraction: float
          ) -> tuple[TokenData, int | None]:
    from avatario_tools.train.data import load_tokens, tokenize_text

    if data.suffix == ".npy":
        if val is None:
            raise TrainError("--val: token arrays (.npy) need a validation array too")
        return TokenData(train=load_tokens(data), validation=load_tokens(val)), None
    if val is not None:
        raise TrainError("--val is for .npy token arrays; a text file is split by "
                         "--val-fraction")
    return tokenize_text(data, tokenizer, val_fraction)


def _vocab(explicit: int | None, from_text: int | None, tokenizer: str) -> int:
    from avatario_tools.train.data import tokenizer_vocab_size

    return explicit or from_text or tokenizer_vocab_size(tokenizer)


def _report(result, what: str) -> None:
    err.print(f"[bold]{what}[/] {result.path}  steps {result.steps}  train loss "
              f"{result.train_loss:.4f}  val loss {result.val_loss:.4f}  val ppl "
              f"{result.val_perplexity:.2f}  {result.tokens_per_s:,.0f} tok/s"
              + (f"  (resumed at step {result.resumed_from})" if result.resumed_from else ""))
    typer.echo(json.dumps({"path": str(result.path), "steps": result.steps,
                           "train_loss": result.train_loss, "val_loss": result.val_loss,
                           "val_perplexity": result.val_perplexity,
                           "tokens_per_s": result.tokens_per_s,
                           "resumed_from": result.resumed_from,
                           "best_step": result.best_step}))


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}")
    return typer.Exit(2)


DataOpt = typer.Option(..., "--data", help="Text file (.txt) or token ids (.npy).")
ValOpt = typer.Option(None, "--val", help="Validation token ids (.npy) when --data is .npy.")
TokOpt = typer.Option("world", "--tokenizer", help='tokenizers JSON or "world".')
ValFracOpt = typer.Option(0.1, "--val-fraction", help="Held-out share of a text file.")


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Output .pth (raw RWKV-4)."),
    data: Path = DataOpt,
    val: Path | None = ValOpt,
    tokenizer: str = TokOpt,
    val_fraction: float = ValFracOpt,
    shape: str = typer.Option("demo", "--shape", help="LAYERSxEMBD or " + "|".join(SHAPES)),
    vocab_size: int | None = typer.Option(None, help="Default: the tokenizer's."),
    init: Path | None = typer.Option(None, "--init", help="Fine-tune this raw .pth."),
    ctx_len: int = 256, batch_size: int = 8, steps: int = 1000, lr: float = 6e-4,
    lr_final: float = 6e-5, warmup: int = 50, seed: int = 0,
    dtype: str = typer.Option("fp32", help="fp32 | bf16"),
    save_dtype: str | None = typer.Option(None, help="fp32 | bf16 (default: --dtype)"),
    checkpoint_every: int = 100, device: str = "cpu", grad_clip: float = 1.0,
    bptt_len: int = typer.Option(0, help="Truncated-BPTT segment (0: ctx_len)."),
    grad_checkpoint: bool = False, eval_tokens: int = 65536,
    weight_decay: float = typer.Option(0.0, help="AdamW decay on weight matrices."),
    dropout: float = typer.Option(0.0, help="On block outputs, training only."),
    eval_every: int = typer.Option(0, help="Validation every N steps (0: at checkpoints)."),
    keep_best: bool = typer.Option(False, "--keep-best/--keep-last",
                                   help="Export the best validation checkpoint."),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a new model of a shape (or fine-tune --init) and export a raw .pth."""
    from avatario_tools.train.api import train_model
    from avatario_tools.train.model import read_raw

    try:
        if init is not None:
            file_shape, _ = read_raw(init)
            n_layer, n_embd = file_shape.n_layer, file_shape.n_embd
        else:
            n_layer, n_embd = parse_shape(shape)
        tokens, text_vocab = _data(data, val, tokenizer, val_fraction)
        vocab = (file_shape.vocab_size if init is not None
                 else _vocab(vocab_size, text_vocab, tokenizer))
        cfg = TrainConfig(
            n_layer=n_layer, n_embd=n_embd, vocab_size=vocab, ctx_len=ctx_len,
            batch_size=batch_size, steps=steps, lr=lr, lr_final=lr_final, warmup=warmup,
            seed=seed, dtype=dtype, save_dtype=save_dtype, checkpoint_every=checkpoint_every,  # type: ignore[arg-type]
            device=device, grad_clip=grad_clip, bptt_len=bptt_len,
            grad_checkpoint=grad_checkpoint, eval_tokens=eval_tokens, init=init,
            weight_decay=weight_decay, dropout=dropout, eval_every=eval_every,
            keep_best=keep_best)
        result = train_model(cfg, tokens, out, progress=progress, resume=resume)
    except TrainError as exc:
        raise _fail(exc) from None
    _report(result, "model")


@app.command()
def lora(
    base: Path = typer.Option(..., "--base", help="Raw RWKV-4 .pth to adapt (frozen)."),
    out: Path = typer.Option(..., "--out", help="Adapter file (.pt)."),
    data: Path = DataOpt,
    val: Path | None = ValOpt,
    tokenizer: str = TokOpt,
    val_fraction: float = ValFracOpt,
    rank: int = 8, alpha: float = 16.0,
    targets: str = typer.Option(",".join(LORA_TARGETS), help="Comma-separated matrices."),
    ctx_len: int = 256, batch_size: int = 8, steps: int = 1000, lr: float = 1e-3,
    lr_final: float = 1e-4, warmup: int = 20, seed: int = 0,
    dtype: str = typer.Option("fp32", help="fp32 | bf16 (bf16 keeps the base in bf16)"),
    checkpoint_every: int = 100, device: str = "cpu", grad_clip: float = 1.0,
    bptt_len: int = 0, grad_checkpoint: bool = False, eval_tokens: int = 65536,
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train LoRA adapters on a frozen base; save them alone."""
    from avatario_tools.train.api import train_lora
    from avatario_tools.train.model import read_raw

    try:
        shape, _ = read_raw(base)
        tokens, _ = _data(data, val, tokenizer, val_fraction)
        cfg = TrainConfig(
            n_layer=shape.n_layer, n_embd=shape.n_embd, vocab_size=shape.vocab_size,
            ctx_len=ctx_len, batch_size=batch_size, steps=steps, lr=lr, lr_final=lr_final,
            warmup=warmup, seed=seed, dtype=dtype, checkpoint_every=checkpoint_every,  # type: ignore[arg-type]
            device=device, grad_clip=grad_clip, bptt_len=bptt_len,
            grad_checkpoint=grad_checkpoint, eval_tokens=eval_tokens)
        lcfg = LoraConfig(rank=rank, alpha=alpha,
                          targets=tuple(t.strip() for t in targets.split(",") if t.strip()))
        result = train_lora(base, lcfg, cfg, tokens, out, progress=progress, resume=resume)
    except TrainError as exc:
        raise _fail(exc) from None
    _report(result, "adapter")


@app.command()
def merge(
    base: Path = typer.Argument(..., help="Raw RWKV-4 .pth."),
    adapter: str = typer.Argument(..., help="Adapter file, optionally :alpha."),
    out: Path = typer.Option(..., "--out", help="Merged .pth."),
) -> None:
    """Write base + adapter as one raw .pth the node loads like any checkpoint."""
    from avatario_tools.train.model import read_raw, save_atomic
    from services.inference.lora import LoraError, load_adapter, merge_into, parse_spec

    try:
        if out.suffix != ".pth":
            raise TrainError(f"--out must end in .pth: {out}")
        path, alpha = parse_spec(adapter)
        _, sd = read_raw(base)
        merged = merge_into(dict(sd), load_adapter(path), alpha)
        save_atomic({k: v.contiguous() for k, v in merged.items()}, out)
    except (TrainError, LoraError) as exc:
        raise _fail(exc) from None
    err.print(f"merged {path} into {base} -> {out}")


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="Raw RWKV-4 .pth."),
    data: Path = DataOpt,
    tokenizer: str = TokOpt,
    lora_spec: str | None = typer.Option(None, "--lora", help="Adapter path[:alpha]."),
    ctx_len: int = 256, device: str = "cpu", max_tokens: int = 65536,
) -> None:
    """Validation loss and perplexity of a model on a text file or a .npy of token ids."""
    import math

    from avatario_tools.train.api import evaluate_model
    from avatario_tools.train.data import load_tokenize_all

    try:
        tokens = load_tokenize_all(data, tokenizer)
        loss = evaluate_model(model, tokens, ctx_len=ctx_len, device=device,
                              max_tokens=max_tokens, lora=lora_spec)
    except TrainError as exc:
        raise _fail(exc) from None
    err.print(f"loss {loss:.4f}  perplexity {math.exp(loss):.2f}")
    typer.echo(json.dumps({"loss": loss, "perplexity": math.exp(loss)}))
