"""AuthService, FamilyService and PrivacyService."""

from __future__ import annotations

import asyncio

import structlog

from avatario.analytics.v1 import analytics_pb2 as an
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
from services.gateway.auth import ParentPrincipal
from services.gateway.clients.calls import all_pages, child_ref, gather_all
from services.gateway.deps import Deps
from services.gateway.servicers.base import auth_tokens

log = structlog.get_logger("avatario.gateway")
FORGET_BATCH = 1000


class AuthServicer:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def SignUp(self, request: gw.SignUpRequest, context, who):
        resp = await self.d.profile.call("CreateParent", pf.CreateParentRequest(
            email=request.email, password=request.password, display_name=request.display_name))
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
        # Every sign-in of this parent ends, this one included: sign in again.
        await self.d.tokens.revoke_parent(who.parent_id, "password_changed")
        return gw.ChangePasswordResponse()


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
        forgotten = 0
        for i in range(0, len(conversation_ids), FORGET_BATCH):
            forgotten += (await self.d.inference.call(
                "ForgetConversations", inf.ForgetConversationsRequest(
                    conversation_ids=conversation_ids[i:i + FORGET_BATCH],
                    erased=True))).forgotten
        return forgotten

    async def _erase_analytics(self, family_id: str, deleted: dict[str, int]) -> None:
        resp = await self.d.analytics.call(
            "EraseFamilyData", an.EraseFamilyDataRequest(family_id=family_id),
            timeout=self.d.settings.backend_deadline_s * 6)
        for k, v in resp.deleted_rows.items():
            deleted[f"analytics.{k}"] = deleted.get(f"analytics.{k}", 0) + v

    async def _reauthenticate(self, who: ParentPrincipal, password: str) -> bool:
        """True when the password is right; False when profile no longer has the parent."""
        try:
            parent = (await self.d.profile.call("GetParent", pf.GetParentRequest(
                family_id=who.family_id, parent_id=who.parent_id))).parent
        except NotFound:
            return False
        try:
            checked = (await self.d.profile.call("Authenticate", pf.AuthenticateRequest(
                email=parent.email, password=password), credential_check=True)).parent
        except (Unauthenticated, InvalidArgument) as exc:
            raise PermissionDenied("the password is wrong") from exc
        if checked.parent_id != who.parent_id:
            raise PermissionDenied("the password is wrong")
        return True

    async def EraseFamily(self, request: gw.EraseFamilyRequest, context, who: ParentPrincipal):
        if not request.password:
            raise InvalidArgument.field("password", "is required")
        d = self.d
        deleted: dict[str, int] = {}
        if await self._reauthenticate(who, request.password):
            conversations = await all_pages(lambda token: d.profile.call(
                "ListConversations", pf.ListConversationsRequest(
                    family_id=who.family_id, page_size=200, page_token=token)), "conversations")
            conv_ids = [c.conversation_id for c in conversations]
            await self._erase_analytics(who.family_id, deleted)
            forgotten = await self._forget(conv_ids)
            profile = await d.profile.call(
                "EraseFamily", pf.EraseFamilyRequest(family_id=who.family_id),
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
            log.info("erase.resuming_after_profile", family_id=who.family_id)
        await self._erase_analytics(who.family_id, deleted)
        revoked = await d.tokens.revoke_family(who.family_id, "family_erased")
        deleted["gateway.sign_ins_revoked"] = len(revoked)
        d.devices.evict(family_id=who.family_id)
        d.forget_child_context(who.family_id)
        log.info("family.erase_completed", family_id=who.family_id,
                 rows=sum(deleted.values()))
        return gw.EraseFamilyResponse(deleted_rows=deleted)
