"""The whole stack as real processes (the same launcher as `make run`), on SQLite
and on PostgreSQL, driven through the gateway's public API."""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from rich.console import Console

from avatario_tools.devstack.stack import StackConfig, free_ports, start_stack
from avatario_tools.devstack.supervisor import Supervisor
from tests.conftest import create_pg_database, drop_pg_database

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_world_model(tmp_path_factory) -> Path:
    from services.inference.checkpoint import build_random_checkpoint

    path = tmp_path_factory.mktemp("model") / "tiny-world.pth"
    build_random_checkpoint(path, n_layer=2, n_embd=32, vocab_size=65536, seed=3)
    return path


class RunningStack:
    def __init__(self, cfg: StackConfig, sup: Supervisor, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg, self.sup, self.loop = cfg, sup, loop

    @property
    def gateway(self) -> str:
        return self.cfg.target("gateway")

    def target(self, name: str) -> str:
        return self.cfg.target(name)

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.gateway)


def _launch(backend: str, var: Path, model: Path):
    urls = StackConfig.sqlite(var)
    created: list[str] = []
    if backend == "postgres":
        for name in list(urls):
            urls[name] = create_pg_database()
            created.append(urls[name])
    cfg = StackConfig(var=var, ports=free_ports(), metrics_ports=free_ports(), database_urls=urls,
                      model=model, tokenizer="world", strategy="cpu fp32", log_level="WARNING")
    return cfg, created


@contextmanager
def running_stack(cfg: StackConfig):
    """Migrate and start the four services of `cfg`; stop them on exit."""
    # The supervisor lives on its own loop in a thread, so it keeps draining the
    # services' output while the tests run on theirs.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro, timeout=400):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    sup = Supervisor(Console(stderr=True, width=200))
    try:
        call(start_stack(cfg, sup))
        yield RunningStack(cfg, sup, loop)
    finally:
        call(sup.stop_all())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory, tiny_world_model):
    """Start the four services once per test module and backend."""
    var = tmp_path_factory.mktemp(f"stack-{request.param}")
    cfg, created = _launch(request.param, var, tiny_world_model)
    try:
        with running_stack(cfg) as running:
            yield running
    finally:
        for url in created:
            drop_pg_database(url)
