"""Analytics service settings (env prefix AVATARIO_ANALYTICS_). Built once in main()."""

from __future__ import annotations

import hashlib

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.db import DatabaseUrl
from services.common.settings import ServiceSettings

_CONFIG = SettingsConfigDict(env_prefix="AVATARIO_ANALYTICS_", extra="ignore", populate_by_name=True)


class AnalyticsDatabaseSettings(BaseSettings):
    """What the migrate command needs (no service credential)."""

    model_config = _CONFIG

    database_url: DatabaseUrl = Field(
        "sqlite+aiosqlite:///var/analytics.db",
        description="SQLAlchemy async URL (postgresql+asyncpg://... in production).",
    )


class AnalyticsJobSettings(AnalyticsDatabaseSettings):
    """What the renorm command needs: the database and the platform-norm rule.

    Platform norms are recomputed from the population (last
    `renorm_lookback_days`); a band is replaced once
    `platform_norms_min_children` distinct children played it.
    """

    platform_norms_min_children: int = Field(50, ge=2, le=1_000_000)
    renorm_lookback_days: int = Field(365, ge=7, le=3650)


class AnalyticsSettings(ServiceSettings, AnalyticsJobSettings):
    model_config = _CONFIG

    # Children per age band platform norms need before a flag may suggest a
    # professional (docs/flags.md); below it flags say at most "keep an eye".
    flag_min_norm_children: int = Field(200, ge=1, le=1_000_000)

    port: int = Field(50053, ge=0, le=65535)
    # Overload admission: RPCs in flight before RESOURCE_EXHAUSTED + RetryInfo
    # (measured: bench/bench_load.py; session ingestion is the slowest write).
    max_inflight_rpcs: int = Field(32, ge=0, le=100_000, description="0 = no cap.")
    metrics_port: int | None = Field(9103, ge=0, le=65535)
    db_pool_size: int = Field(10, ge=1, le=200)
    ready_timeout_s: float = Field(
        120.0, ge=0, description="How long to wait at start for the schema to reach head."
    )

    # Profile (AwardXp for valid sessions, GetAvatar for reports).
    profile_target: str = "127.0.0.1:50052"
    profile_deadline_s: float = Field(
        1.5, gt=0, le=30, description="Deadline of the inline AwardXp and of GetAvatar."
    )

    consent_cache_ttl_s: float = Field(
        0.0, ge=0, le=30,
        description="Reuse a positive gameplay-consent answer from profile this long. 0 (the "
                    "default): ask on every play write, so a withdrawal stops writes at once.")

    # XP outbox: awards profile did not take at once are retried in the background.
    xp_outbox_poll_s: float = Field(2.0, gt=0, le=300)
    xp_retry_initial_s: float = Field(1.0, gt=0, le=3600)
    xp_retry_max_s: float = Field(300.0, gt=0, le=24 * 3600)
    xp_outbox_batch: int = Field(50, ge=1, le=1000)
    xp_outbox_retention_days: int = Field(
        7, ge=0, le=365, description="Delivered awards are kept this long, then deleted."
    )

    # xAPI export: the actor is HMAC(key, child_id). Set a dedicated key in
    # production; without one it is derived from the internal token (rotating
    # that token then changes every child's pseudonym).
    xapi_key: SecretStr | None = None
    xapi_home_page: str = "https://avatario.app"

    # Platform norms are recomputed in the server every `renorm_interval_s`
    # (0: only by `python -m services.analytics renorm`, e.g. from a cron job).
    renorm_interval_s: float = Field(24 * 3600.0, ge=0)
    norms_refresh_s: float = Field(
        300.0, gt=0, description="How often a server looks for norms another replica stored."
    )

    @model_validator(mode="after")
    def _check_retry(self) -> AnalyticsSettings:
        if self.xp_retry_initial_s > self.xp_retry_max_s:
            raise ValueError("xp_retry_initial_s must not exceed xp_retry_max_s")
        return self

    def xapi_key_bytes(self) -> bytes:
        if self.xapi_key is not None:
            return self.xapi_key.get_secret_value().encode()
        return hashlib.sha256(
            b"avatario-analytics-xapi:" + self.internal_token.get_secret_value().encode()
        ).digest()
