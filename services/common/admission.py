"""Overload admission: a per-server cap on RPCs in flight.

Past its capacity a server that keeps accepting work only queues it: every call
gets slower until callers hit their deadlines (DEADLINE_EXCEEDED after having
spent the server's time anyway). With a cap, a call that finds
`max_inflight_rpcs` calls already running is refused at once with
RESOURCE_EXHAUSTED and a RetryInfo delay, so clients back off and the calls
that were admitted finish in time.

The chassis interceptor wraps every method handler (health and reflection are
exempt) with `AdmissionControl.guard`: a unary call holds its slot until its
handler returns, a streaming call until the stream ends, fails or is
cancelled. Refusals are counted per method in
`avatario_grpc_server_overload_rejected_total`; the calls in flight and the cap
are gauges, so a dashboard shows how close a server runs to its limit.

One server runs its handlers on one asyncio loop, so a plain counter is enough.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common.errors import Reason, ResourceExhausted


class AdmissionControl:
    """Admits at most `limit` calls at once; `limit` 0 admits everything."""

    def __init__(self, limit: int, *, retry_after_s: float = 1.0,
                 registry: CollectorRegistry | None = None) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0 (0 = no limit)")
        if retry_after_s <= 0:
            raise ValueError("retry_after_s must be > 0")
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.rejected = 0
        self._rejected_total: Counter | None = None
        self._in_flight_gauge: Gauge | None = None
        if registry is not None:
            self._rejected_total = Counter(
                "avatario_grpc_server_overload_rejected_total",
                "RPCs refused with RESOURCE_EXHAUSTED because the server had max_inflight_rpcs "
                "calls in flight.",
                ["grpc_service", "grpc_method"], registry=registry,
            )
            self._in_flight_gauge = Gauge(
                "avatario_grpc_server_inflight_rpcs",
                "RPCs in flight on the server (admitted and not yet finished).",
                registry=registry,
            )
            cap = Gauge("avatario_grpc_server_max_inflight_rpcs",
                        "The server's cap on RPCs in flight (0 = no cap).", registry=registry)
            cap.set(limit)

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def acquire(self, service: str, method: str) -> Callable[[], None]:
        """Take a slot or raise ResourceExhausted; returns the (idempotent) release."""
        if self.enabled and self.in_flight >= self.limit:
            self.rejected += 1
            if self._rejected_total is not None:
                self._rejected_total.labels(service, method).inc()
            raise ResourceExhausted(
                f"server overloaded ({self.limit} calls in flight); retry later",
                retry_after_s=self.retry_after_s, reason=Reason.SERVER_BUSY,
            )
        self._change(+1)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._change(-1)

        return release

    def _change(self, delta: int) -> None:
        self.in_flight += delta
        if self._in_flight_gauge is not None:
            self._in_flight_gauge.set(self.in_flight)

    def guard(self, handler: grpc.RpcMethodHandler, service: str,
              method: str) -> grpc.RpcMethodHandler:
        """The same handler, admitted through this control first."""
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, service, method), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, service, method), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, service, method), **kw)
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, service, method), **kw)

    def _hold(self, context, service: str, method: str) -> Callable[[], None]:
        release = self.acquire(service, method)
        # The RPC's end frees the slot even when a cancelled stream's generator is
        # left suspended (it is only closed when collected).
        add_done = getattr(context, "add_done_callback", None)
        if add_done is not None:
            add_done(lambda _ctx: release())
        return release

    def _unary(self, behavior, service: str, method: str):
        async def handler(request, context):
            release = self._hold(context, service, method)
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                release()

        return handler

    def _stream(self, behavior, service: str, method: str):
        async def handler(request, context):
            release = self._hold(context, service, method)
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    try:
                        async for response in result:
                            yield response
                    finally:
                        await result.aclose()
                else:
                    await result
            finally:
                release()

        return handler
