"""Gateway settings (env prefix AVATARIO_GATEWAY_). Built once in main().

Keepalive on the public port is tuned for phones on mobile networks:

* clients may ping every `min_client_ping_interval_s` (20 s) even without calls,
  so an app can keep a NAT binding alive while a chat stream waits for its first
  token; pings more frequent than that get a GOAWAY (too_many_pings);
* the server pings every `keepalive_time_s` (60 s) and drops a connection whose
  ping is not answered in `keepalive_timeout_s` (20 s): a phone that switched
  from Wi-Fi to cellular leaves a dead socket behind, and its streams (and chat
  slots) are freed within about 80 s instead of the kernel's TCP timeout;
* idle connections close after `max_connection_idle_s` (15 min) so the radio can
  sleep, and every connection is recycled after `max_connection_age_s` (1 h),
  with a grace longer than the chat deadline so a stream in flight can finish.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.common.db import DatabaseUrl
from services.common.limits import CHAT_MESSAGE_MAX_CHARS
from services.common.settings import ServiceSettings
from services.gateway.clients.discovery import parse_targets
from services.gateway.ratelimit import parse_limits, storage_uri

_CONFIG = SettingsConfigDict(env_prefix="AVATARIO_GATEWAY_", extra="ignore", populate_by_name=True)

MIN_HS256_SECRET_BYTES = 32


class GatewayDatabaseSettings(BaseSettings):
    """What the migrate command needs (no service credential, no keys)."""

    model_config = _CONFIG

    database_url: DatabaseUrl = Field(
        "sqlite+aiosqlite:///var/gateway.db",
        description="Refresh-token families live here (postgresql+asyncpg://... in production).",
    )


class GatewaySettings(ServiceSettings, GatewayDatabaseSettings):
    model_config = _CONFIG

    port: int = Field(50051, ge=0, le=65535)
    # Overload admission: RPCs in flight before RESOURCE_EXHAUSTED + RetryInfo
    # (measured: bench/bench_load.py; chat streams hold theirs until they end).
    max_inflight_rpcs: int = Field(128, ge=0, le=100_000, description="0 = no cap.")
    metrics_port: int | None = Field(9101, ge=0, le=65535)
    db_pool_size: int = Field(10, ge=1, le=200)
    ready_timeout_s: float = Field(
        120.0, ge=0, description="How long to wait at start for the schema to reach head.")

    # Backends (host:port).
    profile_target: str = "127.0.0.1:50052"
    analytics_target: str = "127.0.0.1:50053"
    # The inference fleet: host:port[,host:port...]. Every address a host resolves to
    # is one replica (a headless Service name in Kubernetes: one per pod); see
    # services/gateway/clients/fleet.py and docs/operations.md, "Scale the inference fleet".
    inference_target: str = "127.0.0.1:50054"
    # Replicas are looked up again this often, and after a connection fails (at most
    # once per inference_refresh_min_interval_s).
    inference_refresh_s: float = Field(10.0, gt=0, le=3600)
    inference_refresh_min_interval_s: float = Field(1.0, ge=0, le=60)
    # A call finding no SERVING replica waits this long for one (gateway start, restarts).
    inference_wait_for_replica_s: float = Field(2.0, ge=0, le=30)
    # Conversations whose last replica each gateway remembers, to count moves (metrics).
    inference_route_memory: int = Field(50_000, ge=0, le=10_000_000)

    # Tokens. Keys are {"kid": "secret", ...} (HS256, >= 32 bytes each); every
    # configured kid verifies, the active one signs, so keys rotate by adding a
    # new kid, making it active, and removing the old one after access_ttl_s.
    jwt_signing_keys: SecretStr
    jwt_active_kid: str
    jwt_issuer: str = "avatario-gateway"
    jwt_audience: str = "avatario-mobile"
    jwt_leeway_s: int = Field(10, ge=0, le=60)
    access_ttl_s: int = Field(15 * 60, ge=30, le=24 * 3600)
    refresh_ttl_s: int = Field(30 * 24 * 3600, ge=60, le=365 * 24 * 3600)
    # How stale this instance's view of revoked sign-ins may get (access tokens
    # of a revoked sign-in stop working within this many seconds everywhere).
    revocation_refresh_s: float = Field(5.0, ge=0.0, le=60.0)
    # Positive device-token answers are cached this long; revocations and consent
    # withdrawals made through this gateway evict at once, those made through
    # another replica take effect here within this TTL (play writes are checked by
    # analytics on every call regardless).
    device_cache_ttl_s: float = Field(5.0, ge=0.0, le=10.0)

    # Public TLS (server-side only; mobile clients do not present certificates).
    public_tls_cert_file: Path | None = None
    public_tls_key_file: Path | None = None

    # Rate limits (moving windows on the `limits` library; see docs/operations.md). The
    # *_rps/*_burst pairs are kept from the token-bucket days: `burst` calls per
    # `burst / rps` seconds. Per principal (parent or device); per (email, client) for
    # SignIn and SignUp; per client address for the other anonymous calls.
    rate_limit_rps: float = Field(20.0, gt=0)
    rate_limit_burst: int = Field(40, ge=1)
    auth_rate_limit_rps: float = Field(0.2, gt=0)
    auth_rate_limit_burst: int = Field(10, ge=1)
    anonymous_rate_limit_rps: float = Field(5.0, gt=0)
    anonymous_rate_limit_burst: int = Field(30, ge=1)
    # Every call that checks a password (SignIn per normalized email, whatever the
    # address; ChangePassword and EraseFamily per parent account), in `limits` notation.
    password_rate_limit: str = Field("5/minute;20/hour", min_length=1)
    # Where the counts live: memory:// (this replica only, the default) or
    # redis://host:6379/0 (rediss:// for TLS), shared by every replica.
    rate_limit_url: SecretStr | None = None
    rate_limit_key_prefix: str = Field("avatario-gateway", pattern=r"^[A-Za-z0-9:._-]{1,64}$")
    rate_limit_storage_timeout_s: float = Field(0.5, gt=0, le=10)
    rate_limit_storage_retry_s: float = Field(5.0, gt=0, le=300)
    # Client addresses: X-Forwarded-For is read only from these proxies (CIDRs, comma
    # separated or a JSON list); IPv6 clients are grouped by /64.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)

    # Plaintext on a non-loopback address needs this explicit opt-out (logged as a
    # warning at start); otherwise the gateway refuses to start without public TLS.
    allow_plaintext_public: bool = False

    # Chat.
    max_chat_streams_per_parent: int = Field(2, ge=1, le=64)
    # A parent's message, in characters: at most the contract's limit, which the inference
    # node enforces too (services/common/limits.py); may be lowered, never raised.
    chat_message_max_chars: int = Field(CHAT_MESSAGE_MAX_CHARS, ge=1, le=CHAT_MESSAGE_MAX_CHARS)
    chat_max_tokens: int = Field(512, ge=1, le=4096, description="Upper bound of a reply.")
    chat_default_max_tokens: int = Field(300, ge=1, le=4096,
                                         description="When the client leaves max_tokens 0.")
    chat_history_turns: int = Field(8, ge=0, le=100)
    # The analytics summary sent as the assistant's context is reused this long
    # (per child; dropped at once when the child's play data changes through this
    # gateway, or the family is erased). 0 disables.
    summary_cache_ttl_s: float = Field(30.0, ge=0, le=600)

    # Deadlines for backend calls.
    backend_deadline_s: float = Field(5.0, gt=0)
    chat_deadline_s: float = Field(120.0, gt=0)
    chat_first_chunk_timeout_s: float = Field(30.0, gt=0)
    summary_deadline_s: float = Field(2.0, gt=0)

    # Public message sizes. A request over public_max_receive_bytes is refused by
    # the gateway with ErrorInfo MESSAGE_TOO_LARGE; gRPC's own limit on the port is
    # twice that (larger requests get gRPC's bare RESOURCE_EXHAUSTED).
    public_max_receive_bytes: int = Field(1024 * 1024, ge=1024)
    public_max_send_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    backend_max_receive_bytes: int = Field(64 * 1024 * 1024, ge=1024)

    # Keepalive (see the module docstring).
    keepalive_time_s: int = Field(60, ge=10)
    keepalive_timeout_s: int = Field(20, ge=1)
    min_client_ping_interval_s: int = Field(20, ge=1)
    max_connection_idle_s: int = Field(15 * 60, ge=10)
    max_connection_age_s: int = Field(3600, ge=60)

    @model_validator(mode="after")
    def _check_gateway(self) -> GatewaySettings:
        keys = self.signing_keys
        if self.jwt_active_kid not in keys:
            raise ValueError("jwt_active_kid must name one of jwt_signing_keys")
        if self.chat_default_max_tokens > self.chat_max_tokens:
            raise ValueError("chat_default_max_tokens must not exceed chat_max_tokens")
        if [self.public_tls_cert_file, self.public_tls_key_file].count(None) == 1:
            raise ValueError("public_tls_cert_file and public_tls_key_file go together")
        if self.mtls and self.public_tls_cert_file is None:
            # The chassis would otherwise put the internal mutual-TLS credentials
            # on the public port; a deployment with internal mTLS needs public TLS.
            raise ValueError("with internal mTLS configured, configure public_tls_* too")
        return self

    @field_validator("inference_target")
    @classmethod
    def _check_inference_target(cls, value: str) -> str:
        parse_targets(value)
        return value

    @field_validator("password_rate_limit")
    @classmethod
    def _check_limit_notation(cls, value: str) -> str:
        parse_limits(value)  # e.g. "5/minute;20/hour"
        return value

    @field_validator("rate_limit_url")
    @classmethod
    def _check_rate_limit_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            storage_uri(value.get_secret_value())
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @property
    def rate_limit_storage(self) -> str | None:
        """The storage URL (a secret: it may carry a password), None for memory."""
        return self.rate_limit_url.get_secret_value() if self.rate_limit_url else None

    @property
    def binds_loopback_only(self) -> bool:
        return is_loopback_host(self.host)

    def plaintext_public_problem(self) -> str | None:
        """Why the public port must not serve plaintext here (None: it may)."""
        if self.public_tls or self.binds_loopback_only or self.allow_plaintext_public:
            return None
        return (
            f"the gateway would serve plaintext on {self.host!r}, which is not a loopback "
            "address: configure public TLS (AVATARIO_GATEWAY_PUBLIC_TLS_CERT_FILE and "
            "AVATARIO_GATEWAY_PUBLIC_TLS_KEY_FILE), bind 127.0.0.1 (AVATARIO_GATEWAY_HOST), "
            "or, only where TLS is terminated in front of the gateway on a private network, "
            "set AVATARIO_GATEWAY_ALLOW_PLAINTEXT_PUBLIC=true"
        )

    @property
    def signing_keys(self) -> dict[str, bytes]:
        try:
            raw = json.loads(self.jwt_signing_keys.get_secret_value())
        except ValueError as exc:
            raise ValueError('jwt_signing_keys must be JSON: {"kid": "secret", ...}') from exc
        if not isinstance(raw, dict) or not raw:
            raise ValueError('jwt_signing_keys must be a non-empty JSON object {"kid": "secret"}')
        keys: dict[str, bytes] = {}
        for kid, secret in raw.items():
            if not isinstance(kid, str) or not kid or not isinstance(secret, str):
                raise ValueError("jwt_signing_keys: kids and secrets are non-empty strings")
            if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
                raise ValueError(f"jwt_signing_keys[{kid}]: at least {MIN_HS256_SECRET_BYTES} bytes")
            keys[kid] = secret.encode()
        return keys

    @property
    def public_tls(self) -> bool:
        return self.public_tls_cert_file is not None

    def public_options(self) -> list[tuple[str, int]]:
        """grpc server options for the public port."""
        return [
            ("grpc.max_receive_message_length", 2 * self.public_max_receive_bytes),
            ("grpc.max_send_message_length", self.public_max_send_bytes),
            ("grpc.keepalive_time_ms", self.keepalive_time_s * 1000),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_s * 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_client_ping_interval_s * 1000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_connection_idle_ms", self.max_connection_idle_s * 1000),
            ("grpc.max_connection_age_ms", self.max_connection_age_s * 1000),
            ("grpc.max_connection_age_grace_ms", int((self.chat_deadline_s + 10) * 1000)),
            ("grpc.so_reuseport", 0),
        ]


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (bracketed or not) and `localhost`; anything else, including
    0.0.0.0, :: and other host names, may be reachable from elsewhere."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
