"""Profile service settings (env prefix AVATARIO_PROFILE_). Built once in main()."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.db import DatabaseUrl
from services.common.settings import ServiceSettings
from services.profile.domain import rules

PEPPER_ENV = "AVATARIO_PROFILE_TOKEN_PEPPER"
PEPPER_MIN_LEN = 16

# hide_input_in_errors: a rejected pepper or database URL is a secret; keep it out
# of the start-up error (and so out of the logs).
_CONFIG = SettingsConfigDict(env_prefix="AVATARIO_PROFILE_", extra="ignore", populate_by_name=True,
                             hide_input_in_errors=True)


class ProfileDatabaseSettings(BaseSettings):
    """What the migrate command needs (no service credential)."""

    model_config = _CONFIG

    database_url: DatabaseUrl = Field(
        "sqlite+aiosqlite:///var/profile.db",
        description="SQLAlchemy async URL (postgresql+asyncpg://... in production).",
    )


class ProfileSettings(ServiceSettings, ProfileDatabaseSettings):
    model_config = _CONFIG

    db_pool_size: int = Field(10, ge=1, le=200)
    port: int = Field(50052, ge=0, le=65535)
    # Overload admission: RPCs in flight before RESOURCE_EXHAUSTED + RetryInfo
    # (measured: bench/bench_load.py; argon2 hashing runs in a bounded pool).
    max_inflight_rpcs: int = Field(64, ge=0, le=100_000, description="0 = no cap.")
    metrics_port: int | None = Field(9102, ge=0, le=65535)

    ready_timeout_s: float = Field(
        120.0, ge=0, description="How long to wait at start for the schema to reach head."
    )
    pairing_code_ttl_s: int = Field(
        600, ge=60, le=3600, description="How long a device pairing code stays valid."
    )
    family_invite_ttl_s: int = Field(
        72 * 3600, ge=600, le=14 * 24 * 3600,
        description="How long a family invite code (a second parent) stays valid.",
    )
    conversation_turn_limit: int = Field(
        rules.CONVERSATION_TURN_LIMIT, ge=1, le=100_000,
        description="Turns one chat conversation may hold; past it a turn is refused "
                    "(FAILED_PRECONDITION, CONVERSATION_TURN_LIMIT).",
    )
    # argon2id cost. Defaults follow argon2-cffi's RFC 9106 low-memory profile;
    # tests lower memory_cost for speed.
    argon2_time_cost: int = Field(3, ge=1, le=20)
    argon2_memory_cost_kib: int = Field(65536, ge=8, le=4 * 1024 * 1024)
    argon2_parallelism: int = Field(4, ge=1, le=64)
    # Sizing rule: every hash or verify holds argon2_memory_cost_kib while it runs,
    # and at most argon2_max_concurrency run at once (a dedicated thread pool), so
    # password hashing peaks at argon2_max_concurrency x argon2_memory_cost_kib
    # (2 x 64 MiB = 128 MiB by default). Keep that well inside the pod's memory
    # limit, and at most the CPU cores the pod may use. Up to argon2_max_waiting
    # more sign-ins queue for a worker (they hold no argon2 memory while they
    # wait); past that a call is refused with RESOURCE_EXHAUSTED and a RetryInfo
    # of argon2_retry_after_s.
    argon2_max_concurrency: int = Field(
        2, ge=1, le=64, description="argon2 hashes running at once (worker threads)."
    )
    argon2_max_waiting: int = Field(
        16, ge=0, le=10_000, description="argon2 calls queued for a worker before refusals."
    )
    argon2_retry_after_s: float = Field(
        1.0, gt=0, le=60, description="RetryInfo delay when the argon2 queue is full."
    )
    # Key for the HMAC-SHA-256 of pairing codes and device tokens, so a stolen
    # database alone cannot brute-force the short pairing codes. Required;
    # changing it invalidates every paired device.
    token_pepper: SecretStr = Field(
        None, validate_default=True,  # type: ignore[arg-type]  # None -> the clear error below
        description="HMAC key for pairing codes and device tokens (>= 16 characters).",
    )

    @property
    def pairing_code_ttl(self) -> timedelta:
        return timedelta(seconds=self.pairing_code_ttl_s)

    @property
    def family_invite_ttl(self) -> timedelta:
        return timedelta(seconds=self.family_invite_ttl_s)

    @field_validator("token_pepper", mode="before")
    @classmethod
    def _check_pepper(cls, value):
        secret = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not secret:
            raise ValueError(f"is required: set {PEPPER_ENV} (at least {PEPPER_MIN_LEN} "
                             "random characters; keep it secret and stable)")
        if not isinstance(secret, str) or len(secret) < PEPPER_MIN_LEN:
            raise ValueError(f"{PEPPER_ENV} must be at least {PEPPER_MIN_LEN} characters")
        return value

    @model_validator(mode="after")
    def _check_argon2(self) -> ProfileSettings:
        if self.argon2_memory_cost_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_cost_kib must be at least 8 * argon2_parallelism")
        return self
