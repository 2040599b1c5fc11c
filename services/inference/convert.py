"""Pre-convert an RWKV-4 checkpoint for one strategy, and check converted files at load.

Conversion uses the `rwkv` package's own convert-and-save (``RWKV(...,
convert_and_save_and_exit=OUT)``): weights are transposed, cast (int8-quantised for ``*i8``),
the fp16 rescaling is applied and the strategy is recorded under ``_strategy``. A converted file
loads faster and with less host memory, but only with that exact strategy.

    python -m services.inference.convert IN.pth OUT.pth --strategy "cuda:0 fp16i8"

RWKV-7 checkpoints are not converted, and need not be: the package's RWKV-7 path has no
convert-and-save (nor int8), and loads the raw `.pth` memory-mapped, transposing and casting
each tensor once on its way to the device; the node then places the layers itself. A
converted file could only save that one pass, which costs about as much as reading the file.
`convert` on an RWKV-7 file says so (`RWKV7_NO_CONVERSION`) and writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from services.inference.checkpoint import detect_generation
from services.inference.planner import ConfigError, Segment, canonical_strategy, parse_strategy

__all__ = ["RWKV7_NO_CONVERSION", "ConversionReport", "app", "check_converted",
           "convert_checkpoint", "read_metadata"]

MIN_VERSION = 0.7
RWKV7_NO_CONVERSION = (
    "is an RWKV-7 checkpoint: it needs no conversion. The rwkv package's RWKV-7 path has no "
    "convert-and-save and no int8; it memory-maps the raw .pth and casts each tensor once "
    "onto its device, and the node places the layers itself. Serve the raw file (--model).")


@dataclass(frozen=True, slots=True)
class ConversionReport:
    source: Path
    output: Path
    strategy: str
    n_layer: int
    segments: list[Segment]  # bytes measured in the converted file
    embedding_bytes: int
    file_bytes: int


def _load_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(sd, dict) or "emb.weight" not in sd:
        raise ConfigError(f"{path} is not an RWKV checkpoint (no emb.weight)")
    return sd


def read_metadata(path: str | Path) -> dict[str, Any]:
    """``_strategy``, ``_rescale_layer``, ``_version`` of a converted file (empty when raw)."""
    sd = _load_meta(Path(path))
    return {k: sd[k] for k in ("_strategy", "_rescale_layer", "_version") if k in sd}


def _default_rescale(strategy: str) -> int:
    # The package's default when RWKV_RESCALE_LAYER is unset.
    return 6 if "fp16" in strategy else 0


def check_converted(
    path: str | Path, strategy: str, *, rescale_layer: int | None = None
) -> str | None:
    """Refuse to load a converted file with another strategy than it was converted for.

    Returns the file's recorded strategy, or None for a raw (unconverted) checkpoint.
    `rescale_layer` is the RWKV_RESCALE_LAYER the loader will use (default: the package's).
    """
    meta = read_metadata(path)
    stored = meta.get("_strategy")
    if stored is None:
        return None
    want = canonical_strategy(strategy)
    if canonical_strategy(str(stored)) != want:
        raise ConfigError(
            f"{path} was converted for strategy {stored!r} and cannot be loaded with {want!r}; "
            f"configure strategy {stored!r} or convert the raw checkpoint again for {want!r}"
        )
    expected = _default_rescale(want) if rescale_layer is None else rescale_layer
    if int(meta.get("_rescale_layer", -1)) != expected:
        raise ConfigError(
            f"{path} was converted with RWKV_RESCALE_LAYER={meta.get('_rescale_layer')} but the "
            f"loader uses {expected}; convert it again with the same setting"
        )
    try:
        version = float(meta.get("_version", 0))
    except (TypeError, ValueError):
        version = 0.0
    if version < MIN_VERSION:
        raise ConfigError(f"{path} was converted by an old converter (version {version}); "
                          "convert the raw checkpoint again")  # fmt: skip
    return str(stored)


def _slot_of(key: str, n_layer: int) -> int | None:
    if key.startswith("blocks."):
        return int(key.split(".")[1])
    if key.startswith(("ln_out.", "head.")):
        return n_layer
    return None  # embedding (host memory) and metadata


def convert_checkpoint(
    source: str | Path, output: str | Path, strategy: str, *, overwrite: bool = False
) -> ConversionReport:
    """Convert raw `source` for `strategy` into `output` (written atomically)."""
    src, out = Path(source), Path(output)
    if src.suffix != ".pth":
        raise ConfigError(f"input must be a .pth checkpoint: {src}")
    if out.suffix != ".pth":
        out = out.with_name(out.name + ".pth")  # the package appends it anyway
    sd = _load_meta(src)
    if detect_generation([k for k in sd if isinstance(k, str)]) == 7.0:
        raise ConfigError(f"{src} {RWKV7_NO_CONVERSION}")
    if "_strategy" in sd:
        raise ConfigError(
            f"{src} is already converted (for {sd['_strategy']!r}); convert the raw checkpoint"
        )
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    del sd
    text = canonical_strategy(strategy)
    parse_strategy(text, n_layer)  # readable errors before the package's bare assertions
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    if out.resolve() == src.resolve():
        raise ConfigError("output must differ from input")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}.pth")

    from rwkv.model import RWKV  # heavy import (TorchScript); only when converting

    try:
        try:
            RWKV(model=str(src), strategy=text, verbose=False, convert_and_save_and_exit=str(tmp))
        except SystemExit as done:  # the package exits after saving
            if done.code not in (0, None):
                raise RuntimeError(f"rwkv conversion exited with {done.code}") from done
        else:
            raise RuntimeError("rwkv returned without converting")
        if not tmp.is_file():
            raise RuntimeError(f"rwkv did not write {tmp}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return _measure(src, out, text, n_layer)


def _measure(src: Path, out: Path, strategy: str, n_layer: int) -> ConversionReport:
    sd = torch.load(out, map_location="cpu", mmap=True, weights_only=True)
    per_slot = [0] * (n_layer + 1)
    emb = 0
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        slot = _slot_of(k, n_layer)
        size = v.numel() * v.element_size()
        if slot is None:
            emb += size
        else:
            per_slot[slot] += size
    stored = str(sd.get("_strategy", strategy))
    del sd
    segments = [
        replace(s, bytes=sum(per_slot[s.first_layer : s.first_layer + s.layer_count]))
        for s in parse_strategy(stored, n_layer)
    ]
    return ConversionReport(src, out, stored, n_layer, segments, emb, out.stat().st_size)


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def report_table(report: ConversionReport) -> Table:
    table = Table(title=f"{report.output.name}: {report.strategy}")
    for col, justify in (("device", "left"), ("dtype", "left"), ("layers", "right"),
                         ("streamed", "right"), ("bytes", "right")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in report.segments:
        last = s.first_layer + s.layer_count - 1
        label = f"{s.first_layer}-{last}" + (" (+head)" if last == report.n_layer else "")
        table.add_row(s.device, s.dtype, label, str(s.streamed_layers), _fmt_bytes(s.bytes))
    table.add_row("host", "-", "embedding", "-", _fmt_bytes(report.embedding_bytes))
    table.add_section()
    table.add_row("file", "", "", "", _fmt_bytes(report.file_bytes))
    return table


app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0] if __doc__ else None)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="raw RWKV-4 .pth checkpoint")],
    output: Annotated[Path, typer.Argument(help="where to write the converted .pth")],
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="e.g. 'cuda:0 fp16i8'")],
    force: Annotated[bool, typer.Option("--force", help="overwrite OUTPUT")] = False,
) -> None:
    """Convert SOURCE for STRATEGY and write OUTPUT; load it later with the same strategy."""
    console = Console()
    try:
        with console.status(f"converting {source.name} for [bold]{strategy}[/] ...",
                            spinner="dots"):  # fmt: skip
            report = convert_checkpoint(source, output, strategy, overwrite=force)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(report_table(report))
    console.print(f"[green]done:[/] {report.output} (load with strategy {report.strategy!r})")


if __name__ == "__main__":
    app()
