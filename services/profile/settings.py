"""Profile service settings (env prefix AVATARIO_PROFILE_). Built once in main()."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import ServiceSettings

_CONFIG = SettingsConfigDict(env_prefix="AVATARIO_PROFILE_", extra="ignore", populate_by_name=True)


class ProfileDatabaseSettings(BaseSettings):
    """What the migrate command needs (no service credential)."""

    model_config = _CONFIG

    database_url: str = Field(
        "sqlite+aiosqlite:///var/profile.db",
        description="SQLAlchemy async URL (postgresql+asyncpg://... in production).",
    )


class ProfileSettings(ServiceSettings, ProfileDatabaseSettings):
    model_config = _CONFIG

    db_pool_size: int = Field(10, ge=1, le=200)
    port: int = Field(50052, ge=0, le=65535)
    metrics_port: int | None = Field(9102, ge=0, le=65535)

    ready_timeout_s: float = Field(
        120.0, ge=0, description="How long to wait at start for the schema to reach head."
    )
    pairing_code_ttl_s: int = Field(
        600, ge=60, le=3600, description="How long a device pairing code stays valid."
    )
    # argon2id cost. Defaults follow argon2-cffi's RFC 9106 low-memory profile;
    # tests lower memory_cost for speed.
    argon2_time_cost: int = Field(3, ge=1, le=20)
    argon2_memory_cost_kib: int = Field(65536, ge=8, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(4, ge=1, le=64)
    # Key for the HMAC-SHA-256 of pairing codes and device tokens, so a stolen
    # database alone cannot brute-force the short pairing codes. Changing it
    # invalidates every paired device.
    token_pepper: SecretStr | None = None

    @property
    def pairing_code_ttl(self) -> timedelta:
        return timedelta(seconds=self.pairing_code_ttl_s)

    @model_validator(mode="after")
    def _check_argon2(self) -> ProfileSettings:
        if self.argon2_memory_cost_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_cost_kib must be at least 8 * argon2_parallelism")
        return self
