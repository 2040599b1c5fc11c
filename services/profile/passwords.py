"""Parent passwords: argon2id hashes, a length policy and constant-time failure.

`verify()` checks against the stored hash, or (for an unknown email) against a
dummy hash made with the same parameters, so both failures cost the same time.

Hashing runs in worker threads (argon2-cffi releases the GIL) so the event loop
never blocks on it: a dedicated pool of `max_concurrency` threads, because each
argon2 call holds `memory_cost_kib` of memory while it runs (peak memory is
max_concurrency x memory_cost). At most `max_waiting` further calls queue for a
worker; past that a call is refused at once with ResourceExhausted (RESOURCE_
EXHAUSTED + RetryInfo) rather than queueing into its deadline.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common.errors import ResourceExhausted
from services.common.validation import Violations

T = TypeVar("T")

MIN_LEN = 10
MAX_LEN = 128


def check_policy(v: Violations, field: str, password: str) -> bool:
    """10..128 characters, not only whitespace. Adds a violation and returns False if not."""
    if not password:
        v.add(field, "is required")
        return False
    if len(password) < MIN_LEN:
        v.add(field, f"must be at least {MIN_LEN} characters")
        return False
    if len(password) > MAX_LEN:
        v.add(field, f"must be at most {MAX_LEN} characters")
        return False
    if not password.strip():
        v.add(field, "must not be only whitespace")
        return False
    return True


@dataclass(frozen=True)
class Verdict:
    ok: bool
    # A new hash to store when the stored one used older parameters.
    new_hash: str | None = None


class Passwords:
    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int,
                 max_concurrency: int = 2, max_waiting: int = 16,
                 retry_after_s: float = 1.0) -> None:
        if max_concurrency < 1 or max_waiting < 0 or retry_after_s <= 0:
            raise ValueError("need max_concurrency >= 1, max_waiting >= 0, retry_after_s > 0")
        self.hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism,
            type=Type.ID,
        )
        # Same parameters as real hashes, for unknown emails.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        self.max_concurrency = max_concurrency
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency,
                                            thread_name_prefix="argon2")
        # One slot per call running or queued in the pool. A slot is released when
        # the pool is done with the call (not when its caller gives up), so a
        # cancelled sign-in whose hash is still running keeps counting.
        self._slots = threading.BoundedSemaphore(max_concurrency + max_waiting)

    @classmethod
    def from_settings(cls, settings) -> Passwords:
        return cls(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
            max_concurrency=settings.argon2_max_concurrency,
            max_waiting=settings.argon2_max_waiting,
            retry_after_s=settings.argon2_retry_after_s,
        )

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> Verdict:
        """Check `password`; with stored_hash None (unknown account) spend the same
        work on the dummy hash and fail."""
        target = self._dummy_hash if stored_hash is None else stored_hash
        try:
            self.hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verdict(False)
        if stored_hash is None:
            return Verdict(False)
        if self.hasher.check_needs_rehash(stored_hash):
            return Verdict(True, self.hasher.hash(password))
        return Verdict(True)

    async def _run(self, fn: Callable[..., T], *args) -> T:
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted("too many sign-ins at once; retry shortly",
                                    retry_after_s=self.retry_after_s)
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        # Runs when the call finishes, fails or is cancelled before it started.
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    async def hash_async(self, password: str) -> str:
        return await self._run(self.hash, password)

    async def verify_async(self, stored_hash: str | None, password: str) -> Verdict:
        return await self._run(self.verify, stored_hash, password)

    async def close(self) -> None:
        """Server stop: drop queued calls and wait for the running ones (off the loop)."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
