"""Device pairing: short-lived single-use codes, device credentials, revocation.

Decision: an unknown, expired or already used pairing code all answer NOT_FOUND
with one message, so codes cannot be probed; a malformed code is
INVALID_ARGUMENT (it says nothing about stored codes).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_status import rpc_status
from sqlalchemy import select

from avatario.common.v1 import family_pb2
from avatario.profile.v1 import profile_pb2 as pb
from services.common.status import error_info
from services.profile import tokens
from services.profile.models import Device, PairingCode
from tests.integration.profile.support import (
    CHAT,
    CHILD,
    count_rows,
    fails,
    new_family,
    new_id,
    precondition_types,
)

C = grpc.StatusCode


async def new_code(profile, fam) -> pb.CreatePairingCodeResponse:
    return await profile.stub.CreatePairingCode(pb.CreatePairingCodeRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id))


async def test_pair_authenticate_list_revoke(profile):
    fam = await new_family(profile)
    code = await new_code(profile, fam)
    assert tokens.normalize_code(code.code) == code.code
    ttl = code.expires_at.ToDatetime() - profile.clock.now.replace(tzinfo=None)
    assert 590 < ttl.total_seconds() <= 600
    async with profile.db.session() as s:
        stored = (await s.execute(select(PairingCode.code_hash))).scalars().all()
    assert code.code not in stored and len(stored) == 1
    typed = f"{code.code[:4].lower()}-{code.code[4:]}"
    paired = await profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=typed, device_name=" Tablet "))
    assert paired.device.child_id == fam.child_id and paired.device.name == "Tablet"
    assert paired.device_token.startswith("dev_")
    async with profile.db.session() as s:
        device = await s.get(Device, paired.device.device_id)
        assert paired.device_token not in device.token_hash
    auth = await profile.stub.AuthenticateDevice(pb.AuthenticateDeviceRequest(
        device_token=paired.device_token))
    assert auth.device == paired.device
    listed = await profile.stub.ListDevices(pb.ListDevicesRequest(family_id=fam.family_id))
    assert [d.device_id for d in listed.devices] == [paired.device.device_id]
    revoked = await profile.stub.RevokeDevice(pb.RevokeDeviceRequest(
        family_id=fam.family_id, device_id=paired.device.device_id, parent_id=fam.parent_id))
    assert revoked.device.HasField("revoked_at")
    again = await profile.stub.RevokeDevice(pb.RevokeDeviceRequest(
        family_id=fam.family_id, device_id=paired.device.device_id, parent_id=fam.parent_id))
    assert again.device.revoked_at == revoked.device.revoked_at
    await fails(profile.stub.AuthenticateDevice(pb.AuthenticateDeviceRequest(
        device_token=paired.device_token)), C.UNAUTHENTICATED)
    events = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=fam.family_id))).events
    actions = [e.action for e in events]
    assert actions[:3] == ["device.revoked", "device.paired", "pairing_code.created"]
    assert events[1].actor == f"device:{paired.device.device_id}"


async def test_code_is_single_use_short_lived_and_unknown_looks_the_same(profile):
    fam = await new_family(profile)
    code = (await new_code(profile, fam)).code
    await profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(code=code,
                                                                     device_name="A"))
    reused = await fails(profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=code, device_name="B")), C.NOT_FOUND)
    late = (await new_code(profile, fam)).code
    profile.clock.advance(seconds=601)
    expired = await fails(profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=late, device_name="C")), C.NOT_FOUND)
    unknown_code = "".join(reversed(code)) if code != code[::-1] else "ABCDEFGH"
    unknown = await fails(profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=unknown_code, device_name="D")), C.NOT_FOUND)
    assert reused.details() == expired.details() == unknown.details()
    assert await count_rows(profile, Device) == 1


async def test_concurrent_redemptions_of_one_code(profile):
    fam = await new_family(profile)
    code = (await new_code(profile, fam)).code
    results = await asyncio.gather(
        *[profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
            code=code, device_name=f"D{i}")) for i in range(4)],
        return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(ok) == 1 and len(errors) == 3
    assert all(e.code() == C.NOT_FOUND for e in errors)
    assert await count_rows(profile, Device) == 1


@pytest.mark.parametrize(
    ("code", "name", "field"),
    [
        ("", "Tablet", "code"),
        ("ABC", "Tablet", "code"),
        ("ABCDEFGH1", "Tablet", "code"),  # too long
        ("ABCDEFG0", "Tablet", "code"),  # 0 is not in the alphabet
        ("ABCD/EFG", "Tablet", "code"),
        ("X" * 100, "Tablet", "code"),
        ("ABCDEFGH", "", "device_name"),
        ("ABCDEFGH", "n" * 65, "device_name"),
        ("ABCDEFGH", "tab\x07", "device_name"),
    ],
)
async def test_redeem_bad_input(profile, code, name, field):
    await fails(profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=code, device_name=name)), C.INVALID_ARGUMENT, field)


async def test_redeem_after_consent_withdrawn_keeps_the_code(profile):
    fam = await new_family(profile)
    code = (await new_code(profile, fam)).code
    await profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scope=CHILD))
    await fails(profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=code, device_name="T")), C.FAILED_PRECONDITION)
    await profile.stub.RecordConsent(pb.RecordConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scopes=[CHILD],
        policy_version="2024-02"))
    await profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(code=code,
                                                                     device_name="T"))


async def test_create_code_rejections(profile):
    fam = await new_family(profile)
    other = await new_family(profile)

    def req(**kw):
        base = dict(family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id)
        base.update(kw)
        return pb.CreatePairingCodeRequest(**base)

    await fails(profile.stub.CreatePairingCode(req(child_id="")), C.INVALID_ARGUMENT, "child_id")
    await fails(profile.stub.CreatePairingCode(req(parent_id="p")), C.INVALID_ARGUMENT,
                "parent_id")
    await fails(profile.stub.CreatePairingCode(req(family_id="f")), C.INVALID_ARGUMENT,
                "family_id")
    await fails(profile.stub.CreatePairingCode(req(child_id=other.child_id)), C.NOT_FOUND)
    await fails(profile.stub.CreatePairingCode(req(parent_id=other.parent_id)), C.NOT_FOUND)
    await fails(profile.stub.CreatePairingCode(req(child_id=new_id())), C.NOT_FOUND)
    await profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scope=CHILD))
    err = await fails(profile.stub.CreatePairingCode(req()), C.FAILED_PRECONDITION)
    assert precondition_types(err) == ["CONSENT_REQUIRED"]
    assert await count_rows(profile, PairingCode) == 0


@pytest.mark.parametrize(
    ("token", "code", "field"),
    [
        ("", grpc.StatusCode.INVALID_ARGUMENT, "device_token"),
        ("dev_" + "a" * 200, grpc.StatusCode.INVALID_ARGUMENT, "device_token"),
        ("garbage", grpc.StatusCode.UNAUTHENTICATED, None),
        ("dev_" + "A" * 43, grpc.StatusCode.UNAUTHENTICATED, None),
    ],
)
async def test_authenticate_device_bad_input(profile, token, code, field):
    await fails(profile.stub.AuthenticateDevice(pb.AuthenticateDeviceRequest(
        device_token=token)), code, field)


async def test_devices_scoped_to_the_family(profile):
    fam = await new_family(profile, scopes=(CHILD, CHAT))
    other = await new_family(profile)
    code = (await new_code(profile, fam)).code
    device = (await profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=code, device_name="T"))).device
    await fails(profile.stub.RevokeDevice(pb.RevokeDeviceRequest(
        family_id=other.family_id, device_id=device.device_id, parent_id=other.parent_id)),
        C.NOT_FOUND)
    await fails(profile.stub.RevokeDevice(pb.RevokeDeviceRequest(
        family_id=fam.family_id, device_id=new_id(), parent_id=fam.parent_id)), C.NOT_FOUND)
    await fails(profile.stub.RevokeDevice(pb.RevokeDeviceRequest(
        family_id=fam.family_id, device_id="d", parent_id=fam.parent_id)),
        C.INVALID_ARGUMENT, "device_id")
    await fails(profile.stub.RevokeDevice(pb.RevokeDeviceRequest(
        family_id=fam.family_id, device_id=device.device_id, parent_id="")),
        C.INVALID_ARGUMENT, "parent_id")
    theirs = await profile.stub.ListDevices(pb.ListDevicesRequest(family_id=other.family_id))
    assert list(theirs.devices) == []
    await fails(profile.stub.ListDevices(pb.ListDevicesRequest(family_id=new_id())),
                C.NOT_FOUND)
    await fails(profile.stub.ListDevices(pb.ListDevicesRequest(
        family_id=fam.family_id, page_size=-1)), C.INVALID_ARGUMENT, "page_size")


async def test_list_devices_pages(profile):
    fam = await new_family(profile)
    ids = []
    for i in range(3):
        code = (await new_code(profile, fam)).code
        ids.append((await profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
            code=code, device_name=f"T{i}"))).device.device_id)
    first = await profile.stub.ListDevices(pb.ListDevicesRequest(
        family_id=fam.family_id, page_size=2))
    second = await profile.stub.ListDevices(pb.ListDevicesRequest(
        family_id=fam.family_id, page_size=2, page_token=first.next_page_token))
    assert [d.device_id for d in [*first.devices, *second.devices]] == ids
    assert second.next_page_token == ""


async def test_device_sign_in_needs_child_profile_consent(profile):
    fam = await new_family(profile)
    code = await profile.stub.CreatePairingCode(pb.CreatePairingCodeRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id))
    paired = await profile.stub.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=code.code, device_name="Tablet"))
    request = pb.AuthenticateDeviceRequest(device_token=paired.device_token)
    await profile.stub.AuthenticateDevice(request)
    await profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id,
        scope=family_pb2.CONSENT_SCOPE_CHILD_PROFILE))
    err = await fails(profile.stub.AuthenticateDevice(request), C.FAILED_PRECONDITION)
    info = error_info(rpc_status.from_call(err))
    assert info.reason == "CONSENT_REQUIRED"
    assert info.metadata["scope"] == "CONSENT_SCOPE_CHILD_PROFILE"
    await profile.stub.RecordConsent(pb.RecordConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, policy_version="2024-02",
        scopes=[family_pb2.CONSENT_SCOPE_CHILD_PROFILE]))
    await profile.stub.AuthenticateDevice(request)  # consent again: the device works again
