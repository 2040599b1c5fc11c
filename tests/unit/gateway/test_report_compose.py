"""ReportService.GetChildReport composes analytics' report with profile's avatar;
a profile that cannot answer costs the avatar, never the report."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.common.v1 import avatar_pb2, family_pb2, report_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.profile.v1 import profile_pb2 as pf
from services.common import errors
from services.gateway.clients.backends import BackendFailure
from services.gateway.servicers.play import ReportServicer

FAMILY, CHILD = "f" * 8, "c" * 8


class FakeBackend:
    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def call(self, method: str, request, **kw):
        self.calls.append(method)
        answer = self.answers[method]
        if isinstance(answer, BaseException):
            raise answer
        return answer(request) if callable(answer) else answer


def _servicer(avatar_answer, report_answer=None):
    child = family_pb2.Child(child_id=CHILD, family_id=FAMILY, birth_year=2018, birth_month=3)
    profile = FakeBackend({"GetChild": pf.GetChildResponse(child=child),
                           "GetAvatar": avatar_answer})
    report = report_pb2.ChildReport(child_id=CHILD, enough_data=True)
    analytics = FakeBackend({"GetChildReport": report_answer or an.GetChildReportResponse(
        report=report)})
    deps = SimpleNamespace(profile=profile, analytics=analytics)
    return ReportServicer(deps), profile, analytics


WHO = SimpleNamespace(family_id=FAMILY, parent_id="p", child_id=None, kind="parent")


@pytest.fixture(autouse=True)
def _own_child(monkeypatch):
    monkeypatch.setattr("services.gateway.clients.calls.own_child", lambda who, cid: cid)


async def test_the_report_gets_the_avatar_profile_holds():
    avatar = avatar_pb2.Avatar(child_id=CHILD, xp=125, level=2)
    servicer, profile, _ = _servicer(pf.GetAvatarResponse(avatar=avatar))
    out = await servicer.GetChildReport(gw.GetChildReportRequest(child_id=CHILD), None, WHO)
    assert out.report.avatar == avatar and out.report.enough_data
    assert profile.calls == ["GetChild", "GetAvatar"]


@pytest.mark.parametrize("failure", [
    errors.Unavailable("profile is unavailable"), errors.DeadlineExceeded("late"),
    errors.NotFound("avatar"), BackendFailure("profile answered INTERNAL"),
])
async def test_without_an_avatar_from_profile_the_report_comes_without_one(failure):
    servicer, _, _ = _servicer(failure)
    out = await servicer.GetChildReport(gw.GetChildReportRequest(child_id=CHILD), None, WHO)
    assert not out.report.HasField("avatar") and out.report.child_id == CHILD


async def test_a_failed_report_fails_the_call_and_stops_the_avatar_fetch():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_avatar(request):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    class SlowProfile(FakeBackend):
        async def call(self, method, request, **kw):
            if method == "GetAvatar":
                return await slow_avatar(request)
            return await super().call(method, request, **kw)

    class FailingAnalytics(FakeBackend):
        async def call(self, method, request, **kw):
            await started.wait()  # the avatar fetch is under way
            raise errors.Unavailable("analytics is down")

    servicer, profile, _ = _servicer(None)
    servicer.d.profile = SlowProfile(profile.answers)
    servicer.d.analytics = FailingAnalytics({})
    with pytest.raises(errors.Unavailable):
        await servicer.GetChildReport(gw.GetChildReportRequest(child_id=CHILD), None, WHO)
    assert started.is_set() and cancelled.is_set()
