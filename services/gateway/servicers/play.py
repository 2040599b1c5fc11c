"""AvatarService, DeviceService, PlayService and ReportService."""

from __future__ import annotations

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.profile.v1 import profile_pb2 as pf
from services.gateway.auth import own_child
from services.gateway.servicers.base import Deps, child_ref, get_child


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
        child = await get_child(self.d, who, request.session.child_id, "session.child_id")
        session = type(request.session)()
        session.CopyFrom(request.session)
        session.child_id = child.child_id
        resp = await self.d.analytics.call(
            "SubmitGameSession", an.SubmitGameSessionRequest(child=child_ref(child), session=session),
            remap={"child.child_id": "session.child_id"})
        self.d.forget_child_context(child.family_id, child.child_id)
        return gw.SubmitGameSessionResponse(result=resp.result, duplicate=resp.duplicate)

    async def SubmitMoodCheckIn(self, request: gw.SubmitMoodCheckInRequest, context, who):
        child = await get_child(self.d, who, request.checkin.child_id, "checkin.child_id")
        checkin = type(request.checkin)()
        checkin.CopyFrom(request.checkin)
        checkin.child_id = child.child_id
        resp = await self.d.analytics.call(
            "SubmitMoodCheckIn", an.SubmitMoodCheckInRequest(child=child_ref(child), checkin=checkin),
            remap={"child.child_id": "checkin.child_id"})
        self.d.forget_child_context(child.family_id, child.child_id)
        return gw.SubmitMoodCheckInResponse(checkin=resp.checkin, duplicate=resp.duplicate)


class ReportServicer:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    async def GetChildReport(self, request: gw.GetChildReportRequest, context, who):
        child = await get_child(self.d, who, request.child_id)
        resp = await self.d.analytics.call(
            "GetChildReport", an.GetChildReportRequest(child=child_ref(child)),
            remap={"child.child_id": "child_id"})
        return gw.GetChildReportResponse(report=resp.report)

    async def ListFlags(self, request: gw.ListFlagsRequest, context, who):
        child = await get_child(self.d, who, request.child_id)
        resp = await self.d.analytics.call("ListFlags", an.ListFlagsRequest(
            child=child_ref(child), page_size=request.page_size, page_token=request.page_token),
            remap={"child.child_id": "child_id"})
        return gw.ListFlagsResponse(flags=resp.flags, next_page_token=resp.next_page_token)

    async def ListTips(self, request: gw.ListTipsRequest, context, who):
        resp = await self.d.analytics.call("ListTips", an.ListTipsRequest(
            domain=request.domain, age_band=request.age_band, page_size=request.page_size,
            page_token=request.page_token))
        return gw.ListTipsResponse(tips=resp.tips, next_page_token=resp.next_page_token)
