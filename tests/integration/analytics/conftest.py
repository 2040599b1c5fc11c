"""A real analytics gRPC server on port 0 against a migrated database, on SQLite
and PostgreSQL, and (for XP and avatars) a real profile server. Each test
module migrates one analytics database per backend; each test clears it and
starts its own server. The analytics clock is a fake set to the end of the
simulated period (support.SIM_END) unless a test moves it."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from avatario.analytics.v1 import analytics_pb2_grpc
from avatario.common.v1 import family_pb2
from avatario.profile.v1 import profile_pb2 as ppb
from avatario.profile.v1 import profile_pb2_grpc
from services.analytics.main import MIGRATIONS, Analytics, build_analytics
from services.analytics.models import CHILD_TABLES, NormVersion
from services.analytics.settings import AnalyticsSettings
from services.common import migrations
from services.common.clients import internal_channel
from services.common.db import Database
from services.profile import models as pm
from services.profile.main import MIGRATIONS as PROFILE_MIGRATIONS
from services.profile.main import build_server as build_profile
from services.profile.settings import ProfileSettings
from tests.conftest import migrated_database
from tests.helpers import INTERNAL_TOKEN, TOKEN_PEPPER
from tests.integration.analytics.support import SIM_END, free_port


class FakeClock:
    """Real time shifted to start at `start` (it ticks, so retries fall due)."""

    def __init__(self, start: datetime) -> None:
        self.offset = start - datetime.now(UTC)

    @property
    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def __call__(self) -> datetime:
        return self.now

    def set(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)

    def advance(self, **kw: float) -> None:
        self.offset += timedelta(**kw)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def analytics_db_url(request, tmp_path_factory):
    """A database migrated to head, one per backend and test module."""
    with migrated_database(request.param, tmp_path_factory, "analytics", MIGRATIONS) as url:
        yield url


@pytest.fixture(scope="module")
def profile_db_url(tmp_path_factory):
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('profile') / 'profile.db'}"
    migrations.upgrade(Path(PROFILE_MIGRATIONS), url)
    return url


def analytics_settings(url: str, **overrides: Any) -> AnalyticsSettings:
    values: dict[str, Any] = dict(
        internal_token=INTERNAL_TOKEN, host="127.0.0.1", port=0, metrics_port=None,
        database_url=url, log_json=False, profile_target=f"127.0.0.1:{free_port()}",
        # Profile runs in this process and shares its event loop with analytics' scoring
        # and the test's clients: a generous deadline keeps a busy CI machine from
        # turning the per-write consent check into UNAVAILABLE.
        profile_deadline_s=10.0, xp_outbox_poll_s=1.0, xp_retry_initial_s=60,
        xp_retry_max_s=600, renorm_interval_s=0, norms_refresh_s=3600, db_pool_size=4,
    )
    values.update(overrides)
    return AnalyticsSettings(**values)


@dataclass
class Running:
    stub: Any
    built: Analytics
    clock: FakeClock
    settings: AnalyticsSettings
    raw_stub: Any = None
    profile: Any = None
    _closers: list = field(default_factory=list)

    @property
    def db(self) -> Database:
        return self.built.db

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()


async def start_analytics(url: str, clock: FakeClock, *, clear_first: bool = True,
                          profile_db_url: str | None = None, **overrides: Any) -> Running:
    """A real analytics server. With `profile_db_url` (and no profile_target) a real
    profile server on that database answers its consent checks and XP awards, and
    `stub` is a ConsentingStub: every family a play write names exists in profile
    with gameplay consent. `raw_stub` skips that (consent tests)."""
    profile = None
    if profile_db_url is not None and "profile_target" not in overrides:
        profile = await start_profile(profile_db_url)
        overrides["profile_target"] = f"127.0.0.1:{profile.port}"
    settings = analytics_settings(url, **overrides)
    db = Database(url, pool_size=4)
    if clear_first:
        await clear(db)
    built = await build_analytics(settings, db, clock=clock)
    await built.server.start()
    await built.start_background()
    await built.server.set_serving()
    channel = internal_channel(f"127.0.0.1:{built.port}", settings, caller="tests")
    raw = analytics_pb2_grpc.AnalyticsServiceStub(channel)
    stub = raw if profile is None else ConsentingStub(raw, profile_db_url)
    run = Running(stub, built, clock, settings, raw_stub=raw, profile=profile)
    run._closers += [lambda: built.server.stop(0), channel.close]
    if profile is not None:
        run._closers.insert(0, profile.close)
    if isinstance(stub, ConsentingStub):
        run._closers.insert(0, stub.close)
    return run


class ConsentingStub:
    """The analytics stub, except that before a play write the family it names is
    made to exist in the real profile database with an active gameplay consent
    (the rows a parent's sign-up and RecordConsent would leave), so ingestion tests
    can use made-up family ids. Analytics still asks the real profile server."""

    PLAY_WRITES = ("SubmitGameSession", "SubmitMoodCheckIn")

    def __init__(self, stub: Any, profile_db_url: str) -> None:
        self._stub = stub
        self._db = Database(profile_db_url, pool_size=1)
        self._known: set[str] = set()
        self._lock = asyncio.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._stub, name)
        if name not in self.PLAY_WRITES:
            return attr

        async def call(request, *args, **kw):
            await self.consent(request.child.family_id)
            return await attr(request, *args, **kw)

        return call

    async def consent(self, family_id: str) -> None:
        try:
            uuid.UUID(family_id)
        except ValueError:
            return  # a bad id: analytics must refuse it before asking profile
        async with self._lock:
            if family_id in self._known:
                return
            await seed_consented_family(self._db, family_id)
            self._known.add(family_id)

    async def close(self) -> None:
        await self._db.dispose()


async def seed_consented_family(db: Database, family_id: str,
                                scopes: tuple[int, ...] = (
                                    family_pb2.CONSENT_SCOPE_CHILD_PROFILE,
                                    family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS)) -> None:
    """A family with one parent and active consents, written into profile's database."""
    now = datetime.now(UTC)
    parent_id = str(uuid.uuid4())
    async with db.transaction() as session:
        if await session.get(pm.Family, family_id) is not None:
            return
        session.add(pm.Family(id=family_id, created_at=now))
        await session.flush()
        session.add(pm.Parent(id=parent_id, family_id=family_id,
                              email=f"{family_id}@example.org", display_name="Seed",
                              password_hash="-", created_at=now, password_changed_at=now))
        await session.flush()
        for scope in scopes:
            session.add(pm.Consent(id=str(uuid.uuid4()), family_id=family_id,
                                   parent_id=parent_id, scope=scope, policy_version="2024-01",
                                   granted_at=now))


async def row_counts(db: Database) -> dict[str, int]:
    """Rows per analytics child-data table (tables with none left out)."""
    out = {}
    async with db.session() as session:
        for model in CHILD_TABLES:
            n = (await session.execute(select(func.count()).select_from(model))).scalar_one()
            if n:
                out[model.__tablename__] = n
    return out


async def clear(db: Database) -> None:
    async with db.transaction() as session:
        for model in (*CHILD_TABLES, NormVersion):
            await session.execute(delete(model))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(SIM_END)


@pytest.fixture
async def analytics(analytics_db_url, profile_db_url, clock):
    run = await start_analytics(analytics_db_url, clock, profile_db_url=profile_db_url)
    try:
        yield run
    finally:
        await run.close()


# -- profile ----------------------------------------------------------------------------


@dataclass
class ProfileRunning:
    stub: Any
    port: int
    close: Any


async def start_profile(url: str, port: int = 0) -> ProfileRunning:
    settings = ProfileSettings(
        internal_token=INTERNAL_TOKEN, host="127.0.0.1", port=port, metrics_port=None,
        database_url=url, argon2_time_cost=1, argon2_memory_cost_kib=256,
        argon2_parallelism=1, log_json=False, token_pepper=TOKEN_PEPPER)
    server, bound = await build_profile(settings, Database(url, pool_size=2))
    await server.start()
    await server.set_serving()
    channel = internal_channel(f"127.0.0.1:{bound}", settings, caller="tests")

    async def close() -> None:
        await channel.close()
        await server.stop(0)

    return ProfileRunning(profile_pb2_grpc.ProfileServiceStub(channel), bound, close)


async def profile_child(p: ProfileRunning, birth_year: int, birth_month: int) -> tuple[str, str]:
    """A family with consent and a child in profile: (family_id, child_id)."""
    import uuid

    parent = (await p.stub.CreateParent(ppb.CreateParentRequest(
        email=f"p.{uuid.uuid4().hex[:10]}@example.org", password="correct horse battery",
        display_name="Alex"))).parent
    await p.stub.RecordConsent(ppb.RecordConsentRequest(
        family_id=parent.family_id, parent_id=parent.parent_id, policy_version="2024-01",
        scopes=[family_pb2.CONSENT_SCOPE_CHILD_PROFILE,
                family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS]))
    child = (await p.stub.CreateChild(ppb.CreateChildRequest(
        family_id=parent.family_id, parent_id=parent.parent_id, nickname="Sunny",
        birth_year=birth_year, birth_month=birth_month))).child
    return parent.family_id, child.child_id
