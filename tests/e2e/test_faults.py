"""Faults against real processes and real PostgreSQL (issue 10, "Prove: Faults").

* a service SIGKILLed during sustained ingestion while clients retry each session
  by its id: every acknowledged session stored once, every XP award applied once;
* PostgreSQL restarted under load (a private cluster, never the shared server):
  UNAVAILABLE during the outage, never INTERNAL; recovery without a restart;
* a slow backend: DEADLINE_EXCEEDED reaches the client and the gateway's tasks
  return to their baseline;
* SIGTERM on each service under traffic: NOT_SERVING first, in-flight calls
  finish, new calls are refused, exit code 0.

Each scenario adds a row to the fault table, printed at the end of the module
(`-s`) and written to bench/results/faults.json.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avatario.analytics.v1 import analytics_pb2
from avatario.common.v1 import chat_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.inference.v1 import inference_pb2
from avatario.profile.v1 import profile_pb2, profile_pb2_grpc
from avatario_tools.cli.api import Api, ApiError
from avatario_tools.devstack.stack import DATA_SERVICES, StackConfig, free_ports, service_specs
from services.common import migrations
from services.common.interceptors import INTERNAL_TOKEN_KEY
from services.common.server import Registration, create_server
from services.common.settings import ServiceSettings
from services.gateway.main import MIGRATIONS as GATEWAY_MIGRATIONS
from services.inference.settings import InferenceSettings
from tests.e2e.conftest import running_stack
from tests.e2e.faultkit import (
    FaultTable,
    Ingest,
    Player,
    check_exactly_once,
    ingest,
    scrape,
    stored,
    wait_outbox_drained,
)
from tests.e2e.pgcluster import private_cluster
from tests.helpers import INTERNAL_TOKEN, new_id
from tests.integration.gateway.conftest import start_gateway

pytestmark = pytest.mark.slow

GRACE_S = 10.0
# Inference keeps its own default (InferenceSettings, 30 s): four 512-token chats on a loaded 2-core CI machine
# need more than 10 s to finish, and a chat turn is what the longer grace exists for.
GRACE_BY_SERVICE = {"inference": InferenceSettings.model_fields["shutdown_grace_s"].default}
OPEN_LIMITS = {  # the fault clients retry fast; rate limits are not under test here
    "rate_limit_rps": "1000", "rate_limit_burst": "1000", "auth_rate_limit_rps": "1000",
    "auth_rate_limit_burst": "1000", "anonymous_rate_limit_rps": "1000",
    "anonymous_rate_limit_burst": "1000", "password_rate_limit": "1000/second",
    "max_chat_streams_per_parent": "8",
    # sign-ups queue for profile's argon2 workers on a busy 2-core machine
    "backend_deadline_s": "20",
}


def _grace(name: str) -> float:
    return GRACE_BY_SERVICE.get(name, GRACE_S)


def _env(name: str, **values: str) -> dict[str, str]:
    prefix = f"AVATARIO_{name.upper()}_"
    return {prefix + k.upper(): v for k, v in {"shutdown_grace_s": str(_grace(name)), **values}.items()}


@pytest.fixture(scope="module")
def table():
    t = FaultTable()
    yield t
    t.write()


@pytest.fixture(scope="module")
def cluster():
    c = private_cluster()
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def fstack(cluster, tmp_path_factory, tiny_world_model):
    """The four services as real processes, their databases on the private cluster."""
    cfg = StackConfig(
        var=tmp_path_factory.mktemp("faults"), ports=free_ports(), metrics_ports=free_ports(),
        database_urls={name: cluster.create_database() for name in DATA_SERVICES},
        model=tiny_world_model, tokenizer="world", strategy="cpu fp32", log_level="WARNING",
        extra_env={
            "gateway": _env("gateway", **OPEN_LIMITS),
            "profile": _env("profile"),
            "analytics": _env("analytics", xp_outbox_poll_s="0.3", xp_retry_initial_s="0.2",
                              xp_retry_max_s="1"),
            "inference": _env("inference"),
        })
    with running_stack(cfg) as running:
        yield running


async def on_stack(stack, coro):
    """Run a supervisor coroutine on the stack's own loop."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, stack.loop))


def _urls(stack) -> dict[str, str]:
    return stack.cfg.database_urls


async def _sessions_through_a_fault(stack, table, scenario: str, fault, *, n: int = 30):
    player = await Player.create(stack.gateway, "Kim")
    try:
        sessions = player.sessions(n)
        stats = Ingest()
        await ingest(player, sessions, stats, workers=4, fault=fault, fault_after=n // 3)
        await wait_outbox_drained(_urls(stack)["analytics"], player.child.child_id)
        db = await stored(_urls(stack), player.child.child_id)
    finally:
        await player.api.close()
    table.add(scenario, requests=stats.requests, acknowledged=len(stats.acked),
              stored=sum(db.sessions.values()), duplicates=db.duplicates,
              duplicate_acks=stats.duplicate_acks, xp_awards=len(db.awards),
              codes_during_fault=dict(stats.fault_codes), recovery_s=stats.recovery_s,
              outage_s=stats.outage_s)
    check_exactly_once(stats, db, len(sessions))
    return stats


# -- SIGKILL during ingestion ----------------------------------------------------------


@pytest.mark.parametrize("victim", ["analytics", "profile"])
async def test_sigkill_during_ingestion_stores_every_session_and_award_once(fstack, table, victim):
    spec = service_specs(fstack.cfg)[victim]

    async def kill_and_restart(stats: Ingest) -> None:
        fstack.sup.kill(victim, signal.SIGKILL)
        assert await on_stack(fstack, fstack.sup.wait_exit(victim, 10)) == -signal.SIGKILL
        await asyncio.sleep(1.0)  # the clients keep retrying against the dead service
        stats.repair_at = time.monotonic()
        await on_stack(fstack, fstack.sup.start(spec))

    stats = await _sessions_through_a_fault(fstack, table, f"SIGKILL {victim} (ingestion)",
                                            kill_and_restart)
    assert stats.fault_codes, "the clients never noticed the kill"
    assert set(stats.fault_codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, stats.fault_codes


# -- PostgreSQL restarted under load ---------------------------------------------------


async def test_postgres_restart_under_load_answers_unavailable_and_recovers(fstack, cluster,
                                                                          table):
    pids = {name: p.pid for name, p in fstack.sup.procs.items()}

    async def restart_postgres(stats: Ingest) -> None:
        await asyncio.to_thread(cluster.stop, "fast")
        await asyncio.sleep(2.0)  # load against a database that is down
        stats.repair_at = time.monotonic()
        await asyncio.to_thread(cluster.start)

    stats = await _sessions_through_a_fault(fstack, table, "PostgreSQL restart (ingestion)",
                                            restart_postgres)
    assert stats.fault_codes, "the clients never noticed the outage"
    assert set(stats.fault_codes) == {"UNAVAILABLE"}, stats.fault_codes
    # Nobody was restarted: the same processes recovered on their own.
    assert {name: p.pid for name, p in fstack.sup.procs.items()} == pids
    assert fstack.sup.any_exited() is None


# -- a slow backend --------------------------------------------------------------------

PROFILE_SERVICE = profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name


class SlowProfile(profile_pb2_grpc.ProfileServiceServicer):
    """Authenticate never answers; it records the deadline it was given."""

    def __init__(self) -> None:
        self.deadlines: list[float | None] = []
        self.cancelled = 0

    async def Authenticate(self, request, context):
        self.deadlines.append(context.time_remaining())
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def _settled_tasks(baseline: int) -> int:
    """The task count once it is back to `baseline` (or after 10 s)."""
    for _ in range(200):
        if len(asyncio.all_tasks()) <= baseline:
            break
        await asyncio.sleep(0.05)
    return len(asyncio.all_tasks())


async def test_slow_backend_deadline_reaches_the_client_and_tasks_return_to_baseline(tmp_path,
                                                                                     table):
    fake = SlowProfile()
    server, port = await create_server(
        name="slow-profile", settings=ServiceSettings(
            internal_token=INTERNAL_TOKEN, port=0, metrics_port=None, log_json=False),
        services=[Registration(profile_pb2_grpc.add_ProfileServiceServicer_to_server, fake,
                               PROFILE_SERVICE)])
    await server.start()
    await server.set_serving()
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await asyncio.to_thread(migrations.upgrade, Path(GATEWAY_MIGRATIONS), url)
    # backend deadline 5 s (the client's is shorter) and 0.3 s (the client's is longer)
    gateways = [await start_gateway(url, f"127.0.0.1:{port}", backend_deadline_s=s)
                for s in (5.0, 0.3)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{g.port}") for g in gateways]
    codes: dict[str, int] = {}
    try:
        sign_ins = [ch.unary_unary("/avatario.gateway.v1.AuthService/SignIn",
                                   request_serializer=gw.SignInRequest.SerializeToString,
                                   response_deserializer=gw.SignInResponse.FromString)
                    for ch in channels]
        request = gw.SignInRequest(email="slow@example.org", password="a long enough password")

        async def sign_in(i: int, timeout: float) -> grpc.StatusCode:
            try:
                await sign_ins[i](request, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] = codes.get(err.code().name, 0) + 1
                return err.code()
            return grpc.StatusCode.OK

        # warm up both channels (and the gateways' channels to the backend)
        await asyncio.gather(sign_in(0, 0.5), sign_in(1, 10))
        fake.deadlines.clear()
        baseline = len(asyncio.all_tasks())

        # The client allows 0.5 s; the gateway passes no more than that down.
        short = await asyncio.gather(*(sign_in(0, 0.5) for _ in range(8)))
        assert set(short) == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert fake.deadlines and max(fake.deadlines) < 1.0  # not the 5 s configured
        # The backend's own deadline (0.3 s) fires first: still DEADLINE_EXCEEDED.
        long = await asyncio.gather(*(sign_in(1, 10) for _ in range(8)))
        assert set(long) == {grpc.StatusCode.DEADLINE_EXCEEDED}

        after = await _settled_tasks(baseline)
        assert after <= baseline, f"{after - baseline} tasks left behind in the gateway"
        for _ in range(100):  # the backend's handlers were cancelled too
            if fake.cancelled >= 18:
                break
            await asyncio.sleep(0.05)
        assert fake.cancelled >= 18
        table.add("slow backend (profile)", requests=18, acknowledged=0, stored=None,
                  duplicates=None, codes_during_fault=dict(codes), recovery_s=None,
                  tasks_baseline=baseline, tasks_after=after)
    finally:
        for ch in channels:
            await ch.close()
        for g in gateways:
            await g.server.stop(0)
        await server.stop(0)


# -- SIGTERM under traffic -------------------------------------------------------------

# A call each service must refuse once it is draining (accepted, it would answer
# something other than UNAVAILABLE: INVALID_ARGUMENT or OK).
NEW_CALL = {
    "gateway": ("/avatario.gateway.v1.AuthService/SignIn", gw.SignInRequest()),
    "profile": (f"/{PROFILE_SERVICE}/GetParent", profile_pb2.GetParentRequest()),
    "analytics": ("/" + analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
                  + "/ListGames", analytics_pb2.ListGamesRequest()),
    "inference": ("/" + inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
                  + "/GetModelInfo", inference_pb2.GetModelInfoRequest()),
}


async def _new_call(stack, name: str) -> grpc.StatusCode:
    method, request = NEW_CALL[name]
    async with grpc.aio.insecure_channel(stack.target(name)) as channel:
        call = channel.unary_unary(method, request_serializer=type(request).SerializeToString,
                                   response_deserializer=lambda b: b)
        try:
            await call(request, timeout=5, metadata=((INTERNAL_TOKEN_KEY,
                                                      stack.cfg.internal_token),))
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def _traffic(stack, name: str, player: Player, n: int):
    """n calls that reach `name` and keep it busy for a while."""
    api = player.api
    if name in ("gateway", "profile"):  # sign-ups: argon2 hashing in profile
        async def sign_up():
            async with Api(stack.gateway, timeout=60) as other:
                return await other.sign_up(f"term-{new_id()[:8]}@example.org",
                                           "a long enough password", "Term")
        return [sign_up() for _ in range(n)]
    if name == "analytics":
        sessions = player.sessions(n)
        return [api.as_device(player.child.child_id, api.play.SubmitGameSession,
                              gw.SubmitGameSessionRequest(session=s), timeout=60)
                for s in sessions[:n]]
    conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
        child_id=player.child.child_id))).conversation

    async def chat():
        done = None
        metadata = await api.parent_metadata()
        async for event in api.chat.Chat(gw.ChatRequest(
                conversation_id=conv.conversation_id, message="Tell me a long story.",
                turn_id=new_id(), params=chat_pb2.GenerationParams(max_tokens=512,
                                                                   temperature=1.0)),
                metadata=metadata, timeout=60):
            if event.HasField("done"):
                done = event.done
        assert done is not None and done.finish_reason != chat_pb2.FINISH_REASON_ERROR, done
        return done
    return [chat() for _ in range(n)]


@pytest.mark.parametrize("name", ["analytics", "profile", "inference", "gateway"])
async def test_sigterm_under_traffic_drains_then_refuses(fstack, table, name):
    spec = service_specs(fstack.cfg)[name]
    metrics_port = fstack.cfg.metrics_ports[name]
    player = await Player.create(fstack.gateway, "Tia")
    health_channel = grpc.aio.insecure_channel(fstack.target(name))
    try:
        watch = health_pb2_grpc.HealthStub(health_channel).Watch(
            health_pb2.HealthCheckRequest(service=""))
        first = await asyncio.wait_for(watch.read(), 10)
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        n = {"inference": 4, "analytics": 16}.get(name, 6)
        before = await asyncio.to_thread(scrape, metrics_port)
        calls = [asyncio.ensure_future(c) for c in await _traffic(fstack, name, player, n)]
        assert len(calls) == n
        # SIGTERM only once every call has reached the service's handlers.
        for _ in range(400):
            failed = [c.exception() for c in calls if c.done() and c.exception()]
            assert not failed, failed
            now = await asyncio.to_thread(scrape, metrics_port)
            if now["grpc_server_started_total"] - before["grpc_server_started_total"] >= n:
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError(f"the calls never reached {name}")
        in_flight = int(now["grpc_server_started_total"] - now["grpc_server_handled_total"])
        fstack.sup.kill(name, signal.SIGTERM)
        t_term = time.monotonic()

        # Health says NOT_SERVING before anything else happens.
        changed = await asyncio.wait_for(watch.read(), 10)
        assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING, changed
        watch.cancel()
        refused = await _new_call(fstack, name)
        results = await asyncio.gather(*calls, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        rc = await on_stack(fstack, fstack.sup.wait_exit(name, _grace(name) + 20))
        drained_s = round(time.monotonic() - t_term, 3)
        t_restart = time.monotonic()
        await on_stack(fstack, fstack.sup.start(spec))
        recovery = round(time.monotonic() - t_restart, 3)
        codes = {}
        for f in failures:
            key = f.code.name if isinstance(f, ApiError) else type(f).__name__
            codes[key] = codes.get(key, 0) + 1
        codes[f"new call: {refused.name}"] = 1
        table.add(f"SIGTERM {name} (traffic)", requests=n + 1, acknowledged=n - len(failures),
                  stored=None, duplicates=None, codes_during_fault=codes, recovery_s=recovery,
                  in_flight_at_sigterm=in_flight, exit_code=rc, drained_s=drained_s)
        assert not failures, failures
        assert refused == grpc.StatusCode.UNAVAILABLE
        assert rc == 0
        assert in_flight >= 1, "nothing was in flight at SIGTERM: the test proved nothing"
    finally:
        await health_channel.close()
        await player.api.close()
