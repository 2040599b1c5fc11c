"""The inference fleet as the gateway sees it: one channel per replica, routing by
conversation.

* **Discovery.** The replicas are the addresses the configured targets resolve to
  (discovery.py), looked up again every `inference_refresh_s` and soon after a
  connection fails (at most once per `inference_refresh_min_interval_s`). A replica
  that leaves DNS is *departed*: it takes no turns but still gets erasure calls
  until it can no longer hold a stream (the chat deadline), then its channel closes.
* **Health.** Each replica's `grpc.health.v1` status is watched (Watch, a stream
  the server pushes changes down). Only SERVING replicas take turns: a replica that
  is warming up, draining (NOT_SERVING after SIGTERM) or unreachable takes none.
* **Routing.** A conversation's replicas are ranked by rendezvous hashing of its id
  (rendezvous.py); a turn goes to the first SERVING one. When that replica answers
  RESOURCE_EXHAUSTED (its queue is full) or UNAVAILABLE before the first message,
  the next one in the conversation's order is tried, within the call's deadline.
  Once a replica has sent a message the stream stays with it.
* **Erasure.** ForgetConversations goes to every replica known, departed ones
  included. It fails (so the erasure is retried) when a SERVING replica cannot be
  reached or when no replica is serving; one that is not serving is tried but its
  failure is only counted: a draining pod's memory goes with it and a warming one
  holds nothing yet.

Metrics (the gateway's registry):
  avatario_gateway_inference_replicas{state}                  replicas by health state
  avatario_gateway_inference_routing_decisions_total{outcome} turns routed: to the
      conversation's first replica (`preferred`), or past it because it was not
      serving (`unhealthy`), answered RESOURCE_EXHAUSTED (`exhausted`) or UNAVAILABLE
      (`unavailable`); `no_replica` when none could take it
  avatario_gateway_inference_routing_moves_total{reason}      a conversation's turn went
      to another replica than its previous turn (through this gateway): the previous
      one `left` DNS, was `unhealthy`, `exhausted` or `unavailable`, or a better-ranked
      replica joined or recovered (`rebalanced`)
  avatario_gateway_inference_discovery_refreshes_total{trigger,result}
  avatario_gateway_inference_forget_calls_total{result}       erasure calls per replica
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from services.common import errors
from services.common.interceptors import call_time_remaining
from services.gateway.clients.discovery import Endpoint, Resolver
from services.gateway.clients.rendezvous import rank

log = structlog.get_logger("avatario.gateway.fleet")

SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
SERVING = "serving"
NOT_SERVING = "not_serving"
UNREACHABLE = "unreachable"
UNKNOWN = "unknown"
DEPARTED = "departed"
STATES = (SERVING, NOT_SERVING, UNREACHABLE, UNKNOWN, DEPARTED)
# Codes after which the next replica in the conversation's order is tried (only
# before the first message: nothing was generated for the client yet).
FALL_THROUGH = {grpc.StatusCode.RESOURCE_EXHAUSTED: "exhausted",
                grpc.StatusCode.UNAVAILABLE: "unavailable"}
WATCH_BACKOFF_S = (0.1, 2.0)

# (address, TLS server name or None) -> a channel carrying the internal credential.
Connect = Callable[[str, str | None], grpc.aio.Channel]


@dataclass
class FleetConfig:
    refresh_s: float = 10.0
    refresh_min_interval_s: float = 1.0
    # How long a departed replica still gets erasure calls (a stream may run that long).
    departed_grace_s: float = 130.0
    # How long a call waits for some replica to turn SERVING (gateway start, a restart).
    wait_for_replica_s: float = 2.0
    # Conversations whose last replica is remembered (to count moves).
    remembered: int = 50_000


@dataclass
class Replica:
    endpoint: Endpoint
    channel: grpc.aio.Channel
    stub: inference_pb2_grpc.InferenceServiceStub
    state: str = UNKNOWN
    departed_at: float | None = None
    watcher: asyncio.Task | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return self.endpoint.address

    @property
    def serving(self) -> bool:
        return self.state == SERVING and self.departed_at is None

    @property
    def gauge_state(self) -> str:
        return DEPARTED if self.departed_at is not None else self.state


class FleetMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "avatario_gateway_inference_"
        self.replicas = Gauge(p + "replicas", "Inference replicas known, by health state.",
                              ["state"], registry=registry)
        self.decisions = Counter(
            p + "routing_decisions_total",
            "Chat turns routed to an inference replica, by how the replica was reached.",
            ["outcome"], registry=registry)
        self.moves = Counter(
            p + "routing_moves_total",
            "Turns routed to another replica than the conversation's previous turn, by reason.",
            ["reason"], registry=registry)
        self.refreshes = Counter(p + "discovery_refreshes_total",
                                 "Lookups of the inference replicas, by trigger and result.",
                                 ["trigger", "result"], registry=registry)
        self.forgets = Counter(p + "forget_calls_total",
                               "ForgetConversations calls to single replicas, by result.",
                               ["result"], registry=registry)
        for s in STATES:
            self.replicas.labels(s)


class InferenceFleet:
    """The `inference` backend: the same call/stream/failed surface as a Backend."""

    name = "inference"

    def __init__(self, resolver: Resolver, connect: Connect, *, deadline_s: float,
                 failed: Callable[..., Exception], registry: CollectorRegistry,
                 config: FleetConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.resolver = resolver
        self.deadline_s = deadline_s
        self.config = config or FleetConfig()
        self.metrics = FleetMetrics(registry)
        self._connect = connect
        self._failed = failed
        self._clock = clock
        self.replicas: dict[str, Replica] = {}
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._last_refresh = float("-inf")
        self._refresher: asyncio.Task | None = None
        self._closed = False
        self._last_route: OrderedDict[str, str] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """First lookup and the refresh loop (idempotent)."""
        if self._refresher is not None or self._closed:
            return
        self._refresher = asyncio.create_task(self._refresh_forever(), name="inference-discovery")
        await self.refresh("start")

    async def close(self) -> None:
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
        for replica in list(self.replicas.values()):
            await self._drop(replica)
        self.replicas.clear()

    def failed(self, err: grpc.aio.AioRpcError, **kw) -> Exception:
        return self._failed(err, **kw)

    # -- membership ------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Look the replicas up again soon (a connection failed)."""
        self._wake.set()

    async def _refresh_forever(self) -> None:
        cfg = self.config
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), cfg.refresh_s)
                trigger = "failure"
            except TimeoutError:
                trigger = "periodic"
            self._wake.clear()
            pause = self._last_refresh + cfg.refresh_min_interval_s - self._clock()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                await self.refresh(trigger)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad refresh
                log.exception("fleet.refresh_failed")

    async def refresh(self, trigger: str = "manual") -> None:
        """Resolve the targets and reconcile the replicas with what DNS says now."""
        async with self._refresh_lock:
            self._last_refresh = self._clock()
            endpoints, failed = await self.resolver.resolve()
            self.metrics.refreshes.labels(trigger, "error" if failed else "ok").inc()
            now = self._clock()
            by_address = {e.address: e for e in endpoints}
            for address, endpoint in by_address.items():
                replica = self.replicas.get(address)
                if replica is None:
                    self._add(endpoint)
                elif replica.departed_at is not None:
                    replica.departed_at = None
                    log.info("fleet.replica_returned", replica=address)
            for replica in list(self.replicas.values()):
                if replica.address in by_address:
                    continue
                if replica.departed_at is None:
                    replica.departed_at = now
                    log.info("fleet.replica_departed", replica=replica.address)
                elif now - replica.departed_at > self.config.departed_grace_s:
                    del self.replicas[replica.address]
                    await self._drop(replica)
            await self._notify()

    def _add(self, endpoint: Endpoint) -> None:
        channel = self._connect(endpoint.address, endpoint.server_name)
        replica = Replica(endpoint, channel, inference_pb2_grpc.InferenceServiceStub(channel))
        self.replicas[endpoint.address] = replica
        replica.watcher = asyncio.create_task(self._watch(replica),
                                              name=f"health-watch {endpoint.address}")
        log.info("fleet.replica_added", replica=endpoint.address)

    async def _drop(self, replica: Replica) -> None:
        if replica.watcher is not None:
            replica.watcher.cancel()
        await replica.channel.close()
        log.info("fleet.replica_removed", replica=replica.address)

    async def _set_state(self, replica: Replica, state: str) -> None:
        if replica.state != state:
            log.info("fleet.replica_health", replica=replica.address, state=state)
            replica.state = state
            await self._notify()

    async def _notify(self) -> None:
        counts = dict.fromkeys(STATES, 0)
        for r in self.replicas.values():
            counts[r.gauge_state] += 1
        for state, n in counts.items():
            self.metrics.replicas.labels(state).set(n)
        async with self._changed:
            self._changed.notify_all()

    async def _watch(self, replica: Replica) -> None:
        """Follow the replica's health; on a broken stream: unreachable, look DNS up
        again, and watch again after a backoff."""
        stub = health_pb2_grpc.HealthStub(replica.channel)
        backoff = WATCH_BACKOFF_S[0]
        while True:
            try:
                async for resp in stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE)):
                    up = resp.status == health_pb2.HealthCheckResponse.SERVING
                    await self._set_state(replica, SERVING if up else NOT_SERVING)
                    backoff = WATCH_BACKOFF_S[0]
            except grpc.aio.AioRpcError as err:
                log.debug("fleet.watch_failed", replica=replica.address, code=err.code().name)
            await self._set_state(replica, UNREACHABLE)
            self.request_refresh()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF_S[1])

    # -- routing ---------------------------------------------------------------------

    def order(self, key: str) -> list[Replica]:
        """Every present (not departed) replica in `key`'s rendezvous order."""
        present = {a: r for a, r in self.replicas.items() if r.departed_at is None}
        return [present[a] for a in rank(key, present)]

    async def _wait_for_serving(self, limit_s: float) -> None:
        """Give a starting fleet a moment: wait until some replica is SERVING."""
        if self._refresher is None:
            await self.start()
        if any(r.serving for r in self.replicas.values()) or limit_s <= 0:
            return
        self.request_refresh()
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: any(r.serving for r in self.replicas.values())), limit_s)
        except TimeoutError:
            pass

    async def route(self, key: str, attempt: Callable[[Replica, float], Any],
                    deadline: float) -> Any:
        """Run `attempt(replica, timeout)` on the conversation's replicas in order,
        moving on after RESOURCE_EXHAUSTED or UNAVAILABLE, until one succeeds."""
        await self._wait_for_serving(min(self.config.wait_for_replica_s,
                                         deadline - self._clock()))
        order = self.order(key)
        candidates = [r for r in order if r.serving]
        outcome = "preferred" if candidates and order[0] is candidates[0] else "unhealthy"
        failures: dict[str, str] = {}
        last_err: grpc.aio.AioRpcError | None = None
        for replica in candidates:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise errors.DeadlineExceeded("the call's deadline has passed")
            try:
                result = await attempt(replica, remaining)
            except grpc.aio.AioRpcError as err:
                reason = FALL_THROUGH.get(err.code())
                if reason is None:
                    raise
                if reason == "unavailable":
                    self.request_refresh()
                log.info("fleet.fall_through", replica=replica.address, code=err.code().name)
                failures[replica.address] = reason
                if outcome == "preferred":
                    outcome = reason
                last_err = err
                continue
            self.metrics.decisions.labels(outcome).inc()
            self._remember(key, replica, order, failures)
            return result
        self.metrics.decisions.labels("no_replica").inc()
        if last_err is not None:
            raise last_err
        raise errors.Unavailable("no inference replica is serving; retry later")

    def _remember(self, key: str, chosen: Replica, order: list[Replica],
                  failures: Mapping[str, str]) -> None:
        if not key:
            return
        previous = self._last_route.pop(key, None)
        self._last_route[key] = chosen.address
        if len(self._last_route) > self.config.remembered:
            self._last_route.popitem(last=False)
        if previous is None or previous == chosen.address:
            return
        before = self.replicas.get(previous)
        if before is None or before.departed_at is not None:
            reason = "left"
        elif previous in failures:
            reason = failures[previous]
        elif not before.serving:
            reason = "unhealthy"
        else:
            reason = "rebalanced"
        self.metrics.moves.labels(reason).inc()

    def _deadline(self, timeout: float | None) -> float:
        configured = timeout or self.deadline_s
        remaining = call_time_remaining()
        if remaining is not None:
            if remaining <= 0:
                raise errors.DeadlineExceeded("the call's deadline has passed")
            configured = min(configured, remaining)
        return self._clock() + configured

    # -- the Backend surface ---------------------------------------------------------

    async def call(self, method: str, request, *, timeout: float | None = None,
                   remap: Mapping[str, str] | None = None, credential_check: bool = False):
        """A unary call: ForgetConversations to every replica, anything else to the
        request's conversation's replica (or any serving one)."""
        if method == "ForgetConversations":
            return await self.forget(request, timeout=timeout)

        async def attempt(replica: Replica, remaining: float):
            return await getattr(replica.stub, method)(
                request, timeout=remaining, wait_for_ready=False)

        try:
            return await self.route(getattr(request, "conversation_id", ""), attempt,
                                    self._deadline(timeout))
        except grpc.aio.AioRpcError as err:
            raise self.failed(err, remap=remap, credential_check=credential_check) from None

    def stream(self, method: str, request, *, timeout: float) -> RoutedStream:
        """A server-streaming call routed by the request's conversation; the caller reads
        it like a grpc.aio call (read() until EOF, cancel())."""
        return RoutedStream(self, method, request, self._deadline(timeout))

    async def forget(self, request: inference_pb2.ForgetConversationsRequest, *,
                     timeout: float | None = None) -> inference_pb2.ForgetConversationsResponse:
        deadline = self._deadline(timeout)
        await self._wait_for_serving(min(self.config.wait_for_replica_s,
                                         deadline - self._clock()))
        replicas = list(self.replicas.values())
        serving = {r.address for r in replicas if r.serving}
        if not serving:
            self.metrics.forgets.labels("no_replica").inc()
            raise errors.Unavailable("no inference replica is serving; retry later")
        remaining = max(0.001, deadline - self._clock())
        results = await asyncio.gather(
            *(r.stub.ForgetConversations(request, timeout=remaining, wait_for_ready=False)
              for r in replicas), return_exceptions=True)
        forgotten, failure = 0, None
        for replica, result in zip(replicas, results, strict=True):
            if isinstance(result, grpc.aio.AioRpcError):
                if replica.address in serving:
                    self.metrics.forgets.labels("failed").inc()
                    failure = failure or result
                else:
                    self.metrics.forgets.labels("skipped").inc()
                    log.info("fleet.forget_skipped", replica=replica.address,
                             state=replica.gauge_state, code=result.code().name)
                continue
            if isinstance(result, BaseException):
                raise result
            self.metrics.forgets.labels("ok").inc()
            forgotten += result.forgotten
        if failure is not None:
            log.warning("fleet.forget_failed", code=failure.code().name)
            raise self.failed(failure) from None
        return inference_pb2.ForgetConversationsResponse(forgotten=forgotten)


class RoutedStream:
    """A streaming call that picks its replica on the first read (falling through to
    the next one on RESOURCE_EXHAUSTED/UNAVAILABLE before any message) and then reads
    that replica's stream."""

    def __init__(self, fleet: InferenceFleet, method: str, request, deadline: float) -> None:
        self._fleet = fleet
        self._method = method
        self._request = request
        self._deadline = deadline
        self._call: grpc.aio.UnaryStreamCall | None = None
        self._first: Any = None
        self._cancelled = False
        self.replica: Replica | None = None

    async def _open(self) -> Any:
        async def attempt(replica: Replica, remaining: float):
            call = getattr(replica.stub, self._method)(
                self._request, timeout=remaining, wait_for_ready=False)
            self._call = call
            try:
                return replica, await call.read()
            except asyncio.CancelledError:
                call.cancel()
                raise

        self.replica, first = await self._fleet.route(
            getattr(self._request, "conversation_id", ""), attempt, self._deadline)
        return first

    async def read(self) -> Any:
        if self._cancelled:
            raise asyncio.CancelledError()
        if self.replica is None:
            return await self._open()
        assert self._call is not None
        return await self._call.read()

    def cancel(self) -> bool:
        self._cancelled = True
        return self._call.cancel() if self._call is not None else False
