"""Parent tokens: short-lived signed access tokens and rotating refresh tokens.

Access token: a JWT (HS256) with iss, aud, sub (parent id), fam (the household's
family id), sid (the sign-in it descends from), jti, iat, nbf, exp and a `kid`
header. Any configured kid verifies, so signing keys rotate without logging
anyone out. Access tokens of a revoked sign-in stop working within
`revocation_refresh_s` (this instance: at once), see `RevocationView`.

Refresh token: "rt_" + 256 random bits, stored as a SHA-256 hash. Each one works
once: exchanging it marks it used and issues a new pair in the same sign-in.
Presenting a used one again (a stolen token racing its owner) revokes the whole
sign-in: every token descended from it. Two concurrent refreshes with one token
count as reuse too (standard rotation semantics; clients serialize refreshes).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Database
from services.common.errors import Reason, Unauthenticated
from services.common.timeutil import utcnow
from services.gateway.models import SignIn
from services.gateway.repo import tokens as repo

log = structlog.get_logger("avatario.gateway.tokens")

ALGORITHM = "HS256"
MAX_TOKEN_LEN = 4096
REFRESH_PREFIX = "rt_"
_REFRESH_RE = re.compile(r"^rt_[A-Za-z0-9_-]{43}$")
_REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


def _uuid_str(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessClaims:
    parent_id: str
    family_id: str
    sign_in_id: str
    jti: str
    expires_at: datetime


class JwtCodec:
    """Issues and verifies access tokens."""

    def __init__(
        self, keys: dict[str, bytes], active_kid: str, *, issuer: str, audience: str,
        ttl: timedelta, leeway_s: int = 10,
    ) -> None:
        if active_kid not in keys:
            raise ValueError("active kid is not among the keys")
        self.keys = dict(keys)
        self.active_kid = active_kid
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway_s = leeway_s
        # Tokens already verified (signature, issuer, audience, claims), so a
        # client's repeated calls skip the parsing and the HMAC; expiry is still
        # checked on every use. Keys are fixed for the life of the process.
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()
        self._verified_max = 10_000

    def issue(self, parent_id: str, family_id: str, sign_in_id: str, *,
              now: datetime | None = None) -> tuple[str, datetime]:
        now = now or utcnow()
        exp = now + self.ttl
        claims = {
            "iss": self.issuer, "aud": self.audience, "sub": parent_id, "fam": family_id,
            "sid": sign_in_id, "jti": uuid.uuid4().hex, "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()), "exp": int(exp.timestamp()),
        }
        token = jwt.encode(claims, self.keys[self.active_kid], algorithm=ALGORITHM,
                           headers={"kid": self.active_kid})
        return token, exp.replace(microsecond=0)

    def verify(self, token: str) -> AccessClaims:
        """The token's claims, or Unauthenticated (never says which check failed
        beyond "expired", which tells a client to refresh)."""
        if not token or len(token) > MAX_TOKEN_LEN:
            raise Unauthenticated("invalid access token", reason=Reason.ACCESS_TOKEN_INVALID)
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at.timestamp() + self.leeway_s > time.time():
                return known
            del self._verified[token]
            raise Unauthenticated("access token expired", reason=Reason.ACCESS_TOKEN_EXPIRED)
        claims = self._verify(token)
        self._verified[token] = claims
        if len(self._verified) > self._verified_max:
            self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            key = self.keys.get(kid) if isinstance(kid, str) else None
            if key is None or header.get("alg") != ALGORITHM:
                raise Unauthenticated("invalid access token", reason=Reason.ACCESS_TOKEN_INVALID)
            claims = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_s, options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("access token expired", reason=Reason.ACCESS_TOKEN_EXPIRED) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid access token", reason=Reason.ACCESS_TOKEN_INVALID) from exc
        if not all(_uuid_str(claims.get(k)) for k in ("sub", "fam", "sid")):
            raise Unauthenticated("invalid access token", reason=Reason.ACCESS_TOKEN_INVALID)
        return AccessClaims(
            parent_id=claims["sub"], family_id=claims["fam"], sign_in_id=claims["sid"],
            jti=str(claims["jti"]), expires_at=datetime.fromtimestamp(claims["exp"], tz=UTC),
        )


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


@dataclass(frozen=True)
class Refreshed:
    tokens: TokenPair
    parent_id: str
    family_id: str


def hash_refresh(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


class RevocationView:
    """The ids of sign-ins revoked recently enough that their access tokens could
    still be unexpired. Revocations on this instance apply at once; others are
    read from the database at most every `refresh_s` seconds. If the database is
    unreachable the last view is kept (logged): a revoked sign-in's access tokens
    then live until they expire, at most access_ttl."""

    def __init__(self, db: Database, *, window: timedelta, refresh_s: float,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.window = window
        self.refresh_s = refresh_s
        self.clock = clock
        self._revoked: set[str] = set()
        self._local: dict[str, float] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    def add(self, sign_in_ids: list[str]) -> None:
        stamp = time.monotonic()
        for sid in sign_in_ids:
            self._revoked.add(sid)
            self._local[sid] = stamp

    async def is_revoked(self, sign_in_id: str) -> bool:
        if time.monotonic() - self._loaded_at >= self.refresh_s and not self._lock.locked():
            async with self._lock:
                await self._reload()
        return sign_in_id in self._revoked

    async def _reload(self) -> None:
        started = time.monotonic()
        try:
            async with self.db.session() as session:
                ids = await repo.revoked_since(session, self.clock() - self.window)
        except Exception as exc:  # noqa: BLE001 - keep serving with the last view
            log.warning("revocations.reload_failed", error=type(exc).__name__)
            self._loaded_at = started
            return
        keep = {s for s, t in self._local.items() if t >= started - self.window.total_seconds()}
        self._local = {s: self._local[s] for s in keep}
        self._revoked = set(ids) | keep
        self._loaded_at = started


class TokenService:
    def __init__(self, db: Database, codec: JwtCodec, *, refresh_ttl: timedelta,
                 revocations: RevocationView, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.codec = codec
        self.refresh_ttl = refresh_ttl
        self.revocations = revocations
        self.clock = clock

    def _pair(self, session: AsyncSession, sign_in: SignIn, now: datetime) -> TokenPair:
        refresh = new_refresh_token()
        expires = now + self.refresh_ttl
        repo.add_refresh(session, sign_in.id, hash_refresh(refresh), now, expires)
        access, access_exp = self.codec.issue(sign_in.parent_id, sign_in.family_id, sign_in.id,
                                              now=now)
        return TokenPair(access, access_exp, refresh, expires.replace(microsecond=0))

    async def sign_in(self, parent_id: str, family_id: str) -> TokenPair:
        """A new sign-in (token family) with its first pair."""
        now = self.clock()
        async with self.db.transaction() as session:
            sign_in = await repo.add_sign_in(session, parent_id, family_id, now)
            return self._pair(session, sign_in, now)

    async def verify_access(self, token: str) -> AccessClaims:
        claims = self.codec.verify(token)
        if await self.revocations.is_revoked(claims.sign_in_id):
            raise Unauthenticated("access token revoked", reason=Reason.SIGN_IN_REVOKED)
        return claims

    async def refresh(
        self, refresh_token: str, *, still_valid: Callable[[str, str], Awaitable[bool]],
    ) -> Refreshed:
        """Exchange a refresh token for a new pair.

        `still_valid(parent_id, family_id)` asks profile whether the parent still
        exists; it runs before the token is spent, so a profile outage leaves the
        token usable for a retry.
        """
        if not _REFRESH_RE.fullmatch(refresh_token or ""):
            raise Unauthenticated("invalid refresh token", reason=Reason.REFRESH_TOKEN_INVALID)
        token_hash = hash_refresh(refresh_token)
        now = self.clock()
        async with self.db.session() as session:
            found = await repo.find_refresh(session, token_hash)
        if found is None:
            raise Unauthenticated("invalid refresh token", reason=Reason.REFRESH_TOKEN_INVALID)
        token, sign_in = found
        if sign_in.revoked_at is not None or token.expires_at <= now:
            raise Unauthenticated("refresh token expired or revoked", reason=Reason.REFRESH_TOKEN_EXPIRED)
        if token.used_at is not None:
            await self._revoke_reused(sign_in.id)
        if not await still_valid(sign_in.parent_id, sign_in.family_id):
            await self.revoke_sign_in(sign_in.id, "parent_gone")
            raise Unauthenticated("refresh token expired or revoked", reason=Reason.REFRESH_TOKEN_EXPIRED)
        async with self.db.transaction() as session:
            claimed = await repo.claim_refresh(session, token.id, now)
            live = await repo.live_sign_in(session, sign_in.id)
            if claimed and live is not None:
                pair = self._pair(session, live, now)
                return Refreshed(pair, live.parent_id, live.family_id)
        # Lost a race with another exchange of the same token, or revoked meanwhile.
        await self._revoke_reused(sign_in.id)
        raise AssertionError("unreachable")

    async def _revoke_reused(self, sign_in_id: str) -> None:
        log.warning("refresh_token.reuse_detected", sign_in_id=sign_in_id)
        await self.revoke_sign_in(sign_in_id, "reuse_detected")
        raise Unauthenticated("refresh token already used; the sign-in was revoked",
                              reason=Reason.REFRESH_TOKEN_REUSED)

    async def _revoke(self, where, reason: str) -> list[str]:
        async with self.db.transaction() as session:
            ids = await repo.revoke_sign_ins(session, where, reason, self.clock())
        self.revocations.add(ids)
        return ids

    async def revoke_sign_in(self, sign_in_id: str, reason: str) -> list[str]:
        return await self._revoke(repo.sign_in_is(sign_in_id), reason)

    async def sign_out(self, parent_id: str, sign_in_id: str, refresh_token: str = "") -> None:
        """Revoke the caller's sign-in, and the refresh token's if it is the caller's."""
        ids = [sign_in_id]
        if refresh_token and _REFRESH_RE.fullmatch(refresh_token):
            async with self.db.session() as session:
                found = await repo.find_refresh(session, hash_refresh(refresh_token))
            if found is not None and found[1].parent_id == parent_id:
                ids.append(found[1].id)
        await self._revoke(repo.parents_sign_ins(parent_id, among=ids), "sign_out")

    async def revoke_parent(self, parent_id: str, reason: str) -> list[str]:
        return await self._revoke(repo.parents_sign_ins(parent_id), reason)

    async def revoke_family(self, family_id: str, reason: str) -> list[str]:
        return await self._revoke(repo.family_sign_ins(family_id), reason)

    async def purge(self) -> int:
        async with self.db.transaction() as session:
            return await repo.purge(session, self.clock(), self.codec.ttl + timedelta(hours=1))
