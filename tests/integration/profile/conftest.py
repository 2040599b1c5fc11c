"""A real profile gRPC server on port 0 against a migrated database, on SQLite
and PostgreSQL. Each test module migrates one database per backend; tests
start their own server and clear the tables before they run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete

from avatario.profile.v1 import profile_pb2_grpc
from services.common.clients import internal_channel
from services.common.db import Database
from services.profile.main import MIGRATIONS, build_server
from services.profile.models import ERASE_ORDER, ErasedFamily
from services.profile.settings import ProfileSettings
from tests.conftest import migrated_database
from tests.helpers import INTERNAL_TOKEN, TOKEN_PEPPER
from tests.integration.profile.support import Profile


class FakeClock:
    """The server's clock; tests move it forward (pairing-code expiry, ordering)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.frozen = False

    def __call__(self) -> datetime:
        # Every reading is a little later, so rows created in a row sort in
        # order, unless frozen (to test ties).
        if not self.frozen:
            self.now += timedelta(microseconds=1000)
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def profile_db_url(request, tmp_path_factory):
    """A database migrated to head, one per backend and test module."""
    with migrated_database(request.param, tmp_path_factory, "profile", MIGRATIONS) as url:
        yield url


def profile_settings(url: str, **overrides) -> ProfileSettings:
    values = dict(
        internal_token=INTERNAL_TOKEN, host="127.0.0.1", port=0, metrics_port=None,
        database_url=url, argon2_time_cost=1, argon2_memory_cost_kib=256,
        argon2_parallelism=1, log_json=False, token_pepper=TOKEN_PEPPER,
    )
    values.update(overrides)
    return ProfileSettings(**values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def profile(profile_db_url, clock):
    settings = profile_settings(profile_db_url)
    db = Database(profile_db_url, pool_size=4)
    async with db.transaction() as session:
        for model in (*ERASE_ORDER, ErasedFamily):
            await session.execute(delete(model))
    server, port = await build_server(settings, db, clock=clock)
    await server.start()
    await server.set_serving()
    channel = internal_channel(f"127.0.0.1:{port}", settings, caller="tests")
    try:
        yield Profile(
            stub=profile_pb2_grpc.ProfileServiceStub(channel), db=db, clock=clock,
            port=port, settings=settings, server=server,
        )
    finally:
        await channel.close()
        await server.stop(0)
