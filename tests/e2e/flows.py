"""Steps the end-to-end tests share, through the gateway's public API."""

from __future__ import annotations

from typing import Any

from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api

CHAT_SCOPES = (family_pb2.CONSENT_SCOPE_CHILD_PROFILE, family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT)


async def family_with_child(api: Api, email: str, password: str, nickname: str,
                            born: tuple[int, int],
                            scopes: tuple[int, ...] = CHAT_SCOPES) -> tuple[Any, Any]:
    """Sign a parent up, record their consent to `scopes`, add one child born (year, month).
    Returns (parent, child); `api` keeps the parent's tokens."""
    parent = await api.sign_up(email, password, f"{nickname}'s parent")
    await api.call(api.family.RecordConsent, gw.RecordConsentRequest(
        scopes=list(scopes), policy_version="2024-01"))
    child = (await api.call(api.family.CreateChild, gw.CreateChildRequest(
        nickname=nickname, birth_year=born[0], birth_month=born[1]))).child
    return parent, child
