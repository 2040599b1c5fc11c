"""StreamFamilyExport through the public API on SQLite and PostgreSQL: the same records
as the one-message ExportFamilyData for a small family, and a family with five years
of daily play and long chats (more than 16 MiB, past what one message may carry)
exported completely, in batches of about 1 MiB, with consent history, pairing and
device records."""

from __future__ import annotations

import json
from collections import Counter

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from bench.export_history import FIVE_YEARS_DAYS, generate
from services.common.chunking import BATCH_BYTES
from services.common.db import Database
from services.common.timeutil import utcnow
from tests.integration.gateway.support import new_family, pair_device, plan_with_checkins

C = grpc.StatusCode
MIB = 1024 * 1024


async def stream(fam):
    return [r async for r in fam.client.privacy.StreamFamilyExport(
        gw.StreamFamilyExportRequest(), metadata=fam.client.md)]


def records(responses):
    """Every record of a stream as (kind, dict), profile's then analytics'."""
    out = []
    for r in responses:
        for rec in r.profile:
            kind = rec.WhichOneof("record")
            out.append((f"profile.{kind}", MessageToDict(getattr(rec, kind))))
        for rec in r.analytics:
            kind = rec.WhichOneof("record")
            out.append((f"analytics.{kind}", MessageToDict(getattr(rec, kind))))
    return out


def key(kind: str, d: dict) -> str:
    return kind + json.dumps(d, sort_keys=True)


async def test_the_stream_holds_what_the_one_message_export_holds(stack):
    fam = await new_family(stack.client)
    token, _ = await pair_device(fam)
    dev = fam.client.as_(token)
    p = plan_with_checkins(fam.child_id, 3, sessions=5, weeks=2, seed=5)
    for s in p.sessions:
        s.child_id = ""
        await dev.play.SubmitGameSession(gw.SubmitGameSessionRequest(session=s), metadata=dev.md)
    for c in p.checkins[:3]:
        await dev.play.SubmitMoodCheckIn(gw.SubmitMoodCheckInRequest(checkin=c), metadata=dev.md)
    await fam.client.family.WithdrawConsent(gw.WithdrawConsentRequest(
        scope=family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT), metadata=fam.client.md)
    one = await fam.client.privacy.ExportFamilyData(gw.ExportFamilyDataRequest(),
                                                    metadata=fam.client.md)
    streamed = await stream(fam)
    got = records(streamed)
    assert got[0][0] == "profile.header"
    summary = streamed[-1].summary.record_counts
    assert dict(summary) == dict(Counter(k for k, _ in got))
    # Everything the one message holds is in the stream (the stream's own audit
    # event and the exported_at differ: each export is audited when it runs).
    profile = one.profile
    want = []
    for field, kind in (("parents", "parent"), ("consents", "consent"), ("children", "child"),
                        ("avatars", "avatar"), ("devices", "device"),
                        ("xp_awards", "xp_award"), ("pairings", "pairing")):
        want += [key(f"profile.{kind}", MessageToDict(m)) for m in getattr(profile, field)]
    for child in one.children:
        want += [key("analytics.session", MessageToDict(m)) for m in child.sessions]
        want += [key("analytics.result", MessageToDict(m)) for m in child.results]
        want += [key("analytics.mood_checkin", MessageToDict(m)) for m in child.mood_checkins]
        want += [key("analytics.statement", MessageToDict(m)) for m in child.statements]
    have = Counter(key(k, d) for k, d in got)
    missing = Counter(want) - have
    assert not missing, [k[:300] for k in missing]
    assert summary["analytics.session"] == 5 and summary["analytics.mood_checkin"] == 3
    assert summary["profile.pairing"] == 1 and summary["profile.device"] == 1
    consents = [d for k, d in got if k == "profile.consent"]
    withdrawn = [c for c in consents if c.get("withdrawnAt")]
    assert [c["withdrawnByParentId"] for c in withdrawn] == [fam.parent.parent_id]


async def test_five_years_of_daily_play_and_long_chats_export_completely(stack):
    fam = await new_family(stack.client)
    await pair_device(fam)
    days, turns = FIVE_YEARS_DAYS, 2_400
    profile_db = Database(stack.urls.profile, pool_size=2)
    analytics_db = Database(stack.urls.analytics, pool_size=2)
    try:
        made = await generate(profile_db, analytics_db, family_id=fam.family_id,
                              parent_id=fam.parent.parent_id, child_id=fam.child_id,
                              birth_year=2018, birth_month=3, days=days, turns=turns,
                              now=utcnow())
    finally:
        await profile_db.dispose()
        await analytics_db.dispose()
    responses = await stream(fam)
    sizes = [r.ByteSize() for r in responses]
    assert sum(sizes) > 16 * MIB
    assert max(sizes) <= BATCH_BYTES + 64 * 1024
    counts = Counter(k for k, _ in records(responses))
    assert counts["analytics.session"] == counts["analytics.result"] == made.sessions == days
    assert counts["analytics.mood_checkin"] == days
    assert counts["analytics.statement"] == 2 * days
    assert counts["profile.message"] == made.messages == 2 * turns
    assert counts["profile.conversation"] == made.conversations
    assert counts["profile.xp_award"] == days
    assert counts["profile.device"] == 1 and counts["profile.consent"] == 3
    assert dict(responses[-1].summary.record_counts) == dict(counts)
    trials = sum(len(r.analytics[i].session.trials) for r in responses
                 for i in range(len(r.analytics)) if r.analytics[i].WhichOneof("record") == "session")
    assert trials == made.trials
    # The one-message export cannot carry it.
    with pytest.raises(grpc.RpcError) as info:
        await fam.client.privacy.ExportFamilyData(gw.ExportFamilyDataRequest(),
                                                  metadata=fam.client.md)
    assert info.value.code() not in (C.OK, C.INTERNAL, C.UNKNOWN)
