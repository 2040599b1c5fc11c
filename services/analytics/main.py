"""Analytics service entry point: `serve` (default), `migrate` and `renorm`.

    python -m services.analytics [serve]   # or: avatario-analytics
    python -m services.analytics migrate   # upgrade the database to head
    python -m services.analytics renorm    # recompute platform norms once

Settings come from the environment (AVATARIO_ANALYTICS_*, AVATARIO_INTERNAL_TOKEN)
and are built once here. Tests call `build_analytics(settings, db)` with port 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
import typer
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from avatario.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.domain.catalog import load_catalog
from services.analytics.domain.norms import check_norms_against_catalog, load_norms
from services.analytics.domain.tips import load_tips
from services.analytics.metrics import AnalyticsMetrics
from services.analytics.norms_store import Norms, NormsKeeper
from services.analytics.outbox import Backoff, ProfileClient, XpOutbox
from services.analytics.servicer import AnalyticsServicer
from services.analytics.settings import (
    AnalyticsDatabaseSettings,
    AnalyticsJobSettings,
    AnalyticsSettings,
)
from services.common import migrations
from services.common.clients import internal_channel
from services.common.db import Database, is_sqlite
from services.common.logs import configure_logging
from services.common.server import Registration, Server, create_server, serve
from services.common.timeutil import utcnow

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
# A restarted profile is reconnected within ~2 s (calls fail fast meanwhile).
PROFILE_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

log = structlog.get_logger("avatario.analytics")


@dataclass
class Analytics:
    """A built (not started) analytics server and the parts tests reach into."""

    server: Server
    port: int
    servicer: AnalyticsServicer
    outbox: XpOutbox
    norms: Norms
    keeper: NormsKeeper
    db: Database

    async def start_background(self) -> None:
        """After the schema is at head: adopt stored norms, start the outbox and norms tasks."""
        await self.norms.refresh(self.db)
        await self.outbox.refresh_gauge()
        self.outbox.start()
        self.keeper.start()


async def build_analytics(
    settings: AnalyticsSettings, db: Database, *, clock: Callable[[], datetime] = utcnow,
) -> Analytics:
    registry = CollectorRegistry()
    metrics = AnalyticsMetrics.create(registry)
    catalog = load_catalog()
    base_norms = load_norms()
    check_norms_against_catalog(base_norms, catalog.games)
    tips = load_tips()
    channel = internal_channel(settings.profile_target, settings, caller="analytics",
                               options=PROFILE_CHANNEL_OPTIONS)
    profile = ProfileClient(channel, settings.profile_deadline_s)
    outbox = XpOutbox(
        db, profile, metrics, backoff=Backoff(settings.xp_retry_initial_s, settings.xp_retry_max_s),
        poll_s=settings.xp_outbox_poll_s, batch=settings.xp_outbox_batch,
        retention=timedelta(days=settings.xp_outbox_retention_days), clock=clock)
    norms = Norms(base_norms)
    keeper = NormsKeeper(
        norms, db, metrics, refresh_s=settings.norms_refresh_s,
        renorm_s=settings.renorm_interval_s, min_children=settings.platform_norms_min_children,
        lookback=timedelta(days=settings.renorm_lookback_days), clock=clock)
    servicer = AnalyticsServicer(
        db, catalog=catalog, tips=tips, norms=norms, profile=profile, outbox=outbox,
        xapi_key=settings.xapi_key_bytes(), xapi_home_page=settings.xapi_home_page,
        metrics=metrics, clock=clock)
    server, port = await create_server(
        name="analytics", settings=settings, registry=registry,
        services=[Registration(analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server,
                               servicer, SERVICE_NAME)],
    )
    server.on_stop.extend([outbox.stop, keeper.stop, channel.close, db.dispose])
    return Analytics(server, port, servicer, outbox, norms, keeper, db)


async def build_server(
    settings: AnalyticsSettings, db: Database, *, clock: Callable[[], datetime] = utcnow,
) -> tuple[Server, int]:
    """The analytics gRPC server (not started; background tasks not started either)."""
    built = await build_analytics(settings, db, clock=clock)
    return built.server, built.port


def ensure_sqlite_dir(url: str) -> None:
    """The embedded default lives in var/; create the folder on first use."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)


def run_migrations(settings: AnalyticsDatabaseSettings) -> None:
    ensure_sqlite_dir(settings.database_url)
    migrations.upgrade(MIGRATIONS, settings.database_url)


async def wait_until_migrated(db: Database, *, timeout_s: float, interval_s: float = 2.0) -> None:
    """Readiness: the schema must be at head (a migrate step may still be running)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            await migrations.assert_at_head(db.engine, MIGRATIONS)
            return
        except Exception as exc:  # noqa: BLE001 - schema behind or database unreachable
            if loop.time() >= deadline:
                raise RuntimeError(f"analytics database not ready: {exc}") from exc
            log.warning("analytics.not_ready", reason=str(exc), retry_in_s=interval_s)
            await asyncio.sleep(interval_s)


async def _serve(settings: AnalyticsSettings) -> None:
    ensure_sqlite_dir(settings.database_url)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    built = await build_analytics(settings, db)
    log.info("analytics.listening", host=settings.host, port=built.port)

    async def ready() -> None:
        await wait_until_migrated(db, timeout_s=settings.ready_timeout_s)
        await built.start_background()

    try:
        await serve(built.server, ready=ready)
    finally:
        await built.server.stop(0)  # no-op after a normal drain


async def _renorm(settings: AnalyticsJobSettings) -> dict:
    db = Database(settings.database_url, pool_size=2)
    try:
        await migrations.assert_at_head(db.engine, MIGRATIONS)
        base = load_norms()
        check_norms_against_catalog(base, load_catalog().games)
        norms = Norms(base)
        await norms.refresh(db)
        result = await norms.recompute(
            db, min_children=settings.platform_norms_min_children,
            lookback=timedelta(days=settings.renorm_lookback_days), now=utcnow())
        return dict(stored=result.stored, version=result.version,
                    platform_bands=result.platform_bands, children=result.children)
    finally:
        await db.dispose()


app = typer.Typer(add_completion=False, help="Avatario analytics service.")


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        serve_cmd()


@app.command("serve")
def serve_cmd() -> None:
    """Run the gRPC server (the schema must be migrated)."""
    settings = AnalyticsSettings()
    configure_logging(settings.log_level, json=settings.log_json, service="analytics")
    try:
        asyncio.run(_serve(settings))
    except RuntimeError as exc:
        log.error("analytics.failed", reason=str(exc))
        raise typer.Exit(1) from exc


@app.command("migrate")
def migrate_cmd() -> None:
    """Upgrade the database to the latest schema."""
    settings = AnalyticsDatabaseSettings()
    configure_logging(service="analytics")
    run_migrations(settings)
    log.info("analytics.migrated", head=migrations.head_revision(MIGRATIONS))


@app.command("renorm")
def renorm_cmd() -> None:
    """Recompute platform norms from the population and store them if they changed."""
    settings = AnalyticsJobSettings()
    configure_logging(service="analytics")
    log.info("analytics.renormed", **asyncio.run(_renorm(settings)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
