"""Call patterns and lookups shared by the public servicers and the chat
orchestrator (neither imports the other)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.common.v1 import family_pb2
from avatario.profile.v1 import profile_pb2 as pf
from services.gateway.auth import Principal, own_child
from services.gateway.clients.backends import Backend


async def get_child(profile: Backend, who: Principal, child_id: str,
                    field: str = "child_id") -> family_pb2.Child:
    """The child (of the caller's family; NOT_FOUND otherwise), naming `field` in errors."""
    child_id = own_child(who, child_id)
    resp = await profile.call(
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


async def relay_stream(backend: Backend, method: str, request, *, timeout: float):
    """Every response of a backend's server-streaming call, its errors translated like a
    unary call's; the call is cancelled if the consumer stops early."""
    call = backend.stream(method, request, timeout=timeout)
    try:
        async for resp in call:
            yield resp
    except grpc.aio.AioRpcError as err:
        raise backend.failed(err) from None
    finally:
        call.cancel()
