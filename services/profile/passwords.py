"""Parent passwords: argon2id hashes, a length policy and constant-time failure.

`check()` verifies against the stored hash, or (for an unknown email) against a
dummy hash made with the same parameters, so both failures cost the same time.
Hashing runs in a worker thread (argon2-cffi releases the GIL) so the event
loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common.validation import Violations

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
    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int) -> None:
        self.hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism,
            type=Type.ID,
        )
        # Same parameters as real hashes, for unknown emails.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def from_settings(cls, settings) -> Passwords:
        return cls(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
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

    async def hash_async(self, password: str) -> str:
        return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, stored_hash: str | None, password: str) -> Verdict:
        return await asyncio.to_thread(self.verify, stored_hash, password)
