"""`python -m avatario_tools.devstack` (the README's `make run`).

Migrates the SQLite databases, trains the small demo RWKV-4 model on the
corpus when no model is configured (first run only: cached in var/models/demo/;
`--random-model` serves a random one instead), starts profile, analytics, inference and gateway as
supervised local processes (logs prefixed, readiness awaited through health
checks; `--inference-replicas 2` runs two inference processes behind the gateway,
`--state-store-url redis://...` gives them the shared state tier), runs the scripted demo through the public API, and keeps the stack up
until Ctrl-C (or exits after the demo with --exit-after-demo).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from pathlib import Path

import typer
from rich.console import Console

from avatario_tools.devstack.stack import StackConfig, consecutive_ports, start_stack
from avatario_tools.devstack.supervisor import Supervisor

app = typer.Typer(add_completion=False, help=__doc__)
ROOT = Path(__file__).resolve().parents[2]


# Generators of the local-only secrets. A key missing from an older secrets file
# (e.g. token_pepper, required since profile hashes device tokens with it) is
# added and saved, and the keys already there are kept, so paired devices and
# signed-in sessions survive restarts.
_SECRET_MAKERS = {
    "internal_token": lambda: secrets.token_urlsafe(32),
    "jwt_signing_keys": lambda: json.dumps({"local-1": secrets.token_urlsafe(48)}),
    "jwt_active_kid": lambda: "local-1",
    "token_pepper": lambda: secrets.token_urlsafe(32),
}


def _secrets(var: Path) -> dict[str, str]:
    """Local-only secrets, generated once and kept in var/ so tokens survive restarts."""
    path = var / "devstack-secrets.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    missing = {k: make() for k, make in _SECRET_MAKERS.items() if k not in data}
    if missing:
        data |= missing
        path.write_text(json.dumps(data, indent=2))
        path.chmod(0o600)
    return data


def _random_model(var: Path, console: Console) -> Path:
    """A small random RWKV-4 checkpoint with the real key names, World vocabulary."""
    from services.inference.checkpoint import build_random_checkpoint

    path = var / "models" / "demo-rwkv4-world-L4-D128.pth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"building a small random demo model at {path} ...")
        build_random_checkpoint(path, n_layer=4, n_embd=128, vocab_size=65536, seed=7)
    return path


def _random_model7(var: Path, console: Console) -> Path:
    """A small random RWKV-7 (x070, G1-shaped) checkpoint with the real key names, World
    vocabulary: the node reads its generation from the keys and serves it as RWKV-7."""
    from services.inference.checkpoint import build_random_checkpoint7

    path = var / "models" / "demo-rwkv7-g1-L4-D128.pth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"building a small random RWKV-7 demo model at {path} ...")
        build_random_checkpoint7(path, n_layer=4, n_embd=128, vocab_size=65536, head_size=64,
                                 seed=7)
    return path


def _model(var: Path, console: Console, model: Path | None, tokenizer: str,
           random_model: bool, demo_generation: int = 4) -> tuple[Path, str]:
    """(checkpoint, tokenizer spec) the inference node serves.

    --model: that checkpoint (RWKV-4 or RWKV-7, told by its keys) with --tokenizer ("world"
    when not given). --random-model: the random World-vocabulary model (quick runs).
    --demo-generation 7: a random RWKV-7 model (there is no trained RWKV-7 demo model).
    Default: the demo model trained here on the corpus (avatario_tools.corpus.demo), trained
    on first use and cached under var/.
    """
    if model is not None:
        if demo_generation != 4:
            raise typer.BadParameter("--demo-generation chooses the demo model; --model names "
                                     "one (its generation is read from the file)",
                                     param_hint="--demo-generation")
        return model, tokenizer or "world"
    if demo_generation not in (4, 7):
        raise typer.BadParameter("4 (RWKV-4) or 7 (RWKV-7)", param_hint="--demo-generation")
    if tokenizer:
        raise typer.BadParameter("--tokenizer goes with --model (the demo and random models "
                                 "bring their own)", param_hint="--tokenizer")
    if demo_generation == 7:
        return _random_model7(var, console), "world"
    if random_model:
        return _random_model(var, console), "world"
    from avatario_tools.corpus.demo import ensure_demo_model

    demo = ensure_demo_model(var, progress=True, log=console.print)
    return demo.model, str(demo.tokenizer)


def _inference_env(model_given: bool) -> dict[str, dict[str, str]]:
    """Extra inference settings for the stack. The demo models (trained here in minutes, or
    random) are no judges of safety: the guard's model layer (layer 3) stays off for them;
    a model named with --model keeps the node's default (auto)."""
    if model_given:
        return {}
    return {"inference": {"AVATARIO_INFERENCE_SAFETY_MODEL_OPINION": "off"}}


async def _main(var: Path, base_port: int, metrics_base: int, model: Path | None, tokenizer: str,
                strategy: str, demo: bool, exit_after_demo: bool, sessions: int, weeks: int,
                log_level: str, verbose: bool, inference_replicas: int = 1,
                state_store_url: str | None = None, random_model: bool = False,
                demo_generation: int = 4) -> int:
    console = Console()
    var.mkdir(parents=True, exist_ok=True)
    sec = _secrets(var)
    extra_env = _inference_env(model is not None)
    model, tokenizer = _model(var, console, model, tokenizer, random_model, demo_generation)
    cfg = StackConfig(
        var=var, ports=consecutive_ports(base_port, inference_replicas),
        metrics_ports=consecutive_ports(metrics_base, inference_replicas),
        inference_replicas=inference_replicas, state_store_url=state_store_url or None,
        database_urls=StackConfig.sqlite(var), model=model,
        tokenizer=tokenizer, strategy=strategy, internal_token=sec["internal_token"],
        jwt_signing_keys=sec["jwt_signing_keys"], jwt_active_kid=sec["jwt_active_kid"],
        token_pepper=sec["token_pepper"], log_level=log_level, extra_env=extra_env,
    )
    sup = Supervisor(console, verbose=verbose)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rc = 0
    try:
        await start_stack(cfg, sup)
        gateway = cfg.target("gateway")
        if demo:
            from avatario_tools.devstack.demo import run_demo

            demo_task = asyncio.create_task(run_demo(gateway, console, sessions=sessions, weeks=weeks))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({demo_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if demo_task not in done:
                demo_task.cancel()
            else:
                stopper.cancel()
                demo_task.result()
        if not exit_after_demo and not stop.is_set():
            console.rule("[bold]stack is up")
            console.print(f"gateway: {gateway}   (try: .venv/bin/avatario --gateway {gateway} --help)")
            console.print("metrics: " + ", ".join(
                f"{n} http://127.0.0.1:{p}/metrics" for n, p in cfg.metrics_ports.items()))
            console.print("Ctrl-C stops everything.")
            while not stop.is_set():
                gone = sup.any_exited()
                if gone:
                    console.print(f"[red]{gone} exited unexpectedly[/]")
                    rc = 1
                    break
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except TimeoutError:
                    pass
    except Exception as exc:  # noqa: BLE001 - report and stop everything cleanly
        console.print(f"[bold red]devstack failed:[/] {exc}")
        rc = 1
    finally:
        console.print("stopping services ...")
        await sup.stop_all()
        console.print("[bold]stopped[/]")
    return rc


@app.command()
def run(
    var: Path = typer.Option(ROOT / "var", help="Where SQLite files, the demo model and local secrets live."),
    base_port: int = typer.Option(
        50051, help="gRPC ports: gateway, profile, analytics, inference (then the other "
                    "inference replicas) from here."),
    metrics_base_port: int = typer.Option(9101, help="Metrics ports, in the same order."),
    model: Path | None = typer.Option(
        None, envvar="AVATARIO_DEVSTACK_MODEL",
        help="An RWKV-4 .pth (e.g. a Raven 7B) or an RWKV-7 .pth (e.g. a G1 model; the "
             "generation is read from the file); default: the small demo model trained here on "
             "the corpus (first run: a few minutes, then cached in var/models/demo/)."),
    tokenizer: str = typer.Option(
        "", envvar="AVATARIO_DEVSTACK_TOKENIZER",
        help='With --model: its tokenizer JSON path (Raven: 20B_tokenizer.json) or "world" '
             '(the default).'),
    random_model: bool = typer.Option(
        False, "--random-model",
        help="Serve a small random model (World vocabulary) instead of the trained demo model: "
             "no training, replies are noise."),
    demo_generation: int = typer.Option(
        4, "--demo-generation", envvar="AVATARIO_DEVSTACK_DEMO_GENERATION",
        help="7: serve a small random RWKV-7 (G1-shaped) model instead of the RWKV-4 demo "
             "model (replies are noise); 4: the RWKV-4 demo model."),
    strategy: str = typer.Option("", envvar="AVATARIO_DEVSTACK_STRATEGY",
                                 help="rwkv strategy; empty = the planner decides."),
    demo: bool = typer.Option(True, help="Run the scripted demo through the gateway."),
    exit_after_demo: bool = typer.Option(False, help="Stop everything when the demo ends."),
    sessions: int = typer.Option(40, help="Game sessions the demo child plays."),
    weeks: int = typer.Option(8, help="Simulated weeks the sessions spread over."),
    log_level: str = typer.Option("INFO"),
    verbose: bool = typer.Option(False, help="Show debug logs of the services."),
    inference_replicas: int = typer.Option(
        1, min=1, max=16, envvar="AVATARIO_DEVSTACK_INFERENCE_REPLICAS",
        help="Inference processes (inference-1..N) behind the gateway, which routes each "
             "conversation to one of them."),
    state_store_url: str = typer.Option(
        "", envvar="AVATARIO_DEVSTACK_STATE_STORE_URL",
        help="Shared conversation-state tier of the inference replicas, e.g. "
             "redis://127.0.0.1:6379/0; empty: none (each replica caches only locally)."),
) -> None:
    raise typer.Exit(asyncio.run(_main(var, base_port, metrics_base_port, model, tokenizer, strategy,
                                       demo, exit_after_demo, sessions, weeks, log_level, verbose,
                                       inference_replicas, state_store_url, random_model,
                                       demo_generation)))


if __name__ == "__main__":
    app()
