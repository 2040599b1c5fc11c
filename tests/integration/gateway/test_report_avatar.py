"""The report's avatar is composed by the gateway (analytics does not call back
into profile): it is the child's avatar as profile holds it, XP included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from avatario.common.v1 import play_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from services.common.timeutil import to_ts
from tests.integration.gateway.support import new_family, new_id


async def test_the_report_carries_the_avatar_profile_holds(stack):
    fam = await new_family(stack.client, birth_year=2018)
    md = fam.client.md
    before = (await fam.client.report.GetChildReport(gw.GetChildReportRequest(
        child_id=fam.child_id), metadata=md)).report
    assert before.avatar.child_id == fam.child_id and before.avatar.xp == 0

    at = datetime.now(UTC) - timedelta(hours=1)
    checkin = play_pb2.MoodCheckIn(checkin_id=new_id(), child_id=fam.child_id,
                                   mood=play_pb2.MOOD_HAPPY, intensity=3, recorded_at=to_ts(at))
    done = await fam.client.play.SubmitMoodCheckIn(gw.SubmitMoodCheckInRequest(checkin=checkin),
                                                   metadata=md)
    assert not done.duplicate
    avatar = (await fam.client.avatar.GetAvatar(gw.GetAvatarRequest(child_id=fam.child_id),
                                                metadata=md)).avatar
    assert avatar.xp > 0  # the check-in's XP reached profile
    report = (await fam.client.report.GetChildReport(gw.GetChildReportRequest(
        child_id=fam.child_id), metadata=md)).report
    assert report.child_id == fam.child_id
    assert report.avatar == avatar
