"""Calls to the owning services: deadlines, retries for idempotent methods, and
the translation of backend errors into what the public API answers.

* Client errors (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
  FAILED_PRECONDITION, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ABORTED,
  OUT_OF_RANGE) pass through with their code and details; BadRequest field
  paths are remapped where the public request is shaped differently.
* Inference is a fleet of replicas (clients/fleet.py): one channel per replica,
  each conversation routed to one of them by rendezvous hashing of its id,
  erasure sent to all of them.
* UNAVAILABLE and CANCELLED become UNAVAILABLE at once (channels do not wait
  for ready: a down backend fails fast).
* DEADLINE_EXCEEDED stays DEADLINE_EXCEEDED: the backend did not answer in
  time. Every backend call's deadline is the configured one cut to what is left
  of the client's own deadline, so no backend works on past the point where the
  client has given up.
* UNAUTHENTICATED passes through only from credential checks (Authenticate,
  AuthenticateDevice); elsewhere it means the gateway's internal credential is
  wrong, a deployment bug, and becomes INTERNAL like a backend's own INTERNAL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry, Counter

from avatario.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from avatario.inference.v1 import inference_pb2
from avatario.profile.v1 import profile_pb2, profile_pb2_grpc
from services.common import errors
from services.common.clients import internal_channel, retry_service_config
from services.common.interceptors import call_time_remaining
from services.common.status import error_for_code, error_info, field_violations, retry_delay_s
from services.gateway.clients.discovery import Resolver, parse_targets
from services.gateway.clients.fleet import FleetConfig, InferenceFleet
from services.gateway.settings import GatewaySettings

log = structlog.get_logger("avatario.gateway.backends")

# Methods safe to retry on UNAVAILABLE: reads, and writes with an idempotency
# key or set-to-value semantics.
PROFILE_IDEMPOTENT = (
    "Authenticate", "GetParent", "ListConsents", "GetChild", "ListChildren", "ListAvatarItems",
    "GetAvatar", "CustomizeAvatar", "AwardXp", "AuthenticateDevice", "ListDevices",
    "RevokeDevice", "GetConversation", "ListConversations", "AppendTurn", "ListMessages",
    "ListAuditEvents", "ListParents", "UpdateConversation",
)
ANALYTICS_IDEMPOTENT = (
    "ListGames", "SubmitGameSession", "SubmitMoodCheckIn", "GetChildReport", "ListFlags",
    "GetChildSummary", "ListTips", "ExportChildData", "EraseChildData", "EraseFamilyData",
    "StreamChildExport",
)
INFERENCE_IDEMPOTENT = ("GetModelInfo", "ForgetConversations")

_PASS_THROUGH = {
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
}
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


def pass_through(code: grpc.StatusCode, message: str) -> errors.DomainError:
    """A backend's client error with a code that needs no details: the error kind
    the chassis answers with the same code (services.common.status)."""
    exc = error_for_code(code, message)
    assert exc is not None, code  # every code passed through has a kind
    return exc


class BackendFailure(Exception):
    """A backend bug or a deployment error: answered INTERNAL (generic message)."""


def remap_field(path: str, remap: Mapping[str, str]) -> str:
    for old, new in remap.items():
        if path == old or path.startswith((old + ".", old + "[")):
            return new + path[len(old):]
    return path


def translate(backend: str, err: grpc.aio.AioRpcError, *, remap: Mapping[str, str] | None = None,
              credential_check: bool = False) -> Exception:
    """The exception the public call raises for a failed backend call, with the
    backend's ErrorInfo reason and metadata kept (a backend's RESOURCE_EXHAUSTED
    without a specific reason is SERVER_BUSY: its capacity, not the caller's limit)."""
    exc = _translate(backend, err, remap=remap, credential_check=credential_check)
    if isinstance(exc, errors.DomainError) and not exc.reason:
        info = error_info(rpc_status.from_call(err))
        if info is not None:
            exc.reason = info.reason
            exc.metadata = {**info.metadata, **exc.metadata}
        if isinstance(exc, errors.ResourceExhausted) and exc.reason in ("", "RESOURCE_EXHAUSTED"):
            exc.reason = errors.Reason.SERVER_BUSY
    return exc


def _translate(backend: str, err: grpc.aio.AioRpcError, *, remap: Mapping[str, str] | None = None,
               credential_check: bool = False) -> Exception:
    code, message = err.code(), err.details() or ""
    if code in _UNAVAILABLE:
        log.warning("backend.unavailable", backend=backend, code=code.name)
        return errors.Unavailable(f"{backend} is unavailable; retry later")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        log.warning("backend.deadline_exceeded", backend=backend)
        return errors.DeadlineExceeded(f"{backend} did not answer in time")
    status = rpc_status.from_call(err)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        found = field_violations(status)
        if found:
            return errors.InvalidArgument([(remap_field(f, remap or {}), d) for f, d in found])
        return pass_through(code, message)
    if code is grpc.StatusCode.NOT_FOUND:
        what = "resource"
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
                info = error_details_pb2.ResourceInfo()
                detail.Unpack(info)
                what = info.resource_type or what
        return errors.NotFound(what, message or f"{what} not found")
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                pf = error_details_pb2.PreconditionFailure()
                detail.Unpack(pf)
                if pf.violations:
                    v = pf.violations[0]
                    info = error_info(status)
                    return errors.FailedPrecondition(
                        message, violation_type=v.type, subject=v.subject,
                        metadata=dict(info.metadata) if info is not None else None)
        return errors.FailedPrecondition(message)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(message or f"{backend} is busy",
                                        retry_after_s=retry_delay_s(status) or 1.0)
    if code in _PASS_THROUGH:
        return pass_through(code, message)
    if code is grpc.StatusCode.UNAUTHENTICATED and credential_check:
        return errors.Unauthenticated(message or "invalid credentials")
    log.error("backend.failed", backend=backend, code=code.name, details=message[:200])
    return BackendFailure(f"{backend} answered {code.name}")


def call_timeout(configured: float) -> float:
    """A backend call's deadline: `configured`, cut to what is left of the client's
    deadline. Nothing left: DEADLINE_EXCEEDED without calling."""
    remaining = call_time_remaining()
    if remaining is None:
        return configured
    if remaining <= 0:
        raise errors.DeadlineExceeded("the call's deadline has passed")
    return min(configured, remaining)


class Backend:
    """One owning service: its stub, default deadline and error accounting."""

    def __init__(self, name: str, channel: grpc.aio.Channel, stub: Any, deadline_s: float,
                 error_counter: Counter) -> None:
        self.name = name
        self.channel = channel
        self.stub = stub
        self.deadline_s = deadline_s
        self._errors = error_counter

    def failed(self, err: grpc.aio.AioRpcError, **kw) -> Exception:
        self._errors.labels(self.name, err.code().name).inc()
        return translate(self.name, err, **kw)

    async def call(self, method: str, request, *, timeout: float | None = None,
                   remap: Mapping[str, str] | None = None, credential_check: bool = False):
        try:
            return await getattr(self.stub, method)(
                request, timeout=call_timeout(timeout or self.deadline_s), wait_for_ready=False)
        except grpc.aio.AioRpcError as err:
            raise self.failed(err, remap=remap, credential_check=credential_check) from None

    def stream(self, method: str, request, *, timeout: float):
        """Start a server-streaming call; the caller iterates and translates errors."""
        return getattr(self.stub, method)(request, timeout=call_timeout(timeout),
                                          wait_for_ready=False)


@dataclass
class Backends:
    profile: Backend
    analytics: Backend
    inference: InferenceFleet
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @classmethod
    def create(cls, settings: GatewaySettings, registry: CollectorRegistry) -> Backends:
        counter = Counter(
            "avatario_gateway_backend_errors_total",
            "Failed calls from the gateway to a backend, by backend and status code.",
            ["backend", "code"], registry=registry,
        )
        opts = [
            ("grpc.max_receive_message_length", settings.backend_max_receive_bytes),
            # A restarted backend is reconnected within ~2 s, not gRPC's default
            # backoff of up to 2 minutes (calls fail fast meanwhile).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]

        def make(name, target, module, service, stub_cls, idempotent):
            full = module.DESCRIPTOR.services_by_name[service].full_name
            channel = internal_channel(
                target, settings, caller="gateway", options=opts,
                service_config=retry_service_config(full, idempotent, max_attempts=3),
            )
            return Backend(name, channel, stub_cls(channel), settings.backend_deadline_s, counter)

        profile = make("profile", settings.profile_target, profile_pb2, "ProfileService",
                       profile_pb2_grpc.ProfileServiceStub, PROFILE_IDEMPOTENT)
        analytics = make("analytics", settings.analytics_target, analytics_pb2, "AnalyticsService",
                         analytics_pb2_grpc.AnalyticsServiceStub, ANALYTICS_IDEMPOTENT)
        inference_config = retry_service_config(
            inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
            INFERENCE_IDEMPOTENT, max_attempts=3)

        def connect(address: str, server_name: str | None) -> grpc.aio.Channel:
            return internal_channel(address, settings, caller="gateway", options=opts,
                                    service_config=inference_config, tls_server_name=server_name)

        def inference_failed(err: grpc.aio.AioRpcError, **kw) -> Exception:
            counter.labels("inference", err.code().name).inc()
            return translate("inference", err, **kw)

        inference = InferenceFleet(
            Resolver(parse_targets(settings.inference_target)), connect,
            deadline_s=settings.backend_deadline_s, failed=inference_failed, registry=registry,
            config=FleetConfig(
                refresh_s=settings.inference_refresh_s,
                refresh_min_interval_s=settings.inference_refresh_min_interval_s,
                departed_grace_s=settings.chat_deadline_s + 10,
                wait_for_replica_s=settings.inference_wait_for_replica_s,
                remembered=settings.inference_route_memory))
        return cls(profile, analytics, inference, [profile.channel, analytics.channel])

    async def close(self) -> None:
        await self.inference.close()
        for channel in self.channels:
            await channel.close()
