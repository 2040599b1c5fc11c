"""Profile service entry point: `serve` (default) and `migrate`.

    python -m services.profile [serve]     # or: avatario-profile
    python -m services.profile migrate     # or: python -m services.profile.migrate

Settings come from the environment (AVATARIO_PROFILE_*, AVATARIO_INTERNAL_TOKEN)
and are built once here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from avatario.profile.v1 import profile_pb2, profile_pb2_grpc
from services.common import dataservice
from services.common.db import Database
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


def run_migrations(settings: ProfileDatabaseSettings) -> None:
    dataservice.run_migrations(MIGRATIONS, settings.database_url)


async def _serve(settings: ProfileSettings) -> None:
    dataservice.ensure_sqlite_dir(settings.database_url)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    server, port = await build_server(settings, db)
    log.info("profile.listening", host=settings.host, port=port)
    try:
        await serve(server, ready=lambda: dataservice.wait_until_migrated(
            db, MIGRATIONS, name="profile", timeout_s=settings.ready_timeout_s))
    finally:
        await server.stop(0)  # no-op after a normal drain


app = dataservice.service_app(
    "profile", help="Avatario profile service.", settings=ProfileSettings, serve=_serve,
    database_settings=ProfileDatabaseSettings, migrations_path=MIGRATIONS)
serve_cmd, migrate_cmd = app.serve_cmd, app.migrate_cmd


def main() -> None:
    app()


if __name__ == "__main__":
    main()
