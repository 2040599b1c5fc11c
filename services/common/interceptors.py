"""The one server interceptor: request ids, internal auth, metrics, error mapping.

Servicers stay thin: they raise domain errors (services.common.errors) and the
interceptor answers with the canonical status code and google.rpc.Status
details. An unexpected exception is a bug: it is logged with its traceback and
answered INTERNAL with a generic message; no traceback crosses the wire.
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

from services.common import errors
from services.common.admission import AdmissionControl
from services.common.metrics import GrpcServerMetrics
from services.common.status import internal_status, to_grpc_status, to_rpc_status

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
            if exc.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                log.error("rpc.domain_error_as_internal", exc_info=exc)
            else:
                log.info("rpc.rejected", code=exc.code.name, reason=exc.message)
            await context.abort_with_status(to_grpc_status(to_rpc_status(exc)))
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
        return exc.code
    return grpc.StatusCode.INTERNAL


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
