"""Profile hardening through a real server on SQLite and PostgreSQL: a burst of
sign-ins past the argon2 pool is RESOURCE_EXHAUSTED with RetryInfo (never
INTERNAL), emails with control/format characters are INVALID_ARGUMENT on the
wire, and a failing statement's error carries no bound values."""

from __future__ import annotations

import asyncio
import threading
import traceback
from contextlib import asynccontextmanager

import grpc
import pytest
from sqlalchemy.exc import IntegrityError

from avatario.profile.v1 import profile_pb2 as pb
from avatario.profile.v1 import profile_pb2_grpc
from services.common.clients import internal_channel
from services.common.db import Database
from services.common.timeutil import utcnow
from services.profile.main import build_server
from services.profile.models import Parent, metadata
from services.profile.passwords import Passwords
from tests.helpers import retry_after, schema_diff
from tests.integration.profile.conftest import profile_settings
from tests.integration.profile.support import PASSWORD, fails, new_email, new_family, new_id

C = grpc.StatusCode


@asynccontextmanager
async def profile_server(url: str, **overrides):
    settings = profile_settings(url, **overrides)
    server, port = await build_server(settings, Database(url, pool_size=4))
    await server.start()
    await server.set_serving()
    channel = internal_channel(f"127.0.0.1:{port}", settings, caller="tests")
    try:
        yield profile_pb2_grpc.ProfileServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


@pytest.fixture
def argon2_gate(monkeypatch) -> threading.Event:
    """While clear, every password hash or verify of any Passwords waits in its
    worker thread (so a burst overlaps for sure, whatever the machine's speed)."""
    gate = threading.Event()
    gate.set()
    real_hash, real_verify = Passwords.hash, Passwords.verify

    def hash_(self, password):
        assert gate.wait(30)
        return real_hash(self, password)

    def verify(self, stored, password):
        assert gate.wait(30)
        return real_verify(self, stored, password)

    monkeypatch.setattr(Passwords, "hash", hash_)
    monkeypatch.setattr(Passwords, "verify", verify)
    yield gate
    gate.set()  # never leave a worker blocked


async def test_a_sign_in_burst_past_the_argon2_pool_is_resource_exhausted_with_retry_info(
        profile_db_url, argon2_gate):
    async with profile_server(profile_db_url, argon2_max_concurrency=1, argon2_max_waiting=2,
                              argon2_retry_after_s=3) as stub:
        email = new_email()
        await stub.CreateParent(pb.CreateParentRequest(
            email=email, password=PASSWORD, display_name="Burst"))
        argon2_gate.clear()
        calls = [stub.CreateParent(pb.CreateParentRequest(
            email=new_email(), password=PASSWORD, display_name="Burst")) for _ in range(6)]
        calls += [stub.Authenticate(pb.AuthenticateRequest(email=email, password=PASSWORD))
                  for _ in range(6)]
        tasks = [asyncio.ensure_future(c) for c in calls]
        try:
            # 1 hashing + 2 queued are admitted and wait on the gate; 9 come back.
            async with asyncio.timeout(30):
                while sum(t.done() for t in tasks) < 9:
                    await asyncio.wait([t for t in tasks if not t.done()],
                                       return_when=asyncio.FIRST_COMPLETED)
            refused = [t for t in tasks if t.done()]
            for t in refused:
                err = t.exception()
                assert isinstance(err, grpc.RpcError), err
                assert err.code() == C.RESOURCE_EXHAUSTED, (err.code(), err.details())
                assert retry_after(err) == 3
            assert {tasks.index(t) < 6 for t in refused} == {True, False}  # both methods
        finally:
            argon2_gate.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        admitted = [r for r in done if not isinstance(r, grpc.RpcError)]
        assert len(admitted) == 3
        # Once the burst is over, sign-in works again.
        resp = await stub.Authenticate(pb.AuthenticateRequest(email=email, password=PASSWORD))
        assert resp.parent.email == email.casefold()


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x9f", "\u200b", "\u202e",
                                  "\ufeff", "\u00ad", "\u2060"],
                         ids=lambda c: f"U+{ord(c):04X}")
async def test_emails_with_control_or_format_characters_are_invalid_on_the_wire(profile, char):
    fam = await new_family(profile, scopes=(), child=False)
    local, domain = fam.email.split("@")
    spoof = f"{local}{char}@{domain}"
    await fails(profile.stub.CreateParent(pb.CreateParentRequest(
        email=spoof, password=PASSWORD, display_name="Spoof")), C.INVALID_ARGUMENT, "email")
    await fails(profile.stub.Authenticate(pb.AuthenticateRequest(
        email=spoof, password=PASSWORD)), C.INVALID_ARGUMENT, "email")
    await fails(profile.stub.Authenticate(pb.AuthenticateRequest(
        email=f"{char}{fam.email}", password=PASSWORD)), C.INVALID_ARGUMENT, "email")


async def test_a_failing_statement_does_not_carry_its_bound_values(profile):
    fam = await new_family(profile, scopes=(), child=False)
    now = utcnow()
    secret_hash = "$argon2id$v=19$m=256,t=1,p=1$c2VjcmV0LXNhbHQ$c2VjcmV0LWhhc2gtdmFsdWU"
    with pytest.raises(IntegrityError) as info:
        async with profile.db.transaction() as session:
            session.add(Parent(  # the email is taken: a unique violation
                id=new_id(), family_id=fam.family_id, email=fam.email.casefold(),
                display_name="Hidden Display Name", password_hash=secret_hash,
                created_at=now, password_changed_at=now))
    logged = "".join(traceback.format_exception(info.value))  # what a traceback log holds
    assert "INSERT INTO parents" in logged
    for value in ("Hidden Display Name", secret_hash, "c2VjcmV0"):
        assert value not in logged
    assert fam.email.casefold() not in logged


async def test_the_migrated_schema_matches_the_models(profile_db_url):
    assert await schema_diff(profile_db_url, metadata) == []
