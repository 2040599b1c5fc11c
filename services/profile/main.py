"""Profile service entry point: `serve` (default) and `migrate`.

    python -m services.profile [serve]     # or: avatario-profile
    python -m services.profile migrate     # or: python -m services.profile.migrate

Settings come from the environment (AVATARIO_PROFILE_*, AVATARIO_INTERNAL_TOKEN)
and are built once here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog
import typer
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from avatario.profile.v1 import profile_pb2, profile_pb2_grpc
from services.common import migrations
from services.common.db import Database, is_sqlite
from services.common.logs import configure_logging
from services.common.server import Registration, Server, create_server, serve
from services.common.timeutil import utcnow
from services.profile.metrics import ProfileMetrics
from services.profile.passwords import Passwords
from services.profile.servicer import ProfileServicer
from services.profile.settings import ProfileDatabaseSettings, ProfileSettings
from services.profile.tokens import Hasher

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SERVICE_NAME = profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name

log = structlog.get_logger("avatario.profile")


def make_servicer(
    settings: ProfileSettings, db: Database, *, clock: Callable[[], datetime] = utcnow,
    registry: CollectorRegistry | None = None,
) -> ProfileServicer:
    pepper = settings.token_pepper.get_secret_value().encode() if settings.token_pepper else b""
    return ProfileServicer(
        db, passwords=Passwords.from_settings(settings), hasher=Hasher(pepper),
        pairing_code_ttl=settings.pairing_code_ttl, clock=clock,
        metrics=ProfileMetrics.create(registry),
    )


async def build_server(
    settings: ProfileSettings, db: Database, *, clock: Callable[[], datetime] = utcnow,
) -> tuple[Server, int]:
    """The profile gRPC server (not started). Tests pass port 0 in the settings."""
    registry = CollectorRegistry()
    servicer = make_servicer(settings, db, clock=clock, registry=registry)
    server, port = await create_server(
        name="profile", settings=settings, registry=registry,
        services=[Registration(profile_pb2_grpc.add_ProfileServiceServicer_to_server,
                               servicer, SERVICE_NAME)],
    )
    server.on_stop.append(db.dispose)
    return server, port


def ensure_sqlite_dir(url: str) -> None:
    """The embedded default lives in var/; create the folder on first use."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)


def run_migrations(settings: ProfileDatabaseSettings) -> None:
    ensure_sqlite_dir(settings.database_url)
    migrations.upgrade(MIGRATIONS, settings.database_url)


async def wait_until_migrated(db: Database, *, timeout_s: float, interval_s: float = 2.0) -> None:
    """Readiness: the schema must be at head. Health stays NOT_SERVING while a
    migrate step (compose one-shot, k8s Job) may still be running; give up
    after timeout_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            await migrations.assert_at_head(db.engine, MIGRATIONS)
            return
        except Exception as exc:  # noqa: BLE001 - schema behind or database unreachable
            if loop.time() >= deadline:
                raise RuntimeError(f"profile database not ready: {exc}") from exc
            log.warning("profile.not_ready", reason=str(exc), retry_in_s=interval_s)
            await asyncio.sleep(interval_s)


async def _serve(settings: ProfileSettings) -> None:
    ensure_sqlite_dir(settings.database_url)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    server, port = await build_server(settings, db)
    log.info("profile.listening", host=settings.host, port=port)
    try:
        await serve(server, ready=lambda: wait_until_migrated(
            db, timeout_s=settings.ready_timeout_s))
    finally:
        await server.stop(0)  # no-op after a normal drain


app = typer.Typer(add_completion=False, help="Avatario profile service.")


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        serve_cmd()


@app.command("serve")
def serve_cmd() -> None:
    """Run the gRPC server (the schema must be migrated)."""
    settings = ProfileSettings()
    configure_logging(settings.log_level, json=settings.log_json, service="profile")
    try:
        asyncio.run(_serve(settings))
    except RuntimeError as exc:
        log.error("profile.failed", reason=str(exc))
        raise typer.Exit(1) from exc


@app.command("migrate")
def migrate_cmd() -> None:
    """Upgrade the database to the latest schema."""
    settings = ProfileDatabaseSettings()
    configure_logging(service="profile")
    run_migrations(settings)
    log.info("profile.migrated", head=migrations.head_revision(MIGRATIONS))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
