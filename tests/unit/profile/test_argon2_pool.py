"""The argon2 pool: at most max_concurrency hashes run at once (each holds
memory_cost of memory), max_waiting more queue, the rest are refused at once with
ResourceExhausted and a retry delay. Concurrency is measured inside the hasher,
never by timing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.common.errors import ResourceExhausted
from services.profile.passwords import Passwords


class GatedHasher:
    """Wraps the real PasswordHasher: every hash/verify blocks until `gate` opens
    and records how many run at the same moment."""

    def __init__(self, real) -> None:
        self.real = real
        self.gate = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.active = 0
        self.peak = 0
        self.calls = 0

    def _gated(self, fn, *args):
        with self._lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
            self._changed.notify_all()
        try:
            assert self.gate.wait(30), "test never opened the gate"
            return fn(*args)
        finally:
            with self._lock:
                self.active -= 1
                self._changed.notify_all()

    def hash(self, password):
        return self._gated(self.real.hash, password)

    def verify(self, hash_, password):
        return self._gated(self.real.verify, hash_, password)

    def __getattr__(self, name):
        return getattr(self.real, name)

    async def until_active(self, n: int) -> None:
        def wait() -> None:
            with self._changed:
                assert self._changed.wait_for(lambda: self.active == n, 30), self.active
        await asyncio.to_thread(wait)


def gated(**kw) -> tuple[Passwords, GatedHasher]:
    pw = Passwords(time_cost=1, memory_cost_kib=64, parallelism=1, **kw)
    pw.hasher = spy = GatedHasher(pw.hasher)
    return pw, spy


async def settle(tasks) -> tuple[list, list[BaseException]]:
    done = await asyncio.gather(*tasks, return_exceptions=True)
    return ([r for r in done if not isinstance(r, BaseException)],
            [r for r in done if isinstance(r, BaseException)])


async def test_burst_runs_at_most_max_concurrency_and_refuses_past_the_queue():
    pw, spy = gated(max_concurrency=2, max_waiting=3, retry_after_s=0.75)
    stored = pw.hasher.real.hash("a stored password")
    calls = [pw.hash_async(f"password number {i}") for i in range(6)]
    calls += [pw.verify_async(stored, "a stored password") for _ in range(6)]
    tasks = [asyncio.ensure_future(c) for c in calls]
    await asyncio.sleep(0)  # every call has been admitted or refused by now
    refused = [t for t in tasks if t.done()]
    assert len(refused) == 12 - (2 + 3)
    for t in refused:
        exc = t.exception()
        assert isinstance(exc, ResourceExhausted) and exc.retry_after_s == 0.75
    await spy.until_active(2)
    spy.gate.set()
    ok, failed = await settle(tasks)
    assert len(ok) == 5 and all(isinstance(e, ResourceExhausted) for e in failed)
    assert spy.peak == 2 and spy.calls == 5

    # Slots are back: the next burst of the same size is admitted whole.
    ok, failed = await settle([pw.hash_async(f"again {i}") for i in range(5)])
    assert len(ok) == 5 and not failed and spy.peak == 2


async def test_default_pool_is_small():
    pw, spy = gated()
    assert (pw.max_concurrency, pw.max_waiting) == (2, 16)
    tasks = [asyncio.ensure_future(pw.hash_async(f"pw {i}")) for i in range(40)]
    await asyncio.sleep(0)
    assert sum(t.done() for t in tasks) == 40 - 18
    await spy.until_active(2)
    spy.gate.set()
    ok, _ = await settle(tasks)
    assert len(ok) == 18 and spy.peak == 2


async def test_a_cancelled_call_frees_its_slot_only_when_the_pool_is_done_with_it():
    pw, spy = gated(max_concurrency=1, max_waiting=1)
    running = asyncio.ensure_future(pw.hash_async("first password"))
    queued = asyncio.ensure_future(pw.hash_async("second password"))
    await spy.until_active(1)
    with pytest.raises(ResourceExhausted):
        await pw.hash_async("third password")

    # A queued call that is given up never runs and frees its slot at once.
    queued.cancel()
    await settle([queued])
    third = asyncio.ensure_future(pw.hash_async("third password"))
    await asyncio.sleep(0)
    assert not third.done()

    # A running one keeps its slot (and its memory) until the hash ends.
    running.cancel()
    await settle([running])
    with pytest.raises(ResourceExhausted):
        await pw.hash_async("fourth password")
    spy.gate.set()
    assert (await third).startswith("$argon2id$")
    assert spy.calls == 2 and spy.peak == 1


async def test_close_drains_the_pool():
    pw, spy = gated(max_concurrency=1, max_waiting=2)
    running = asyncio.ensure_future(pw.hash_async("first password"))
    queued = asyncio.ensure_future(pw.hash_async("second password"))
    await spy.until_active(1)
    closing = asyncio.ensure_future(pw.close())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(queued, 30)  # dropped by the shutdown, never started
    assert not closing.done()  # still waiting for the running hash
    spy.gate.set()
    await closing
    assert (await running).startswith("$argon2id$")
    assert spy.calls == 1
    with pytest.raises(RuntimeError):
        await pw.hash_async("after close")


def test_bad_pool_sizes_are_rejected():
    for kw in ({"max_concurrency": 0}, {"max_waiting": -1}, {"retry_after_s": 0}):
        with pytest.raises(ValueError):
            Passwords(time_cost=1, memory_cost_kib=64, parallelism=1, **kw)
