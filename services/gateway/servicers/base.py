"""Protobuf conversions the public servicers share."""

from __future__ import annotations

from avatario.gateway.v1 import gateway_pb2 as gw
from services.common.timeutil import to_ts
from services.gateway.tokens import TokenPair


def auth_tokens(pair: TokenPair) -> gw.AuthTokens:
    return gw.AuthTokens(
        access_token=pair.access_token, access_token_expires_at=to_ts(pair.access_expires_at),
        refresh_token=pair.refresh_token, refresh_token_expires_at=to_ts(pair.refresh_expires_at),
        token_type="Bearer",
    )
