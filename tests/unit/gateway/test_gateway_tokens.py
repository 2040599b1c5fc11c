"""Access tokens (JWT) and rotating refresh tokens, without a network: the
token store runs on a migrated SQLite file."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from services.common import migrations
from services.common.db import Database
from services.common.errors import Unauthenticated
from services.gateway.main import MIGRATIONS
from services.gateway.tokens import JwtCodec, RevocationView, TokenService

K1 = b"k1-secret-0123456789-0123456789-0123"
K2 = b"k2-secret-abcdefghij-abcdefghij-abcd"


def ids() -> tuple[str, str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())


def codec(keys=None, kid="k1", **kw) -> JwtCodec:
    base = dict(issuer="avatario-gateway", audience="avatario-mobile", ttl=timedelta(minutes=15),
                leeway_s=10)
    return JwtCodec(keys or {"k1": K1, "k2": K2}, kid, **(base | kw))


def rejected(c: JwtCodec, token: str, message: str | None = None) -> None:
    with pytest.raises(Unauthenticated) as info:
        c.verify(token)
    if message:
        assert message in info.value.message


def test_round_trip_carries_parent_family_and_sign_in():
    parent, family, sign_in = ids()
    token, exp = codec().issue(parent, family, sign_in)
    claims = codec().verify(token)
    assert (claims.parent_id, claims.family_id, claims.sign_in_id) == (parent, family, sign_in)
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    assert exp > datetime.now(UTC) + timedelta(minutes=14)


def test_expired_tokens_are_rejected_and_say_so():
    token, _ = codec().issue(*ids(), now=datetime.now(UTC) - timedelta(hours=1))
    rejected(codec(), token, "expired")


def test_leeway_tolerates_small_clock_skew():
    c = codec(ttl=timedelta(seconds=30))
    token, _ = c.issue(*ids(), now=datetime.now(UTC) - timedelta(seconds=35))
    assert c.verify(token)


def test_wrong_audience_and_issuer_are_rejected():
    token, _ = codec().issue(*ids())
    rejected(codec(audience="someone-else"), token)
    rejected(codec(issuer="another-issuer"), token)


def test_forged_signature_unknown_kid_and_other_algorithms_are_rejected():
    parent, family, sign_in = ids()
    good, _ = codec().issue(parent, family, sign_in)
    claims = jwt.decode(good, options={"verify_signature": False})
    rejected(codec(), jwt.encode(claims, b"x" * 40, algorithm="HS256", headers={"kid": "k1"}))
    rejected(codec(), jwt.encode(claims, K1, algorithm="HS256", headers={"kid": "k9"}))
    rejected(codec(), jwt.encode(claims, K1, algorithm="HS256"))  # no kid
    rejected(codec(), jwt.encode(claims, K1 * 2, algorithm="HS512", headers={"kid": "k1"}))
    rejected(codec(), jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"}))
    head, body, sig = good.split(".")
    rejected(codec(), f"{head}.{body}.{sig[:-4]}AAAA")
    rejected(codec(), "not-a-jwt")
    rejected(codec(), "a" * 5000)


def test_missing_or_malformed_claims_are_rejected():
    now = int(datetime.now(UTC).timestamp())
    base = {"iss": "avatario-gateway", "aud": "avatario-mobile", "sub": str(uuid.uuid4()),
            "fam": str(uuid.uuid4()), "sid": str(uuid.uuid4()), "jti": "j", "iat": now,
            "nbf": now, "exp": now + 600}
    assert codec().verify(jwt.encode(base, K1, algorithm="HS256", headers={"kid": "k1"}))
    for drop in ("exp", "sub", "fam", "sid", "jti", "nbf"):
        claims = {k: v for k, v in base.items() if k != drop}
        rejected(codec(), jwt.encode(claims, K1, algorithm="HS256", headers={"kid": "k1"}))
    bad = base | {"sub": "parent-1"}
    rejected(codec(), jwt.encode(bad, K1, algorithm="HS256", headers={"kid": "k1"}))
    future = base | {"nbf": now + 3600}
    rejected(codec(), jwt.encode(future, K1, algorithm="HS256", headers={"kid": "k1"}))


def test_rotation_with_two_kids():
    old, new = codec(kid="k1"), codec(kid="k2")
    t_old, _ = old.issue(*ids())
    t_new, _ = new.issue(*ids())
    assert jwt.get_unverified_header(t_new)["kid"] == "k2"
    for c in (old, new):
        assert c.verify(t_old) and c.verify(t_new)
    retired = codec(keys={"k2": K2}, kid="k2")
    rejected(retired, t_old)
    assert retired.verify(t_new)


def test_the_active_kid_must_be_configured():
    with pytest.raises(ValueError):
        codec(keys={"k2": K2}, kid="k1")


# -- refresh tokens --------------------------------------------------------------


@pytest.fixture
async def service(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS, url)
    db = Database(url, pool_size=2)
    c = codec()
    view = RevocationView(db, window=c.ttl, refresh_s=0.0)
    yield TokenService(db, c, refresh_ttl=timedelta(days=30), revocations=view)
    await db.dispose()


async def exists(parent_id: str, family_id: str) -> bool:
    return True


async def gone(parent_id: str, family_id: str) -> bool:
    return False


async def refresh_fails(service: TokenService, token: str, check=exists) -> None:
    with pytest.raises(Unauthenticated):
        await service.refresh(token, still_valid=check)


async def test_refresh_rotates_single_use(service):
    parent, family, _ = ids()
    pair = await service.sign_in(parent, family)
    nxt = await service.refresh(pair.refresh_token, still_valid=exists)
    assert (nxt.parent_id, nxt.family_id) == (parent, family)
    assert nxt.tokens.refresh_token != pair.refresh_token
    claims = await service.verify_access(nxt.tokens.access_token)
    assert claims.sign_in_id == (await service.verify_access(pair.access_token)).sign_in_id


async def test_reuse_revokes_every_descendant(service):
    parent, family, _ = ids()
    first = await service.sign_in(parent, family)
    second = (await service.refresh(first.refresh_token, still_valid=exists)).tokens
    third = (await service.refresh(second.refresh_token, still_valid=exists)).tokens
    await refresh_fails(service, first.refresh_token)  # reuse
    await refresh_fails(service, third.refresh_token)  # the newest descendant too
    for pair in (first, second, third):
        with pytest.raises(Unauthenticated):
            await service.verify_access(pair.access_token)
    other = await service.sign_in(parent, family)  # another sign-in is untouched
    assert await service.refresh(other.refresh_token, still_valid=exists)


async def test_concurrent_refreshes_of_one_token_count_as_reuse(service):
    pair = await service.sign_in(*ids()[:2])
    results = await asyncio.gather(
        *(service.refresh(pair.refresh_token, still_valid=exists) for _ in range(4)),
        return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) <= 1
    assert all(isinstance(r, Unauthenticated) for r in results if isinstance(r, BaseException))
    if winners:
        await refresh_fails(service, winners[0].tokens.refresh_token)


async def test_sign_out_password_change_and_family_erasure_revoke(service):
    parent, family, _ = ids()
    a = await service.sign_in(parent, family)
    claims = await service.verify_access(a.access_token)
    await service.sign_out(parent, claims.sign_in_id)
    await refresh_fails(service, a.refresh_token)
    b, c = await service.sign_in(parent, family), await service.sign_in(parent, family)
    assert len(await service.revoke_parent(parent, "password_changed")) == 2
    for pair in (b, c):
        await refresh_fails(service, pair.refresh_token)
    d = await service.sign_in(str(uuid.uuid4()), family)  # another parent of the family
    await service.revoke_family(family, "family_erased")
    await refresh_fails(service, d.refresh_token)


async def test_sign_out_ignores_someone_elses_refresh_token(service):
    me, other = await service.sign_in(*ids()[:2]), await service.sign_in(*ids()[:2])
    mine = await service.verify_access(me.access_token)
    await service.sign_out(mine.parent_id, mine.sign_in_id, other.refresh_token)
    assert await service.refresh(other.refresh_token, still_valid=exists)


async def test_a_parent_that_no_longer_exists_cannot_refresh(service):
    pair = await service.sign_in(*ids()[:2])
    await refresh_fails(service, pair.refresh_token, check=gone)
    await refresh_fails(service, pair.refresh_token)  # and the sign-in is revoked


async def test_expired_and_malformed_refresh_tokens(service):
    service.refresh_ttl = timedelta(seconds=-1)
    pair = await service.sign_in(*ids()[:2])
    await refresh_fails(service, pair.refresh_token)
    for bad in ("", "rt_", "rt_short", "xx_" + "a" * 43, pair.refresh_token + "x"):
        await refresh_fails(service, bad)
    assert await service.purge() >= 1


def test_verified_tokens_are_remembered_but_still_expire():
    import dataclasses

    c = codec()
    token, _ = c.issue(*ids())
    first = c.verify(token)
    assert c.verify(token) is first  # the second use skips parsing and the HMAC
    c._verified[token] = dataclasses.replace(
        first, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    rejected(c, token, "expired")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    rejected(c, forged)  # a different string is verified on its own
