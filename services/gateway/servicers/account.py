"""AuthService, FamilyService and PrivacyService."""

from __future__ import annotations

import asyncio
from collections import Counter

import structlog

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.inference.v1 import inference_pb2 as inf
from avatario.profile.v1 import profile_pb2 as pf
from services.common.errors import (
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from services.common.validation import Violations
from services.gateway.auth import ParentPrincipal
from services.gateway.clients.calls import (
    all_pages,
    child_ref,
    gather_all,
    get_child,
    relay_stream,
)
from services.gateway.deps import Deps
from services.gateway.servicers.base import auth_tokens

log = structlog.get_logger("avatario.gateway")
FORGET_BATCH = 1000
OWNER = family_pb2.FAMILY_ROLE_OWNER
# An export streams for as long as a family's history takes, in units of the
# backend deadline.
EXPORT_DEADLINE_FACTOR = 24


async def reauthenticate(d: Deps, who: ParentPrincipal, password: str) -> family_pb2.Parent | None:
    """The caller's parent record when `password` is theirs (PERMISSION_DENIED otherwise);
    None when profile no longer has the parent (their family was erased)."""
    try:
        parent = (await d.profile.call("GetParent", pf.GetParentRequest(
            family_id=who.family_id, parent_id=who.parent_id))).parent
    except NotFound:
        return None
    try:
        checked = (await d.profile.call("Authenticate", pf.AuthenticateRequest(
            email=parent.email, password=password), credential_check=True)).parent
    except (Unauthenticated, InvalidArgument) as exc:
        raise PermissionDenied("the password is wrong") from exc
    if checked.parent_id != who.parent_id:
        raise PermissionDenied("the password is wrong")
    return parent


def require_password(v: Violations, password: str) -> None:
    if not password:
        v.add("password", "is required")


async def forget_conversations(d: Deps, conversation_ids: list[str]) -> int:
    """Erase conversations' state on every inference replica (tombstones, erased=True)."""
    forgotten = 0
    for i in range(0, len(conversation_ids), FORGET_BATCH):
        forgotten += (await d.inference.call(
            "ForgetConversations", inf.ForgetConversationsRequest(
                conversation_ids=conversation_ids[i:i + FORGET_BATCH],
                erased=True))).forgotten
    return forgotten


class AuthServicer:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def SignUp(self, request: gw.SignUpRequest, context, who):
        resp = await self.d.profile.call("CreateParent", pf.CreateParentRequest(
            email=request.email, password=request.password, display_name=request.display_name,
            invite_code=request.invite_code))
        pair = await self.d.tokens.sign_in(resp.parent.parent_id, resp.parent.family_id)
        return gw.SignUpResponse(parent=resp.parent, tokens=auth_tokens(pair))

    async def SignIn(self, request: gw.SignInRequest, context, who):
        resp = await self.d.profile.call("Authenticate", pf.AuthenticateRequest(
            email=request.email, password=request.password), credential_check=True)
        pair = await self.d.tokens.sign_in(resp.parent.parent_id, resp.parent.family_id)
        return gw.SignInResponse(parent=resp.parent, tokens=auth_tokens(pair))

    async def RefreshTokens(self, request: gw.RefreshTokensRequest, context, who):
        if not request.refresh_token:
            raise InvalidArgument.field("refresh_token", "is required")

        async def parent_exists(parent_id: str, family_id: str) -> bool:
            try:
                await self.d.profile.call("GetParent", pf.GetParentRequest(
                    family_id=family_id, parent_id=parent_id))
            except NotFound:
                return False
            return True

        result = await self.d.tokens.refresh(request.refresh_token, still_valid=parent_exists)
        return gw.RefreshTokensResponse(tokens=auth_tokens(result.tokens))

    async def SignOut(self, request: gw.SignOutRequest, context, who: ParentPrincipal):
        await self.d.tokens.sign_out(who.parent_id, who.sign_in_id, request.refresh_token)
        return gw.SignOutResponse()

    async def ChangePassword(self, request: gw.ChangePasswordRequest, context, who):
        await self.d.profile.call("ChangePassword", pf.ChangePasswordRequest(
            family_id=who.family_id, parent_id=who.parent_id,
            current_password=request.current_password, new_password=request.new_password))
        # Every sign-in of this parent ends, this one included; the answer carries
        # fresh tokens, so this client carries on.
        await self.d.tokens.revoke_parent(who.parent_id, "password_changed")
        pair = await self.d.tokens.sign_in(who.parent_id, who.family_id)
        return gw.ChangePasswordResponse(tokens=auth_tokens(pair))


class FamilyServicer:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def GetAccount(self, request, context, who):
        resp = await self.d.profile.call("GetParent", pf.GetParentRequest(
            family_id=who.family_id, parent_id=who.parent_id))
        return gw.GetAccountResponse(parent=resp.parent)

    async def RecordConsent(self, request: gw.RecordConsentRequest, context, who):
        resp = await self.d.profile.call("RecordConsent", pf.RecordConsentRequest(
            family_id=who.family_id, parent_id=who.parent_id, scopes=request.scopes,
            policy_version=request.policy_version))
        return gw.RecordConsentResponse(consents=resp.consents)

    async def WithdrawConsent(self, request: gw.WithdrawConsentRequest, context, who):
        resp = await self.d.profile.call("WithdrawConsent", pf.WithdrawConsentRequest(
            family_id=who.family_id, parent_id=who.parent_id, scope=request.scope))
        # This replica forgets at once what the withdrawal may invalidate: cached
        # device credentials (device sign-in needs CHILD_PROFILE) and chat summaries.
        # Other replicas drop cached devices within device_cache_ttl_s; play writes
        # and chat context are checked against profile on every call anyway.
        self.d.devices.evict(family_id=who.family_id)
        self.d.forget_child_context(who.family_id)
        return gw.WithdrawConsentResponse(consent=resp.consent)

    async def ListConsents(self, request: gw.ListConsentsRequest, context, who):
        resp = await self.d.profile.call("ListConsents", pf.ListConsentsRequest(
            family_id=who.family_id, include_withdrawn=request.include_withdrawn))
        return gw.ListConsentsResponse(consents=resp.consents)

    async def CreateChild(self, request: gw.CreateChildRequest, context, who):
        resp = await self.d.profile.call("CreateChild", pf.CreateChildRequest(
            family_id=who.family_id, parent_id=who.parent_id, nickname=request.nickname,
            birth_year=request.birth_year, birth_month=request.birth_month))
        return gw.CreateChildResponse(child=resp.child)

    async def GetChild(self, request: gw.GetChildRequest, context, who):
        resp = await self.d.profile.call("GetChild", pf.GetChildRequest(
            family_id=who.family_id, child_id=request.child_id))
        return gw.GetChildResponse(child=resp.child)

    async def ListChildren(self, request: gw.ListChildrenRequest, context, who):
        resp = await self.d.profile.call("ListChildren", pf.ListChildrenRequest(
            family_id=who.family_id, page_size=request.page_size,
            page_token=request.page_token))
        return gw.ListChildrenResponse(children=resp.children,
                                       next_page_token=resp.next_page_token)

    async def UpdateChild(self, request: gw.UpdateChildRequest, context, who):
        out = pf.UpdateChildRequest(family_id=who.family_id, child_id=request.child_id,
                                    parent_id=who.parent_id)
        for name in ("nickname", "birth_year", "birth_month"):
            if request.HasField(name):
                setattr(out, name, getattr(request, name))
        resp = await self.d.profile.call("UpdateChild", out)
        return gw.UpdateChildResponse(child=resp.child)

    async def ListAuditEvents(self, request: gw.ListAuditEventsRequest, context, who):
        resp = await self.d.profile.call("ListAuditEvents", pf.ListAuditEventsRequest(
            family_id=who.family_id, page_size=request.page_size,
            page_token=request.page_token))
        return gw.ListAuditEventsResponse(events=resp.events,
                                          next_page_token=resp.next_page_token)

    # -- several parents (docs/families.md) ------------------------------------------

    async def CreateFamilyInvite(self, request, context, who: ParentPrincipal):
        resp = await self.d.profile.call("CreateFamilyInvite", pf.CreateFamilyInviteRequest(
            family_id=who.family_id, parent_id=who.parent_id))
        return gw.CreateFamilyInviteResponse(code=resp.code, expires_at=resp.expires_at,
                                             invite=resp.invite)

    async def JoinFamily(self, request: gw.JoinFamilyRequest, context, who: ParentPrincipal):
        resp = await self.d.profile.call("JoinFamily", pf.JoinFamilyRequest(
            family_id=who.family_id, parent_id=who.parent_id, code=request.code))
        # The caller's tokens name the family they left: every sign-in ends, and the
        # answer carries tokens for the family they joined.
        await self.d.tokens.revoke_parent(who.parent_id, "joined_family")
        pair = await self.d.tokens.sign_in(resp.parent.parent_id, resp.parent.family_id)
        return gw.JoinFamilyResponse(parent=resp.parent, tokens=auth_tokens(pair))

    async def ListParents(self, request, context, who: ParentPrincipal):
        resp = await self.d.profile.call("ListParents", pf.ListParentsRequest(
            family_id=who.family_id))
        return gw.ListParentsResponse(parents=resp.parents)

    async def RemoveParent(self, request: gw.RemoveParentRequest, context, who: ParentPrincipal):
        resp = await self.d.profile.call("RemoveParent", pf.RemoveParentRequest(
            family_id=who.family_id, parent_id=who.parent_id,
            removed_parent_id=request.parent_id), remap={"removed_parent_id": "parent_id"})
        await self.d.tokens.revoke_parent(resp.parent.parent_id, "removed_from_family")
        try:
            await forget_conversations(self.d, list(resp.conversation_ids))
        except DomainError:
            # Profile no longer has them; a replica's cached state of a conversation
            # nobody can reach ages out of its cache.
            log.warning("family.forget_removed_parent_failed", family_id=who.family_id,
                        count=len(resp.conversation_ids))
        return gw.RemoveParentResponse()

    async def TransferOwnership(self, request: gw.TransferOwnershipRequest, context,
                                who: ParentPrincipal):
        v = Violations()
        v.uuid("parent_id", request.parent_id)
        require_password(v, request.password)
        v.raise_if_any()
        if await reauthenticate(self.d, who, request.password) is None:
            raise NotFound("parent")
        resp = await self.d.profile.call("TransferOwnership", pf.TransferOwnershipRequest(
            family_id=who.family_id, parent_id=who.parent_id,
            new_owner_parent_id=request.parent_id), remap={"new_owner_parent_id": "parent_id"})
        return gw.TransferOwnershipResponse(parents=resp.parents)


class PrivacyServicer:
    """Export gathers profile's and analytics' data; erasure reaches every service.

    EraseFamily order, chosen so that a failure at any point can be retried with
    the same call (every step is idempotent):
      1. re-authenticate with the password (profile Authenticate);
      2. list the family's conversation ids (profile), before they are erased;
      3. analytics EraseFamilyData;
      4. inference ForgetConversations (the RNN state cache);
      5. profile EraseFamily (forgetting any conversation it reports that step 2
         did not see): from here on no credential of the family works, so no
         new play data can reach analytics through a gateway;
      6. analytics EraseFamilyData again, sweeping up a session that a device
         submitted between steps 3 and 5;
      7. revoke every sign-in of the family in the gateway.
    A failure answers UNAVAILABLE with nothing after it done. A retry after step
    5 finds no parent in profile: the caller's (still valid) access token is
    then enough to finish steps 6-7, since there is no password left to check.
    """

    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def ExportFamilyData(self, request, context, who: ParentPrincipal):
        resp = await self.d.profile.call("ExportFamilyData", pf.ExportFamilyDataRequest(
            family_id=who.family_id, parent_id=who.parent_id),
            timeout=self.d.settings.backend_deadline_s * 4)
        limit = asyncio.Semaphore(4)

        async def one(child):
            async with limit:
                r = await self.d.analytics.call(
                    "ExportChildData", an.ExportChildDataRequest(child=child_ref(child)),
                    timeout=self.d.settings.backend_deadline_s * 4)
                return r.export

        children = await gather_all(*(one(c) for c in resp.export.children))
        return gw.ExportFamilyDataResponse(profile=resp.export, children=children)

    async def _forget(self, conversation_ids: list[str]) -> int:
        return await forget_conversations(self.d, conversation_ids)

    async def _erase_analytics(self, family_id: str, deleted: dict[str, int]) -> None:
        resp = await self.d.analytics.call(
            "EraseFamilyData", an.EraseFamilyDataRequest(family_id=family_id),
            timeout=self.d.settings.backend_deadline_s * 6)
        for k, v in resp.deleted_rows.items():
            deleted[f"analytics.{k}"] = deleted.get(f"analytics.{k}", 0) + v

    async def EraseFamily(self, request: gw.EraseFamilyRequest, context, who: ParentPrincipal):
        if not request.password:
            raise InvalidArgument.field("password", "is required")
        d = self.d
        deleted: dict[str, int] = {}
        parent = await reauthenticate(d, who, request.password)
        if parent is not None:
            if parent.role not in (OWNER, family_pb2.FAMILY_ROLE_UNSPECIFIED):
                raise PermissionDenied("only the family's owner may erase the family")
            conversations = await all_pages(lambda token: d.profile.call(
                "ListConversations", pf.ListConversationsRequest(
                    family_id=who.family_id, page_size=200, page_token=token)), "conversations")
            conv_ids = [c.conversation_id for c in conversations]
            await self._erase_analytics(who.family_id, deleted)
            forgotten = await self._forget(conv_ids)
            profile = await d.profile.call(
                "EraseFamily", pf.EraseFamilyRequest(family_id=who.family_id,
                                                     parent_id=who.parent_id),
                timeout=d.settings.backend_deadline_s * 6)
            deleted |= {f"profile.{k}": v for k, v in profile.deleted_rows.items()}
            d.devices.evict(family_id=who.family_id)
            late = sorted(set(profile.conversation_ids) - set(conv_ids))
            if late:
                try:
                    forgotten += await self._forget(late)
                except DomainError:
                    log.warning("erase.forget_late_failed", family_id=who.family_id,
                                count=len(late))
            deleted["inference.conversation_states"] = forgotten
        else:
            # Profile has no such parent: either the family is gone (a retry after
            # step 5: finish it) or the caller was removed from a family that still
            # exists, with a token not yet known to be revoked here (refuse).
            await self._require_family_erased(who)
            log.info("erase.resuming_after_profile", family_id=who.family_id)
        await self._erase_analytics(who.family_id, deleted)
        revoked = await d.tokens.revoke_family(who.family_id, "family_erased")
        deleted["gateway.sign_ins_revoked"] = len(revoked)
        d.devices.evict(family_id=who.family_id)
        d.forget_child_context(who.family_id)
        log.info("family.erase_completed", family_id=who.family_id,
                 rows=sum(deleted.values()))
        return gw.EraseFamilyResponse(deleted_rows=deleted)

    async def _require_family_erased(self, who: ParentPrincipal) -> None:
        try:
            await self.d.profile.call("ListParents", pf.ListParentsRequest(
                family_id=who.family_id))
        except NotFound:
            return
        raise PermissionDenied("you are no longer a parent of this family")

    async def DeleteChild(self, request: gw.DeleteChildRequest, context, who: ParentPrincipal):
        """Erase one child everywhere, in an order any step of which can be retried:
          1. re-authenticate; the child (NOT_FOUND when not the caller's family's);
          2. every conversation of the child (any parent's), before profile erases them;
          3. analytics EraseChildData (sessions, trials, metrics, check-ins, flags, XP
             outbox, play days);
          4. ForgetConversations(erased) on every inference replica;
          5. profile DeleteChild (profile, avatar, XP, pairing codes, devices,
             conversations, messages, audit events naming them); from here on no device
             of the child authenticates, so nothing new reaches analytics;
          6. analytics EraseChildData again, sweeping a session a device sent between 3
             and 5; forget conversations profile reported that step 2 did not see;
          7. evict the child's devices and summaries from this gateway's caches."""
        v = Violations()
        v.uuid("child_id", request.child_id)
        require_password(v, request.password)
        v.raise_if_any()
        d = self.d
        if await reauthenticate(d, who, request.password) is None:
            raise NotFound("child")
        child = await get_child(d.profile, who, request.child_id)
        conversations = await all_pages(lambda token: d.profile.call(
            "ListConversations", pf.ListConversationsRequest(
                family_id=who.family_id, child_id=child.child_id, page_size=200,
                page_token=token)), "conversations")
        conv_ids = [c.conversation_id for c in conversations]
        deleted: dict[str, int] = {}
        await self._erase_child_analytics(child, deleted)
        forgotten = await self._forget(conv_ids)
        profile = await d.profile.call("DeleteChild", pf.DeleteChildRequest(
            family_id=who.family_id, child_id=child.child_id, parent_id=who.parent_id),
            timeout=d.settings.backend_deadline_s * 6)
        deleted |= {f"profile.{k}": v for k, v in profile.deleted_rows.items()}
        for device_id in profile.device_ids:
            d.devices.evict(device_id=device_id)
        await self._erase_child_analytics(child, deleted)
        late = sorted(set(profile.conversation_ids) - set(conv_ids))
        if late:
            forgotten += await self._forget(late)
        deleted["inference.conversation_states"] = forgotten
        d.forget_child_context(who.family_id, child.child_id)
        log.info("child.erase_completed", family_id=who.family_id, rows=sum(deleted.values()))
        return gw.DeleteChildResponse(deleted_rows=deleted)

    async def _erase_child_analytics(self, child, deleted: dict[str, int]) -> None:
        resp = await self.d.analytics.call(
            "EraseChildData", an.EraseChildDataRequest(child=child_ref(child)),
            timeout=self.d.settings.backend_deadline_s * 6)
        for k, v in resp.deleted_rows.items():
            deleted[f"analytics.{k}"] = deleted.get(f"analytics.{k}", 0) + v

    async def StreamFamilyExport(self, request, context, who: ParentPrincipal):
        """Profile's records as they come, then each child's play data; the last
        message counts the records of each kind."""
        d = self.d
        timeout = d.settings.backend_deadline_s * EXPORT_DEADLINE_FACTOR
        counts: Counter[str] = Counter()
        children: list[family_pb2.Child] = []
        async for resp in relay_stream(d.profile, "StreamFamilyExport",
                                       pf.StreamFamilyExportRequest(
                                           family_id=who.family_id, parent_id=who.parent_id),
                                       timeout=timeout):
            for record in resp.records:
                kind = record.WhichOneof("record")
                counts[f"profile.{kind}"] += 1
                if kind == "child":
                    children.append(record.child)
            yield gw.StreamFamilyExportResponse(profile=resp.records)
        for child in children:
            async for resp in relay_stream(d.analytics, "StreamChildExport",
                                           an.StreamChildExportRequest(child=child_ref(child)),
                                           timeout=timeout):
                for record in resp.records:
                    counts[f"analytics.{record.WhichOneof('record')}"] += 1
                yield gw.StreamFamilyExportResponse(analytics=resp.records)
        yield gw.StreamFamilyExportResponse(summary=gw.ExportSummary(record_counts=counts))
