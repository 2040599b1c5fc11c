"""services.common.tasks.BackgroundTask: start once, stop cancels and waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

from services.common.tasks import BackgroundTask
from services.common.timeutil import age_months


async def test_start_is_idempotent_and_stop_waits_for_the_loop_to_unwind():
    started, unwound = [], []

    async def loop() -> None:
        started.append(1)
        try:
            await asyncio.Event().wait()
        finally:
            unwound.append(1)

    task = BackgroundTask(loop, "test-loop")
    task.start()
    task.start()
    await asyncio.sleep(0)
    assert task.running and started == [1]
    await task.stop()
    assert not task.running and unwound == [1]
    await task.stop()  # a second stop is a no-op
    task.start()  # and it can start again
    await asyncio.sleep(0)
    assert started == [1, 1]
    await task.stop()


def test_age_months_from_the_birth_year_month():
    assert age_months(2020, 3, datetime(2026, 3, 1, tzinfo=UTC)) == 72
    assert age_months(2020, 3, date(2026, 2, 28)) == 71
    assert age_months(2026, 5, date(2026, 3, 1)) == -2  # callers clamp where they need to
