"""What a mobile developer switches on (issue 17): every error through the public
API carries an ErrorInfo reason, so an app tells "refresh the token" from "sign
in again" from "the refresh token was reused", and a rate limit from an oversized
message, without parsing messages. Also: a mood check-in says its XP."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import jwt
from grpc_status import rpc_status

from avatario.common.v1 import family_pb2, play_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from services.common.status import ERROR_DOMAIN, error_info
from services.common.timeutil import to_ts
from tests.helpers import retry_after
from tests.integration.gateway.support import (
    KEYS,
    bearer,
    fails,
    new_family,
    new_id,
    sign_up,
)

C = grpc.StatusCode


async def reason_of(call, code: grpc.StatusCode, field: str | None = None) -> tuple[str, dict[str, str]]:
    err = await fails(call, code, field)
    info = error_info(rpc_status.from_call(err))
    assert info is not None, f"{code.name} without ErrorInfo: {err.details()}"
    assert info.domain == ERROR_DOMAIN
    return info.reason, dict(info.metadata)


def expired_token(fam) -> str:
    """An access token of ours, correctly signed, that expired an hour ago."""
    now = int(time.time())
    claims = {"iss": "avatario-gateway", "aud": "avatario-mobile", "sub": fam.parent.parent_id,
              "fam": fam.family_id, "sid": str(uuid.uuid4()), "jti": uuid.uuid4().hex,
              "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
    return jwt.encode(claims, KEYS["k1"], algorithm="HS256", headers={"kid": "k1"})


async def test_token_errors_say_what_to_do(stack):
    fam = await sign_up(stack.client)
    account, auth = stack.client.family.GetAccount, stack.client.auth
    assert (await reason_of(account(gw.GetAccountRequest()), C.UNAUTHENTICATED))[0] == "CREDENTIALS_MISSING"
    assert (await reason_of(account(gw.GetAccountRequest(), metadata=bearer("x.y.z")),
                            C.UNAUTHENTICATED))[0] == "ACCESS_TOKEN_INVALID"
    # Refresh the token: the access token expired.
    assert (await reason_of(account(gw.GetAccountRequest(), metadata=bearer(expired_token(fam))),
                            C.UNAUTHENTICATED))[0] == "ACCESS_TOKEN_EXPIRED"
    # Sign in again: an unknown refresh token.
    bad = gw.RefreshTokensRequest(refresh_token="rt_" + "A" * 43)
    assert (await reason_of(auth.RefreshTokens(bad), C.UNAUTHENTICATED))[0] == "REFRESH_TOKEN_INVALID"
    # The refresh token was reused: the whole sign-in is revoked.
    first = fam.tokens.refresh_token
    fresh = (await auth.RefreshTokens(gw.RefreshTokensRequest(refresh_token=first))).tokens
    assert (await reason_of(auth.RefreshTokens(gw.RefreshTokensRequest(refresh_token=first)),
                            C.UNAUTHENTICATED))[0] == "REFRESH_TOKEN_REUSED"
    assert (await reason_of(auth.RefreshTokens(gw.RefreshTokensRequest(refresh_token=fresh.refresh_token)),
                            C.UNAUTHENTICATED))[0] == "REFRESH_TOKEN_EXPIRED"
    assert (await reason_of(account(gw.GetAccountRequest(), metadata=bearer(fresh.access_token)),
                            C.UNAUTHENTICATED))[0] == "SIGN_IN_REVOKED"
    # Wrong password and an unknown device credential.
    assert (await reason_of(auth.SignIn(gw.SignInRequest(email=fam.email, password="x" * 12)),
                            C.UNAUTHENTICATED))[0] == "WRONG_CREDENTIALS"
    assert (await reason_of(account(gw.GetAccountRequest(), metadata=bearer("dev_" + "a" * 43)),
                            C.UNAUTHENTICATED))[0] == "DEVICE_CREDENTIAL_INVALID"


async def test_rate_limit_and_oversized_message_differ(stack):
    fam = await new_family(stack.client)
    limit = stack.gateway.deps.settings.public_max_receive_bytes
    # Over the documented size: the gateway's MESSAGE_TOO_LARGE, without RetryInfo.
    big = gw.UpdateChildRequest(child_id=fam.child_id, nickname="x" * (limit + 10))
    err = await fails(fam.client.family.UpdateChild(big, metadata=fam.client.md), C.RESOURCE_EXHAUSTED)
    info = error_info(rpc_status.from_call(err))
    assert info.reason == "MESSAGE_TOO_LARGE" and int(info.metadata["max_bytes"]) == limit
    assert retry_after(err) is None
    # Past gRPC's own transport limit (twice that): gRPC's bare RESOURCE_EXHAUSTED,
    # the only RESOURCE_EXHAUSTED without an ErrorInfo (docs/api.md).
    huge = gw.UpdateChildRequest(child_id=fam.child_id, nickname="x" * (2 * limit + 10))
    err = await fails(fam.client.family.UpdateChild(huge, metadata=fam.client.md), C.RESOURCE_EXHAUSTED)
    assert error_info(rpc_status.from_call(err)) is None
    # A rate limit: RATE_LIMITED with RetryInfo.
    _, limited = await stack.extra_gateway(rate_limit_rps=1, rate_limit_burst=2)
    client = limited.as_(fam.access)
    for _ in range(2):
        await client.family.GetAccount(gw.GetAccountRequest(), metadata=client.md)
    err = await fails(client.family.GetAccount(gw.GetAccountRequest(), metadata=client.md),
                      C.RESOURCE_EXHAUSTED)
    info = error_info(rpc_status.from_call(err))
    assert info.reason == "RATE_LIMITED" and info.metadata["limit"] and retry_after(err) > 0


async def test_relayed_errors_keep_their_reason(stack):
    fam = await new_family(stack.client, scopes=(family_pb2.CONSENT_SCOPE_CHILD_PROFILE,))
    md = fam.client.md
    reason, meta = await reason_of(fam.client.family.GetChild(gw.GetChildRequest(child_id=new_id()),
                                                              metadata=md), C.NOT_FOUND)
    assert reason == "CHILD_NOT_FOUND" and meta["resource_type"] == "child"
    reason, _ = await reason_of(fam.client.family.CreateChild(gw.CreateChildRequest(
        nickname="", birth_year=2018, birth_month=13), metadata=md), C.INVALID_ARGUMENT, "birth_month")
    assert reason == "INVALID_ARGUMENT"
    checkin = play_pb2.MoodCheckIn(checkin_id=new_id(), child_id=fam.child_id, mood=play_pb2.MOOD_HAPPY,
                                   intensity=3, recorded_at=to_ts(datetime.now(UTC) - timedelta(hours=1)))
    reason, meta = await reason_of(fam.client.play.SubmitMoodCheckIn(
        gw.SubmitMoodCheckInRequest(checkin=checkin), metadata=md), C.FAILED_PRECONDITION)
    assert reason == "CONSENT_REQUIRED" and meta["scope"] == "CONSENT_SCOPE_GAMEPLAY_ANALYTICS"
    reason, _ = await reason_of(fam.client.privacy.EraseFamily(gw.EraseFamilyRequest(password="wrong " * 3),
                                                               metadata=md), C.PERMISSION_DENIED)
    assert reason == "PERMISSION_DENIED"


async def test_mood_checkin_answers_its_xp(stack):
    fam = await new_family(stack.client)
    checkin = play_pb2.MoodCheckIn(checkin_id=new_id(), child_id=fam.child_id, mood=play_pb2.MOOD_CALM,
                                   intensity=2, recorded_at=to_ts(datetime.now(UTC) - timedelta(hours=1)))
    req = gw.SubmitMoodCheckInRequest(checkin=checkin)
    done = await fam.client.play.SubmitMoodCheckIn(req, metadata=fam.client.md)
    assert done.xp_awarded == 5 and not done.xp_pending and not done.duplicate
    again = await fam.client.play.SubmitMoodCheckIn(req, metadata=fam.client.md)
    assert again.duplicate and again.xp_awarded == 5
    avatar = (await fam.client.avatar.GetAvatar(gw.GetAvatarRequest(child_id=fam.child_id),
                                                metadata=fam.client.md)).avatar
    assert avatar.xp == 5
