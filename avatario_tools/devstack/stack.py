"""How the four services are started locally: shared by `make run` and the e2e tests.

Inference may run as several replicas (`inference_replicas`): processes named
inference-1..N (plain `inference` when there is one), each on its own ports,
behind one gateway whose inference target lists them all; with a
`state_store_url` they share the conversation-state tier (Redis)."""

from __future__ import annotations

import asyncio
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
    # Extra environment per process; the key "inference" applies to every replica,
    # "inference-2" to that one only (after the shared one).
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    inference_replicas: int = 1
    # The replicas' shared conversation-state tier (AVATARIO_INFERENCE_STATE_STORE_URL).
    state_store_url: str | None = None

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    @property
    def inference_names(self) -> list[str]:
        return inference_names(self.inference_replicas)

    @classmethod
    def sqlite(cls, var: Path, **kw) -> dict[str, str]:
        return {n: f"sqlite+aiosqlite:///{var / (n + '.db')}" for n in DATA_SERVICES}


def inference_names(replicas: int = 1) -> list[str]:
    """The inference processes: `inference`, or inference-1..N for several replicas."""
    if replicas < 1:
        raise ValueError("at least one inference replica")
    return ["inference"] if replicas == 1 else [f"inference-{i}" for i in range(1, replicas + 1)]


def process_names(inference_replicas: int = 1) -> list[str]:
    """Every server process, in port order (the first replica where `inference` was)."""
    return [*SERVICES[:-1], *inference_names(inference_replicas)]


def consecutive_ports(base: int, inference_replicas: int = 1) -> dict[str, int]:
    return {name: base + i for i, name in enumerate(process_names(inference_replicas))}


def free_ports(inference_replicas: int = 1) -> dict[str, int]:
    """Ports the OS says are free now (for tests; a tiny race is acceptable there)."""
    out, socks = {}, []
    for name in process_names(inference_replicas):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        out[name] = s.getsockname()[1]
    for s in socks:
        s.close()
    return out


def service_specs(cfg: StackConfig) -> dict[str, ProcessSpec]:
    """One spec per process: profile, analytics, the inference replicas, gateway."""
    def env(service: str, name: str, **extra: str) -> dict[str, str]:
        prefix = f"AVATARIO_{service.upper()}_"
        base = {
            "AVATARIO_INTERNAL_TOKEN": cfg.internal_token,
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": str(cfg.ports[name]),
            f"{prefix}METRICS_PORT": str(cfg.metrics_ports[name]),
            f"{prefix}LOG_LEVEL": cfg.log_level,
        }
        base |= {prefix + k.upper(): v for k, v in extra.items()}
        shared = cfg.extra_env.get(service, {}) if name != service else {}
        return base | shared | cfg.extra_env.get(name, {})

    def spec(service: str, timeout: float = 120.0, name: str | None = None,
             **extra: str) -> ProcessSpec:
        name = name or service
        return ProcessSpec(name, [python(), "-m", f"services.{service}", "serve"],
                           env(service, name, **extra), cfg.target(name),
                           ready_timeout_s=timeout)

    store = {"state_store_url": cfg.state_store_url} if cfg.state_store_url else {}
    replicas = {
        name: spec("inference", 300.0, name, model_path=str(cfg.model), tokenizer=cfg.tokenizer,
                   strategy=cfg.strategy, **store)
        for name in cfg.inference_names
    }
    return {
        "profile": spec("profile", database_url=cfg.database_urls["profile"],
                        token_pepper=cfg.token_pepper),
        "analytics": spec("analytics", database_url=cfg.database_urls["analytics"],
                          profile_target=cfg.target("profile")),
        **replicas,
        "gateway": spec("gateway", database_url=cfg.database_urls["gateway"],
                        profile_target=cfg.target("profile"),
                        analytics_target=cfg.target("analytics"),
                        inference_target=",".join(cfg.target(n) for n in replicas),
                        jwt_signing_keys=cfg.jwt_signing_keys, jwt_active_kid=cfg.jwt_active_kid),
    }


async def start_stack(cfg: StackConfig, sup: Supervisor) -> dict[str, ProcessSpec]:
    """Migrate every database, then start the servers in dependency order (the
    inference replicas together: each loads its model while the others do)."""
    specs = service_specs(cfg)
    for name in DATA_SERVICES:
        await sup.run_once(ProcessSpec(
            f"{name}-migrate", [python(), "-m", f"services.{name}", "migrate"], specs[name].env))
    for name in START_ORDER:
        if name == "inference":
            await asyncio.gather(*(sup.start(specs[n]) for n in cfg.inference_names))
        else:
            await sup.start(specs[name])
    return specs
