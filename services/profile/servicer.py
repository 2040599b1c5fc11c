"""ProfileService: protobuf in, validation, one repository call in a transaction,
protobuf out. Domain errors are mapped to status codes by the chassis."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

import grpc
import structlog

from avatario.profile.v1 import profile_pb2 as pb
from avatario.profile.v1 import profile_pb2_grpc as pb_grpc
from services.common.chunking import batches
from services.common.db import Database, in_transaction, read
from services.common.errors import InvalidArgument, PermissionDenied, Reason, Unauthenticated
from services.common.interceptors import CALLER_KEY
from services.common.pagination import cursor_value, encode_token, parse_page
from services.common.timeutil import to_ts, utcnow
from services.common.validation import normalize_email
from services.profile import convert, validate
from services.profile.domain import avatars, catalog, members
from services.profile.domain import export as family_export
from services.profile.metrics import ProfileMetrics
from services.profile.passwords import Passwords
from services.profile.repo import chat, children, devices, family, parents
from services.profile.repo import members as members_repo
from services.profile.repo.base import get_parent
from services.profile.tokens import Hasher

log = structlog.get_logger("avatario.profile")
_CALLER_RE = re.compile(r"^[a-z0-9_-]{1,32}$")


def _caller(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == CALLER_KEY and isinstance(value, str) and _CALLER_RE.fullmatch(value):
            return value
    return "unknown"


class ProfileServicer(pb_grpc.ProfileServiceServicer):
    def __init__(
        self, db: Database, *, passwords: Passwords, hasher: Hasher,
        pairing_code_ttl: timedelta, clock: Callable[[], datetime] = utcnow,
        metrics: ProfileMetrics | None = None, invite_ttl: timedelta = timedelta(hours=72),
        turn_limit: int = 0,
    ) -> None:
        self.db = db
        self.passwords = passwords
        self.hasher = hasher
        self.pairing_code_ttl = pairing_code_ttl
        self.invite_ttl = invite_ttl
        # 0: conversations have no turn limit.
        self.turn_limit = turn_limit
        self.clock = clock
        self.metrics = metrics or ProfileMetrics.create()

    # -- parents ------------------------------------------------------------------

    async def CreateParent(self, request: pb.CreateParentRequest, context):
        code = validate.create_parent(request)
        email = normalize_email(request.email)
        password_hash = await self.passwords.hash_async(request.password)
        now = self.clock()
        name = request.display_name.strip()
        if code is None:
            row = await in_transaction(self.db, lambda s: parents.create_parent(
                s, email=email, display_name=name, password_hash=password_hash, now=now))
        else:
            row = await in_transaction(self.db, lambda s: members.sign_up_with_invite(
                s, code=code, hasher=self.hasher, email=email, display_name=name,
                password_hash=password_hash, now=now))
        return pb.CreateParentResponse(parent=convert.parent(row))

    async def Authenticate(self, request: pb.AuthenticateRequest, context):
        validate.authenticate(request)
        email = normalize_email(request.email)
        row = await read(self.db, lambda s: parents.find_by_email(s, email))
        verdict = await self.passwords.verify_async(
            row.password_hash if row else None, request.password)
        if row is None or not verdict.ok:
            self.metrics.authentications.labels("parent", "failed").inc()
            raise Unauthenticated("wrong email or password", reason=Reason.WRONG_CREDENTIALS)
        self.metrics.authentications.labels("parent", "ok").inc()
        if verdict.new_hash:
            old, new = row.password_hash, verdict.new_hash
            await in_transaction(self.db, lambda s: parents.store_rehash(s, row.id, old, new))
        return pb.AuthenticateResponse(parent=convert.parent(row))

    async def GetParent(self, request: pb.GetParentRequest, context):
        validate.family_and(request, "parent_id")
        row = await read(self.db, lambda s: get_parent(s, request.family_id, request.parent_id))
        return pb.GetParentResponse(parent=convert.parent(row))

    async def ChangePassword(self, request: pb.ChangePasswordRequest, context):
        validate.change_password(request)
        row = await read(self.db, lambda s: get_parent(s, request.family_id, request.parent_id))
        verdict = await self.passwords.verify_async(row.password_hash, request.current_password)
        if not verdict.ok:
            raise PermissionDenied("the current password is wrong")
        new_hash = await self.passwords.hash_async(request.new_password)
        now = self.clock()
        await in_transaction(self.db, lambda s: parents.set_password(
            s, row, old_hash=row.password_hash, new_hash=new_hash, now=now))
        return pb.ChangePasswordResponse()

    # -- consent ------------------------------------------------------------------

    async def RecordConsent(self, request: pb.RecordConsentRequest, context):
        scopes = validate.record_consent(request)
        now = self.clock()
        rows = await in_transaction(self.db, lambda s: parents.record_consent(
            s, family_id=request.family_id, parent_id=request.parent_id, scopes=scopes,
            policy_version=request.policy_version, now=now))
        return pb.RecordConsentResponse(consents=[convert.consent(r) for r in rows])

    async def WithdrawConsent(self, request: pb.WithdrawConsentRequest, context):
        validate.withdraw_consent(request)
        now = self.clock()
        row = await in_transaction(self.db, lambda s: parents.withdraw_consent(
            s, family_id=request.family_id, parent_id=request.parent_id, scope=request.scope,
            now=now))
        return pb.WithdrawConsentResponse(consent=convert.consent(row))

    async def ListConsents(self, request: pb.ListConsentsRequest, context):
        validate.family_only(request)
        rows = await read(self.db, lambda s: parents.list_consents(
            s, request.family_id, include_withdrawn=request.include_withdrawn))
        return pb.ListConsentsResponse(consents=[convert.consent(r) for r in rows])

    # -- children -----------------------------------------------------------------

    async def CreateChild(self, request: pb.CreateChildRequest, context):
        now = self.clock()
        validate.create_child(request, now)
        row = await in_transaction(self.db, lambda s: children.create_child(
            s, family_id=request.family_id, parent_id=request.parent_id,
            nickname=request.nickname.strip(), birth_year=request.birth_year,
            birth_month=request.birth_month, now=now))
        return pb.CreateChildResponse(child=convert.child(row))

    async def GetChild(self, request: pb.GetChildRequest, context):
        validate.family_and(request, "child_id")
        row = await read(self.db, lambda s: children.get_child(
            s, request.family_id, request.child_id))
        return pb.GetChildResponse(child=convert.child(row))

    async def ListChildren(self, request: pb.ListChildrenRequest, context):
        validate.family_only(request)
        page = parse_page(request.page_size, request.page_token)
        result = await read(self.db, lambda s: children.list_children(s, request.family_id, page))
        return pb.ListChildrenResponse(
            children=[convert.child(r) for r in result.rows], next_page_token=result.next_token)

    async def UpdateChild(self, request: pb.UpdateChildRequest, context):
        validate.update_child(request)
        now = self.clock()
        opt = request.HasField
        row = await in_transaction(self.db, lambda s: children.update_child(
            s, family_id=request.family_id, child_id=request.child_id,
            parent_id=request.parent_id or None, caller=_caller(context),
            nickname=request.nickname.strip() if opt("nickname") else None,
            birth_year=request.birth_year if opt("birth_year") else None,
            birth_month=request.birth_month if opt("birth_month") else None, now=now))
        return pb.UpdateChildResponse(child=convert.child(row))

    # -- avatar -------------------------------------------------------------------

    async def ListAvatarItems(self, request: pb.ListAvatarItemsRequest, context):
        page = parse_page(request.page_size, request.page_token)
        start = cursor_value(page, "next", int) or 0
        if not 0 <= start <= len(catalog.CATALOG):
            raise InvalidArgument.field("page_token", "is not a valid page token")
        items = catalog.CATALOG[start:start + page.size]
        end = start + len(items)
        token = encode_token({"next": end}) if end < len(catalog.CATALOG) else ""
        return pb.ListAvatarItemsResponse(
            items=[convert.item(i) for i in items], next_page_token=token)

    async def GetAvatar(self, request: pb.GetAvatarRequest, context):
        validate.family_and(request, "child_id")
        state = await read(self.db, lambda s: children.load_avatar(
            s, request.family_id, request.child_id))
        return pb.GetAvatarResponse(avatar=convert.avatar(state.avatar, state.item_ids))

    async def CustomizeAvatar(self, request: pb.CustomizeAvatarRequest, context):
        validate.customize_avatar(request)
        now = self.clock()
        state = await in_transaction(self.db, lambda s: avatars.customize_avatar(
            s, family_id=request.family_id, child_id=request.child_id,
            item_ids=list(request.item_ids), now=now))
        return pb.CustomizeAvatarResponse(avatar=convert.avatar(state.avatar, state.item_ids))

    async def AwardXp(self, request: pb.AwardXpRequest, context):
        validate.award_xp(request)
        now = self.clock()
        result = await in_transaction(self.db, lambda s: avatars.award_xp(
            s, family_id=request.family_id, child_id=request.child_id, amount=request.amount,
            source_id=request.source_id, reason=request.reason.strip(), now=now))
        self.metrics.xp_awards.labels("applied" if result.applied else "duplicate").inc()
        state = result.state
        return pb.AwardXpResponse(
            avatar=convert.avatar(state.avatar, state.item_ids), applied=result.applied,
            leveled_up=result.leveled_up)

    # -- devices ------------------------------------------------------------------

    async def CreatePairingCode(self, request: pb.CreatePairingCodeRequest, context):
        validate.family_and(request, "child_id", "parent_id")
        now = self.clock()
        code, expires_at = await in_transaction(self.db, lambda s: devices.create_pairing_code(
            s, family_id=request.family_id, child_id=request.child_id,
            parent_id=request.parent_id, hasher=self.hasher, ttl=self.pairing_code_ttl, now=now))
        return pb.CreatePairingCodeResponse(code=code, expires_at=to_ts(expires_at))

    async def RedeemPairingCode(self, request: pb.RedeemPairingCodeRequest, context):
        code = validate.redeem_pairing_code(request)
        now = self.clock()
        device, token = await in_transaction(self.db, lambda s: devices.redeem_pairing_code(
            s, code=code, device_name=request.device_name.strip(), hasher=self.hasher, now=now))
        self.metrics.devices_paired.inc()
        return pb.RedeemPairingCodeResponse(device=convert.device(device), device_token=token)

    async def AuthenticateDevice(self, request: pb.AuthenticateDeviceRequest, context):
        validate.authenticate_device(request)
        try:
            device = await read(self.db, lambda s: devices.authenticate_device(
                s, token=request.device_token, hasher=self.hasher))
        except Unauthenticated:
            self.metrics.authentications.labels("device", "failed").inc()
            raise
        self.metrics.authentications.labels("device", "ok").inc()
        return pb.AuthenticateDeviceResponse(device=convert.device(device))

    async def ListDevices(self, request: pb.ListDevicesRequest, context):
        validate.family_only(request)
        page = parse_page(request.page_size, request.page_token)
        result = await read(self.db, lambda s: devices.list_devices(s, request.family_id, page))
        return pb.ListDevicesResponse(
            devices=[convert.device(r) for r in result.rows], next_page_token=result.next_token)

    async def RevokeDevice(self, request: pb.RevokeDeviceRequest, context):
        validate.family_and(request, "device_id", "parent_id")
        now = self.clock()
        row = await in_transaction(self.db, lambda s: devices.revoke_device(
            s, family_id=request.family_id, device_id=request.device_id,
            parent_id=request.parent_id, now=now))
        return pb.RevokeDeviceResponse(device=convert.device(row))

    # -- conversations ------------------------------------------------------------

    async def CreateConversation(self, request: pb.CreateConversationRequest, context):
        validate.create_conversation(request)
        now = self.clock()
        row = await in_transaction(self.db, lambda s: chat.create_conversation(
            s, family_id=request.family_id, child_id=request.child_id,
            title=request.title.strip(), now=now, parent_id=request.parent_id,
            shared=request.shared))
        return pb.CreateConversationResponse(conversation=self._conversation(row))

    def _conversation(self, row):
        return convert.conversation(row, self.turn_limit)

    async def GetConversation(self, request: pb.GetConversationRequest, context):
        validate.family_and(request, "conversation_id", optional=("parent_id",))
        row = await read(self.db, lambda s: chat.get_conversation(
            s, request.family_id, request.conversation_id, request.parent_id))
        return pb.GetConversationResponse(conversation=self._conversation(row))

    async def ListConversations(self, request: pb.ListConversationsRequest, context):
        validate.family_and(request, optional=("child_id", "parent_id"))
        page = parse_page(request.page_size, request.page_token)
        result = await read(self.db, lambda s: chat.list_conversations(
            s, request.family_id, request.child_id, page, request.parent_id))
        return pb.ListConversationsResponse(
            conversations=[self._conversation(r) for r in result.rows],
            next_page_token=result.next_token)

    async def UpdateConversation(self, request: pb.UpdateConversationRequest, context):
        validate.family_and(request, "conversation_id", "parent_id")
        now = self.clock()
        row = await in_transaction(self.db, lambda s: chat.update_conversation(
            s, family_id=request.family_id, conversation_id=request.conversation_id,
            parent_id=request.parent_id, shared=request.shared, now=now))
        return pb.UpdateConversationResponse(conversation=self._conversation(row))

    async def AppendTurn(self, request: pb.AppendTurnRequest, context):
        validate.append_turn(request)
        now = self.clock()
        turn = await in_transaction(self.db, lambda s: chat.append_turn(
            s, family_id=request.family_id, conversation_id=request.conversation_id,
            turn_id=request.turn_id, user_message=request.user_message,
            assistant_message=request.assistant_message, finish_reason=request.finish_reason,
            now=now, parent_id=request.parent_id, turn_limit=self.turn_limit))
        self.metrics.chat_turns.labels(str(turn.assistant.complete).lower()).inc()
        return pb.AppendTurnResponse(
            user_message=convert.message(turn.user),
            assistant_message=convert.message(turn.assistant),
            conversation=self._conversation(turn.conversation))

    async def ListMessages(self, request: pb.ListMessagesRequest, context):
        validate.family_and(request, "conversation_id", optional=("parent_id", "turn_id"))
        page = parse_page(request.page_size, request.page_token)
        result = await read(self.db, lambda s: chat.list_messages(
            s, request.family_id, request.conversation_id, page, viewer=request.parent_id,
            newest_first=request.newest_first, turn_id=request.turn_id))
        return pb.ListMessagesResponse(
            messages=[convert.message(r) for r in result.rows], next_page_token=result.next_token)

    # -- audit, export, erasure -----------------------------------------------------

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context):
        validate.family_only(request)
        page = parse_page(request.page_size, request.page_token)
        result = await read(self.db, lambda s: family.list_audit_events(
            s, request.family_id, page))
        return pb.ListAuditEventsResponse(
            events=[convert.audit_event(r) for r in result.rows],
            next_page_token=result.next_token)

    def _export(self, request):
        validate.family_and(request, "parent_id")
        return family_export.records(self.db, family_id=request.family_id,
                                     parent_id=request.parent_id, now=self.clock())

    async def ExportFamilyData(self, request: pb.ExportFamilyDataRequest, context):
        """The whole export in one message (older callers; StreamFamilyExport scales)."""
        export = pb.FamilyExport()
        fields = {"parent": export.parents, "consent": export.consents,
                  "invite": export.invites, "child": export.children,
                  "avatar": export.avatars, "xp_award": export.xp_awards,
                  "pairing": export.pairings, "device": export.devices,
                  "conversation": export.conversations, "message": export.messages,
                  "audit_event": export.audit_events}
        async for kind, rec in self._export(request):
            if kind == "header":
                export.family_id = rec.family_id
                export.exported_at.CopyFrom(to_ts(rec.exported_at))
                continue
            record = convert.export_record(kind, rec, self.turn_limit)
            fields[kind].append(getattr(record, record.WhichOneof("record")))
        return pb.ExportFamilyDataResponse(export=export)

    async def StreamFamilyExport(self, request: pb.StreamFamilyExportRequest, context):
        records = (convert.export_record(kind, rec, self.turn_limit)
                   async for kind, rec in self._export(request))
        async for batch in batches(records):
            yield pb.StreamFamilyExportResponse(records=batch)

    async def EraseFamily(self, request: pb.EraseFamilyRequest, context):
        validate.family_and(request, optional=("parent_id",))
        now = self.clock()

        async def work(s):
            if request.parent_id:
                await members.require_owner(s, request.family_id, request.parent_id,
                                            "erase the family")
            return await family.erase_family(s, request.family_id, now=now)

        result = await in_transaction(self.db, work)
        self.metrics.families_erased.inc()
        # Nothing of the family is left to hold an audit event: the structured log
        # keeps the fact (ids and counts only, no personal data).
        log.info("family.erased", family_id=request.family_id, caller=_caller(context),
                 deleted_rows=result.deleted_rows, children=len(result.child_ids),
                 conversations=len(result.conversation_ids))
        return pb.EraseFamilyResponse(
            deleted_rows=result.deleted_rows, child_ids=result.child_ids,
            conversation_ids=result.conversation_ids)

    async def DeleteChild(self, request: pb.DeleteChildRequest, context):
        validate.family_and(request, "child_id", "parent_id")
        now = self.clock()
        result = await in_transaction(self.db, lambda s: family.erase_child(
            s, family_id=request.family_id, child_id=request.child_id,
            parent_id=request.parent_id, now=now))
        log.info("child.erased", family_id=request.family_id, caller=_caller(context),
                 deleted_rows=result.deleted_rows)
        return pb.DeleteChildResponse(
            deleted_rows=result.deleted_rows, conversation_ids=result.conversation_ids,
            device_ids=result.device_ids)

    # -- several parents -------------------------------------------------------------

    async def CreateFamilyInvite(self, request: pb.CreateFamilyInviteRequest, context):
        validate.family_and(request, "parent_id")
        now = self.clock()
        made = await in_transaction(self.db, lambda s: members.create_invite(
            s, family_id=request.family_id, parent_id=request.parent_id, hasher=self.hasher,
            ttl=self.invite_ttl, now=now))
        return pb.CreateFamilyInviteResponse(
            code=made.code, expires_at=to_ts(made.invite.expires_at),
            invite=convert.invite(made.invite))

    async def JoinFamily(self, request: pb.JoinFamilyRequest, context):
        code = validate.join_family(request)
        now = self.clock()
        parent, left = await in_transaction(self.db, lambda s: members.join_family(
            s, family_id=request.family_id, parent_id=request.parent_id, code=code,
            hasher=self.hasher, now=now))
        return pb.JoinFamilyResponse(parent=convert.parent(parent), left_family_id=left)

    async def ListParents(self, request: pb.ListParentsRequest, context):
        validate.family_only(request)

        async def work(s):
            await family.require_family(s, request.family_id)
            return await members_repo.list_parents(s, request.family_id)

        rows = await read(self.db, work)
        return pb.ListParentsResponse(parents=[convert.parent(r) for r in rows])

    async def RemoveParent(self, request: pb.RemoveParentRequest, context):
        validate.family_and(request, "parent_id", "removed_parent_id")
        now = self.clock()
        parent, erased = await in_transaction(self.db, lambda s: members.remove_parent(
            s, family_id=request.family_id, parent_id=request.parent_id,
            removed_parent_id=request.removed_parent_id, now=now))
        return pb.RemoveParentResponse(parent=convert.parent(parent), conversation_ids=erased)

    async def TransferOwnership(self, request: pb.TransferOwnershipRequest, context):
        validate.family_and(request, "parent_id", "new_owner_parent_id")
        now = self.clock()
        rows = await in_transaction(self.db, lambda s: members.transfer_ownership(
            s, family_id=request.family_id, parent_id=request.parent_id,
            new_owner_parent_id=request.new_owner_parent_id, now=now))
        return pb.TransferOwnershipResponse(parents=[convert.parent(r) for r in rows])
