"""A real gateway on port 0 in front of real profile and analytics servers on port 0
(inference: a dead target, or the scripted fake), on SQLite and on PostgreSQL. Each test module migrates one pair of databases per backend; each
test clears the tables and starts its own servers."""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from sqlalchemy import delete

from services.analytics.main import MIGRATIONS as ANALYTICS_MIGRATIONS
from services.analytics.main import build_analytics
from services.analytics.models import CHILD_TABLES, NormVersion
from services.analytics.settings import AnalyticsSettings
from services.common import migrations
from services.common.db import Database
from services.gateway.main import MIGRATIONS as GATEWAY_MIGRATIONS
from services.gateway.main import Gateway, build_gateway
from services.gateway.models import RefreshToken, SignIn
from services.profile.main import MIGRATIONS as PROFILE_MIGRATIONS
from services.profile.main import build_server as build_profile
from services.profile.models import ERASE_ORDER
from services.profile.settings import ProfileSettings
from tests.conftest import create_pg_database, drop_pg_database
from tests.helpers import INTERNAL_TOKEN, TOKEN_PEPPER
from tests.integration.gateway.support import DEAD_TARGET, Client, gateway_settings


@dataclass
class Urls:
    profile: str
    gateway: str
    analytics: str


@contextmanager
def migrated_urls(backend: str, tmp_path_factory):
    """Profile, gateway and analytics databases migrated to head on `backend`."""
    if backend == "sqlite":
        folder = tmp_path_factory.mktemp("gateway")
        urls = Urls(*(f"sqlite+aiosqlite:///{folder / (n + '.db')}"
                      for n in ("profile", "gateway", "analytics")))
        created: list[str] = []
    else:
        created = [create_pg_database() for _ in range(3)]
        urls = Urls(*created)
    try:
        migrations.upgrade(Path(PROFILE_MIGRATIONS), urls.profile)
        migrations.upgrade(Path(GATEWAY_MIGRATIONS), urls.gateway)
        migrations.upgrade(Path(ANALYTICS_MIGRATIONS), urls.analytics)
        yield urls
    finally:
        for url in created:
            drop_pg_database(url)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_urls(request, tmp_path_factory):
    """One pair of databases per backend and test module. Modules whose subject
    does not depend on the database override this with `sqlite_only`."""
    with migrated_urls(request.param, tmp_path_factory) as urls:
        yield urls


def sqlite_only(tmp_path_factory):
    with migrated_urls("sqlite", tmp_path_factory) as urls:
        yield urls


def profile_settings(url: str) -> ProfileSettings:
    return ProfileSettings(
        internal_token=INTERNAL_TOKEN, host="127.0.0.1", port=0, metrics_port=None,
        database_url=url, argon2_time_cost=1, argon2_memory_cost_kib=256, argon2_parallelism=1,
        log_json=False, token_pepper=TOKEN_PEPPER,
    )


@dataclass
class Stack:
    urls: Urls
    profile_target: str
    gateway: Gateway
    client: Client
    analytics_target: str = DEAD_TARGET
    inference_target: str = DEAD_TARGET
    _cleanup: list[Any] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    async def extra_gateway(self, **overrides) -> tuple[Gateway, Client]:
        """Another gateway on the same databases, with other settings."""
        overrides.setdefault("analytics", self.analytics_target)
        overrides.setdefault("inference", self.inference_target)
        gw = await start_gateway(self.urls.gateway, self.profile_target, **overrides)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}")
        self._cleanup.append((gw, channel))
        return gw, Client(channel)


async def start_gateway(db_url: str, profile: str, **overrides) -> Gateway:
    settings = gateway_settings(db_url, profile=profile, **overrides)
    gw = await build_gateway(settings, db=Database(db_url, pool_size=4))
    await gw.server.start()
    await gw.server.set_serving()
    return gw


async def start_analytics(url: str, profile_target: str):
    settings = AnalyticsSettings(
        internal_token=INTERNAL_TOKEN, host="127.0.0.1", port=0, metrics_port=None,
        database_url=url, log_json=False, profile_target=profile_target, renorm_interval_s=0,
        norms_refresh_s=3600, db_pool_size=4, xp_outbox_poll_s=0.2,
        # profile shares this process's event loop: see tests/integration/analytics/conftest.py
        profile_deadline_s=10.0)
    built = await build_analytics(settings, Database(url, pool_size=4))
    await built.server.start()
    await built.start_background()
    await built.server.set_serving()
    return built


async def _clear(urls: Urls) -> None:
    tables = [(urls.profile, ERASE_ORDER), (urls.gateway, (RefreshToken, SignIn)),
              (urls.analytics, (*CHILD_TABLES, NormVersion))]
    for url, models in tables:
        db = Database(url, pool_size=1)
        async with db.transaction() as session:
            for model in models:
                await session.execute(delete(model))
        await db.dispose()


@pytest.fixture
async def fake():
    """A scripted InferenceService on port 0 (tests.integration.gateway.fakes). A module
    that wants the gateway to use it overrides `inference_target` with `fake_target`."""
    from tests.integration.gateway.fakes import FakeInference, start_fake

    f = FakeInference()
    f.server, f.port = await start_fake(f)
    yield f
    await f.server.stop(0)


def fake_target(fake) -> str:
    return f"127.0.0.1:{fake.port}"


@pytest.fixture
def inference_target() -> str:
    """Where the gateway's inference calls go; tests override with a fake."""
    return DEAD_TARGET


@pytest.fixture
async def stack(db_urls, inference_target):
    async with running_stack(db_urls, inference_target) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_stack(db_urls):
    """One stack for a whole module (tests mark themselves asyncio(loop_scope="module")
    and build their own families, so they do not see each other)."""
    async with running_stack(db_urls) as s:
        yield s


@asynccontextmanager
async def running_stack(db_urls: Urls, inference_target: str = DEAD_TARGET):
    """Clear the tables, start profile, analytics and a gateway in front of them."""
    await _clear(db_urls)
    pdb = Database(db_urls.profile, pool_size=4)
    profile, pport = await build_profile(profile_settings(db_urls.profile), pdb)
    await profile.start()
    await profile.set_serving()
    ptarget = f"127.0.0.1:{pport}"
    analytics = await start_analytics(db_urls.analytics, ptarget)
    atarget = f"127.0.0.1:{analytics.port}"
    gw = await start_gateway(db_urls.gateway, ptarget, inference=inference_target,
                             analytics=atarget)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}")
    s = Stack(db_urls, ptarget, gw, Client(channel), analytics_target=atarget,
              inference_target=inference_target)
    try:
        yield s
    finally:
        await analytics.server.stop(0)
        for extra_gw, extra_channel in s._cleanup:
            await extra_channel.close()
            await extra_gw.server.stop(0)
        await channel.close()
        await gw.server.stop(0)
        await profile.stop(0)
