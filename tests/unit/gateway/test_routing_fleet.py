"""The gateway's inference fleet against fake replicas (grpc.aio servers on
127.0.0.x, one port, found through a fake DNS name like a headless Service):
affinity, health awareness, the RESOURCE_EXHAUSTED fall-through, discovery
refreshes (periodic and after a connection failure) and erasure fan-out."""

from __future__ import annotations

import asyncio
import socket
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import CollectorRegistry

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2 as inf
from avatario.inference.v1 import inference_pb2_grpc as inf_grpc
from services.common import errors
from services.gateway.clients.backends import translate
from services.gateway.clients.discovery import Resolver, parse_targets
from services.gateway.clients.fleet import SERVICE, FleetConfig, InferenceFleet
from services.gateway.clients.rendezvous import rank

NAME = "inference.test"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FakeReplica(inf_grpc.InferenceServiceServicer):
    """A replica that answers with its own name; `mode` scripts its failures."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.mode = "ok"
        self.chats: list[str] = []
        self.forgotten: list[str] = []
        self.server: grpc.aio.Server | None = None
        self.health = HealthServicer()
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, port: int = 0) -> int:
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        inf_grpc.add_InferenceServiceServicer_to_server(self, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"{self.host}:{port}")
        await self.health.set(SERVICE, SERVING)
        await self.server.start()
        return self.port

    async def stop(self) -> None:
        await self.server.stop(0)

    async def Chat(self, request, context):
        self.chats.append(request.conversation_id)
        if self.mode == "exhausted":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the queue is full")
        if self.mode == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "model not loaded")
        if self.mode == "refuse":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "conversation erased")
        yield inf.ChatResponse(chunk=inf.ChatChunk(text=self.host))
        yield inf.ChatResponse(final=inf.ChatFinal(finish_reason=chat_pb2.FINISH_REASON_STOP,
                                                   text=self.host))

    async def GetModelInfo(self, request, context):
        if self.mode == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "loading")
        return inf.GetModelInfoResponse(model_name=self.host)

    async def ForgetConversations(self, request, context):
        if self.mode in ("forget_fails", "unavailable"):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        self.forgotten.extend(request.conversation_ids)
        return inf.ForgetConversationsResponse(forgotten=len(request.conversation_ids))


class FakeDns:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.lookups = 0

    async def __call__(self, host, port):
        self.lookups += 1
        if host != NAME:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return list(self.hosts)


class Fleet:
    """Replicas on 127.0.0.2, .3, ... sharing one port, and the fleet that finds them."""

    def __init__(self) -> None:
        self.replicas: dict[str, FakeReplica] = {}
        self.dns = FakeDns()
        self.port = 0
        self.registry = CollectorRegistry()
        self.fleet: InferenceFleet | None = None

    async def add(self, n: int = 1, *, publish: bool = True) -> list[FakeReplica]:
        out = []
        for _ in range(n):
            replica = FakeReplica(f"127.0.0.{len(self.replicas) + 2}")
            self.port = await replica.start(self.port)
            self.replicas[replica.address] = replica
            if publish:
                self.dns.hosts.append(replica.host)
            out.append(replica)
        return out

    async def build(self, **config) -> InferenceFleet:
        defaults = dict(refresh_s=3600, refresh_min_interval_s=0, departed_grace_s=60,
                        wait_for_replica_s=2.0)
        self.fleet = InferenceFleet(
            Resolver(parse_targets(f"{NAME}:{self.port}"), lookup=self.dns),
            lambda address, _name: grpc.aio.insecure_channel(address),
            deadline_s=5.0, failed=lambda err, **kw: translate("inference", err, **kw),
            registry=self.registry, config=FleetConfig(**(defaults | config)))
        await self.fleet.start()
        await self.settle()
        return self.fleet

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until every replica's health state is what its server says."""
        async def agreed():
            for address, replica in self.fleet.replicas.items():
                fake = self.replicas.get(address)
                if fake is None or replica.departed_at is not None:
                    continue
                want = "unreachable" if fake.server is None else (
                    "serving" if fake.health._server_status.get(SERVICE) == SERVING
                    else "not_serving")
                if replica.state != want:
                    return False
            return True

        for _ in range(int(timeout / 0.02)):
            if await agreed():
                return
            await asyncio.sleep(0.02)
        raise AssertionError({a: r.state for a, r in self.fleet.replicas.items()})

    def sample(self, name: str, **labels) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.close()
        for replica in self.replicas.values():
            if replica.server is not None:
                await replica.stop()


@pytest.fixture
async def fleet():
    f = Fleet()
    yield f
    await f.close()


CONVERSATIONS = [str(uuid.UUID(int=i * 104729 + 1)) for i in range(90)]


async def served_by(fleet: InferenceFleet, conversation_id: str) -> str:
    call = fleet.stream("Chat", inf.ChatRequest(conversation_id=conversation_id), timeout=5)
    first = await call.read()
    assert first.chunk.text == call.replica.endpoint.address.split(":")[0]
    rest = await call.read()
    assert rest.final.text == first.chunk.text
    assert await call.read() is grpc.aio.EOF
    return call.replica.address


async def test_every_conversation_stays_with_its_rendezvous_replica(fleet):
    await fleet.add(3)
    f = await fleet.build()
    members = list(fleet.replicas)
    for _ in range(3):
        for cid in CONVERSATIONS:
            assert await served_by(f, cid) == rank(cid, members)[0]
    used = {a: len(r.chats) for a, r in fleet.replicas.items()}
    assert all(n >= 3 * 15 for n in used.values()), used  # all three share the load
    assert fleet.sample("avatario_gateway_inference_routing_decisions_total",
                        outcome="preferred") == 3 * len(CONVERSATIONS)
    assert fleet.sample("avatario_gateway_inference_routing_moves_total", reason="rebalanced") == 0
    assert fleet.sample("avatario_gateway_inference_replicas", state="serving") == 3


async def test_a_not_serving_replica_takes_no_turns_and_only_its_conversations_move(fleet):
    a, b, c = await fleet.add(3)
    f = await fleet.build()
    members = list(fleet.replicas)
    before = {cid: await served_by(f, cid) for cid in CONVERSATIONS}

    await b.health.set(SERVICE, NOT_SERVING)  # draining, or warming up
    await fleet.settle()
    b.chats.clear()
    after = {cid: await served_by(f, cid) for cid in CONVERSATIONS}
    assert b.chats == []
    for cid in CONVERSATIONS:
        if before[cid] == b.address:
            assert after[cid] == rank(cid, members)[1]
        else:
            assert after[cid] == before[cid]
    moved = sum(before[c] == b.address for c in CONVERSATIONS)
    assert fleet.sample("avatario_gateway_inference_routing_moves_total",
                        reason="unhealthy") == moved
    assert fleet.sample("avatario_gateway_inference_routing_decisions_total",
                        outcome="unhealthy") == moved

    await b.health.set(SERVICE, SERVING)  # back: its conversations come back to it
    await fleet.settle()
    assert {cid: await served_by(f, cid) for cid in CONVERSATIONS} == before
    assert fleet.sample("avatario_gateway_inference_routing_moves_total",
                        reason="rebalanced") == moved


async def test_resource_exhausted_falls_through_to_the_next_replica_in_the_order(fleet):
    await fleet.add(3)
    f = await fleet.build()
    members = list(fleet.replicas)
    cid = CONVERSATIONS[0]
    first, second, third = (fleet.replicas[a] for a in rank(cid, members))
    first.mode = "exhausted"
    assert await served_by(f, cid) == second.address
    assert first.chats == [cid] and second.chats == [cid]
    assert fleet.sample("avatario_gateway_inference_routing_decisions_total",
                        outcome="exhausted") == 1

    second.mode = "unavailable"  # answered UNAVAILABLE before any message: next again
    assert await served_by(f, cid) == third.address

    third.mode = "exhausted"  # all busy: the client gets RESOURCE_EXHAUSTED
    call = f.stream("Chat", inf.ChatRequest(conversation_id=cid), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await call.read()
    assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(f.failed(ei.value), errors.ResourceExhausted)
    assert fleet.sample("avatario_gateway_inference_routing_decisions_total",
                        outcome="no_replica") == 1


async def test_other_errors_do_not_fall_through(fleet):
    await fleet.add(2)
    f = await fleet.build()
    cid = CONVERSATIONS[1]
    first = fleet.replicas[rank(cid, list(fleet.replicas))[0]]
    first.mode = "refuse"
    call = f.stream("Chat", inf.ChatRequest(conversation_id=cid), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await call.read()
    assert ei.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert sum(len(r.chats) for r in fleet.replicas.values()) == 1


async def test_the_fall_through_stays_within_the_deadline(fleet):
    await fleet.add(2)
    f = await fleet.build()
    for r in fleet.replicas.values():
        r.mode = "exhausted"
    call = f.stream("Chat", inf.ChatRequest(conversation_id=CONVERSATIONS[2]), timeout=5)
    call._deadline = f._clock() - 1  # nothing left of the call's time
    with pytest.raises(errors.DeadlineExceeded):
        await call.read()
    assert all(r.chats == [] for r in fleet.replicas.values())


async def test_a_replica_joining_through_dns_takes_only_its_share(fleet):
    await fleet.add(3)
    f = await fleet.build()
    before = {cid: await served_by(f, cid) for cid in CONVERSATIONS}
    (new,) = await fleet.add(1)
    await f.refresh("periodic")
    await fleet.settle()
    after = {cid: await served_by(f, cid) for cid in CONVERSATIONS}
    moved = [c for c in CONVERSATIONS if before[c] != after[c]]
    assert moved and all(after[c] == new.address for c in moved)
    assert len(moved) == len(new.chats) < len(CONVERSATIONS) / 2
    assert fleet.sample("avatario_gateway_inference_routing_moves_total",
                        reason="rebalanced") == len(moved)


async def test_the_periodic_refresh_finds_new_replicas_by_itself(fleet):
    await fleet.add(1)
    f = await fleet.build(refresh_s=0.05)
    await fleet.add(1)
    for _ in range(200):
        if len(f.replicas) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(f.replicas) == 2
    assert fleet.sample("avatario_gateway_inference_discovery_refreshes_total",
                        trigger="periodic", result="ok") >= 1


async def test_a_replica_that_dies_is_left_and_dns_is_asked_again(fleet):
    a, b, c = await fleet.add(3)
    f = await fleet.build()
    lookups = fleet.dns.lookups
    members = list(fleet.replicas)
    await b.stop()
    b.server = None
    await fleet.settle()  # the health watch broke: unreachable
    assert f.replicas[b.address].state == "unreachable"
    for _ in range(100):  # the failure asked DNS again
        if fleet.dns.lookups > lookups:
            break
        await asyncio.sleep(0.02)
    assert fleet.dns.lookups > lookups
    assert fleet.sample("avatario_gateway_inference_discovery_refreshes_total",
                        trigger="failure", result="ok") >= 1
    for cid in CONVERSATIONS[:30]:
        order = [m for m in rank(cid, members) if m != b.address]
        assert await served_by(f, cid) == order[0]


async def test_a_replica_gone_from_dns_is_departed_then_dropped(fleet):
    a, b = await fleet.add(2)
    f = await fleet.build(departed_grace_s=0.2)
    fleet.dns.hosts.remove(b.host)
    await f.refresh()
    assert f.replicas[b.address].departed_at is not None
    assert fleet.sample("avatario_gateway_inference_replicas", state="departed") == 1
    for cid in CONVERSATIONS[:20]:
        assert await served_by(f, cid) == a.address  # no turns for a departed replica
    resp = await f.call("ForgetConversations",
                        inf.ForgetConversationsRequest(conversation_ids=["x"]))
    assert resp.forgotten == 2 and b.forgotten == ["x"]  # but erasure still reaches it
    await asyncio.sleep(0.25)
    await f.refresh()
    assert b.address not in f.replicas


async def test_forget_reaches_every_replica(fleet):
    replicas = await fleet.add(3)
    f = await fleet.build()
    ids = CONVERSATIONS[:5]
    resp = await f.call("ForgetConversations", inf.ForgetConversationsRequest(conversation_ids=ids))
    assert resp.forgotten == 15
    assert all(r.forgotten == ids for r in replicas)


async def test_forget_fails_when_a_serving_replica_does_not_confirm(fleet):
    a, b, c = await fleet.add(3)
    f = await fleet.build()
    b.mode = "forget_fails"
    with pytest.raises(errors.Unavailable):
        await f.call("ForgetConversations", inf.ForgetConversationsRequest(conversation_ids=["x"]))
    assert fleet.sample("avatario_gateway_inference_forget_calls_total", result="failed") == 1


async def test_forget_tolerates_a_replica_that_is_not_serving(fleet):
    a, b, c = await fleet.add(3)
    f = await fleet.build()
    await b.health.set(SERVICE, NOT_SERVING)
    b.mode = "forget_fails"
    await fleet.settle()
    resp = await f.call("ForgetConversations",
                        inf.ForgetConversationsRequest(conversation_ids=["x"]))
    assert resp.forgotten == 2 and a.forgotten == c.forgotten == ["x"]
    assert fleet.sample("avatario_gateway_inference_forget_calls_total", result="skipped") == 1


async def test_with_no_replica_serving_calls_are_unavailable(fleet):
    (a,) = await fleet.add(1)
    f = await fleet.build(wait_for_replica_s=0.1)
    await a.health.set(SERVICE, NOT_SERVING)
    await fleet.settle()
    with pytest.raises(errors.Unavailable):
        await f.call("ForgetConversations", inf.ForgetConversationsRequest(conversation_ids=["x"]))
    call = f.stream("Chat", inf.ChatRequest(conversation_id=CONVERSATIONS[0]), timeout=5)
    with pytest.raises(errors.Unavailable):
        await call.read()
    assert a.chats == [] and a.forgotten == []


async def test_a_call_waits_briefly_for_a_replica_that_turns_serving(fleet):
    (a,) = await fleet.add(1)
    await a.health.set(SERVICE, NOT_SERVING)  # still loading its model
    f = await fleet.build(wait_for_replica_s=5)

    async def ready_soon():
        await asyncio.sleep(0.2)
        await a.health.set(SERVICE, SERVING)

    task = asyncio.create_task(ready_soon())
    assert await served_by(f, CONVERSATIONS[0]) == a.address
    await task


async def test_unary_calls_fall_through_too(fleet):
    await fleet.add(2)
    f = await fleet.build()
    names = {(await f.call("GetModelInfo", inf.GetModelInfoRequest())).model_name
             for _ in range(3)}
    assert len(names) == 1  # a fixed replica for calls without a conversation
    first = fleet.replicas[f.order("")[0].address]
    assert names == {first.host}
    first.mode = "unavailable"
    assert (await f.call("GetModelInfo", inf.GetModelInfoRequest())).model_name != first.host
