"""ExportChildData (raw sessions, results, check-ins, flags, xAPI) and erasure."""

from __future__ import annotations

import json
from datetime import timedelta

from google.protobuf import json_format

from avatario.analytics.v1 import analytics_pb2 as pb
from services.analytics.domain.types import SkillDomain
from services.analytics.domain.xapi import pseudonymous_id
from services.analytics.models import metadata
from tests.integration.analytics.support import (
    SIM_START,
    new_id,
    new_kid,
    rows_mentioning,
    session_request,
    simulate,
    submit_all,
)


async def _played(analytics, seed: int, family_id: str | None = None, weeks: int = 2, **kw):
    kid = new_kid(seed, family_id=family_id, **kw)
    sim = simulate(kid, seed=seed, weeks=weeks)
    await submit_all(analytics.stub, kid, sim)
    return kid, sim


async def test_export_has_everything_and_pseudonymous_xapi(analytics):
    kid, sim = await _played(analytics, 1)
    export = (await analytics.stub.ExportChildData(pb.ExportChildDataRequest(
        child=kid.ref))).export
    assert export.child_id == kid.ref.child_id
    sent = {s.session_id: session_request(kid, s).session for s in sim.sessions}
    for s in sent.values():
        s.child_id = kid.ref.child_id
    assert {s.session_id: s for s in export.sessions} == sent  # raw trials, as submitted
    assert sorted(r.session_id for r in export.results) == sorted(sent)
    assert all(r.received_at.seconds and r.metrics for r in export.results)
    assert len(export.mood_checkins) == len(sim.checkins)

    statements = [json_format.MessageToDict(s) for s in export.statements]
    assert len(statements) == len(sim.sessions) + len(sim.checkins)
    name = pseudonymous_id(kid.ref.child_id, analytics.settings.xapi_key_bytes())
    for st in statements:
        assert st["actor"] == {"objectType": "Agent", "account": {
            "homePage": analytics.settings.xapi_home_page, "name": name}}
        assert st["verb"]["id"].startswith("http://adlnet.gov/expapi/verbs/")
    text = json.dumps(statements)
    assert "mbox" not in text and "@" not in text
    assert kid.ref.child_id not in text and kid.ref.family_id not in text


async def test_erasing_a_child_leaves_no_row_that_mentions_it(analytics):
    kid, _ = await _played(analytics, 2, weeks=6, weakness=SkillDomain.ATTENTION,
                           weakness_z=-2.5)
    sibling, _ = await _played(analytics, 3, family_id=kid.ref.family_id, weeks=1)
    analytics.clock.set(SIM_START + timedelta(weeks=6))
    assert (await analytics.stub.ListFlags(pb.ListFlagsRequest(child=kid.ref))).flags
    needles = {kid.ref.child_id}
    assert set(await rows_mentioning(analytics.db, needles)) >= {
        "children", "game_sessions", "trials", "session_metrics", "mood_checkins", "play_days",
        "xp_outbox", "flag_states"}

    resp = await analytics.stub.EraseChildData(pb.EraseChildDataRequest(child=kid.ref))
    assert set(resp.deleted_rows) == {t.name for t in metadata.sorted_tables} - {"norm_versions"}
    assert resp.deleted_rows["children"] == 1 and resp.deleted_rows["trials"] > 100
    assert await rows_mentioning(analytics.db, needles) == {}
    assert "children" in await rows_mentioning(analytics.db, {sibling.ref.child_id})

    again = await analytics.stub.EraseChildData(pb.EraseChildDataRequest(child=kid.ref))
    assert sum(again.deleted_rows.values()) == 0
    export = (await analytics.stub.ExportChildData(pb.ExportChildDataRequest(
        child=kid.ref))).export
    assert not export.sessions and not export.statements and not export.flags
    rep = (await analytics.stub.GetChildReport(pb.GetChildReportRequest(child=kid.ref))).report
    assert not rep.enough_data


async def test_erasing_a_family_leaves_no_row_that_mentions_it(analytics):
    family = new_id()
    a, _ = await _played(analytics, 4, family_id=family, weeks=1)
    b, _ = await _played(analytics, 5, family_id=family, weeks=1)
    other, _ = await _played(analytics, 6, weeks=1)
    resp = await analytics.stub.EraseFamilyData(pb.EraseFamilyDataRequest(family_id=family))
    assert resp.deleted_rows["children"] == 2
    assert await rows_mentioning(analytics.db, {family, a.ref.child_id, b.ref.child_id}) == {}
    assert set(await rows_mentioning(analytics.db, {other.ref.family_id})) >= {
        "children", "game_sessions", "trials"}
    assert sum((await analytics.stub.EraseFamilyData(pb.EraseFamilyDataRequest(
        family_id=family))).deleted_rows.values()) == 0
