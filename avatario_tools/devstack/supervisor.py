"""Supervise local service processes: prefixed logs, health-gated start, clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

from services.common.healthcheck import wait_serving

COLORS = ["cyan", "magenta", "green", "yellow", "blue"]


@dataclass
class ProcessSpec:
    name: str
    args: list[str]
    env: dict[str, str]
    grpc_target: str | None = None
    ready_timeout_s: float = 120.0


@dataclass
class Supervisor:
    console: Console
    verbose: bool = False
    # Called with (process name, line) for every output line, debug ones included
    # (e.g. the e2e log scan collects every service's logs through it).
    on_line: Callable[[str, str], None] | None = None
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    _pumps: list[asyncio.Task] = field(default_factory=list)

    async def run_once(self, spec: ProcessSpec) -> None:
        """Run a one-shot command (e.g. migrations) to completion; fail loudly."""
        proc = await self._spawn(spec)
        pump = self._pumps[-1]  # this process's output pump, not the servers' ones
        rc = await proc.wait()
        await pump
        self._pumps.remove(pump)
        self.procs.pop(spec.name, None)
        if rc != 0:
            raise RuntimeError(f"{spec.name} failed with exit code {rc}")

    async def start(self, spec: ProcessSpec) -> None:
        """Start a server and wait until its health check answers SERVING."""
        proc = await self._spawn(spec)
        if spec.grpc_target is None:
            return
        ready = asyncio.create_task(wait_serving(spec.grpc_target, timeout=spec.ready_timeout_s))
        died = asyncio.create_task(proc.wait())
        done, _ = await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        if died in done:
            ready.cancel()
            raise RuntimeError(f"{spec.name} exited with code {proc.returncode} while starting")
        died.cancel()
        if not ready.result():
            raise RuntimeError(f"{spec.name} did not become SERVING within {spec.ready_timeout_s}s")
        self.console.print(f"[bold green]✓[/] {spec.name} serving on {spec.grpc_target}")

    async def _spawn(self, spec: ProcessSpec) -> asyncio.subprocess.Process:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            *spec.args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        self.procs[spec.name] = proc
        color = COLORS[len(self.procs) % len(COLORS)]
        self._pumps.append(asyncio.create_task(self._pump(spec.name, color, proc)))
        return proc

    async def _pump(self, name: str, color: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if self.on_line is not None:
                self.on_line(name, line)
            if not self.verbose and '"level": "debug"' in line:
                continue
            prefix = Text(f"{name:>10} │ ", style=color)
            self.console.print(prefix + Text(line), soft_wrap=True, highlight=False)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one server (fault tests: SIGKILL, SIGTERM); `start` its spec
        again once it has exited to bring it back."""
        self.procs[name].send_signal(sig)

    async def wait_exit(self, name: str, timeout: float) -> int:
        """Wait for one server to exit; its exit code (-N: ended by signal N)."""
        return await asyncio.wait_for(self.procs[name].wait(), timeout)

    def any_exited(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.returncode is not None:
                return name
        return None

    async def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM every server (they drain), then SIGKILL stragglers."""
        for proc in reversed(list(self.procs.values())):
            if proc.returncode is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for name, proc in self.procs.items():
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                self.console.print(f"[red]{name} did not stop in {timeout}s; killing[/]")
                proc.kill()
                await proc.wait()
        for pump in self._pumps:
            pump.cancel()
        self.procs.clear()


def python() -> str:
    return sys.executable
