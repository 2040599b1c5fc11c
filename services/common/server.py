"""create_server(...) -> (server, port) and serve(): the life of every gRPC server.

    server, port = await create_server(name="profile", settings=s,
                                       services=[Registration(add_fn, servicer, NAME)])
    await serve(server, ready=check_migrations)   # in main()

Tests call create_server with port 0, then `await server.start()` and
`await server.set_serving()` themselves.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from services.common.admission import AdmissionControl
from services.common.interceptors import ChassisInterceptor, token_checker
from services.common.metrics import GrpcServerMetrics, start_metrics_server
from services.common.settings import ServiceSettings

log = structlog.get_logger("avatario.server")

# Generous limits for internal traffic; the gateway narrows them for the public port.
DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
)


@dataclass
class Registration:
    """One gRPC service to host: add_XServicer_to_server, the servicer, its full name."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    name: str


def read_bytes(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """Mutual TLS when certificate files are configured: clients must present a
    certificate signed by the CA."""
    if not settings.mtls:
        return None
    return grpc.ssl_server_credentials(
        [(read_bytes(settings.tls_key_file), read_bytes(settings.tls_cert_file))],
        root_certificates=read_bytes(settings.tls_ca_file),
        require_client_auth=True,
    )


@dataclass
class Server:
    """A grpc.aio server with its health service, metrics registry and exporter."""

    name: str
    grpc_server: grpc.aio.Server
    health: HealthServicer
    service_names: list[str]
    registry: CollectorRegistry
    settings: ServiceSettings
    metrics_port: int | None = None
    _httpd: Any = None
    _stopping: bool = False
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    admission: AdmissionControl | None = None

    async def start(self) -> None:
        await self.grpc_server.start()
        if self.settings.metrics_port is not None:
            self._httpd, self.metrics_port = start_metrics_server(
                self.registry, self.settings.metrics_host, self.settings.metrics_port
            )

    async def set_serving(self) -> None:
        for svc in ["", *self.service_names]:
            await self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None, *, drain_delay: float = 0.0) -> None:
        """Flip health to NOT_SERVING; keep serving new and in-flight calls for
        `drain_delay` seconds (so probes and clients watching health see it first);
        then refuse new calls, drain in-flight ones for `grace` seconds, stop."""
        if self._stopping:
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        if drain_delay > 0:
            await asyncio.sleep(drain_delay)
        grace = self.settings.shutdown_grace_s if grace is None else grace
        await self.grpc_server.stop(grace)
        for hook in self.on_stop:
            await hook()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


async def create_server(
    *,
    name: str,
    settings: ServiceSettings,
    services: Sequence[Registration],
    internal_auth: bool = True,
    credentials: grpc.ServerCredentials | None = None,
    options: Sequence[tuple[str, Any]] = DEFAULT_OPTIONS,
    registry: CollectorRegistry | None = None,
) -> tuple[Server, int]:
    """Build (not start) a server with health, reflection, metrics, errors and auth.

    internal_auth: require the internal service token on every call (all
    internal services); the gateway turns it off and authenticates users itself.
    """
    registry = registry or CollectorRegistry()
    metrics = GrpcServerMetrics.create(registry)
    previous = settings.internal_token_previous
    check = (
        token_checker(settings.internal_token.get_secret_value(),
                      previous.get_secret_value() if previous else None)
        if internal_auth else None
    )
    admission = AdmissionControl(settings.max_inflight_rpcs, registry=registry,
                                 retry_after_s=settings.overload_retry_after_s)
    grpc_server = grpc.aio.server(
        interceptors=[ChassisInterceptor(metrics, check_token=check, admission=admission)],
        options=list(options),
    )
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, grpc_server)
    names = []
    for reg in services:
        reg.add(reg.servicer, grpc_server)
        names.append(reg.name)
        await health.set(reg.name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        grpc_server,
    )
    address = f"{settings.host}:{settings.port}"
    creds = credentials or server_credentials(settings)
    if creds is not None:
        port = grpc_server.add_secure_port(address, creds)
    else:
        port = grpc_server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    server = Server(name, grpc_server, health, names, registry, settings, admission=admission)
    return server, port


async def serve(
    server: Server,
    *,
    ready: Callable[[], Awaitable[None]] | None = None,
    stop_signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Start, run the readiness checks, report SERVING, and on SIGTERM drain and stop:
    NOT_SERVING at once, still serving for `settings.drain_delay_s`, then the grace stop."""
    await server.start()
    log.info("server.started", name=server.name, metrics_port=server.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        try:
            await ready()
        except BaseException:
            # Not ready (e.g. a configuration error): stop listening before the error
            # propagates, or the process would linger on gRPC's threads.
            await server.stop(0)
            raise
    await server.set_serving()
    log.info("server.serving", name=server.name)
    waiter = asyncio.create_task(server.wait_for_termination())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("server.draining", name=server.name, grace_s=server.settings.shutdown_grace_s,
             drain_delay_s=server.settings.drain_delay_s)
    await server.stop(drain_delay=server.settings.drain_delay_s if stopper.done() else 0.0)
    waiter.cancel()
    stopper.cancel()
    log.info("server.stopped", name=server.name)
