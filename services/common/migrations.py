"""Alembic helpers: one async env.py body for every service, upgrade and head checks.

Each service keeps its migrations in services/<name>/migrations/ with an env.py
that only calls `run_env(metadata)`. The URL comes from the Alembic config
(set by `upgrade()`), never from the environment.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, pool
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def alembic_config(script_location: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(script_location: Path, url: str, revision: str = "head") -> None:
    """Run migrations (synchronously; from async code use asyncio.to_thread)."""
    command.upgrade(alembic_config(script_location, url), revision)


def head_revision(script_location: Path) -> str | None:
    return ScriptDirectory(str(script_location)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def assert_at_head(engine: AsyncEngine, script_location: Path) -> None:
    """Readiness: the database schema must be at the latest migration."""
    current, head = await current_revision(engine), head_revision(script_location)
    if current != head:
        raise RuntimeError(
            f"database schema is at {current or 'nothing'}, code needs {head}: run the migrate command"
        )


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's alembic env.py."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    batch = url.startswith("sqlite")
    if context.is_offline_mode():
        context.configure(
            url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=batch
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def do_run(connection) -> None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=batch,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run_async())
