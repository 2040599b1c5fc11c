"""What every public servicer needs: the backends, settings and token service,
and the lookups several of them share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.profile.v1 import profile_pb2 as pf
from services.common.timeutil import to_ts
from services.gateway.auth import DeviceCache, Principal, own_child
from services.gateway.backends import Backends
from services.gateway.cache import TtlCache
from services.gateway.settings import GatewaySettings
from services.gateway.tokens import TokenPair, TokenService


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


def auth_tokens(pair: TokenPair) -> gw.AuthTokens:
    return gw.AuthTokens(
        access_token=pair.access_token, access_token_expires_at=to_ts(pair.access_expires_at),
        refresh_token=pair.refresh_token, refresh_token_expires_at=to_ts(pair.refresh_expires_at),
        token_type="Bearer",
    )


async def get_child(deps: Deps, who: Principal, child_id: str,
                    field: str = "child_id") -> family_pb2.Child:
    """The child (of the caller's family; NOT_FOUND otherwise), naming `field` in errors."""
    child_id = own_child(who, child_id)
    resp = await deps.profile.call(
        "GetChild", pf.GetChildRequest(family_id=who.family_id, child_id=child_id),
        remap={"child_id": field},
    )
    return resp.child


def child_ref(child: family_pb2.Child) -> an.ChildRef:
    return an.ChildRef(family_id=child.family_id, child_id=child.child_id,
                       birth_year=child.birth_year, birth_month=child.birth_month)


async def gather_all(*calls: Awaitable):
    """Await calls concurrently; raise the first failure once all have ended (so no
    failure goes unobserved and nothing keeps running behind the caller's back)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


async def all_pages(fetch: Callable[[str], Awaitable], items: str, *, max_pages: int = 1000):
    """Every item of a paginated backend list: `fetch(page_token)` returns a response
    with a repeated field named `items` and next_page_token."""
    out, token = [], ""
    for _ in range(max_pages):
        resp = await fetch(token)
        out.extend(getattr(resp, items))
        token = resp.next_page_token
        if not token:
            break
    return out
