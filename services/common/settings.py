"""Settings shared by every server, read with pydantic-settings.

Build settings once in `main()` and pass them into constructors; nothing else
reads the environment. Each service subclasses `ServiceSettings` with its own
`env_prefix` (e.g. AVATARIO_PROFILE_); the internal service token is shared by
all services and read from AVATARIO_INTERNAL_TOKEN.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one, None disables."
    )
    internal_token: SecretStr = Field(
        validation_alias=AliasChoices("AVATARIO_INTERNAL_TOKEN"),
        description="Shared service credential every internal call must carry.",
    )
    internal_token_previous: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AVATARIO_INTERNAL_TOKEN_PREVIOUS"),
        description="During a rotation: the old token, still accepted but never sent.",
    )
    # Mutual TLS for internal traffic: this service's certificate and key (used
    # both as server certificate and as client certificate towards other
    # services) and the CA that signs every service's certificate.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    log_level: str = "INFO"
    log_json: bool = True
    shutdown_grace_s: float = Field(10.0, ge=0)
    # Overload admission (services.common.admission): past this many RPCs in
    # flight a call is refused at once with RESOURCE_EXHAUSTED + RetryInfo
    # instead of queueing into its deadline. Services set their own default.
    max_inflight_rpcs: int = Field(256, ge=0, le=100_000, description="0 = no cap.")
    overload_retry_after_s: float = Field(
        1.0, gt=0, le=60, description="The RetryInfo delay of an overload refusal.")

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if len(self.internal_token.get_secret_value()) < 16:
            raise ValueError("internal_token must be at least 16 characters")
        tls = [self.tls_cert_file, self.tls_key_file, self.tls_ca_file]
        if any(tls) and not all(tls):
            raise ValueError("tls_cert_file, tls_key_file and tls_ca_file go together")
        return self

    @property
    def mtls(self) -> bool:
        return self.tls_cert_file is not None
