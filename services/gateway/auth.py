"""Who is calling, and may they call this RPC: the one place that decides.

Every public RPC has a row in POLICY (a test checks that none is missing, and
an RPC without a row is denied). `guard()` wraps a servicer so that each method
first runs `Gate.admit`: read "authorization: Bearer <token>", authenticate
(parent access JWT, or an opaque "dev_..." device token checked by profile),
check the policy row, apply the rate limit, and hand the principal to the
method as a third argument. Family scoping (ids of other families answer
NOT_FOUND) is done by the owning services, which get the principal's family id
on every call; a device may name only its own child (anything else:
PERMISSION_DENIED, whether or not the id exists).

Device tokens: a positive answer from profile is cached for
`device_cache_ttl_s` (5 s by default, at most 10) keyed by the token's hash.
RevokeDevice, WithdrawConsent and EraseFamily through this gateway evict at once;
a revocation or withdrawal made through another replica takes effect here within
the TTL. Negative answers are never cached.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import grpc
import structlog
from prometheus_client import Counter

from avatario.gateway.v1 import gateway_pb2
from avatario.profile.v1 import profile_pb2
from services.common.errors import (
    InvalidArgument,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
)
from services.common.validation import normalize_email
from services.gateway.cache import TtlCache
from services.gateway.clients.backends import Backend
from services.gateway.ratelimit import Limit, RateLimits
from services.gateway.tokens import TokenService

log = structlog.get_logger("avatario.gateway.auth")

DEVICE_TOKEN_PREFIX = "dev_"
MAX_AUTHORIZATION_LEN = 4096
MAX_DEVICE_TOKEN_LEN = 128
MAX_FORWARDED_FOR_LEN = 2048
IPV6_CLIENT_PREFIX = 64
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")


# -- principals ----------------------------------------------------------------------


@dataclass(frozen=True)
class Anonymous:
    peer: str
    kind = "anonymous"


@dataclass(frozen=True)
class ParentPrincipal:
    parent_id: str
    family_id: str
    sign_in_id: str = ""
    kind = "parent"

    @property
    def key(self) -> str:
        return f"parent:{self.parent_id}"


@dataclass(frozen=True)
class ChildDevicePrincipal:
    device_id: str
    child_id: str
    family_id: str
    kind = "device"

    @property
    def key(self) -> str:
        return f"device:{self.device_id}"


Principal = Anonymous | ParentPrincipal | ChildDevicePrincipal


# -- the policy table ----------------------------------------------------------------

ANON, PARENT, DEVICE = "anonymous", "parent", "device"


@dataclass(frozen=True)
class Rule:
    allowed: frozenset[str]
    # Rate limit: "principal" (per parent/device), "credentials" (per email and
    # client address, stricter) or "peer" (other anonymous calls; per client address).
    limit: str = "principal"
    # The call checks a password: also the strict per-account limit (per normalized
    # email for SignIn, per parent for the others), whatever the client's address.
    checks_password: bool = False


_P = Rule(frozenset({PARENT}))
_P_PASSWORD = Rule(frozenset({PARENT}), checks_password=True)
_PD = Rule(frozenset({PARENT, DEVICE}))
_SVC = gateway_pb2.DESCRIPTOR.package

POLICY: dict[str, Rule] = {
    f"/{_SVC}.{name}": rule for name, rule in {
        "AuthService/SignUp": Rule(frozenset({ANON}), "credentials"),
        "AuthService/SignIn": Rule(frozenset({ANON}), "credentials", checks_password=True),
        "AuthService/RefreshTokens": Rule(frozenset({ANON}), "peer"),
        "AuthService/SignOut": _P,
        "AuthService/ChangePassword": _P_PASSWORD,
        "FamilyService/GetAccount": _P,
        "FamilyService/RecordConsent": _P,
        "FamilyService/WithdrawConsent": _P,
        "FamilyService/ListConsents": _P,
        "FamilyService/CreateChild": _P,
        "FamilyService/GetChild": _P,
        "FamilyService/ListChildren": _P,
        "FamilyService/UpdateChild": _P,
        "FamilyService/ListAuditEvents": _P,
        # Several parents: any parent of the family; what only the owner may do
        # (remove another parent, hand ownership on, erase the family) profile
        # decides from the caller's role, which changes without new tokens.
        "FamilyService/CreateFamilyInvite": _P,
        "FamilyService/JoinFamily": _P,
        "FamilyService/ListParents": _P,
        "FamilyService/RemoveParent": _P,
        "FamilyService/TransferOwnership": _P_PASSWORD,
        "AvatarService/ListAvatarItems": _PD,
        "AvatarService/GetAvatar": _PD,
        "AvatarService/CustomizeAvatar": _PD,
        "DeviceService/CreatePairingCode": _P,
        "DeviceService/PairDevice": Rule(frozenset({ANON}), "peer"),
        "DeviceService/ListDevices": _P,
        "DeviceService/RevokeDevice": _P,
        "PlayService/ListGames": _PD,
        "PlayService/SubmitGameSession": _PD,
        "PlayService/SubmitMoodCheckIn": _PD,
        "ReportService/GetChildReport": _P,
        "ReportService/ListFlags": _P,
        "ReportService/ListTips": _P,
        "ChatService/CreateConversation": _P,
        "ChatService/GetConversation": _P,
        "ChatService/ListConversations": _P,
        "ChatService/ListMessages": _P,
        "ChatService/Chat": _P,
        "ChatService/UpdateConversation": _P,
        "PrivacyService/ExportFamilyData": _P,
        "PrivacyService/EraseFamily": _P_PASSWORD,
        "PrivacyService/DeleteChild": _P_PASSWORD,
        "PrivacyService/StreamFamilyExport": _P,
    }.items()
}


def own_child(who: Principal, child_id: str) -> str:
    """The child a call acts on: a device's own child (it may leave the id empty;
    any other id is PERMISSION_DENIED), or the id a parent named."""
    if isinstance(who, ChildDevicePrincipal):
        if child_id and child_id != who.child_id:
            raise PermissionDenied("a child device may act only for its own child")
        return who.child_id
    return child_id


# -- authentication ------------------------------------------------------------------


def bearer_token(metadata) -> str:
    values = [v for k, v in metadata or () if k == "authorization"]
    if not values:
        raise Unauthenticated("missing authorization metadata (Bearer token)",
                              reason=Reason.CREDENTIALS_MISSING)
    value = values[0]
    if len(values) > 1 or not isinstance(value, str) or len(value) > MAX_AUTHORIZATION_LEN:
        raise Unauthenticated("malformed authorization metadata", reason=Reason.CREDENTIALS_MISSING)
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthenticated("malformed authorization metadata; expected 'Bearer <token>'",
                              reason=Reason.CREDENTIALS_MISSING)
    return token


# -- client addresses ----------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_ip(peer: str | None) -> IPAddress | None:
    """The address in a grpc peer string ("ipv4:1.2.3.4:5678", "ipv6:[2001:db8::1]:5678");
    None for anything else ("unix:...", empty)."""
    kind, _, rest = (peer or "").partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    return _parse_ip(unquote(rest), with_port=True)


def _parse_ip(text: str, *, with_port: bool = False) -> IPAddress | None:
    text = text.strip()
    candidates = [text]
    if text.startswith("["):  # [v6]:port or [v6]
        candidates = [text[1:text.find("]")]] if "]" in text else []
    elif with_port or text.count(":") == 1:  # v4:port (also seen in X-Forwarded-For)
        candidates.append(text.rsplit(":", 1)[0])
    for c in candidates:
        try:
            ip = ipaddress.ip_address(c)
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip
    return None


def client_group(ip: IPAddress) -> str:
    """The rate-limit key of an address: IPv4 as is, IPv6 by its /64 (one subscriber
    usually holds a whole /64, so per-address keys would not limit anyone)."""
    if isinstance(ip, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((int(ip) >> (128 - IPV6_CLIENT_PREFIX)
                                     << (128 - IPV6_CLIENT_PREFIX), IPV6_CLIENT_PREFIX))
        return str(net)
    return str(ip)


def forwarded_for(metadata: Iterable[tuple[str, Any]] | None) -> list[IPAddress] | None:
    """The X-Forwarded-For chain (left: the original client), or None when absent or
    malformed in any part (a header that cannot be read entirely is not trusted)."""
    values = [v for k, v in metadata or () if k == "x-forwarded-for"]
    if not values or not all(isinstance(v, str) for v in values):
        return None
    joined = ",".join(values)
    if len(joined) > MAX_FORWARDED_FOR_LEN:
        return None
    chain = [_parse_ip(part) for part in joined.split(",")]
    if not chain or any(ip is None for ip in chain):
        return None
    return chain  # type: ignore[return-value]


@dataclass(frozen=True)
class ClientAddresses:
    """Who the client is, as far as rate limits go. X-Forwarded-For counts only when the
    direct peer is one of `trusted_proxies`; then the right-most address that is not a
    trusted proxy is the client (addresses further left can be forged by the client)."""

    trusted_proxies: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, networks: Sequence[IPNetwork]) -> ClientAddresses:
        return cls(tuple(networks))

    def _trusted(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.trusted_proxies)

    def client(self, peer: str | None, metadata=None) -> str:
        ip = peer_ip(peer)
        if ip is None:
            kind = (peer or "").partition(":")[0]
            return kind if kind in ("unix", "unix-abstract") else "unknown"
        if self.trusted_proxies and self._trusted(ip):
            chain = forwarded_for(metadata)
            if chain:
                untrusted = [hop for hop in chain if not self._trusted(hop)]
                ip = untrusted[-1] if untrusted else chain[0]
        return client_group(ip)

    def of_context(self, context: grpc.aio.ServicerContext) -> str:
        return self.client(context.peer(), context.invocation_metadata())


def account_key(email: str) -> str:
    """A stable key for an account named by its (normalized) email, without the email
    itself (keys may live in Redis)."""
    return "email:" + hashlib.blake2b(email.encode(), digest_size=16).hexdigest()


class DeviceCache:
    """Authenticated child devices by a hash of their token (the token itself is never kept),
    so most device calls skip profile's AuthenticateDevice. Evicted by device (unpairing) or by
    family (consent withdrawn, erasure)."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cache = TtlCache(ttl_s, max_entries, clock)

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> ChildDevicePrincipal | None:
        return self._cache.get(self.key(token))

    def put(self, token: str, who: ChildDevicePrincipal) -> None:
        self._cache.put(self.key(token), who)

    def evict(self, *, device_id: str | None = None, family_id: str | None = None) -> None:
        self._cache.evict_where(
            lambda _key, who: who.device_id == device_id or who.family_id == family_id)


class Authenticator:
    def __init__(self, tokens: TokenService, profile: Backend, cache: DeviceCache) -> None:
        self.tokens = tokens
        self.profile = profile
        self.cache = cache

    async def authenticate(self, token: str) -> ParentPrincipal | ChildDevicePrincipal:
        if token.startswith(DEVICE_TOKEN_PREFIX):
            return await self._device(token)
        claims = await self.tokens.verify_access(token)
        return ParentPrincipal(claims.parent_id, claims.family_id, claims.sign_in_id)

    async def _device(self, token: str) -> ChildDevicePrincipal:
        if len(token) > MAX_DEVICE_TOKEN_LEN or not _TOKEN_CHARS.fullmatch(token):
            raise Unauthenticated("invalid device credential", reason=Reason.DEVICE_CREDENTIAL_INVALID)
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        try:
            resp = await self.profile.call(
                "AuthenticateDevice", profile_pb2.AuthenticateDeviceRequest(device_token=token),
                credential_check=True,
            )
        except InvalidArgument as exc:
            raise Unauthenticated("invalid device credential",
                                  reason=Reason.DEVICE_CREDENTIAL_INVALID) from exc
        d = resp.device
        who = ChildDevicePrincipal(d.device_id, d.child_id, d.family_id)
        self.cache.put(token, who)
        return who


# -- the gate -------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    store: RateLimits
    principal: Limit    # per parent or device
    credentials: Limit  # per (email, client address): SignIn, SignUp
    peer: Limit         # per client address: every anonymous call
    password: Limit     # per account: every call that checks a password


class Gate:
    """Admits a call: size, authentication, authorization by method, rate limits.

    `max_request_bytes` (0: none) refuses a larger request with RESOURCE_EXHAUSTED
    and ErrorInfo MESSAGE_TOO_LARGE (no RetryInfo). gRPC's own limit on the port
    sits above it (GatewaySettings.public_options) and answers bare
    RESOURCE_EXHAUSTED without details: docs/api.md tells clients both.
    """

    def __init__(self, authenticator: Authenticator, limits: Limits, limited: Counter,
                 clients: ClientAddresses | None = None, *, max_request_bytes: int = 0) -> None:
        self.authenticator = authenticator
        self.limits = limits
        self.limited = limited
        self.clients = clients or ClientAddresses()
        self.max_request_bytes = max_request_bytes

    async def _limit(self, limit: Limit, key: str, kind: str | None = None) -> None:
        try:
            await self.limits.store.hit(limit, key)
        except ResourceExhausted:
            self.limited.labels(kind or limit.kind).inc()
            raise

    async def admit(self, method: str, request, context: grpc.aio.ServicerContext) -> Principal:
        rule = POLICY.get(method)
        if rule is None:
            raise PermissionDenied("this method is not available")
        if self.max_request_bytes and (size := request.ByteSize()) > self.max_request_bytes:
            raise ResourceExhausted(
                f"the request is {size} bytes; at most {self.max_request_bytes} are accepted",
                retry_after_s=None, reason=Reason.MESSAGE_TOO_LARGE,
                metadata={"max_bytes": str(self.max_request_bytes), "size_bytes": str(size)})
        if ANON in rule.allowed:
            client = self.clients.of_context(context)
            await self._limit(self.limits.peer, client)
            if rule.limit == "credentials":
                email = normalize_email(getattr(request, "email", ""))[:254]
                account = account_key(email)
                await self._limit(self.limits.credentials, f"{account}|{client}")
                if rule.checks_password and email:
                    await self._limit(self.limits.password, account)
            return Anonymous(client)
        token = bearer_token(context.invocation_metadata())
        who = await self.authenticator.authenticate(token)
        if who.kind not in rule.allowed:
            raise PermissionDenied(f"not available to a {who.kind} credential")
        await self._limit(self.limits.principal, who.key, who.kind)
        if rule.checks_password:
            await self._limit(self.limits.password, who.key)
        structlog.contextvars.bind_contextvars(principal=who.key)
        return who


def guard(servicer: Any, service_name: str, gate: Gate) -> SimpleNamespace:
    """A stand-in servicer whose every method admits the caller first and then
    calls `servicer.Method(request, context, principal)`."""
    service = gateway_pb2.DESCRIPTOR.services_by_name[service_name]
    methods = {}
    for m in service.methods:
        impl = getattr(servicer, m.name)
        full = f"/{service.full_name}/{m.name}"
        if m.server_streaming:
            if not inspect.isasyncgenfunction(impl):
                raise TypeError(f"{full} must be an async generator")
            methods[m.name] = _streaming(impl, full, gate)
        else:
            methods[m.name] = _unary(impl, full, gate)
    return SimpleNamespace(**methods)


def _unary(impl, full: str, gate: Gate):
    async def handler(request, context):
        who = await gate.admit(full, request, context)
        return await impl(request, context, who)

    return handler


def _streaming(impl, full: str, gate: Gate):
    async def handler(request, context):
        who = await gate.admit(full, request, context)
        async for response in impl(request, context, who):
            yield response

    return handler
