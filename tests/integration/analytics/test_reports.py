"""Reports, flags and summaries through the service, on simulated children.

The service reads a bounded window and maintained aggregates; its report must
equal the domain's `build_report` over the child's whole history.
"""

from __future__ import annotations

from datetime import timedelta

import grpc

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.common.v1 import report_pb2
from avatario_tools.simulation.evaluation import relabelled_as_platform, score_child
from services.analytics import convert
from services.analytics.domain.report import build_report
from services.analytics.domain.tips import load_tips
from services.analytics.domain.types import SkillDomain
from services.analytics.models import FlagState
from tests.integration.analytics.conftest import start_analytics
from tests.integration.analytics.support import (
    CATALOG,
    NORMS,
    SIM_END,
    SIM_START,
    fails,
    new_kid,
    simulate,
    submit_all,
)

C = grpc.StatusCode
TIPS = load_tips()
DISCUSS = report_pb2.FLAG_LEVEL_DISCUSS_WITH_PROFESSIONAL
EARLY = report_pb2.FLAG_LEVEL_EARLY_SIGNAL


def expected_report(kid, sim, as_of, norms=NORMS) -> report_pb2.ChildReport:
    results = score_child(sim, CATALOG, norms)
    rep = build_report(kid.ref.child_id, kid.ref.birth_year, kid.ref.birth_month, results,
                       sim.checkins, as_of, CATALOG, TIPS, norms=norms)
    return convert.report_pb(rep)


async def report(stub, kid, as_of=None) -> report_pb2.ChildReport:
    req = pb.GetChildReportRequest(child=kid.ref)
    if as_of is not None:
        req.as_of.FromDatetime(as_of)
    return (await stub.GetChildReport(req)).report


async def test_a_child_without_play_has_not_enough_data(analytics):
    kid = new_kid(11)
    rep = await report(analytics.stub, kid)
    assert not rep.enough_data and rep.not_enough_data_reason.startswith("Not enough data yet")
    assert len(rep.domain_scores) == 6 and not any(s.enough_data for s in rep.domain_scores)
    assert all(s.note.startswith("Not enough data yet") for s in rep.domain_scores)
    # Each domain says how far its comparison can be trusted before any play.
    assert all(s.norm_strength == report_pb2.NORM_STRENGTH_PROVISIONAL and "provisional" in s.norm_note
               for s in rep.domain_scores)
    assert not rep.flags and rep.current_streak_days == 0 and rep.longest_streak_days == 0
    assert "has not played" in rep.summary.text
    assert not (await analytics.stub.ListFlags(pb.ListFlagsRequest(child=kid.ref))).flags
    summary = (await analytics.stub.GetChildSummary(pb.GetChildSummaryRequest(
        child=kid.ref))).summary
    assert summary.child_id == kid.ref.child_id and summary.sessions_last_four_weeks == 0


async def test_weak_attention_is_flagged_and_the_report_matches_the_domain(analytics):
    kid = new_kid(5, age_years=(7, 7), weakness=SkillDomain.ATTENTION, weakness_z=-2.5)
    sim = simulate(kid, seed=5)
    await submit_all(analytics.stub, kid, sim)

    rep = await report(analytics.stub, kid)  # as of now (the clock)
    want = expected_report(kid, sim, SIM_END)
    got = await report(analytics.stub, kid, SIM_END)
    assert got == want
    assert got.enough_data and got.longest_streak_days >= got.current_streak_days
    att = next(s for s in got.domain_scores
               if s.domain == convert.domain_pb(SkillDomain.ATTENTION))
    assert att.enough_data and att.score < 35
    assert att.norm_strength == report_pb2.NORM_STRENGTH_PROVISIONAL and att.norm_children == 0
    flag = next(f for f in got.flags if f.kind == report_pb2.FLAG_KIND_SKILL
                and f.domain == convert.domain_pb(SkillDomain.ATTENTION))
    # The shipped norms are provisional: an early signal with tips, never a referral.
    assert flag.level == EARLY and flag.tips and flag.evidence
    assert flag.norm_strength == report_pb2.NORM_STRENGTH_PROVISIONAL
    assert "not a diagnosis" in flag.explanation and "pediatrician" not in flag.explanation
    assert "attention (early signal, norms still being gathered)" in got.summary.watch_areas
    assert not [f for f in got.flags if f.kind == report_pb2.FLAG_KIND_SKILL and f.level == DISCUSS]

    # ListFlags pages through the same flags, most serious first.
    flags, token = [], ""
    while True:
        page = await analytics.stub.ListFlags(pb.ListFlagsRequest(
            child=kid.ref, page_size=1, page_token=token))
        flags += page.flags
        token = page.next_page_token
        if not token:
            break
    assert [f.flag_id for f in flags] == [f.flag_id for f in rep.flags]
    summary = (await analytics.stub.GetChildSummary(pb.GetChildSummaryRequest(
        child=kid.ref))).summary
    assert summary == rep.summary

    # first_seen_at stays put while the flag stays active, though the window moves on.
    first_seen = flag.first_seen_at
    analytics.clock.advance(days=3)
    later = await analytics.stub.ListFlags(pb.ListFlagsRequest(child=kid.ref))
    again = next(f for f in later.flags if f.flag_id == flag.flag_id)
    assert again.first_seen_at == first_seen
    async with analytics.db.session() as s:
        state = await s.get(FlagState, flag.flag_id)
    assert state.child_id == kid.ref.child_id and state.resolved_at is None


async def test_referrals_follow_the_norms_in_use(analytics_db_url, profile_db_url, clock):
    """With platform norms from 250 children per band the same weakness is worth
    discussing; a service that requires 300 children says only "keep an eye"."""
    kid = new_kid(5, age_years=(7, 7), weakness=SkillDomain.ATTENTION, weakness_z=-2.5)
    sim = simulate(kid, seed=5)
    platform = relabelled_as_platform(NORMS, 250)
    for min_children, level in ((200, DISCUSS), (300, report_pb2.FLAG_LEVEL_KEEP_AN_EYE)):
        run = await start_analytics(analytics_db_url, clock, profile_db_url=profile_db_url,
                                    flag_min_norm_children=min_children)
        try:
            run.built.norms.table = platform  # as if adopted from a stored platform table
            await submit_all(run.stub, kid, sim)
            got = await report(run.stub, kid, SIM_END)
            if min_children == 200:
                assert got == expected_report(kid, sim, SIM_END, platform)
            att = next(s for s in got.domain_scores if s.domain == convert.domain_pb(SkillDomain.ATTENTION))
            assert att.norm_children == 250 and "250" in att.norm_note
            assert att.norm_strength == (report_pb2.NORM_STRENGTH_ESTABLISHED if min_children == 200
                                         else report_pb2.NORM_STRENGTH_GATHERING)
            flag = next(f for f in got.flags if f.kind == report_pb2.FLAG_KIND_SKILL
                        and f.domain == convert.domain_pb(SkillDomain.ATTENTION))
            assert flag.level == level
        finally:
            await run.close()


async def test_a_report_in_the_past_reads_its_own_window(analytics):
    kid = new_kid(21, age_years=(9, 9))
    sim = simulate(kid, seed=21, weeks=6)
    await submit_all(analytics.stub, kid, sim)
    as_of = SIM_START + timedelta(weeks=3, hours=12)
    assert await report(analytics.stub, kid, as_of) == expected_report(kid, sim, as_of)


async def test_typical_children_get_no_worth_discussing_skill_flag(analytics):
    for seed in (31, 32):
        kid = new_kid(seed, age_years=(6, 10))
        sim = simulate(kid, seed=seed, weeks=6)
        await submit_all(analytics.stub, kid, sim)
        rep = await report(analytics.stub, kid, SIM_START + timedelta(weeks=6))
        assert rep.enough_data
        assert not [f for f in rep.flags if f.kind == report_pb2.FLAG_KIND_SKILL
                    and f.level == DISCUSS], seed


async def test_report_bad_input_and_other_families(analytics):
    kid = new_kid(41)
    await submit_all(analytics.stub, kid, simulate(kid, seed=41, weeks=1))
    thief = new_kid(41, child_id=kid.ref.child_id)
    for call in (
        analytics.stub.GetChildReport(pb.GetChildReportRequest(child=thief.ref)),
        analytics.stub.ListFlags(pb.ListFlagsRequest(child=thief.ref)),
        analytics.stub.GetChildSummary(pb.GetChildSummaryRequest(child=thief.ref)),
        analytics.stub.ExportChildData(pb.ExportChildDataRequest(child=thief.ref)),
        analytics.stub.EraseChildData(pb.EraseChildDataRequest(child=thief.ref)),
    ):
        await fails(call, C.NOT_FOUND)
    future = pb.GetChildReportRequest(child=kid.ref)
    future.as_of.FromDatetime(analytics.clock.now + timedelta(days=1))
    await fails(analytics.stub.GetChildReport(future), C.INVALID_ARGUMENT, "as_of")
