"""Three inference processes behind one gateway, sharing a real Redis (issue 13).

The stack is the local one (avatario_tools.devstack, `--inference-replicas 3`) with
a Redis server of its own on a free 127.0.0.1 port, so it can be stopped without
touching anyone else's. What each turn did is read from the replicas' metrics
around it (turns run one at a time): which replica answered the Chat
(`grpc_server_handled_total`) and which cache tier its state lookup hit
(`avatario_inference_state_cache_lookups_total{tier}`).

In order (the module shares one fleet):
  1. affinity: many conversations, two turns each; every turn of a conversation
     goes to its rendezvous replica, and every second turn resumes from the local
     cache;
  2. a replica stops: only its conversations move, each to the next replica in its
     own order, and resume from the shared tier; their greedy replies equal those
     of twin conversations that never moved;
  3. the stopped replica comes back with another model: its conversations come back
     to it and miss (the shared entries are another model's), the others stay local;
  4. the family is erased while a turn streams: afterwards no replica holds a state
     of its conversations and Redis has no key for them;
  5. Redis goes down: chats still answer.

What it relies on from the node: a turn's lookup counted once in
avatario_inference_state_cache_lookups_total{tier="local|shared|miss"} on the replica
that served it, avatario_inference_state_cache_entries for its local cache, and Redis
keys that contain the conversation id (the erasure check scans for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from avatario.common.v1 import chat_pb2, family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api
from avatario_tools.devstack.stack import StackConfig, free_ports, service_specs
from services.gateway.clients.rendezvous import rank
from tests.e2e.conftest import running_stack
from tests.e2e.flows import family_with_child
from tests.helpers import new_id

pytestmark = pytest.mark.slow

REPLICAS = 3
GREEDY = dict(temperature=0.0)
CHAT_ONLY = (family_pb2.CONSENT_SCOPE_CHILD_PROFILE, family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 (no persistence), started and stopped here."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.command("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def command(self, *args: str):
        """One command over RESP (just enough for PING and SCAN)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                payload = f"*{len(args)}\r\n" + "".join(
                    f"${len(a.encode())}\r\n{a}\r\n" for a in args)
                s.sendall(payload.encode())
                return _read_resp(s.makefile("rb"))
        except OSError:
            return None

    def keys(self) -> list[str]:
        cursor, out = "0", []
        while True:
            cursor, batch = self.command("SCAN", cursor, "COUNT", "1000")
            out += batch
            if cursor == "0":
                return out


def _read_resp(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        return [_read_resp(f) for _ in range(int(rest))]
    raise ValueError(line)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@dataclass
class Turn:
    replica: str
    tier: str | None
    done: gw.ChatDone


class Fleet:
    def __init__(self, stack, redis: RedisServer) -> None:
        self.stack = stack
        self.redis = redis
        self.names = stack.cfg.inference_names
        self.addresses = {n: stack.target(n) for n in self.names}
        self.up = set(self.names)

    def snapshot(self) -> dict[str, dict]:
        return {n: scrape(self.stack.cfg.metrics_ports[n]) for n in self.up}

    def expected(self, conversation_id: str, among=None) -> str:
        """The replica the gateway should pick: first in the rendezvous order of the
        SERVING replicas (the gateway's members are their addresses)."""
        by_address = {self.addresses[n]: n for n in (among or self.up)}
        return by_address[rank(conversation_id, by_address)[0]]

    async def turn(self, api: Api, conversation_id: str, message: str,
                   max_tokens: int = 12) -> Turn:
        before = self.snapshot()
        done = await chat(api, conversation_id, message, max_tokens)
        # The client has the final message before the replica's handler returns and counts
        # the RPC as handled: on a loaded machine the counter can lag the reply, so wait for it.
        deadline = time.monotonic() + 10.0
        while True:
            after = self.snapshot()
            served = [n for n in self.up if
                      total(after[n], "grpc_server_handled_total", grpc_method="Chat")
                      > total(before[n], "grpc_server_handled_total", grpc_method="Chat")]
            if served or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert len(served) == 1, served
        (n,) = served
        tiers = [t for t in ("local", "shared", "miss") if
                 total(after[n], "avatario_inference_state_cache_lookups_total", tier=t)
                 > total(before[n], "avatario_inference_state_cache_lookups_total", tier=t)]
        assert len(tiers) <= 1, tiers
        return Turn(n, tiers[0] if tiers else None, done)

    def on_loop(self, coro, timeout=400):
        return asyncio.run_coroutine_threadsafe(coro, self.stack.loop).result(timeout)

    def gateway_serving(self) -> float:
        return total(scrape(self.stack.cfg.metrics_ports["gateway"]),
                     "avatario_gateway_inference_replicas", state="serving")


async def chat(api: Api, conversation_id: str, message: str, max_tokens: int) -> gw.ChatDone:
    call = api.chat.Chat(gw.ChatRequest(
        conversation_id=conversation_id, message=message, turn_id=new_id(),
        params=chat_pb2.GenerationParams(max_tokens=max_tokens, **GREEDY)),
        metadata=await api.parent_metadata(), timeout=120)
    done = None
    async for event in call:
        if event.HasField("done"):
            done = event.done
    assert done is not None
    assert done.finish_reason in (chat_pb2.FINISH_REASON_STOP, chat_pb2.FINISH_REASON_LENGTH), done
    return done


async def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    from services.inference.checkpoint import build_random_checkpoint

    path = tmp_path_factory.mktemp("model-b") / "tiny-world-b.pth"
    build_random_checkpoint(path, n_layer=2, n_embd=32, vocab_size=65536, seed=4)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tiny_world_model):
    redis = RedisServer()
    redis.start()
    var = tmp_path_factory.mktemp("fleet")
    cfg = StackConfig(
        var=var, ports=free_ports(REPLICAS), metrics_ports=free_ports(REPLICAS),
        database_urls=StackConfig.sqlite(var), model=tiny_world_model, tokenizer="world",
        strategy="cpu fp32", log_level="WARNING", inference_replicas=REPLICAS,
        state_store_url=redis.url,
        extra_env={
            # three model processes share the machine's cores
            "inference": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            "gateway": {"AVATARIO_GATEWAY_CHAT_MAX_TOKENS": "1024",
                        "AVATARIO_GATEWAY_INFERENCE_REFRESH_S": "1",
                        # one parent drives every turn, faster than a person would
                        "AVATARIO_GATEWAY_RATE_LIMIT_RPS": "1000",
                        "AVATARIO_GATEWAY_RATE_LIMIT_BURST": "1000"},
        })
    try:
        with running_stack(cfg) as stack:
            yield Fleet(stack, redis)
    finally:
        redis.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def family(fleet):
    api = Api(fleet.stack.gateway, timeout=60)
    _parent, child = await family_with_child(
        api, f"fleet-{new_id()[:8]}@example.org", "a long enough password", "Mia", (2018, 3),
        CHAT_ONLY)
    yield api, child
    await api.close()


async def new_conversation(api: Api, child) -> str:
    return (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
        child_id=child.child_id))).conversation.conversation_id


# Module state the later steps read (the steps run in file order).
STATE: dict = {}


@pytest.mark.asyncio(loop_scope="module")
async def test_1_every_turn_stays_with_its_rendezvous_replica_and_resumes_locally(fleet, family):
    api, child = family
    conversations = [await new_conversation(api, child) for _ in range(24)]
    placed = Counter()
    for cid in conversations:
        first = await fleet.turn(api, cid, "How can I help my daughter sleep better?")
        assert first.replica == fleet.expected(cid)
        second = await fleet.turn(api, cid, "And what about nightmares?")
        assert second.replica == first.replica
        assert second.tier == "local", (cid, second)  # a completed turn resumes from its state
        placed[first.replica] += 1
    assert set(placed) == set(fleet.names), placed  # all three take a share
    STATE["conversations"] = conversations


@pytest.mark.asyncio(loop_scope="module")
async def test_2_a_stopped_replica_moves_only_its_conversations_which_resume_from_redis(
        fleet, family):
    api, child = family
    conversations = STATE["conversations"]
    victim = fleet.expected(conversations[0])
    home = {cid: fleet.expected(cid) for cid in conversations}
    # Twins: the same messages in conversations that live elsewhere and never move.
    twins = []
    while len(twins) < 2:
        cid = await new_conversation(api, child)
        if fleet.expected(cid) != victim:
            for message in ("How can I help my daughter sleep better?",
                            "And what about nightmares?"):
                await fleet.turn(api, cid, message)
            twins.append(cid)

    fleet.stack.sup.kill(victim, signal.SIGTERM)
    assert await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
        fleet.stack.sup.wait_exit(victim, 60), fleet.stack.loop)) == 0
    fleet.up.discard(victim)
    await wait_for(lambda: fleet.gateway_serving() == REPLICAS - 1, what="the gateway to notice")

    moved_replies, twin_replies = [], []
    for cid in conversations:
        t = await fleet.turn(api, cid, "Should she nap in the afternoon?")
        if home[cid] == victim:
            assert t.replica == fleet.expected(cid)  # the next in its own order
            assert t.tier == "shared", (cid, t)
            moved_replies.append(t.done.text)
        else:
            assert t.replica == home[cid] and t.tier == "local", (cid, t)
    for cid in twins:
        t = await fleet.turn(api, cid, "Should she nap in the afternoon?")
        assert t.tier == "local"
        twin_replies.append(t.done.text)
    assert moved_replies, "the victim had conversations"
    # Greedy replies after a shared-tier resume equal those of a conversation that stayed.
    assert set(moved_replies) == {twin_replies[0]} and twin_replies[0] == twin_replies[1]
    STATE["victim"] = victim
    STATE["home"] = home


@pytest.mark.asyncio(loop_scope="module")
async def test_3_a_replica_with_another_model_does_not_use_the_shared_entries(
        fleet, family, other_model):
    api, _child = family
    victim, home = STATE["victim"], STATE["home"]
    spec = service_specs(fleet.stack.cfg)[victim]
    spec.env["AVATARIO_INFERENCE_MODEL_PATH"] = str(other_model)
    fleet.on_loop(fleet.stack.sup.start(spec))
    fleet.up.add(victim)
    await wait_for(lambda: fleet.gateway_serving() == REPLICAS, what="the replica to come back")
    for cid in STATE["conversations"]:
        t = await fleet.turn(api, cid, "Is a bedtime story a good idea?")
        assert t.replica == home[cid]  # back home
        if home[cid] == victim:
            assert t.tier == "miss", (cid, t)  # Redis holds the other model's state
        else:
            assert t.tier == "local", (cid, t)


@pytest.mark.asyncio(loop_scope="module")
async def test_4_erasure_during_a_streaming_turn_leaves_no_state_anywhere(fleet, family):
    async with Api(fleet.stack.gateway, timeout=60) as api:
        _parent, child = await family_with_child(
            api, f"erase-{new_id()[:8]}@example.org", "a long enough password", "Noa",
            (2017, 9), CHAT_ONLY)
        baseline = {n: total(s, "avatario_inference_state_cache_entries")
                    for n, s in fleet.snapshot().items()}
        conversations = [await new_conversation(api, child) for _ in range(6)]
        for cid in conversations:
            await fleet.turn(api, cid, "We moved house, she is anxious.")
        assert any(cid in k for k in fleet.redis.keys() for cid in conversations)

        streaming = conversations[0]
        call = api.chat.Chat(gw.ChatRequest(
            conversation_id=streaming, message="Tell me a very long story about dragons.",
            turn_id=new_id(), params=chat_pb2.GenerationParams(max_tokens=1024, **GREEDY)),  # the node's limit
            metadata=await api.parent_metadata(), timeout=120)
        await call.read()  # the turn is streaming
        await api.call(api.privacy.EraseFamily, gw.EraseFamilyRequest(
            password="a long enough password"))
        # the reply runs on to its end (or breaks): either is fine
        with contextlib.suppress(grpc.aio.AioRpcError):
            while await call.read() is not grpc.aio.EOF:
                pass

        await asyncio.sleep(0.5)
        after = {n: total(s, "avatario_inference_state_cache_entries")
                 for n, s in fleet.snapshot().items()}
        assert after == baseline, (baseline, after)
        left = [k for k in fleet.redis.keys() if any(cid in k for cid in conversations)]
        assert left == []


@pytest.mark.asyncio(loop_scope="module")
async def test_5_with_redis_down_chats_still_answer(fleet, family):
    api, child = family
    fleet.redis.stop()
    for cid in STATE["conversations"][:6]:
        t = await fleet.turn(api, cid, "One more question, please.")
        assert t.done.text
    cid = await new_conversation(api, child)
    for message in ("A new question.", "And a follow-up."):
        t = await fleet.turn(api, cid, message)
        assert t.done.text
    assert t.tier == "local"  # the local cache still works
