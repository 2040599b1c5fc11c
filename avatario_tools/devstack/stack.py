"""How the four services are started locally: shared by `make run` and the e2e tests."""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from avatario_tools.devstack.supervisor import ProcessSpec, Supervisor, python

SERVICES = ("gateway", "profile", "analytics", "inference")
DATA_SERVICES = ("profile", "analytics", "gateway")  # the ones with a database to migrate
START_ORDER = ("profile", "analytics", "inference", "gateway")


@dataclass
class StackConfig:
    var: Path
    ports: dict[str, int]
    metrics_ports: dict[str, int]
    database_urls: dict[str, str]
    model: Path
    tokenizer: str = "world"
    strategy: str = ""
    internal_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    jwt_signing_keys: str = field(
        default_factory=lambda: json.dumps({"local-1": secrets.token_urlsafe(48)})
    )
    jwt_active_kid: str = "local-1"
    # Profile's HMAC key for pairing codes and device tokens (required).
    token_pepper: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    log_level: str = "INFO"
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    @classmethod
    def sqlite(cls, var: Path, **kw) -> dict[str, str]:
        return {n: f"sqlite+aiosqlite:///{var / (n + '.db')}" for n in DATA_SERVICES}


def consecutive_ports(base: int) -> dict[str, int]:
    return {name: base + i for i, name in enumerate(SERVICES)}


def free_ports() -> dict[str, int]:
    """Ports the OS says are free now (for tests; a tiny race is acceptable there)."""
    out, socks = {}, []
    for name in SERVICES:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        out[name] = s.getsockname()[1]
    for s in socks:
        s.close()
    return out


def service_specs(cfg: StackConfig) -> dict[str, ProcessSpec]:
    def env(name: str, **extra: str) -> dict[str, str]:
        prefix = f"AVATARIO_{name.upper()}_"
        base = {
            "AVATARIO_INTERNAL_TOKEN": cfg.internal_token,
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": str(cfg.ports[name]),
            f"{prefix}METRICS_PORT": str(cfg.metrics_ports[name]),
            f"{prefix}LOG_LEVEL": cfg.log_level,
        }
        base |= {prefix + k.upper(): v for k, v in extra.items()}
        return base | cfg.extra_env.get(name, {})

    def spec(name: str, timeout: float = 120.0, **extra: str) -> ProcessSpec:
        return ProcessSpec(name, [python(), "-m", f"services.{name}", "serve"], env(name, **extra),
                           cfg.target(name), ready_timeout_s=timeout)

    return {
        "profile": spec("profile", database_url=cfg.database_urls["profile"],
                        token_pepper=cfg.token_pepper),
        "analytics": spec("analytics", database_url=cfg.database_urls["analytics"],
                          profile_target=cfg.target("profile")),
        "inference": spec("inference", 300.0, model_path=str(cfg.model), tokenizer=cfg.tokenizer,
                          strategy=cfg.strategy),
        "gateway": spec("gateway", database_url=cfg.database_urls["gateway"],
                        profile_target=cfg.target("profile"),
                        analytics_target=cfg.target("analytics"),
                        inference_target=cfg.target("inference"),
                        jwt_signing_keys=cfg.jwt_signing_keys, jwt_active_kid=cfg.jwt_active_kid),
    }


async def start_stack(cfg: StackConfig, sup: Supervisor) -> dict[str, ProcessSpec]:
    """Migrate every database, then start the servers in dependency order."""
    specs = service_specs(cfg)
    for name in DATA_SERVICES:
        await sup.run_once(ProcessSpec(
            f"{name}-migrate", [python(), "-m", f"services.{name}", "migrate"], specs[name].env))
    for name in START_ORDER:
        await sup.start(specs[name])
    return specs
