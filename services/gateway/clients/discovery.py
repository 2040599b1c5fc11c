"""Where the inference replicas are: the configured targets resolved through DNS.

A target list is `host:port[,host:port...]`. Each host is looked up with the
system resolver (getaddrinfo) and every address it returns is one replica: a
Kubernetes headless Service name returns one address per pod, a compose service
name one per container, an IP address itself. The host name is kept as the TLS
server name for mutual TLS (certificates name the service, not the pod IP).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("avatario.gateway.discovery")


@dataclass(frozen=True, order=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


@dataclass(frozen=True, order=True)
class Endpoint:
    """One replica: the address dialled, and the name its certificate carries."""

    address: str
    server_name: str | None = None


# (host, port) -> addresses (IP strings); raises OSError when the lookup fails.
Lookup = Callable[[str, int], Awaitable[list[str]]]


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_targets(text: str) -> list[Target]:
    """`host:port[,host:port...]` (IPv6 hosts in brackets); ValueError names the bad part."""
    out: list[Target] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.startswith("["):
            host, sep, rest = part[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"{part!r}: expected [ipv6]:port")
            port_text = rest[1:]
        else:
            host, sep, port_text = part.rpartition(":")
            if not sep or not host or ":" in host:
                raise ValueError(f"{part!r}: expected host:port")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{part!r}: the port must be 1-65535")
        out.append(Target(host, int(port_text)))
    if not out:
        raise ValueError("at least one host:port is required")
    return sorted(set(out))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def system_lookup(host: str, port: int) -> list[str]:
    """Every address of `host` (A and AAAA records), through the event loop's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


class Resolver:
    """Resolves the targets; a host whose lookup fails keeps its last known addresses
    (a DNS hiccup must not empty the fleet; health checks judge those replicas)."""

    def __init__(self, targets: list[Target], lookup: Lookup = system_lookup,
                 timeout_s: float = 2.0) -> None:
        self.targets = targets
        self._lookup = lookup
        self._timeout_s = timeout_s
        self._last: dict[Target, set[Endpoint]] = {}

    async def _one(self, target: Target) -> set[Endpoint]:
        if is_ip(target.host):
            return {Endpoint(str(target))}
        addresses = await asyncio.wait_for(self._lookup(target.host, target.port),
                                           self._timeout_s)
        return {Endpoint(join_host_port(a, target.port), target.host) for a in addresses}

    async def resolve(self) -> tuple[set[Endpoint], list[Target]]:
        """The endpoints now, and the targets whose lookup failed (kept from before)."""
        results = await asyncio.gather(*(self._one(t) for t in self.targets),
                                       return_exceptions=True)
        found: set[Endpoint] = set()
        failed: list[Target] = []
        for target, result in zip(self.targets, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, (OSError, TimeoutError)):
                    raise result
                failed.append(target)
                log.warning("discovery.lookup_failed", target=str(target),
                            error=type(result).__name__)
                found |= self._last.get(target, set())
            else:
                self._last[target] = result
                found |= result
        return found, failed
