from __future__ import annotations

import pytest

from services.common.validation import Violations
from services.profile import passwords
from services.profile.passwords import Passwords


@pytest.fixture(scope="module")
def pw() -> Passwords:
    return Passwords(time_cost=1, memory_cost_kib=64, parallelism=1)


def test_hash_is_argon2id_and_verifies(pw):
    h = pw.hash("correct horse battery")
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h
    assert pw.verify(h, "correct horse battery").ok
    assert not pw.verify(h, "correct horse batterx").ok
    assert not pw.verify("not-a-hash", "whatever").ok


def test_unknown_account_verifies_against_a_dummy_hash(pw, monkeypatch):
    calls = []

    class Spy:
        def __init__(self, real):
            self.real = real

        def verify(self, hash_, password):
            calls.append(hash_)
            return self.real.verify(hash_, password)

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(pw, "hasher", Spy(pw.hasher))
    assert pw.verify(None, "correct horse battery") == passwords.Verdict(False)
    assert len(calls) == 1
    dummy = calls[0]
    assert dummy.startswith("$argon2id$") and "m=64,t=1,p=1" in dummy
    # The same work as for a real account: one verify with the same parameters.
    real_hash = pw.hash("x" * 12)
    pw.verify(real_hash, "y" * 12)
    assert len(calls) == 2 and calls[1].split("$")[3] == dummy.split("$")[3]


def test_rehash_when_parameters_change(pw):
    old = pw.hash("correct horse battery")
    stronger = Passwords(time_cost=2, memory_cost_kib=64, parallelism=1)
    verdict = stronger.verify(old, "correct horse battery")
    assert verdict.ok and verdict.new_hash and "t=2" in verdict.new_hash
    assert stronger.verify(verdict.new_hash, "correct horse battery") == passwords.Verdict(True)
    # A wrong password never yields a new hash.
    assert stronger.verify(old, "wrong password!!") == passwords.Verdict(False)


async def test_async_wrappers(pw):
    h = await pw.hash_async("correct horse battery")
    assert (await pw.verify_async(h, "correct horse battery")).ok


@pytest.mark.parametrize(("value", "ok"), [
    ("", False), ("123456789", False), ("1234567890", True), ("x" * 128, True),
    ("x" * 129, False), (" " * 10, False), ("pässwörd ü ñ", True),
])
def test_policy(value, ok):
    v = Violations()
    assert passwords.check_policy(v, "password", value) is ok
    assert (v.items[0][0] if v.items else None) == (None if ok else "password")
