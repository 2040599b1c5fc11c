"""The command line every data-owning service shares: `serve` and `migrate`.

    app = service_app("profile", help=..., settings=ProfileSettings, serve=_serve,
                      database_settings=ProfileDatabaseSettings, migrations=MIGRATIONS)

`python -m services.<name>` runs `serve`; `migrate` upgrades the schema (a separate
step: a compose one-shot, a k8s Job, the local runner). `serve` keeps health
NOT_SERVING until the schema is at head (`wait_until_migrated`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
import typer
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from services.common import migrations
from services.common.db import Database, is_sqlite
from services.common.logs import configure_logging
from services.common.settings import load_settings

log = structlog.get_logger("avatario.service")


def ensure_sqlite_dir(url: str) -> None:
    """The embedded default lives in var/; create the folder on first use."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)


def run_migrations(script_location: Path, url: str) -> None:
    ensure_sqlite_dir(url)
    migrations.upgrade(script_location, url)


async def wait_until_migrated(db: Database, script_location: Path, *, name: str,
                              timeout_s: float, interval_s: float = 2.0) -> None:
    """Readiness: the schema must be at head. Health stays NOT_SERVING while a
    migrate step may still be running; give up after timeout_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            await migrations.assert_at_head(db.engine, script_location)
            return
        except Exception as exc:  # noqa: BLE001 - schema behind or database unreachable
            if loop.time() >= deadline:
                raise RuntimeError(f"{name} database not ready: {exc}") from exc
            log.warning(f"{name}.not_ready", reason=str(exc), retry_in_s=interval_s)
            await asyncio.sleep(interval_s)


def read_id_list(file: Path) -> list[str]:
    """The ids in an operator's list file (one per line, or JSON); a bad file ends the
    command with exit code 2 and a message naming it."""
    from services.common.validation import parse_id_list

    try:
        return parse_id_list(file.read_text())
    except (OSError, ValueError) as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(2) from exc


def service_app(name: str, *, help: str, settings: type[BaseSettings],
                serve: Callable[[Any], Awaitable[None]], database_settings: type[BaseSettings],
                migrations_path: Path) -> typer.Typer:
    """A typer app with `serve` (default) and `migrate`; services may add commands.
    A missing or bad setting ends either with one line naming it and exit status 2."""
    app = typer.Typer(add_completion=False, help=help)

    @app.command("serve")
    def serve_cmd() -> None:
        """Run the gRPC server (the schema must be migrated)."""
        s = load_settings(settings, service=name)  # built once, here
        configure_logging(s.log_level, json=s.log_json, service=name)
        try:
            asyncio.run(serve(s))
        except RuntimeError as exc:
            log.error(f"{name}.failed", reason=str(exc))
            raise typer.Exit(1) from exc

    @app.command("migrate")
    def migrate_cmd() -> None:
        """Upgrade the database to the latest schema."""
        s = load_settings(database_settings, service=name)
        configure_logging(service=name)
        run_migrations(migrations_path, s.database_url)
        log.info(f"{name}.migrated", head=migrations.head_revision(migrations_path))

    @app.callback(invoke_without_command=True)
    def _default(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            serve_cmd()

    app.serve_cmd = serve_cmd  # type: ignore[attr-defined]
    app.migrate_cmd = migrate_cmd  # type: ignore[attr-defined]
    return app
