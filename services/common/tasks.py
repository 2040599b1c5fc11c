"""One background task per owner: start it once, stop it by cancelling and awaiting.

Servers run a few long-lived loops beside the RPCs (the XP outbox, the norms
keeper). Each owner holds a `BackgroundTask`; `start()` is idempotent and
`stop()` cancels the loop and waits until it has unwound, so shutdown never
leaves a task writing to a closed database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundTask:
    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self.name = name
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
