"""Analytics service entry point: `serve` (default), `migrate` and `renorm`.

    python -m services.analytics [serve]   # or: avatario-analytics
    python -m services.analytics migrate   # upgrade the database to head
    python -m services.analytics renorm    # recompute platform norms once
    python -m services.analytics erase-families FILE   # after a restore (ids from profile)

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

from avatario.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.clients.profile import ProfileClient
from services.analytics.domain.catalog import load_catalog
from services.analytics.domain.flags import FlagPolicy
from services.analytics.domain.norms import check_norms_against_catalog, load_norms
from services.analytics.domain.norms_keeper import Norms, NormsKeeper
from services.analytics.domain.tips import load_tips
from services.analytics.domain.xp import Backoff, XpOutbox
from services.analytics.metrics import AnalyticsMetrics
from services.analytics.repo import erase
from services.analytics.servicer import AnalyticsServicer
from services.analytics.settings import (
    AnalyticsDatabaseSettings,
    AnalyticsJobSettings,
    AnalyticsSettings,
)
from services.common import dataservice, migrations
from services.common.clients import internal_channel
from services.common.db import Database, in_transaction
from services.common.logs import configure_logging
from services.common.server import Registration, Server, create_server, serve
from services.common.settings import load_settings
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
    profile = ProfileClient(channel, settings.profile_deadline_s,
                            consent_ttl_s=settings.consent_cache_ttl_s)
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
        metrics=metrics, clock=clock,
        flag_policy=FlagPolicy(established_min_n=settings.flag_min_norm_children))
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


def run_migrations(settings: AnalyticsDatabaseSettings) -> None:
    dataservice.run_migrations(MIGRATIONS, settings.database_url)


async def _serve(settings: AnalyticsSettings) -> None:
    dataservice.ensure_sqlite_dir(settings.database_url)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    built = await build_analytics(settings, db)
    log.info("analytics.listening", host=settings.host, port=built.port)

    async def ready() -> None:
        await dataservice.wait_until_migrated(db, MIGRATIONS, name="analytics",
                                              timeout_s=settings.ready_timeout_s)
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


app = dataservice.service_app(
    "analytics", help="Avatario analytics service.", settings=AnalyticsSettings, serve=_serve,
    database_settings=AnalyticsDatabaseSettings, migrations_path=MIGRATIONS)
serve_cmd, migrate_cmd = app.serve_cmd, app.migrate_cmd


@app.command("renorm")
def renorm_cmd() -> None:
    """Recompute platform norms from the population and store them if they changed."""
    settings = load_settings(AnalyticsJobSettings, service="analytics")
    configure_logging(service="analytics")
    log.info("analytics.renormed", **asyncio.run(_renorm(settings)))


async def _erase_families(settings: AnalyticsDatabaseSettings,
                          family_ids: list[str]) -> list[tuple[str, int]]:
    db = Database(settings.database_url, pool_size=2)
    try:
        await migrations.assert_at_head(db.engine, MIGRATIONS)
        out = []
        for family_id in family_ids:  # one transaction each: a rerun carries on
            counts = await in_transaction(db, lambda s, f=family_id: erase.erase_family(s, f))
            out.append((family_id, sum(counts.values())))
        return out
    finally:
        await db.dispose()


@app.command("erase-families")
def erase_families_cmd(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                help="Family ids: the output of profile's `erased-families`."),
) -> None:
    """After a restore: erase the play data of every listed family again.

    Prints `erased <id> <rows>` per family (0 rows: nothing came back). Idempotent."""
    settings = load_settings(AnalyticsDatabaseSettings, service="analytics")
    configure_logging(service="analytics")
    family_ids = dataservice.read_id_list(file)
    done = asyncio.run(_erase_families(settings, family_ids))
    for family_id, rows in done:
        typer.echo(f"erased {family_id} {rows}")
    log.info("analytics.families_erased", listed=len(done), rows=sum(r for _, r in done))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
