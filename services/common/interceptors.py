"""The one server interceptor: request ids, internal auth, metrics, error mapping.

Servicers stay thin: they raise domain errors (services.common.errors) and the
interceptor answers with the canonical status code and google.rpc.Status
details. An unexpected exception is a bug: it is logged with its traceback and
answered INTERNAL with a generic message; no traceback crosses the wire.
A database that cannot be reached right now (services.common.db.
database_unavailable) is not a bug: it is answered UNAVAILABLE with RetryInfo.
"""

from __future__ import annotations

import contextvars
import hmac
import inspect
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

import grpc
import structlog
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from services.common import errors
from services.common.admission import AdmissionControl
from services.common.metrics import GrpcServerMetrics
from services.common.status import internal_status, status_code, to_grpc_status, to_rpc_status

REQUEST_ID_KEY = "x-request-id"
INTERNAL_TOKEN_KEY = "x-avatario-internal-token"
CALLER_KEY = "x-avatario-caller"

# Probes and tooling reach these without the service credential.
UNAUTHENTICATED_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_request_id", default=""
)
# When the call being handled must be answered (time.monotonic()), so that calls
# made on its behalf can use no more than what is left; None: no deadline.
_call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "call_deadline", default=None
)


def call_time_remaining() -> float | None:
    """Seconds left before the current call's deadline (None: the caller set none,
    or no call is being handled)."""
    deadline = _call_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def outside_call() -> contextvars.Context:
    """The current context without the call's deadline: for a task that must outlive
    the call (e.g. storing what a cancelled stream produced)."""
    ctx = contextvars.copy_context()
    ctx.run(_call_deadline.set, None)
    return ctx
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
log = structlog.get_logger("avatario.rpc")


def split_method(full: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    _, service, method = full.split("/", 2)
    return service, method


def _grpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


TokenCheck = Callable[[str], bool]


def token_checker(*accepted: str | None) -> TokenCheck:
    """Constant-time check against the current token (and the previous one while rotating)."""
    tokens = [t.encode() for t in accepted if t]

    def check(presented: str) -> bool:
        got = presented.encode()
        # compare against every token so the time does not tell which one matched
        return any([hmac.compare_digest(got, t) for t in tokens])

    return check


class ChassisInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        metrics: GrpcServerMetrics,
        *,
        check_token: TokenCheck | None,
        exempt_services: Iterable[str] = UNAUTHENTICATED_SERVICES,
        admission: AdmissionControl | None = None,
    ) -> None:
        self._metrics = metrics
        self._check_token = check_token
        self._exempt = frozenset(exempt_services)
        self._admission = admission if admission is not None and admission.enabled else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        service, method = split_method(details.method)
        if self._admission is not None and service not in UNAUTHENTICATED_SERVICES:
            # probes and tooling are never refused; everything else takes a slot
            handler = self._admission.guard(handler, service, method)
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        request_id = metadata.get(REQUEST_ID_KEY, "")
        if not _REQUEST_ID_RE.match(request_id):
            request_id = uuid.uuid4().hex
        authenticated = (
            self._check_token is None
            or service in self._exempt
            or self._check_token(metadata.get(INTERNAL_TOKEN_KEY, ""))
        )
        labels = (_grpc_type(handler), service, method)
        caller = metadata.get(CALLER_KEY, "")
        run = _Run(self._metrics, labels, request_id, caller, authenticated)
        return run.wrap(handler)


class _Run:
    """Wraps one method handler; a new one per call."""

    def __init__(self, metrics, labels, request_id, caller, authenticated) -> None:
        self.m = metrics
        self.labels = labels
        self.request_id = request_id
        self.caller = caller
        self.authenticated = authenticated

    def wrap(self, h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        kw = {"request_deserializer": h.request_deserializer,
              "response_serializer": h.response_serializer}
        if h.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(h.unary_unary), **kw)
        if h.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._stream(h.unary_stream), **kw)
        if h.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._unary(h.stream_unary), **kw)
        return grpc.stream_stream_rpc_method_handler(self._stream(h.stream_stream), **kw)

    def _begin(self, context: grpc.aio.ServicerContext) -> float:
        self.m.started.labels(*self.labels).inc()
        current_request_id.set(self.request_id)
        remaining = context.time_remaining()
        _call_deadline.set(None if remaining is None else time.monotonic() + remaining)
        structlog.contextvars.bind_contextvars(
            request_id=self.request_id, rpc=f"{self.labels[1]}/{self.labels[2]}"
        )
        return time.perf_counter()

    def _end(self, start: float, code: grpc.StatusCode) -> None:
        elapsed = time.perf_counter() - start
        self.m.handled.labels(*self.labels, code.name).inc()
        self.m.handling_seconds.labels(*self.labels).observe(elapsed)
        log.debug("rpc.done", code=code.name, ms=round(elapsed * 1000, 2), caller=self.caller)
        structlog.contextvars.unbind_contextvars("request_id", "rpc")

    async def _fail(self, context, exc: BaseException) -> grpc.StatusCode:
        """Answer the error on the wire; return the code sent."""
        if isinstance(exc, errors.DomainError):
            code = status_code(exc)
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                log.error("rpc.domain_error_as_internal", exc_info=exc)
            elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                # Under overload these come by the thousand; the metrics count them.
                log.debug("rpc.rejected", code=code.name, reason=exc.message)
            else:
                log.info("rpc.rejected", code=code.name, reason=exc.message)
            await context.abort_with_status(to_grpc_status(to_rpc_status(exc)))
        if _database_unavailable(exc):
            log.warning("rpc.database_unavailable", error=type(exc).__name__,
                        detail=str(exc)[:200])
            await context.abort_with_status(to_grpc_status(_database_unavailable_status()))
        log.error("rpc.unexpected_error", exc_info=exc)
        await context.abort_with_status(to_grpc_status(internal_status(self.request_id)))
        raise AssertionError("unreachable")  # abort always raises

    def _reject_unauthenticated(self) -> errors.Unauthenticated:
        return errors.Unauthenticated("missing or invalid internal service credential")

    def _unary(self, behavior):
        async def handler(request, context):
            start = self._begin(context)
            code = grpc.StatusCode.OK
            try:
                if not self.authenticated:
                    raise self._reject_unauthenticated()
                self.m.msg_received.labels(*self.labels).inc()
                response = await behavior(request, context)
                self.m.msg_sent.labels(*self.labels).inc()
                code = _code_of(context, grpc.StatusCode.OK)
                return response
            except grpc.aio.AbortError:
                code = _code_of(context, grpc.StatusCode.UNKNOWN)
                raise
            except BaseException as exc:  # noqa: BLE001 - mapped, never swallowed
                code = _map_code(exc)
                if code is grpc.StatusCode.CANCELLED:
                    raise
                await self._fail(context, exc)
            finally:
                self._end(start, code)

        return handler

    def _stream(self, behavior):
        async def handler(request, context):
            start = self._begin(context)
            code = grpc.StatusCode.OK
            try:
                if not self.authenticated:
                    raise self._reject_unauthenticated()
                self.m.msg_received.labels(*self.labels).inc()
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for response in result:
                        self.m.msg_sent.labels(*self.labels).inc()
                        yield response
                else:
                    await result
                code = _code_of(context, grpc.StatusCode.OK)
            except grpc.aio.AbortError:
                code = _code_of(context, grpc.StatusCode.UNKNOWN)
                raise
            except BaseException as exc:  # noqa: BLE001
                code = _map_code(exc)
                if code is grpc.StatusCode.CANCELLED:
                    raise
                await self._fail(context, exc)
            finally:
                self._end(start, code)

        return handler


def _map_code(exc: BaseException) -> grpc.StatusCode:
    import asyncio

    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    if isinstance(exc, errors.DomainError):
        return status_code(exc)
    if _database_unavailable(exc):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


# A database outage is not a bug: the call may succeed once the database is back.
DATABASE_RETRY_AFTER_S = 1.0


def _database_unavailable(exc: BaseException) -> bool:
    # imported on first use: a service without a database need not load SQLAlchemy
    from services.common.db import database_unavailable

    return database_unavailable(exc)


def _database_unavailable_status() -> status_pb2.Status:
    status = to_rpc_status(errors.Unavailable("the database is unavailable; retry later"))
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(int(DATABASE_RETRY_AFTER_S * 1000))
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def _code_of(context, default: grpc.StatusCode) -> grpc.StatusCode:
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):
        return default
    if code is None:
        return default
    if isinstance(code, int):
        for member in grpc.StatusCode:
            if member.value[0] == code:
                return member
        return default
    return code
