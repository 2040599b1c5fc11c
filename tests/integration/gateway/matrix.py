"""The authorization matrix's table: one row per public RPC.

Each row builds a request that names the victim family's ids (where the RPC
takes ids), says who may call it, and what another family's parent gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from avatario.common.v1 import chat_pb2, family_pb2, play_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from tests.integration.gateway.support import PASSWORD, new_id

C = grpc.StatusCode
ANON, PARENT, BOTH = "anonymous", "parent", "parent_or_device"
ADMITTED = "admitted"  # not UNAUTHENTICATED / PERMISSION_DENIED (backend may still refuse)
OWN = "own"  # admitted, acts on the caller's own family only


@dataclass(frozen=True)
class Victim:
    child_id: str
    conversation_id: str
    device_id: str
    # A parent of the victim family other than its owner and the second-parent caller.
    parent_id: str = ""
    # A live invite code of the victim family.
    invite_code: str = ""


@dataclass(frozen=True)
class Row:
    service: str
    method: str
    build: Callable[[Victim], Any]
    access: str
    scoped: bool = False  # the request names the victim's ids
    other: str | None = None  # what another family's parent gets, when not NOT_FOUND/OWN
    # What the victim family's second parent (not the owner) gets, when not admitted.
    second: Any = None

    @property
    def name(self) -> str:
        return f"{self.service}.{self.method}"

    @property
    def streaming(self) -> bool:
        return self.method in ("Chat", "StreamFamilyExport")


def _session(child_id: str) -> play_pb2.GameSession:
    return play_pb2.GameSession(session_id=new_id(), child_id=child_id, game_id="memory_match",
                                game_version=1)


def _checkin(child_id: str) -> play_pb2.MoodCheckIn:
    return play_pb2.MoodCheckIn(checkin_id=new_id(), child_id=child_id, mood=play_pb2.MOOD_HAPPY,
                                intensity=3)


CHAT_SCOPE = family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT

ROWS: list[Row] = [
    # Anonymous RPCs: the credential is ignored; these requests are bad input on purpose.
    Row("AuthService", "SignUp", lambda v: gw.SignUpRequest(), ANON),
    Row("AuthService", "SignIn", lambda v: gw.SignInRequest(), ANON),
    Row("AuthService", "RefreshTokens", lambda v: gw.RefreshTokensRequest(), ANON),
    Row("DeviceService", "PairDevice", lambda v: gw.PairDeviceRequest(), ANON),
    # Parent-only RPCs.
    Row("AuthService", "SignOut", lambda v: gw.SignOutRequest(), PARENT),
    Row("AuthService", "ChangePassword", lambda v: gw.ChangePasswordRequest(
        current_password=PASSWORD, new_password="a brand new password"), PARENT),
    Row("FamilyService", "GetAccount", lambda v: gw.GetAccountRequest(), PARENT),
    Row("FamilyService", "RecordConsent", lambda v: gw.RecordConsentRequest(
        scopes=[CHAT_SCOPE], policy_version="2024-02"), PARENT),
    Row("FamilyService", "WithdrawConsent", lambda v: gw.WithdrawConsentRequest(
        scope=CHAT_SCOPE), PARENT),
    Row("FamilyService", "ListConsents", lambda v: gw.ListConsentsRequest(), PARENT),
    Row("FamilyService", "CreateChild", lambda v: gw.CreateChildRequest(
        nickname="Kit", birth_year=2017, birth_month=5), PARENT),
    Row("FamilyService", "GetChild", lambda v: gw.GetChildRequest(child_id=v.child_id), PARENT,
        scoped=True),
    Row("FamilyService", "ListChildren", lambda v: gw.ListChildrenRequest(), PARENT),
    Row("FamilyService", "UpdateChild", lambda v: gw.UpdateChildRequest(
        child_id=v.child_id, nickname="Renamed"), PARENT, scoped=True),
    Row("FamilyService", "ListAuditEvents", lambda v: gw.ListAuditEventsRequest(), PARENT),
    Row("FamilyService", "CreateFamilyInvite", lambda v: gw.CreateFamilyInviteRequest(), PARENT),
    # Another family's parent (with a child) may not leave it; the family's own
    # parents are already in it.
    Row("FamilyService", "JoinFamily", lambda v: gw.JoinFamilyRequest(code=v.invite_code),
        PARENT, other=C.FAILED_PRECONDITION),
    Row("FamilyService", "ListParents", lambda v: gw.ListParentsRequest(), PARENT),
    Row("FamilyService", "RemoveParent", lambda v: gw.RemoveParentRequest(
        parent_id=v.parent_id), PARENT, scoped=True, second=C.PERMISSION_DENIED),
    Row("FamilyService", "TransferOwnership", lambda v: gw.TransferOwnershipRequest(
        parent_id=v.parent_id, password=PASSWORD), PARENT, scoped=True,
        second=C.PERMISSION_DENIED),
    Row("DeviceService", "CreatePairingCode", lambda v: gw.CreatePairingCodeRequest(
        child_id=v.child_id), PARENT, scoped=True),
    Row("DeviceService", "ListDevices", lambda v: gw.ListDevicesRequest(), PARENT),
    Row("DeviceService", "RevokeDevice", lambda v: gw.RevokeDeviceRequest(
        device_id=v.device_id), PARENT, scoped=True),
    Row("ReportService", "GetChildReport", lambda v: gw.GetChildReportRequest(
        child_id=v.child_id), PARENT, scoped=True),
    Row("ReportService", "ListFlags", lambda v: gw.ListFlagsRequest(child_id=v.child_id), PARENT,
        scoped=True),
    Row("ReportService", "ListTips", lambda v: gw.ListTipsRequest(), PARENT),
    Row("ChatService", "CreateConversation", lambda v: gw.CreateConversationRequest(
        child_id=v.child_id, title="Sleep"), PARENT, scoped=True),
    # The victim's conversation is the owner's own (private): the second parent
    # gets what another family gets.
    Row("ChatService", "GetConversation", lambda v: gw.GetConversationRequest(
        conversation_id=v.conversation_id), PARENT, scoped=True, second=C.NOT_FOUND),
    Row("ChatService", "ListConversations", lambda v: gw.ListConversationsRequest(
        child_id=v.child_id), PARENT, scoped=True),
    Row("ChatService", "ListMessages", lambda v: gw.ListMessagesRequest(
        conversation_id=v.conversation_id), PARENT, scoped=True, second=C.NOT_FOUND),
    Row("ChatService", "Chat", lambda v: gw.ChatRequest(
        conversation_id=v.conversation_id, message="How is sleep going?", turn_id=new_id(),
        params=chat_pb2.GenerationParams(max_tokens=4)), PARENT, scoped=True,
        second=C.NOT_FOUND),
    Row("ChatService", "UpdateConversation", lambda v: gw.UpdateConversationRequest(
        conversation_id=v.conversation_id, shared=True), PARENT, scoped=True,
        second=C.NOT_FOUND),
    Row("PrivacyService", "ExportFamilyData", lambda v: gw.ExportFamilyDataRequest(), PARENT),
    Row("PrivacyService", "StreamFamilyExport", lambda v: gw.StreamFamilyExportRequest(),
        PARENT),
    Row("PrivacyService", "EraseFamily", lambda v: gw.EraseFamilyRequest(password=PASSWORD),
        PARENT, second=C.PERMISSION_DENIED),
    Row("PrivacyService", "DeleteChild", lambda v: gw.DeleteChildRequest(
        child_id=v.child_id, password=PASSWORD), PARENT, scoped=True),
    # Parent and child-device RPCs.
    Row("AvatarService", "ListAvatarItems", lambda v: gw.ListAvatarItemsRequest(), BOTH),
    Row("AvatarService", "GetAvatar", lambda v: gw.GetAvatarRequest(child_id=v.child_id), BOTH,
        scoped=True),
    Row("AvatarService", "CustomizeAvatar", lambda v: gw.CustomizeAvatarRequest(
        child_id=v.child_id), BOTH, scoped=True),
    Row("PlayService", "ListGames", lambda v: gw.ListGamesRequest(), BOTH),
    Row("PlayService", "SubmitGameSession", lambda v: gw.SubmitGameSessionRequest(
        session=_session(v.child_id)), BOTH, scoped=True),
    Row("PlayService", "SubmitMoodCheckIn", lambda v: gw.SubmitMoodCheckInRequest(
        checkin=_checkin(v.child_id)), BOTH, scoped=True),
]

CASES = ("no_token", "malformed", "forged", "expired", "other_family_parent", "child_device",
         "revoked_device", "second_parent", "removed_parent")


def expected(row: Row, case: str):
    """A status code, ADMITTED or OWN."""
    if row.access == ANON:
        return C.INVALID_ARGUMENT  # the credential is irrelevant; the bad input is not
    if case in ("no_token", "malformed", "forged", "expired", "revoked_device",
                "removed_parent"):
        return C.UNAUTHENTICATED
    if case == "second_parent":
        return row.second or ADMITTED
    if case == "child_device":
        return C.PERMISSION_DENIED if row.access == PARENT else ADMITTED
    assert case == "other_family_parent"
    if row.scoped:
        return C.NOT_FOUND
    return row.other or OWN
