"""AvatarService, DeviceService, PlayService and ReportService.

GetChildReport composes what two owners hold: the report from analytics and,
asked of profile at the same time, the child's avatar (ChildReport.avatar). When
profile cannot answer the report comes without an avatar rather than failing.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.common.v1 import avatar_pb2, family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.profile.v1 import profile_pb2 as pf
from services.common.errors import DomainError
from services.gateway.auth import own_child
from services.gateway.clients.backends import BackendFailure
from services.gateway.clients.calls import child_ref, get_child
from services.gateway.deps import Deps

log = structlog.get_logger("avatario.gateway.play")


class AvatarServicer:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def ListAvatarItems(self, request: gw.ListAvatarItemsRequest, context, who):
        resp = await self.d.profile.call("ListAvatarItems", pf.ListAvatarItemsRequest(
            page_size=request.page_size, page_token=request.page_token))
        return gw.ListAvatarItemsResponse(items=resp.items, next_page_token=resp.next_page_token)

    async def GetAvatar(self, request: gw.GetAvatarRequest, context, who):
        resp = await self.d.profile.call("GetAvatar", pf.GetAvatarRequest(
            family_id=who.family_id, child_id=own_child(who, request.child_id)))
        return gw.GetAvatarResponse(avatar=resp.avatar)

    async def CustomizeAvatar(self, request: gw.CustomizeAvatarRequest, context, who):
        resp = await self.d.profile.call("CustomizeAvatar", pf.CustomizeAvatarRequest(
            family_id=who.family_id, child_id=own_child(who, request.child_id),
            item_ids=request.item_ids))
        return gw.CustomizeAvatarResponse(avatar=resp.avatar)


class DeviceServicer:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def CreatePairingCode(self, request: gw.CreatePairingCodeRequest, context, who):
        resp = await self.d.profile.call("CreatePairingCode", pf.CreatePairingCodeRequest(
            family_id=who.family_id, child_id=request.child_id, parent_id=who.parent_id))
        return gw.CreatePairingCodeResponse(code=resp.code, expires_at=resp.expires_at)

    async def PairDevice(self, request: gw.PairDeviceRequest, context, who):
        resp = await self.d.profile.call("RedeemPairingCode", pf.RedeemPairingCodeRequest(
            code=request.code, device_name=request.device_name))
        return gw.PairDeviceResponse(device=resp.device, device_token=resp.device_token)

    async def ListDevices(self, request: gw.ListDevicesRequest, context, who):
        resp = await self.d.profile.call("ListDevices", pf.ListDevicesRequest(
            family_id=who.family_id, page_size=request.page_size, page_token=request.page_token))
        return gw.ListDevicesResponse(devices=resp.devices, next_page_token=resp.next_page_token)

    async def RevokeDevice(self, request: gw.RevokeDeviceRequest, context, who):
        resp = await self.d.profile.call("RevokeDevice", pf.RevokeDeviceRequest(
            family_id=who.family_id, device_id=request.device_id, parent_id=who.parent_id))
        self.d.devices.evict(device_id=resp.device.device_id)
        return gw.RevokeDeviceResponse(device=resp.device)


class PlayServicer:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def ListGames(self, request: gw.ListGamesRequest, context, who):
        resp = await self.d.analytics.call("ListGames", an.ListGamesRequest(
            page_size=request.page_size, page_token=request.page_token))
        return gw.ListGamesResponse(games=resp.games, next_page_token=resp.next_page_token)

    async def SubmitGameSession(self, request: gw.SubmitGameSessionRequest, context, who):
        resp = await self._submit(who, "SubmitGameSession", an.SubmitGameSessionRequest,
                                  "session", request.session)
        return gw.SubmitGameSessionResponse(result=resp.result, duplicate=resp.duplicate)

    async def SubmitMoodCheckIn(self, request: gw.SubmitMoodCheckInRequest, context, who):
        resp = await self._submit(who, "SubmitMoodCheckIn", an.SubmitMoodCheckInRequest,
                                  "checkin", request.checkin)
        return gw.SubmitMoodCheckInResponse(checkin=resp.checkin, duplicate=resp.duplicate,
                                            xp_awarded=resp.xp_awarded, xp_pending=resp.xp_pending)

    async def _submit(self, who, method: str, request_cls, item: str, submitted):
        """A play write for the caller's child: the item goes to analytics with the
        child's ChildRef and its own child_id set; errors name the public fields."""
        child = await get_child(self.d.profile, who, submitted.child_id, f"{item}.child_id")
        copy = type(submitted)()
        copy.CopyFrom(submitted)
        copy.child_id = child.child_id
        resp = await self.d.analytics.call(
            method, request_cls(child=child_ref(child), **{item: copy}),
            remap={"child.child_id": f"{item}.child_id"})
        self.d.forget_child_context(child.family_id, child.child_id)
        return resp


class ReportServicer:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def GetChildReport(self, request: gw.GetChildReportRequest, context, who):
        child = await get_child(self.d.profile, who, request.child_id)
        avatar = asyncio.create_task(self._avatar(child))
        try:
            resp = await self.d.analytics.call(
                "GetChildReport", an.GetChildReportRequest(child=child_ref(child)),
                remap={"child.child_id": "child_id"})
        except BaseException:
            avatar.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await avatar
            raise
        report = resp.report
        found = await avatar
        if found is not None:
            report.avatar.CopyFrom(found)
        return gw.GetChildReportResponse(report=report)

    async def _avatar(self, child: family_pb2.Child) -> avatar_pb2.Avatar | None:
        """The child's avatar, asked of profile while analytics builds the report; None
        when profile cannot answer (the avatar is decoration, the report is the point)."""
        try:
            resp = await self.d.profile.call("GetAvatar", pf.GetAvatarRequest(
                family_id=child.family_id, child_id=child.child_id))
        except (DomainError, BackendFailure) as exc:
            log.warning("report.avatar_unavailable", error=type(exc).__name__)
            return None
        return resp.avatar

    async def ListFlags(self, request: gw.ListFlagsRequest, context, who):
        child = await get_child(self.d.profile, who, request.child_id)
        resp = await self.d.analytics.call("ListFlags", an.ListFlagsRequest(
            child=child_ref(child), page_size=request.page_size, page_token=request.page_token),
            remap={"child.child_id": "child_id"})
        return gw.ListFlagsResponse(flags=resp.flags, next_page_token=resp.next_page_token)

    async def ListTips(self, request: gw.ListTipsRequest, context, who):
        resp = await self.d.analytics.call("ListTips", an.ListTipsRequest(
            domain=request.domain, age_band=request.age_band, page_size=request.page_size,
            page_token=request.page_token))
        return gw.ListTipsResponse(tips=resp.tips, next_page_token=resp.next_page_token)
