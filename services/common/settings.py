"""Settings shared by every server, read with pydantic-settings.

Build settings once in `main()` with `load_settings(...)` and pass them into
constructors; nothing else reads the environment. Each service subclasses
`ServiceSettings` with its own `env_prefix` (e.g. AVATARIO_PROFILE_); the
internal service token is shared by all services and read from
AVATARIO_INTERNAL_TOKEN. A missing or bad variable stops the process with one
line naming it (`settings_problem`) and exit status 2, not a traceback.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TypeVar

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

S = TypeVar("S", bound=BaseSettings)

# The exit status of a process that refuses its configuration (as a usage error).
CONFIG_EXIT_STATUS = 2


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
    # On SIGTERM: health turns NOT_SERVING at once, but the server keeps serving new
    # and in-flight calls this long, so load balancers and the gateway's replica
    # watch see NOT_SERVING before calls are refused; then the grace stop.
    drain_delay_s: float = Field(0.0, ge=0, le=300, description="NOT_SERVING, still serving.")
    # Overload admission (services.common.admission): past this many RPCs in
    # flight a call is refused at once with RESOURCE_EXHAUSTED + RetryInfo
    # instead of queueing into its deadline. Services set their own default.
    max_inflight_rpcs: int = Field(256, ge=0, le=100_000, description="0 = no cap.")
    overload_retry_after_s: float = Field(
        1.0, gt=0, le=60, description="The RetryInfo delay of an overload refusal.")

    @field_validator("internal_token")
    @classmethod
    def _token_length(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        tls = [self.tls_cert_file, self.tls_key_file, self.tls_ca_file]
        if any(tls) and not all(tls):
            raise ValueError("tls_cert_file, tls_key_file and tls_ca_file go together")
        return self

    @property
    def mtls(self) -> bool:
        return self.tls_cert_file is not None


def env_name(cls: type[BaseSettings], name: str) -> str:
    """The environment variable a settings field (or an alias in an error) is read from."""
    info = cls.model_fields.get(name)
    if info is None:
        return name.upper()  # already the alias pydantic reported
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        alias = next((c for c in alias.choices if isinstance(c, str)), None)
    if isinstance(alias, str):
        return alias.upper()
    return (str(cls.model_config.get("env_prefix") or "") + name).upper()


def _env_names_in(cls: type[BaseSettings], text: str) -> str:
    """Field names a validator wrote into its message, as the variables to set.
    Only snake_case names: a plain word such as "port" may be just a word."""
    names = [n for n in cls.model_fields if "_" in n]
    if not names:
        return text
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True))
                         + r")\b")
    return pattern.sub(lambda m: env_name(cls, m.group(1)), text)


def settings_problem(cls: type[BaseSettings], exc: ValidationError | SettingsError) -> str:
    """One line naming each missing or bad environment variable; never a value."""
    if isinstance(exc, SettingsError):
        return _env_names_in(cls, str(exc))
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in err["loc"]]
        message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        message = _env_names_in(cls, message)
        if not loc:  # a check across fields: the message names them
            parts.append(message)
            continue
        var = env_name(cls, loc[0]) + "".join(f"[{p}]" for p in loc[1:])
        if err["type"] == "missing":
            parts.append(f"{var} is required")
        elif message.startswith(("is ", "must ")):
            parts.append(f"{var} {message}")
        else:
            parts.append(f"{var}: {message}")
    return "; ".join(dict.fromkeys(parts))


def load_settings(cls: type[S], *, service: str, **values) -> S:
    """Build `cls` from the environment (and `values`, e.g. command-line overrides).
    A missing or bad variable prints one line to stderr and exits with status 2."""
    try:
        return cls(**values)
    except (ValidationError, SettingsError) as exc:
        print(f"{service}: configuration error: {settings_problem(cls, exc)}", file=sys.stderr)
        raise SystemExit(CONFIG_EXIT_STATUS) from None
