"""Profile service entry point: `serve` (default), `migrate` and the erasure
commands an operator runs around a restore.

    python -m services.profile [serve]     # or: avatario-profile
    python -m services.profile migrate     # or: python -m services.profile.migrate
    python -m services.profile erased-families [--since 2026-01-01] [--json] > erased.txt
    python -m services.profile replay-erasures erased.txt

Settings come from the environment (AVATARIO_PROFILE_*, AVATARIO_INTERNAL_TOKEN)
and are built once here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog
import typer
from prometheus_client import CollectorRegistry

from avatario.profile.v1 import profile_pb2, profile_pb2_grpc
from services.common import dataservice, migrations
from services.common.db import Database
from services.common.logs import configure_logging
from services.common.server import Registration, Server, create_server, serve
from services.common.settings import load_settings
from services.common.timeutil import utcnow
from services.profile import erasures
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
    return ProfileServicer(
        db, passwords=Passwords.from_settings(settings),
        hasher=Hasher(settings.token_pepper.get_secret_value().encode()),
        pairing_code_ttl=settings.pairing_code_ttl, clock=clock,
        metrics=ProfileMetrics.create(registry),
        invite_ttl=settings.family_invite_ttl, turn_limit=settings.conversation_turn_limit,
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
    # After the drain: no handler waits on the argon2 pool any more.
    server.on_stop.extend([servicer.passwords.close, db.dispose])
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


async def _with_db(settings: ProfileDatabaseSettings, work):
    db = Database(settings.database_url, pool_size=2)
    try:
        await migrations.assert_at_head(db.engine, MIGRATIONS)
        return await work(db)
    finally:
        await db.dispose()


@app.command("erased-families")
def erased_families_cmd(
    since: datetime | None = typer.Option(
        None, help="Only erasures at or after this time (ISO date or time; UTC if no zone)."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of {family_id, erased_at}."),
) -> None:
    """Print the ids of erased families (one per line), oldest erasure first.

    Run it before restoring a backup; feed the output to `replay-erasures` (and to
    analytics' `erase-families`) afterwards. Nothing personal is listed."""
    settings = load_settings(ProfileDatabaseSettings, service="profile")
    configure_logging(service="profile")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    rows = asyncio.run(_with_db(settings, lambda db: erasures.erased_families(db, since=since)))
    if as_json:
        typer.echo(json.dumps([{"family_id": r.family_id, "erased_at": r.erased_at.isoformat()}
                               for r in rows], indent=1))
    else:
        for r in rows:
            typer.echo(r.family_id)


@app.command("replay-erasures")
def replay_erasures_cmd(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                help="Output of `erased-families` (ids per line, or its JSON)."),
) -> None:
    """After a restore: erase again every listed family the backup brought back.

    Prints one line per family: `erased <id> <rows>` or `absent <id>`. Idempotent:
    rerun it after a failure."""
    settings = load_settings(ProfileDatabaseSettings, service="profile")
    configure_logging(service="profile")
    family_ids = dataservice.read_id_list(file)
    done = asyncio.run(_with_db(settings, lambda db: erasures.replay(db, family_ids)))
    for r in done:
        typer.echo(f"erased {r.family_id} {r.total_rows}" if r.erased else f"absent {r.family_id}")
    erased = [r for r in done if r.erased]
    log.info("profile.erasures_replayed", listed=len(done), erased=len(erased),
             rows=sum(r.total_rows for r in erased))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
