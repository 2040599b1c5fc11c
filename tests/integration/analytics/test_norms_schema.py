"""Platform norms recomputed from the population, and the schema matching the models."""

from __future__ import annotations

from datetime import timedelta

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario_tools.simulation.evaluation import score_child
from services.analytics import convert
from services.analytics.domain.report import build_report
from services.analytics.domain.tips import load_tips
from services.analytics.main import _renorm
from services.analytics.models import metadata
from services.analytics.settings import AnalyticsJobSettings
from tests.helpers import schema_diff
from tests.integration.analytics.conftest import start_analytics
from tests.integration.analytics.support import (
    CATALOG,
    SIM_START,
    new_kid,
    simulate,
    submit_all,
)

WEEKS = 3
AS_OF = SIM_START + timedelta(weeks=WEEKS)


async def _report(analytics, kid):
    req = pb.GetChildReportRequest(child=kid.ref)
    req.as_of.FromDatetime(AS_OF)
    return (await analytics.stub.GetChildReport(req)).report


async def test_platform_norms_replace_provisional_bands_and_apply_to_history(
        analytics, analytics_db_url, clock):
    kids = [new_kid(70 + i, age_years=(8, 8)) for i in range(3)]
    sims = [simulate(k, seed=70 + i, weeks=WEEKS) for i, k in enumerate(kids)]
    for k, s in zip(kids, sims, strict=True):
        await submit_all(analytics.stub, k, s)
    clock.set(AS_OF)
    before = await _report(analytics, kids[0])

    result = await _renorm(AnalyticsJobSettings(database_url=analytics_db_url,
                                                platform_norms_min_children=3))
    assert result["stored"] and result["platform_bands"] > 0 and result["children"] == 3
    assert not (await _renorm(AnalyticsJobSettings(
        database_url=analytics_db_url, platform_norms_min_children=3)))["stored"]  # unchanged

    # The running server adopts the stored table (other replicas within norms_refresh_s).
    assert await analytics.built.norms.refresh(analytics.db)
    table = analytics.built.norms.table
    assert table.version == result["version"]
    assert any(b.status == "platform" and b.n == 3 for e in table.entries for b in e.bands)

    after = await _report(analytics, kids[0])
    assert after.domain_scores != before.domain_scores  # stored results re-normed on read
    k, sim = kids[0], sims[0]
    want = build_report(k.ref.child_id, k.ref.birth_year, k.ref.birth_month,
                        score_child(sim, CATALOG, table), sim.checkins, AS_OF, CATALOG,
                        load_tips(), norms=table)
    expected = convert.report_pb(want)
    after.ClearField("flags")
    expected.ClearField("flags")  # first_seen_at comes from the earlier evaluation
    assert after == expected

    second = await start_analytics(analytics_db_url, clock, clear_first=False)
    try:
        assert second.built.norms.version == table.version
    finally:
        await second.close()


async def test_the_migrated_schema_matches_the_models(analytics_db_url):
    assert await schema_diff(analytics_db_url, metadata) == []
