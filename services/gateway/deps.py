"""What the public servicers and the chat orchestrator are built with: the
backends, settings, token service and the caches they share."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.gateway.auth import DeviceCache
from services.gateway.cache import TtlCache
from services.gateway.clients.backends import Backends
from services.gateway.settings import GatewaySettings
from services.gateway.tokens import TokenService


@dataclass
class Deps:
    settings: GatewaySettings
    backends: Backends
    tokens: TokenService
    devices: DeviceCache
    summaries: TtlCache = field(default_factory=lambda: TtlCache(0))

    def forget_child_context(self, family_id: str, child_id: str | None = None) -> None:
        """Play data or the family changed: drop the cached summaries."""
        self.summaries.evict(lambda k: k[0] == family_id and child_id in (None, k[1]))

    @property
    def profile(self):
        return self.backends.profile

    @property
    def analytics(self):
        return self.backends.analytics

    @property
    def inference(self):
        return self.backends.inference
