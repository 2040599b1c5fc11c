"""Gateway entry point: `serve` (default) and `migrate`.

    python -m services.gateway [serve]     # or: avatario-gateway
    python -m services.gateway migrate

Settings come from the environment (AVATARIO_GATEWAY_*, AVATARIO_INTERNAL_TOKEN)
and are built once here. Tests call `build_gateway(settings)` with port 0.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from avatario.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common import dataservice
from services.common.db import Database
from services.common.server import Registration, Server, create_server, read_bytes, serve
from services.common.tasks import BackgroundTask
from services.gateway.auth import (
    Authenticator,
    ClientAddresses,
    DeviceCache,
    Gate,
    Limits,
    guard,
)
from services.gateway.cache import TtlCache
from services.gateway.chat import ChatOrchestrator
from services.gateway.clients.backends import Backends
from services.gateway.deps import Deps
from services.gateway.ratelimit import (
    Limit,
    RateLimits,
    StreamLimiter,
    parse_limits,
    token_bucket_window,
)
from services.gateway.servicers.account import AuthServicer, FamilyServicer, PrivacyServicer
from services.gateway.servicers.chat import ChatServicer
from services.gateway.servicers.play import (
    AvatarServicer,
    DeviceServicer,
    PlayServicer,
    ReportServicer,
)
from services.gateway.settings import GatewayDatabaseSettings, GatewaySettings
from services.gateway.tokens import JwtCodec, RevocationView, TokenService

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PUBLIC_SERVICES = tuple(gateway_pb2.DESCRIPTOR.services_by_name)
PURGE_EVERY_S = 3600

log = structlog.get_logger("avatario.gateway")


@dataclass
class Gateway:
    """A built (not started) gateway and the parts tests reach into."""

    server: Server
    port: int
    deps: Deps
    gate: Gate
    chat: ChatOrchestrator


def public_credentials(settings: GatewaySettings) -> grpc.ServerCredentials | None:
    if not settings.public_tls:
        return None
    return grpc.ssl_server_credentials(
        [(read_bytes(settings.public_tls_key_file), read_bytes(settings.public_tls_cert_file))])


class PlaintextRefused(RuntimeError):
    """The gateway would serve plaintext on an address other machines can reach."""


def check_public_transport(settings: GatewaySettings) -> None:
    """Refuse plaintext on a non-loopback address unless explicitly allowed (then warn)."""
    problem = settings.plaintext_public_problem()
    if problem is not None:
        raise PlaintextRefused(problem)
    if not settings.public_tls and not settings.binds_loopback_only:
        log.warning("gateway.plaintext_public", host=settings.host,
                    reason="AVATARIO_GATEWAY_ALLOW_PLAINTEXT_PUBLIC=true: the public port "
                           "serves plaintext; TLS must be terminated in front of it")


def build_limits(settings: GatewaySettings, registry: CollectorRegistry) -> Limits:
    store = RateLimits(
        settings.rate_limit_storage, key_prefix=settings.rate_limit_key_prefix,
        timeout_s=settings.rate_limit_storage_timeout_s,
        retry_s=settings.rate_limit_storage_retry_s, registry=registry)
    return Limits(
        store=store,
        principal=Limit.of("principal", [token_bucket_window(
            settings.rate_limit_rps, settings.rate_limit_burst)]),
        credentials=Limit.of("credentials", [token_bucket_window(
            settings.auth_rate_limit_rps, settings.auth_rate_limit_burst)], "sign-in attempts"),
        peer=Limit.of("peer", [token_bucket_window(
            settings.anonymous_rate_limit_rps, settings.anonymous_rate_limit_burst)]),
        password=Limit.of("password", parse_limits(settings.password_rate_limit),
                          "password attempts for this account"),
    )


async def build_gateway(settings: GatewaySettings, *, db: Database | None = None) -> Gateway:
    check_public_transport(settings)
    registry = CollectorRegistry()
    db = db or Database(settings.database_url, pool_size=settings.db_pool_size)
    backends = Backends.create(settings, registry)
    await backends.inference.start()  # the first lookup of the inference replicas
    access_ttl = timedelta(seconds=settings.access_ttl_s)
    codec = JwtCodec(settings.signing_keys, settings.jwt_active_kid, issuer=settings.jwt_issuer,
                     audience=settings.jwt_audience, ttl=access_ttl, leeway_s=settings.jwt_leeway_s)
    revocations = RevocationView(db, window=access_ttl + timedelta(seconds=settings.jwt_leeway_s),
                                 refresh_s=settings.revocation_refresh_s)
    tokens = TokenService(db, codec, refresh_ttl=timedelta(seconds=settings.refresh_ttl_s),
                          revocations=revocations)
    devices = DeviceCache(settings.device_cache_ttl_s)
    deps = Deps(settings, backends, tokens, devices, TtlCache(settings.summary_cache_ttl_s))
    limited = Counter("avatario_gateway_rate_limited_total",
                      "Calls refused by a gateway rate limit, by limit kind.", ["kind"],
                      registry=registry)
    active = Gauge("avatario_gateway_active_chat_streams", "Chat streams in progress.",
                   registry=registry)
    limits = build_limits(settings, registry)
    gate = Gate(Authenticator(tokens, backends.profile, devices), limits, limited,
                ClientAddresses.of(settings.trusted_proxies),
                max_request_bytes=settings.public_max_receive_bytes)
    chat = ChatOrchestrator(deps, StreamLimiter(settings.max_chat_streams_per_parent), active)
    servicers = {
        "AuthService": AuthServicer(deps), "FamilyService": FamilyServicer(deps),
        "AvatarService": AvatarServicer(deps), "DeviceService": DeviceServicer(deps),
        "PlayService": PlayServicer(deps), "ReportService": ReportServicer(deps),
        "ChatService": ChatServicer(deps, chat), "PrivacyService": PrivacyServicer(deps),
    }
    assert set(servicers) == set(PUBLIC_SERVICES), "every public service needs a servicer"
    registrations = [
        Registration(getattr(gateway_pb2_grpc, f"add_{name}Servicer_to_server"),
                     guard(servicer, name, gate),
                     gateway_pb2.DESCRIPTOR.services_by_name[name].full_name)
        for name, servicer in servicers.items()
    ]
    server, port = await create_server(
        name="gateway", settings=settings, services=registrations, internal_auth=False,
        credentials=public_credentials(settings), options=settings.public_options(),
        registry=registry,
    )
    server.on_stop.extend([chat.drain, backends.close, db.dispose, limits.store.close])
    return Gateway(server, port, deps, gate, chat)


async def build_server(settings: GatewaySettings, *, db: Database | None = None,
                       ) -> tuple[Server, int]:
    """The gateway gRPC server (not started). Tests pass port 0 in the settings."""
    built = await build_gateway(settings, db=db)
    return built.server, built.port


def run_migrations(settings: GatewayDatabaseSettings) -> None:
    dataservice.run_migrations(MIGRATIONS, settings.database_url)


async def _purge_forever(tokens) -> None:
    while True:
        try:
            removed = await tokens.purge()
            log.info("tokens.purged", rows=removed)
        except Exception as exc:  # noqa: BLE001 - housekeeping must not kill the server
            log.warning("tokens.purge_failed", error=type(exc).__name__)
        await asyncio.sleep(PURGE_EVERY_S)


async def _serve(settings: GatewaySettings) -> None:
    dataservice.ensure_sqlite_dir(settings.database_url)
    built = await build_gateway(settings)
    log.info("gateway.listening", host=settings.host, port=built.port, tls=settings.public_tls,
             rate_limits="shared" if built.gate.limits.store.shared else "per-replica")
    db = built.deps.tokens.db
    purger = BackgroundTask(lambda: _purge_forever(built.deps.tokens), "token-purge")
    purger.start()
    try:
        await serve(built.server, ready=lambda: dataservice.wait_until_migrated(
            db, MIGRATIONS, name="gateway", timeout_s=settings.ready_timeout_s))
    finally:
        await purger.stop()
        await built.server.stop(0)  # no-op after a normal drain


app = dataservice.service_app(
    "gateway", help="Avatario gateway (the public API).", settings=GatewaySettings,
    serve=_serve, database_settings=GatewayDatabaseSettings, migrations_path=MIGRATIONS)
serve_cmd, migrate_cmd = app.serve_cmd, app.migrate_cmd


def main() -> None:
    app()


if __name__ == "__main__":
    main()
