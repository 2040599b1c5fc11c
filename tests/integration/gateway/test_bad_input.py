"""Bad input for every public RPC: INVALID_ARGUMENT naming the public field
(backend field paths remapped where the public shape differs), oversized
messages (RESOURCE_EXHAUSTED from gRPC) and malformed credentials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from avatario.common.v1 import play_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from tests.integration.gateway.support import (
    PASSWORD,
    Fam,
    bearer,
    fails,
    new_family,
    new_id,
    pair_device,
)

C = grpc.StatusCode
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Bad:
    service: str
    method: str
    build: Callable[[Fam], Any]
    field: str
    anonymous: bool = False
    analytics: bool = False  # the owning service (analytics) validates it

    @property
    def name(self) -> str:
        return f"{self.method}:{self.field}"


def session(child_id: str, **kw) -> play_pb2.GameSession:
    return play_pb2.GameSession(**({"session_id": new_id(), "child_id": child_id,
                                    "game_id": "memory_match", "game_version": 1} | kw))


CASES = [
    Bad("AuthService", "SignUp", lambda f: gw.SignUpRequest(password=PASSWORD, display_name="A"),
        "email", anonymous=True),
    Bad("AuthService", "SignUp", lambda f: gw.SignUpRequest(
        email="not-an-email", password=PASSWORD, display_name="A"), "email", anonymous=True),
    Bad("AuthService", "SignUp", lambda f: gw.SignUpRequest(
        email="a@example.org", password="short", display_name="A"), "password", anonymous=True),
    Bad("AuthService", "SignUp", lambda f: gw.SignUpRequest(
        email="a@example.org", password=PASSWORD), "display_name", anonymous=True),
    Bad("AuthService", "SignIn", lambda f: gw.SignInRequest(password=PASSWORD), "email",
        anonymous=True),
    Bad("AuthService", "SignIn", lambda f: gw.SignInRequest(email=f.email), "password",
        anonymous=True),
    Bad("AuthService", "RefreshTokens", lambda f: gw.RefreshTokensRequest(), "refresh_token",
        anonymous=True),
    Bad("AuthService", "ChangePassword", lambda f: gw.ChangePasswordRequest(
        current_password=PASSWORD, new_password="short"), "new_password"),
    Bad("AuthService", "ChangePassword", lambda f: gw.ChangePasswordRequest(
        new_password="a long new password"), "current_password"),
    Bad("FamilyService", "RecordConsent", lambda f: gw.RecordConsentRequest(
        policy_version="v1"), "scopes"),
    Bad("FamilyService", "RecordConsent", lambda f: gw.RecordConsentRequest(
        scopes=[99], policy_version="v1"), "scopes[0]"),
    Bad("FamilyService", "RecordConsent", lambda f: gw.RecordConsentRequest(scopes=[1]),
        "policy_version"),
    Bad("FamilyService", "WithdrawConsent", lambda f: gw.WithdrawConsentRequest(), "scope"),
    Bad("FamilyService", "CreateChild", lambda f: gw.CreateChildRequest(
        birth_year=2018, birth_month=1), "nickname"),
    Bad("FamilyService", "CreateChild", lambda f: gw.CreateChildRequest(
        nickname="Kit", birth_month=1), "birth_year"),
    Bad("FamilyService", "CreateChild", lambda f: gw.CreateChildRequest(
        nickname="Kit", birth_year=2018, birth_month=13), "birth_month"),
    Bad("FamilyService", "GetChild", lambda f: gw.GetChildRequest(), "child_id"),
    Bad("FamilyService", "GetChild", lambda f: gw.GetChildRequest(child_id="nope"), "child_id"),
    Bad("FamilyService", "ListChildren", lambda f: gw.ListChildrenRequest(page_size=-1),
        "page_size"),
    Bad("FamilyService", "ListChildren", lambda f: gw.ListChildrenRequest(page_token="!!"),
        "page_token"),
    Bad("FamilyService", "UpdateChild", lambda f: gw.UpdateChildRequest(nickname="X"),
        "child_id"),
    Bad("FamilyService", "UpdateChild", lambda f: gw.UpdateChildRequest(
        child_id=f.child_id, nickname=""), "nickname"),
    Bad("FamilyService", "UpdateChild", lambda f: gw.UpdateChildRequest(
        child_id=f.child_id, birth_month=13), "birth_month"),
    Bad("FamilyService", "ListAuditEvents", lambda f: gw.ListAuditEventsRequest(page_size=1000),
        "page_size"),
    Bad("AvatarService", "ListAvatarItems", lambda f: gw.ListAvatarItemsRequest(page_size=-1),
        "page_size"),
    Bad("AvatarService", "GetAvatar", lambda f: gw.GetAvatarRequest(), "child_id"),
    Bad("AvatarService", "GetAvatar", lambda f: gw.GetAvatarRequest(child_id="nope"), "child_id"),
    Bad("AvatarService", "CustomizeAvatar", lambda f: gw.CustomizeAvatarRequest(
        child_id=f.child_id, item_ids=[""]), "item_ids[0]"),
    Bad("AvatarService", "CustomizeAvatar", lambda f: gw.CustomizeAvatarRequest(child_id="x"),
        "child_id"),
    Bad("DeviceService", "CreatePairingCode", lambda f: gw.CreatePairingCodeRequest(),
        "child_id"),
    Bad("DeviceService", "PairDevice", lambda f: gw.PairDeviceRequest(device_name="T"), "code",
        anonymous=True),
    Bad("DeviceService", "PairDevice", lambda f: gw.PairDeviceRequest(
        code="!!!", device_name="T"), "code", anonymous=True),
    Bad("DeviceService", "PairDevice", lambda f: gw.PairDeviceRequest(code="ABCD-2345"),
        "device_name", anonymous=True),
    Bad("DeviceService", "ListDevices", lambda f: gw.ListDevicesRequest(page_size=-1),
        "page_size"),
    Bad("DeviceService", "RevokeDevice", lambda f: gw.RevokeDeviceRequest(device_id="x"),
        "device_id"),
    Bad("PlayService", "ListGames", lambda f: gw.ListGamesRequest(page_size=-1), "page_size",
        analytics=True),
    Bad("PlayService", "SubmitGameSession", lambda f: gw.SubmitGameSessionRequest(
        session=session("nope")), "session.child_id"),
    Bad("PlayService", "SubmitGameSession", lambda f: gw.SubmitGameSessionRequest(
        session=session(f.child_id, game_id="no_such_game")), "session.game_id", analytics=True),
    Bad("PlayService", "SubmitGameSession", lambda f: gw.SubmitGameSessionRequest(
        session=session(f.child_id, session_id="nope")), "session.session_id", analytics=True),
    Bad("PlayService", "SubmitMoodCheckIn", lambda f: gw.SubmitMoodCheckInRequest(
        checkin=play_pb2.MoodCheckIn(checkin_id=new_id(), mood=1, intensity=3)),
        "checkin.child_id"),
    Bad("PlayService", "SubmitMoodCheckIn", lambda f: gw.SubmitMoodCheckInRequest(
        checkin=play_pb2.MoodCheckIn(checkin_id=new_id(), child_id=f.child_id, mood=1,
                                     intensity=9)), "checkin.intensity", analytics=True),
    Bad("ReportService", "GetChildReport", lambda f: gw.GetChildReportRequest(child_id="x"),
        "child_id"),
    Bad("ReportService", "ListFlags", lambda f: gw.ListFlagsRequest(), "child_id"),
    Bad("ReportService", "ListFlags", lambda f: gw.ListFlagsRequest(
        child_id=f.child_id, page_size=-1), "page_size", analytics=True),
    Bad("ReportService", "ListTips", lambda f: gw.ListTipsRequest(page_size=-1), "page_size",
        analytics=True),
    Bad("ChatService", "CreateConversation", lambda f: gw.CreateConversationRequest(),
        "child_id"),
    Bad("ChatService", "CreateConversation", lambda f: gw.CreateConversationRequest(
        child_id=f.child_id, title="t" * 500), "title"),
    Bad("ChatService", "GetConversation", lambda f: gw.GetConversationRequest(
        conversation_id="x"), "conversation_id"),
    Bad("ChatService", "ListConversations", lambda f: gw.ListConversationsRequest(
        child_id="x"), "child_id"),
    Bad("ChatService", "ListConversations", lambda f: gw.ListConversationsRequest(
        page_size=-1), "page_size"),
    Bad("ChatService", "ListMessages", lambda f: gw.ListMessagesRequest(), "conversation_id"),
    Bad("ChatService", "Chat", lambda f: gw.ChatRequest(conversation_id=new_id(),
                                                        turn_id=new_id()), "message"),
    Bad("PrivacyService", "EraseFamily", lambda f: gw.EraseFamilyRequest(), "password"),
    Bad("AuthService", "SignUp", lambda f: gw.SignUpRequest(
        email="a@example.org", password=PASSWORD, display_name="A", invite_code="!!"),
        "invite_code", anonymous=True),
    Bad("FamilyService", "JoinFamily", lambda f: gw.JoinFamilyRequest(), "code"),
    Bad("FamilyService", "JoinFamily", lambda f: gw.JoinFamilyRequest(code="ABC"), "code"),
    Bad("FamilyService", "RemoveParent", lambda f: gw.RemoveParentRequest(), "parent_id"),
    Bad("FamilyService", "RemoveParent", lambda f: gw.RemoveParentRequest(parent_id="x"),
        "parent_id"),
    Bad("FamilyService", "TransferOwnership", lambda f: gw.TransferOwnershipRequest(
        password=PASSWORD), "parent_id"),
    Bad("FamilyService", "TransferOwnership", lambda f: gw.TransferOwnershipRequest(
        parent_id=new_id()), "password"),
    Bad("ChatService", "UpdateConversation", lambda f: gw.UpdateConversationRequest(
        conversation_id="x"), "conversation_id"),
    Bad("ChatService", "ListMessages", lambda f: gw.ListMessagesRequest(
        conversation_id=new_id(), newest_first=True, page_token="!!"), "page_token"),
    Bad("PrivacyService", "DeleteChild", lambda f: gw.DeleteChildRequest(
        child_id="x", password=PASSWORD), "child_id"),
    Bad("PrivacyService", "DeleteChild", lambda f: gw.DeleteChildRequest(
        child_id=f.child_id), "password"),
]
# RPCs whose every input is optional or absent: nothing to get wrong.
NO_INPUT = {"SignOut", "GetAccount", "ListConsents", "ExportFamilyData", "CreateFamilyInvite",
            "ListParents", "StreamFamilyExport"}


async def test_every_public_rpc_has_bad_input_cases():
    public = {m.name for s in gw.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert {c.method for c in CASES} | NO_INPUT == public


async def call(client, case: Bad, request, metadata):
    fn = getattr(client.stub(case.service), case.method)
    if case.method == "Chat":
        return [m async for m in fn(request, metadata=metadata)]
    return await fn(request, metadata=metadata)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_bad_input(shared_stack, case: Bad):
    fam = await new_family(shared_stack.client)
    metadata = () if case.anonymous else fam.client.md
    await fails(call(shared_stack.client, case, case.build(fam), metadata),
                C.INVALID_ARGUMENT, case.field)


async def test_a_device_gets_the_same_field_names(shared_stack):
    fam = await new_family(shared_stack.client)
    token, _ = await pair_device(fam)
    child = shared_stack.client.as_(token)
    await fails(child.avatar.CustomizeAvatar(gw.CustomizeAvatarRequest(item_ids=[""]),
                                             metadata=child.md), C.INVALID_ARGUMENT, "item_ids[0]")


async def test_erase_with_a_wrong_password_is_permission_denied(shared_stack):
    fam = await new_family(shared_stack.client)
    await fails(fam.client.privacy.EraseFamily(gw.EraseFamilyRequest(password="not my password"),
                                               metadata=fam.client.md), C.PERMISSION_DENIED)


async def test_oversized_messages_are_refused_by_grpc(shared_stack):
    fam = await new_family(shared_stack.client)
    limit = shared_stack.gateway.deps.settings.public_max_receive_bytes
    await fails(shared_stack.client.auth.SignUp(gw.SignUpRequest(
        email="big@example.org", password=PASSWORD, display_name="x" * (limit + 1))),
        C.RESOURCE_EXHAUSTED)
    big = session(fam.child_id)
    big.trials.add().stimulus.update({"pad": "y" * limit})
    await fails(fam.client.play.SubmitGameSession(gw.SubmitGameSessionRequest(session=big),
                                                  metadata=fam.client.md), C.RESOURCE_EXHAUSTED)
    # The connection is still fine for normal calls.
    await fam.client.family.GetAccount(gw.GetAccountRequest(), metadata=fam.client.md)


@pytest.mark.parametrize("token", ["", "abc", "dev_" + "!" * 43, "dev_" + "a" * 200,
                                   "eyJhbGciOiJIUzI1NiJ9.e30.x"])
async def test_malformed_tokens_are_unauthenticated(shared_stack, token):
    metadata = bearer(token) if token else (("authorization", "Bearer "),)
    await fails(shared_stack.client.family.GetAccount(gw.GetAccountRequest(), metadata=metadata),
                C.UNAUTHENTICATED)
