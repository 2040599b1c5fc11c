"""The protocol fuzz driver: every RPC of every service, with requests from `protofuzz`.

A `FuzzStack` is the real system on port 0 (profile, analytics, inference on a tiny
random RWKV-4 model, and the gateway in front of them) on SQLite or PostgreSQL.
`World.populate` creates real families through the public API (consent, a child,
a paired device, pairing codes, a conversation with a turn, a game session, a
check-in) and fills the pools the fuzzer draws ids and tokens from. `Driver.run`
then calls every public RPC through the gateway as a parent, as a device,
anonymously and with bogus credentials, and every internal RPC directly with the
internal token (and without it), with `cases` generated requests each.

Per call it records the status code; INTERNAL and UNKNOWN are findings (the RPC,
a request summary, the details). Around every write RPC (anything but Get*/List*)
it counts the rows of every table of every service database; when the write was
rejected, the counts must be unchanged (else a partial-write finding). At the end
every server's grpc.health.v1 must answer SERVING.

Used by tests/fuzz/test_fuzz_rpcs.py (a short profile) and bench/bench_fuzz.py.
"""

from __future__ import annotations

import random
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from avatario.analytics.v1 import analytics_pb2
from avatario.common.v1 import play_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.inference.v1 import inference_pb2
from avatario.profile.v1 import profile_pb2
from avatario_tools.simulation.simulator import SimChild, draw_child, simulate_session, with_changes
from services.analytics import convert
from services.analytics.domain.catalog import load_catalog
from services.analytics.domain.norms import load_norms
from services.common.interceptors import INTERNAL_TOKEN_KEY
from services.inference.checkpoint import build_random_checkpoint
from services.inference.main import build_server as build_inference
from services.inference.settings import InferenceSettings
from tests.fuzz.protofuzz import Fuzzer, assign, from_pool, garbage_tokens, summarize, weighted
from tests.helpers import INTERNAL_TOKEN
from tests.integration.gateway.conftest import Urls, running_stack
from tests.integration.gateway.support import PASSWORD, Client, Fam, new_family, pair_device

C = grpc.StatusCode
BUGS = (C.INTERNAL, C.UNKNOWN)
CALL_TIMEOUT_S = 30.0
STREAM_LIMIT = 10_000  # messages read from one stream at most
CHAT_MAX_TOKENS = 8

PUBLIC = [gw.DESCRIPTOR.services_by_name[n] for n in gw.DESCRIPTOR.services_by_name]
INTERNAL = [profile_pb2.DESCRIPTOR.services_by_name["ProfileService"],
            analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
            inference_pb2.DESCRIPTOR.services_by_name["InferenceService"]]
PUBLIC_IDENTITIES = ("parent", "device", "anonymous", "bogus")
INTERNAL_IDENTITIES = ("internal", "no-credential")
# Calls that end the world's sessions or data: run last in a round, so the others
# meet live tokens and rows.
DESTRUCTIVE = ("EraseFamily", "EraseFamilyData", "EraseChildData", "RevokeDevice", "SignOut",
               "RefreshTokens", "ChangePassword", "WithdrawConsent", "DeleteChild", "RemoveParent",
               "TransferOwnership", "JoinFamily")


def is_write(method: str) -> bool:
    return not method.startswith(("Get", "List"))


# ------------------------------------------------------------------------------------------
# The stack


@dataclass
class FuzzStack:
    urls: Urls
    targets: dict[str, str]  # service -> host:port
    public: grpc.aio.Channel
    internal: dict[str, grpc.aio.Channel]  # full service name -> channel
    codec: Any  # the gateway's JwtCodec (to mint expired tokens)


def inference_settings(model_path: Path) -> InferenceSettings:
    return InferenceSettings(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None,
                             model_path=model_path, tokenizer="world", strategy="cpu fp32",
                             max_tokens_limit=CHAT_MAX_TOKENS, default_max_tokens=4, max_prompt_tokens=4096,
                             state_cache_bytes=16 << 20, log_json=False)


def build_model(folder: Path) -> Path:
    """A tiny random RWKV-4 (2 layers x 32, World vocabulary): seconds to build and load."""
    return build_random_checkpoint(folder / "fuzz.pth", n_layer=2, n_embd=32, vocab_size=65536,
                                   seed=7)


@asynccontextmanager
async def fuzz_stack(urls: Urls, model_path: Path) -> AsyncIterator[FuzzStack]:
    node = await build_inference(inference_settings(model_path))
    try:
        async with running_stack(urls, f"127.0.0.1:{node.port}") as s:
            # Short replies from the tiny model keep Chat cases cheap.
            gateway, client = await s.extra_gateway(chat_max_tokens=CHAT_MAX_TOKENS,
                                                    chat_default_max_tokens=CHAT_MAX_TOKENS)
            targets = {"gateway": f"127.0.0.1:{gateway.port}", "profile": s.profile_target,
                       "analytics": s.analytics_target, "inference": f"127.0.0.1:{node.port}"}
            internal = {svc.full_name: grpc.aio.insecure_channel(targets[name]) for name, svc in
                        zip(("profile", "analytics", "inference"), INTERNAL, strict=True)}
            try:
                yield FuzzStack(urls, targets, client.channel, internal,
                                gateway.deps.tokens.codec)
            finally:
                for ch in internal.values():
                    await ch.close()
    finally:
        await node.server.stop(0)


async def health(stack: FuzzStack) -> dict[str, str]:
    """Each server's overall grpc.health.v1 status."""
    out = {}
    for name, target in stack.targets.items():
        async with grpc.aio.insecure_channel(target) as ch:
            try:
                resp = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=10)
                out[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError as err:
                out[name] = f"error {err.code().name}"
    return out


class RowCounter:
    """Row counts of every table of every service database, one query per database."""

    def __init__(self, urls: Urls) -> None:
        self.engines = {name: create_async_engine(url) for name, url in
                        (("profile", urls.profile), ("analytics", urls.analytics),
                         ("gateway", urls.gateway)) if url}
        self.queries: dict[str, Any] = {}

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, engine in self.engines.items():
            async with engine.connect() as conn:
                if name not in self.queries:
                    tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
                    self.queries[name] = text(" UNION ALL ".join(
                        f"SELECT '{t}', COUNT(*) FROM \"{t}\"" for t in sorted(tables)))
                for table, n in (await conn.execute(self.queries[name])).all():
                    out[f"{name}.{table}"] = n
        return out

    async def dispose(self) -> None:
        for engine in self.engines.values():
            await engine.dispose()


# ------------------------------------------------------------------------------------------
# The world: real rows and credentials the fuzzer draws from

CATALOG = load_catalog()
NORMS = load_norms()


@dataclass
class World:
    pools: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    refs: list[analytics_pb2.ChildRef] = field(default_factory=list)
    sessions: list[play_pb2.GameSession] = field(default_factory=list)
    families: list[Fam] = field(default_factory=list)
    # id -> the ids of its family by field name, so a request can name one family coherently
    owners: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, key: str, *values: Any, cap: int = 200) -> None:
        pool = self.pools[key]
        pool.extend(v for v in values if v)
        del pool[:-cap]

    def reset_credentials(self) -> None:
        """Tokens of the last round may be revoked: keep them only as bogus ones."""
        for key in ("parent_token", "device_token"):
            self.add("stale_token", *self.pools[key])
            self.pools[key].clear()

    async def populate(self, stack: FuzzStack, families: int = 2, rng: random.Random | None = None
                       ) -> None:
        rng = rng or random.Random(0)
        client = Client(stack.public)
        now = datetime.now(UTC)
        self.reset_credentials()
        for _ in range(families):
            fam = await new_family(client)
            self.families.append(fam)
            md = fam.client.md
            device_token, device = await pair_device(fam)
            codes = [(await fam.client.device.CreatePairingCode(gw.CreatePairingCodeRequest(
                child_id=fam.child_id), metadata=md)).code for _ in range(2)]
            conv = (await fam.client.chat.CreateConversation(gw.CreateConversationRequest(
                child_id=fam.child_id, title="Sleep"), metadata=md)).conversation
            async for _ in fam.client.chat.Chat(gw.ChatRequest(
                    conversation_id=conv.conversation_id, message="How can I help her sleep?",
                    turn_id=str(uuid.uuid4())), metadata=md):
                pass
            child = (await fam.client.family.GetChild(gw.GetChildRequest(child_id=fam.child_id),
                                                      metadata=md)).child
            ref = analytics_pb2.ChildRef(family_id=fam.family_id, child_id=fam.child_id,
                                         birth_year=child.birth_year, birth_month=child.birth_month)
            self.refs.append(ref)
            sim = with_changes(draw_child(rng, now, age_years=(8, 8)), child_id=fam.child_id,
                               birth_year=child.birth_year, birth_month=child.birth_month)
            for game in CATALOG.games:
                self.sessions.append(self._session(game, sim, now, rng))
            played = self.sessions[-1]
            device_md = (("authorization", f"Bearer {device_token}"),)
            await client.play.SubmitGameSession(gw.SubmitGameSessionRequest(session=played),
                                                metadata=device_md)
            checkin = play_pb2.MoodCheckIn(checkin_id=str(uuid.uuid4()), child_id=fam.child_id,
                                           mood=play_pb2.MOOD_HAPPY, intensity=3)
            checkin.recorded_at.FromDatetime(now - timedelta(minutes=5))
            await client.play.SubmitMoodCheckIn(gw.SubmitMoodCheckInRequest(checkin=checkin),
                                                metadata=device_md)
            ids = {"family_id": fam.family_id, "parent_id": fam.parent.parent_id,
                   "child_id": fam.child_id, "device_id": device.device_id,
                   "conversation_id": conv.conversation_id}
            self.owners.update({v: ids for v in ids.values()})
            self.add("family_id", fam.family_id)
            self.add("parent_id", fam.parent.parent_id)
            self.add("child_id", fam.child_id)
            self.add("device_id", device.device_id)
            self.add("conversation_id", conv.conversation_id)
            self.add("session_id", played.session_id)
            self.add("checkin_id", checkin.checkin_id)
            self.add("code", *codes)
            self.add("email", fam.email)
            self.add("refresh_token", fam.tokens.refresh_token)
            self.add("parent_token", fam.access)
            self.add("device_token", device_token)
            await self._page_tokens(fam)
        self.add("password", PASSWORD)
        self.add("game_id", *{g.game_id for g in CATALOG.games})
        self.add("stale_token", self._expired(stack, self.families[-1]))

    @staticmethod
    def _session(game: Any, sim: SimChild, now: datetime, rng: random.Random) -> play_pb2.GameSession:
        started = now - timedelta(hours=rng.randint(1, 48))
        return convert.session_pb(simulate_session(game, sim, 0.0, started, NORMS, rng))

    async def _page_tokens(self, fam: Fam) -> None:
        """Real next_page_tokens of a few lists (page size 1)."""
        calls = [(fam.client.family.ListAuditEvents, gw.ListAuditEventsRequest(page_size=1)),
                 (fam.client.avatar.ListAvatarItems, gw.ListAvatarItemsRequest(page_size=1)),
                 (fam.client.play.ListGames, gw.ListGamesRequest(page_size=1)),
                 (fam.client.report.ListTips, gw.ListTipsRequest(page_size=1)),
                 (fam.client.chat.ListMessages, gw.ListMessagesRequest(
                     conversation_id=self.pools["conversation_id"][-1], page_size=1))]
        for call, req in calls:
            resp = await call(req, metadata=fam.client.md)
            self.add("page_token", resp.next_page_token)
            for item in getattr(resp, "items", ()):
                self.add("item_id", item.item_id)
            for tip in getattr(resp, "tips", ()):
                self.add("age_band", tip.age_band)
        items = await fam.client.avatar.ListAvatarItems(gw.ListAvatarItemsRequest(page_size=100),
                                                        metadata=fam.client.md)
        self.add("item_id", *[i.item_id for i in items.items])

    @staticmethod
    def _expired(stack: FuzzStack, fam: Fam) -> str:
        token, _ = stack.codec.issue(fam.parent.parent_id, fam.family_id, str(uuid.uuid4()),
                                     now=datetime.now(UTC) - timedelta(days=2))
        return token

    # -- strategies ---------------------------------------------------------------------------
    def fuzzer(self, *, huge: bool = True) -> Fuzzer:
        now = datetime.now(UTC)
        hints = {
            "birth_year": st.integers(now.year - 14, now.year), "birth_month": st.integers(1, 12),
            "page_size": st.integers(0, 120), "intensity": st.integers(1, 5),
            "amount": st.integers(1, 10_000), "max_tokens": st.integers(1, 8),
            "age_months": st.integers(0, 216), "top_k": st.integers(0, 50),
            "temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1),
            "penalty_decay": st.floats(0.5, 1), "reaction_time_ms": st.integers(100, 4000),
            "game_version": st.integers(1, 3), "index": st.integers(0, 40),
            "policy_version": st.sampled_from(["2024-01", "2024-02", "v3"]),
            "nickname": st.sampled_from(["Sunny", "Kit", "Mia"]),
            "display_name": st.sampled_from(["Alex", "Sam"]), "device_name": st.just("Tablet"),
            "title": st.just("Bedtime"), "message": st.sampled_from(["How can I help?", "Hi"]),
            "user_message": st.just("Hello"), "assistant_message": st.just("Hi there"),
            "turn_id": st.uuids().map(str), "session_id": st.uuids().map(str),
            "checkin_id": st.uuids().map(str), "source_id": st.uuids().map(lambda u: f"session:{u}"),
            "email": st.emails().map(lambda e: e[:200]), "new_password": st.just("another long password"),
            "summary": st.just("Working memory is on track."),
            "reason": st.just("game session"),
        }
        fz = Fuzzer(self.pools, hints=hints, huge=huge, now_s=int(now.timestamp()))
        session = self._session_strategy(fz)
        messages = {
            "avatario.analytics.v1.ChildRef": from_pool(self.refs),
            "avatario.common.v1.GameSession": session,
            "avatario.common.v1.MoodCheckIn": self._checkin_strategy(now),
        }
        fz.messages.update(messages)
        return fz

    def _session_strategy(self, fz: Fuzzer) -> st.SearchStrategy[play_pb2.GameSession]:
        """A realistic session of a real game for a real child, sometimes with one field
        (or one trial's field) replaced by a generated value."""
        desc = play_pb2.GameSession.DESCRIPTOR
        trial_desc = play_pb2.Trial.DESCRIPTOR

        @st.composite
        def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> play_pb2.GameSession:
            s = play_pb2.GameSession()
            s.CopyFrom(draw(from_pool(self.sessions)))
            s.session_id = str(draw(st.uuids()))
            s.child_id = draw(weighted((3, from_pool(self.pools["child_id"])), (1, st.just(""))))
            what = draw(st.sampled_from(["none", "none", "field", "trial"]))
            if what == "field":
                f = draw(st.sampled_from(list(desc.fields)))
                s.ClearField(f.name)
                _set(s, f, draw(fz._field(f, 1)))
            elif what == "trial" and s.trials:
                t = s.trials[draw(st.integers(0, len(s.trials) - 1))]
                f = draw(st.sampled_from(list(trial_desc.fields)))
                t.ClearField(f.name)
                _set(t, f, draw(fz._field(f, 2)))
            return s

        return build()

    def _checkin_strategy(self, now: datetime) -> st.SearchStrategy[play_pb2.MoodCheckIn]:
        def make(cid: str, child: str, mood: int, intensity: int, minutes: int) -> play_pb2.MoodCheckIn:
            c = play_pb2.MoodCheckIn(checkin_id=cid, child_id=child, mood=mood, intensity=intensity)
            c.recorded_at.FromDatetime(now - timedelta(minutes=minutes))
            return c

        return st.builds(make, st.uuids().map(str), from_pool(self.pools["child_id"]),
                         st.integers(1, 7), st.integers(1, 5), st.integers(0, 60 * 24 * 6))

    def coherent(self, msg: Message) -> Message:
        """The request with every real id rewritten to the family of the first real id it
        names (fields drawn independently rarely agree on a family, so most requests would
        stop at the first ownership check)."""
        found: list[tuple[Message, str, str]] = []

        def walk(m: Message, depth: int) -> None:
            for f, value in m.ListFields():
                if isinstance(value, str) and value in self.owners:
                    found.append((m, f.name, value))
                elif isinstance(value, Message) and depth < 2:
                    walk(value, depth + 1)

        walk(msg, 0)
        if found:
            ids = self.owners[found[0][2]]
            for m, name, _ in found:
                if name in ids:
                    setattr(m, name, ids[name])
        return msg

    def requests(self, fz: Fuzzer, cls: type[Message]) -> st.SearchStrategy[Message]:
        """Generated requests, two in three of them naming one family coherently."""
        return st.tuples(fz.message(cls), st.integers(0, 2)).map(
            lambda p: p[0] if p[1] == 0 else self.coherent(p[0]))

    def credentials(self, identity: str) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
        def bearer(token: str) -> tuple[tuple[str, str], ...]:
            return (("authorization", f"Bearer {token}"),)

        if identity == "parent":
            return from_pool(self.pools["parent_token"]).map(bearer)
        if identity == "device":
            return from_pool(self.pools["device_token"]).map(bearer)
        if identity == "anonymous":
            return st.just(())
        if identity == "internal":
            return st.just(((INTERNAL_TOKEN_KEY, INTERNAL_TOKEN),))
        if identity == "no-credential":
            return weighted((1, st.just(())), (1, garbage_tokens().map(
                lambda t: ((INTERNAL_TOKEN_KEY, t),))))
        # bogus public credentials: expired, unsigned, wrongly signed, stale, garbage, malformed.
        real = from_pool(self.pools["parent_token"])
        forged = st.builds(_forged, from_pool(self.pools["family_id"]),
                           from_pool(self.pools["parent_id"]), st.sampled_from(["none", "wrong-key",
                                                                               "unknown-kid"]))
        raw = weighted(
            (2, from_pool(self.pools["stale_token"]).map(lambda t: f"Bearer {t}")),
            (2, forged.map(lambda t: f"Bearer {t}")),
            (2, garbage_tokens().map(lambda t: f"Bearer {t}")),
            (1, real.map(lambda t: f"bearer {t}")), (1, real.map(lambda t: f"Basic {t}")),
            (1, real.map(lambda t: f"Bearer  {t}x")), (1, real.map(lambda t: t)),
            (1, st.sampled_from(["Bearer", "Bearer ", "", "Basic dXNlcjpwYXNz"])),
        )
        return raw.map(lambda v: (("authorization", v),))


def _forged(family_id: str, parent_id: str, how: str) -> str:
    now = int(time.time())
    claims = {"sub": parent_id, "fam": family_id, "sid": str(uuid.uuid4()), "jti": "x",
              "iat": now, "nbf": now, "exp": now + 600}
    if how == "none":
        return jwt.encode(claims, None, algorithm="none")
    kid = "k1" if how == "wrong-key" else "k9"
    return jwt.encode(claims, "not-the-key-0123456789-0123456789-012", algorithm="HS256",
                      headers={"kid": kid})


def _set(msg: Message, f: Any, value: Any) -> None:
    if value is not None:
        assign(msg, f, value)


# ------------------------------------------------------------------------------------------
# Targets and the driver


@dataclass(frozen=True)
class Target:
    service: Any  # ServiceDescriptor
    method: Any  # MethodDescriptor
    identity: str

    @property
    def public(self) -> bool:
        return self.identity in PUBLIC_IDENTITIES

    @property
    def name(self) -> str:
        return f"{self.service.name}.{self.method.name}"

    @property
    def group(self) -> str:
        """The row of the report: gateway.<Service> or the internal service."""
        return f"gateway.{self.service.name}" if self.public else self.service.full_name

    @property
    def path(self) -> str:
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def request_cls(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response_cls(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)


def all_targets() -> list[Target]:
    out = [Target(s, m, i) for s in PUBLIC for m in s.methods for i in PUBLIC_IDENTITIES]
    out += [Target(s, m, i) for s in INTERNAL for m in s.methods for i in INTERNAL_IDENTITIES]
    return sorted(out, key=lambda t: (t.method.name in DESTRUCTIVE, t.method.name == "EraseFamily"))


@dataclass
class Finding:
    target: str
    identity: str
    code: str
    details: str
    request: str


@dataclass
class GroupStats:
    cases: int = 0
    codes: Counter = field(default_factory=Counter)
    bugs: int = 0
    writes_checked: int = 0
    partial_writes: int = 0


def draw_cases(strategy: st.SearchStrategy[Any], n: int, seed_value: int) -> list[Any]:
    """n examples of `strategy`, reproducibly (hypothesis as a generator: no shrinking,
    no example database)."""
    out: list[Any] = []

    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(seed_value)
    @given(strategy)
    def collect(case: Any) -> None:
        out.append(case)

    collect()
    return out


class Driver:
    def __init__(self, stack: FuzzStack, world: World, *, check_writes: float = 1.0,
                 seed_value: int = 0, huge: bool = True) -> None:
        self.stack = stack
        self.world = world
        self.check_writes = check_writes  # fraction of rejected writes whose counts are compared
        self.seed = seed_value
        self.rng = random.Random(seed_value)
        self.fuzzer = world.fuzzer(huge=huge)
        self.counter = RowCounter(stack.urls)
        self.stats: dict[str, GroupStats] = defaultdict(GroupStats)
        self.findings: list[Finding] = []
        self.partials: list[Finding] = []

    async def close(self) -> None:
        await self.counter.dispose()

    async def run(self, cases: int, targets: list[Target] | None = None,
                  on_target: Callable[[Target], None] | None = None) -> None:
        for target in targets or all_targets():
            strategy = st.tuples(self.world.requests(self.fuzzer, target.request_cls),
                                 self.world.credentials(target.identity))
            key = zlib.crc32(f"{target.name}/{target.identity}".encode())
            for request, metadata in draw_cases(strategy, cases, self.seed * 1_000_003 + key):
                await self.call(target, request, metadata)
            if on_target:
                on_target(target)

    async def call(self, target: Target, request: Message, metadata: tuple) -> C:
        channel = self.stack.public if target.public else self.stack.internal[target.service.full_name]
        check = is_write(target.method.name) and self.rng.random() < self.check_writes
        before = await self.counter.counts() if check else None
        received, code, details = 0, C.OK, ""
        try:
            if target.method.server_streaming:
                call = channel.unary_stream(target.path, request_serializer=_serialize,
                                            response_deserializer=target.response_cls.FromString)
                async for _ in call(request, metadata=metadata, timeout=CALL_TIMEOUT_S):
                    received += 1
                    if received >= STREAM_LIMIT:
                        break
            else:
                call = channel.unary_unary(target.path, request_serializer=_serialize,
                                           response_deserializer=target.response_cls.FromString)
                await call(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        stats = self.stats[target.group]
        stats.cases += 1
        stats.codes[code.name] += 1
        if code in BUGS:
            stats.bugs += 1
            self.findings.append(Finding(target.name, target.identity, code.name, details,
                                         summarize(request)))
        # A stream that delivered messages was admitted: its turn may be stored on purpose.
        if before is not None and code != C.OK and received == 0:
            stats.writes_checked += 1
            after = await self.counter.counts()
            if after != before:
                stats.partial_writes += 1
                diff = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                        if before.get(k) != after.get(k)}
                self.partials.append(Finding(target.name, target.identity, code.name,
                                             f"{details} rows {diff}", summarize(request)))
        return code

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for group in sorted(self.stats):
            s = self.stats[group]
            rows.append({"service": group, "cases": s.cases,
                         "codes": " ".join(f"{k}:{v}" for k, v in sorted(s.codes.items())),
                         "internal_unknown": s.bugs, "rejected_writes_checked": s.writes_checked,
                         "partial_writes": s.partial_writes})
        return rows


def _serialize(msg: Message) -> bytes:
    return msg.SerializeToString()
