"""Parent identity through the public API: sign-up, sign-in, refresh rotation,
reuse detection, sign-out, password change, key rotation, device credentials."""

from __future__ import annotations

import asyncio

import grpc

from avatario.gateway.v1 import gateway_pb2 as gw
from tests.integration.gateway.support import (
    KEYS,
    PASSWORD,
    bearer,
    fails,
    new_family,
    pair_device,
    sign_up,
)

UNAUTH = grpc.StatusCode.UNAUTHENTICATED


async def test_sign_up_then_sign_in_and_whoami(stack):
    fam = await sign_up(stack.client)
    assert fam.tokens.token_type == "Bearer"
    assert fam.tokens.access_token.count(".") == 2
    assert fam.tokens.refresh_token.startswith("rt_")
    me = await fam.client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
    assert me.parent.parent_id == fam.parent.parent_id
    signed = await stack.client.auth.SignIn(gw.SignInRequest(email=fam.email.upper(),
                                                             password=PASSWORD))
    assert signed.parent.parent_id == fam.parent.parent_id
    await fails(stack.client.auth.SignIn(gw.SignInRequest(email=fam.email, password="x" * 12)),
                UNAUTH)
    await fails(stack.client.auth.SignIn(gw.SignInRequest(email="nobody@example.org",
                                                          password="x" * 12)), UNAUTH)


async def test_refresh_rotates_and_reuse_revokes_the_whole_sign_in(stack):
    fam = await sign_up(stack.client)
    auth = stack.client.auth
    first = fam.tokens.refresh_token
    second = (await auth.RefreshTokens(gw.RefreshTokensRequest(refresh_token=first))).tokens
    third = (await auth.RefreshTokens(gw.RefreshTokensRequest(
        refresh_token=second.refresh_token))).tokens
    assert len({first, second.refresh_token, third.refresh_token}) == 3
    # The newest access token works...
    await stack.client.family.GetAccount(gw.GetAccountRequest(), metadata=bearer(third.access_token))
    # ...until a spent token is presented again: the whole sign-in is revoked.
    await fails(auth.RefreshTokens(gw.RefreshTokensRequest(refresh_token=first)), UNAUTH)
    await fails(auth.RefreshTokens(gw.RefreshTokensRequest(refresh_token=third.refresh_token)),
                UNAUTH)
    await fails(stack.client.family.GetAccount(gw.GetAccountRequest(),
                                               metadata=bearer(third.access_token)), UNAUTH)
    # Another sign-in of the same parent is unaffected.
    other = await auth.SignIn(gw.SignInRequest(email=fam.email, password=PASSWORD))
    await stack.client.family.GetAccount(gw.GetAccountRequest(),
                                         metadata=bearer(other.tokens.access_token))


async def test_refresh_bad_input(stack):
    auth = stack.client.auth
    await fails(auth.RefreshTokens(gw.RefreshTokensRequest()), grpc.StatusCode.INVALID_ARGUMENT,
                "refresh_token")
    await fails(auth.RefreshTokens(gw.RefreshTokensRequest(refresh_token="rt_nope")), UNAUTH)
    await fails(auth.RefreshTokens(gw.RefreshTokensRequest(refresh_token="rt_" + "A" * 43)),
                UNAUTH)


async def test_sign_out_revokes_refresh_and_access(stack):
    fam = await sign_up(stack.client)
    await fam.client.auth.SignOut(gw.SignOutRequest(refresh_token=fam.tokens.refresh_token),
                                  metadata=fam.client.md)
    await fails(stack.client.auth.RefreshTokens(gw.RefreshTokensRequest(
        refresh_token=fam.tokens.refresh_token)), UNAUTH)
    await fails(fam.client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md),
                UNAUTH)


async def test_revocation_reaches_other_gateway_instances(stack):
    """A sign-out on one instance stops the access token on another within
    revocation_refresh_s (0.2 s in tests)."""
    _, other = await stack.extra_gateway()
    fam = await sign_up(stack.client)
    await other.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
    await fam.client.auth.SignOut(gw.SignOutRequest(), metadata=fam.client.md)
    for _ in range(50):
        try:
            await other.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
        except grpc.RpcError as err:
            assert err.code() == UNAUTH
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the other instance kept accepting a revoked sign-in")


async def test_change_password_revokes_every_sign_in(stack):
    fam = await sign_up(stack.client)
    second = (await stack.client.auth.SignIn(gw.SignInRequest(
        email=fam.email, password=PASSWORD))).tokens
    await fails(fam.client.auth.ChangePassword(gw.ChangePasswordRequest(
        current_password="wrong password!", new_password="another long password"),
        metadata=fam.client.md), grpc.StatusCode.PERMISSION_DENIED)
    await fails(fam.client.auth.ChangePassword(gw.ChangePasswordRequest(
        current_password=PASSWORD, new_password="short"), metadata=fam.client.md),
        grpc.StatusCode.INVALID_ARGUMENT, "new_password")
    await fam.client.auth.ChangePassword(gw.ChangePasswordRequest(
        current_password=PASSWORD, new_password="another long password"), metadata=fam.client.md)
    for tokens in (fam.tokens, second):
        await fails(stack.client.family.GetAccount(gw.GetAccountRequest(),
                                                   metadata=bearer(tokens.access_token)), UNAUTH)
        await fails(stack.client.auth.RefreshTokens(gw.RefreshTokensRequest(
            refresh_token=tokens.refresh_token)), UNAUTH)
    await stack.client.auth.SignIn(gw.SignInRequest(email=fam.email,
                                                    password="another long password"))


async def test_signing_keys_rotate_without_logging_anyone_out(stack):
    fam = await sign_up(stack.client)  # signed with k1
    # A new instance signs with k2 and still accepts k1 tokens.
    _, rotated = await stack.extra_gateway(active_kid="k2")
    await rotated.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)
    new = (await rotated.auth.SignIn(gw.SignInRequest(email=fam.email, password=PASSWORD))).tokens
    await stack.client.family.GetAccount(gw.GetAccountRequest(), metadata=bearer(new.access_token))
    # Once k1 is retired its tokens stop working.
    _, retired = await stack.extra_gateway(keys={"k2": KEYS["k2"]}, active_kid="k2")
    await fails(retired.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md), UNAUTH)
    await retired.family.GetAccount(gw.GetAccountRequest(), metadata=bearer(new.access_token))


async def test_device_credential_and_revocation(stack):
    fam = await new_family(stack.client)
    token, device = await pair_device(fam)
    assert token.startswith("dev_")
    child = stack.client.as_(token)
    avatar = await child.avatar.GetAvatar(gw.GetAvatarRequest(), metadata=child.md)
    assert avatar.avatar.child_id == fam.child_id
    # The pairing code is single-use.
    await fam.client.device.RevokeDevice(gw.RevokeDeviceRequest(device_id=device.device_id),
                                         metadata=fam.client.md)
    await fails(child.avatar.GetAvatar(gw.GetAvatarRequest(), metadata=child.md), UNAUTH)


async def test_pairing_code_is_single_use(stack):
    fam = await new_family(stack.client)
    code = (await fam.client.device.CreatePairingCode(gw.CreatePairingCodeRequest(
        child_id=fam.child_id), metadata=fam.client.md)).code
    await stack.client.device.PairDevice(gw.PairDeviceRequest(code=code, device_name="A"))
    await fails(stack.client.device.PairDevice(gw.PairDeviceRequest(code=code, device_name="B")),
                grpc.StatusCode.NOT_FOUND)
