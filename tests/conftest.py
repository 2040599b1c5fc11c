"""Fixtures every test package shares: fresh databases on SQLite and PostgreSQL.

PostgreSQL: AVATARIO_TEST_PG_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432/postgres)
is the admin connection; each test module gets its own freshly created database.
Without a reachable server the PostgreSQL tests skip, unless AVATARIO_REQUIRE_PG=1
(set by .ci/run), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "AVATARIO_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("AVATARIO_REQUIRE_PG", "") == "1"
ROOT = Path(__file__).resolve().parent.parent
SHARED_TOKENIZER = ROOT.parent / "shared" / "tokenizers" / "20B_tokenizer.json"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(PG_ADMIN_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_available() -> str | None:
    try:
        asyncio.run(_pg_exec("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - report why
        return f"{type(exc).__name__}: {exc}"
    return None


_PG_STATUS: dict[str, str | None] = {}


def require_postgres() -> None:
    if "status" not in _PG_STATUS:
        _PG_STATUS["status"] = _pg_available()
    problem = _PG_STATUS["status"]
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (AVATARIO_REQUIRE_PG=1) but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")


def create_pg_database() -> str:
    """Create an empty database; returns its SQLAlchemy URL."""
    require_postgres()
    name = f"avatario_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_db_url(request, tmp_path):
    """An empty database for the backend named by request.param ('sqlite' or 'postgres')."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def shared_tokenizer_path() -> Path | None:
    return SHARED_TOKENIZER if SHARED_TOKENIZER.exists() else None


@contextmanager
def migrated_database(backend: str, tmp_path_factory, name: str, migrations_path: Path):
    """A fresh database ('sqlite' or 'postgres') migrated to head; dropped afterwards."""
    from services.common import migrations

    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp(name) / f'{name}.db'}"
        migrations.upgrade(Path(migrations_path), url)
        yield url
        return
    url = create_pg_database()
    try:
        migrations.upgrade(Path(migrations_path), url)
        yield url
    finally:
        drop_pg_database(url)
