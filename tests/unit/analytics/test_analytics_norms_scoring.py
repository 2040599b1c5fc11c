from __future__ import annotations

from datetime import date, timedelta

import pytest

from services.analytics.domain.norms import (
    NormBand,
    NormEntry,
    NormTable,
    PublishedNorm,
    accumulate_population,
    check_norms_against_catalog,
    norm_metrics,
    norm_strength,
    percentile,
    platform_norms,
    population_moments,
    weakest,
    zscore,
)
from services.analytics.domain.scoring import (
    area_scores,
    domain_scores,
    play_time,
    sessions_in_last,
    streaks,
    to_scale,
    weekly_trends,
)
from services.analytics.domain.types import Metric, NormStrength, SkillArea, SkillDomain
from tests.unit.analytics.analytics_helpers import T0, make_result


def test_norms_file_matches_catalog(norms, catalog):
    check_norms_against_catalog(norms, catalog.games)
    for g in catalog.games:  # every primary metric is normed for every playable age
        for name in g.primary_metrics:
            for years in range(max(g.min_age_years, 4), g.max_age_years + 1):
                assert norms.lookup(g.game_id, name, years * 12 + 6) is not None, (g.game_id, years)


def test_lookup_interpolates_between_year_centres(norms):
    b7, b8 = norms.band("corsi_blocks", "corsi_span", 7), norms.band("corsi_blocks", "corsi_span", 8)
    at_centre = norms.lookup("corsi_blocks", "corsi_span", 7 * 12 + 6)
    assert at_centre.mean == pytest.approx(b7.mean + (b8.mean - b7.mean) * 0.5 / 12)
    between = norms.lookup("corsi_blocks", "corsi_span", 8 * 12)  # 8y0m, half way between centres
    assert b7.mean < between.mean < b8.mean
    assert norms.lookup("corsi_blocks", "corsi_span", 4 * 12).mean == norms.band("corsi_blocks", "corsi_span", 4).mean
    assert norms.lookup("corsi_blocks", "corsi_span", 3 * 12 + 11) is None
    assert norms.lookup("corsi_blocks", "corsi_span", 13 * 12) is None
    assert norms.lookup("corsi_blocks", "no_metric", 100) is None
    assert at_centre.status == "provisional" and at_centre.n == 0


def test_z_sign_and_percentile(norms, catalog):
    game = catalog.get("go_nogo", 1)
    age = 8 * 12 + 5
    rt = norms.lookup("go_nogo", "median_rt_ms", age)
    dp = norms.lookup("go_nogo", "dprime", age)
    normed = {m.name: m for m in norm_metrics(
        [Metric("median_rt_ms", rt.mean + rt.sd, "ms"), Metric("dprime", dp.mean + dp.sd, "d'"),
         Metric("criterion", 0.1, "c")], game, norms, age)}
    assert normed["median_rt_ms"].z_score == pytest.approx(-1.0)  # slower is worse
    assert normed["dprime"].z_score == pytest.approx(1.0)
    assert normed["dprime"].percentile == pytest.approx(84.13, abs=0.01)
    assert not normed["criterion"].normed and normed["criterion"].norm_source == ""
    assert normed["dprime"].norm_source == "provisional"
    assert zscore(1e9, dp, True) == 4.0 and percentile(0.0) == 50.0


def test_child_at_band_mean_scores_50(norms, catalog):
    age = 9 * 12 + 6
    ref = norms.lookup("corsi_blocks", "corsi_span", age)
    (m,) = norm_metrics([Metric("corsi_span", ref.mean, "items")], catalog.get("corsi_blocks", 1), norms, age)
    assert m.z_score == pytest.approx(0.0) and m.percentile == pytest.approx(50.0)
    results = [make_result(catalog, "corsi_blocks", T0 - timedelta(days=i), 0.0) for i in range(4)]
    wm = domain_scores(results, catalog, T0)[0]
    assert wm.domain == SkillDomain.WORKING_MEMORY and wm.enough_data
    assert wm.score == pytest.approx(50.0) and wm.percentile == pytest.approx(50.0)


# A made-up paper for the schema tests only (not in norms.json).
_PAPER = PublishedNorm(citation="Test, A. (2000). A test paper. Journal of Tests, 1, 1-2", table="Table 2",
                       sample_size=120, ages="7 to 8 years", transfers=True,
                       alignment="Same task, items and scoring as the game.")


def _entry(status: str) -> NormEntry:
    n = 60 if status == "published" else 0
    return NormEntry(game_id="go_nogo", metric="dprime", status=status, source=status,
                     published_norms=(_PAPER,) if status == "published" else (),
                     bands=(NormBand(age_years=7, mean=2.0, sd=0.7, n=n), NormBand(age_years=8, mean=2.2, sd=0.7, n=n)))


def test_published_norms_need_a_citation_that_transfers():
    bands = (NormBand(age_years=7, mean=2.0, sd=0.7, n=60),)
    with pytest.raises(ValueError, match="needs a cited paper"):
        NormEntry(game_id="go_nogo", metric="dprime", status="published", source="x", bands=bands)
    elsewhere = _PAPER.model_copy(update={"transfers": False})
    with pytest.raises(ValueError, match="needs a cited paper"):
        NormEntry(game_id="go_nogo", metric="dprime", status="published", source="x", bands=bands,
                  published_norms=(elsewhere,))
    with pytest.raises(ValueError, match="sample size n"):
        NormEntry(game_id="go_nogo", metric="dprime", status="published", source="x", published_norms=(_PAPER,),
                  bands=(NormBand(age_years=7, mean=2.0, sd=0.7, n=0),))
    with pytest.raises(ValueError, match="makes the entry published"):
        NormEntry(game_id="go_nogo", metric="dprime", status="provisional", source="x", bands=bands,
                  published_norms=(_PAPER,))


def test_shipped_norms_say_what_published_norms_exist_for_each_game(catalog, norms):
    """Every game's primary metric says which published child norms exist for its
    construct and whether they transfer; none do yet, so every band is provisional."""
    for game in catalog.games:
        for name in game.primary_metrics:
            entry = next(e for e in norms.entries if (e.game_id, e.metric) == (game.game_id, name))
            assert len(entry.published_review) > 40, entry
            assert entry.status == "provisional" and all(b.n == 0 for b in entry.bands)
            for paper in entry.published_norms:
                assert not paper.transfers and paper.alignment.startswith("Not transferred")
                assert paper.ages and (paper.sample_size or paper.doi or "http" in paper.citation
                                       or ".org" in paper.citation)
    assert sum(len(e.published_norms) for e in norms.entries) >= 6


def test_norm_strength():
    assert norm_strength("provisional", 0) == NormStrength.PROVISIONAL
    assert norm_strength("platform", 199) == NormStrength.GATHERING
    assert norm_strength("platform", 200) == NormStrength.ESTABLISHED
    assert norm_strength("platform", 60, min_children=50) == NormStrength.ESTABLISHED
    assert norm_strength("published", 60) == NormStrength.ESTABLISHED
    assert norm_strength("", 0) == NormStrength.NONE
    assert weakest([NormStrength.ESTABLISHED, NormStrength.GATHERING]) == NormStrength.GATHERING
    assert weakest([]) == NormStrength.NONE


def test_population_moments_decompose_variance():
    # Two sessions per child; child means 1 and 3 -> between var of means 2, within var 2 (values +-1)
    values = {"a": [0.0, 2.0], "b": [2.0, 4.0]}
    mean, sd = population_moments(values)
    # var(means) = 2, minus within/n = 2/2 = 1 -> between 1; single session var = 1 + 2 = 3
    assert mean == pytest.approx(2.0) and sd == pytest.approx(3 ** 0.5)


def test_platform_norms_supersede_provisional_only():
    base = NormTable("v1", [_entry("provisional")])
    pop = accumulate_population(
        [("go_nogo", "dprime", 7 * 12 + 3, f"c{i}", 2.5 + (i % 5) * 0.1) for i in range(60)]
        + [("go_nogo", "dprime", 8 * 12 + 3, f"d{i}", 1.0) for i in range(10)])
    new = platform_norms(pop, base, min_children=50)
    b7, b8 = new.band("go_nogo", "dprime", 7), new.band("go_nogo", "dprime", 8)
    assert b7.status == "platform" and b7.n == 60 and b7.mean == pytest.approx(2.7)
    assert b8.status is None and b8.mean == 2.2  # 10 children: not enough, provisional kept
    assert new.lookup("go_nogo", "dprime", 7 * 12).status == "platform"
    published = NormTable("v1", [_entry("published")])
    assert platform_norms(pop, published, min_children=50).band("go_nogo", "dprime", 7).mean == 2.0
    assert platform_norms(pop, published, min_children=50, override_published=True).band(
        "go_nogo", "dprime", 7).status == "platform"


def test_scale():
    assert to_scale(0) == 50 and to_scale(-1) == 35 and to_scale(1) == 65
    assert to_scale(-5) == 0 and to_scale(5) == 100


def test_domain_score_needs_three_sessions_in_window(catalog):
    old = [make_result(catalog, "go_nogo", T0 - timedelta(days=70 + i), -3.0) for i in range(5)]
    recent = [make_result(catalog, "go_nogo", T0 - timedelta(days=i), 0.5) for i in range(2)]
    att = domain_scores(old + recent, catalog, T0)[1]
    assert not att.enough_data and att.note == "Not enough data yet: 2 of 3 sessions needed."
    more = recent + [make_result(catalog, "go_nogo", T0 - timedelta(days=3), 0.5)]
    att = domain_scores(old + more, catalog, T0)[1]
    assert att.enough_data and att.z_score == pytest.approx(0.5) and att.score == pytest.approx(57.5)
    # only the last 8 sessions count
    many = [make_result(catalog, "go_nogo", T0 - timedelta(days=i), -1.0 if i < 8 else 2.0) for i in range(12)]
    assert domain_scores(many, catalog, T0)[1].z_score == pytest.approx(-1.0)
    # unnormed sessions do not count
    unnormed = [make_result(catalog, "go_nogo", T0 - timedelta(days=i), None) for i in range(5)]
    assert not domain_scores(unnormed, catalog, T0)[1].enough_data


def test_area_rollup(catalog):
    res = [make_result(catalog, g, T0 - timedelta(days=i), z) for g, z in (("corsi_blocks", 1.0), ("go_nogo", 0.0),
                                                                           ("friends_turns", -1.0)) for i in range(3)]
    areas = {a.area: a for a in area_scores(domain_scores(res, catalog, T0))}
    assert areas[SkillArea.COGNITIVE].enough_data and areas[SkillArea.COGNITIVE].score == pytest.approx(57.5)
    assert areas[SkillArea.SOCIAL].score == pytest.approx(35.0)
    assert not areas[SkillArea.EMOTIONAL].enough_data


def test_weekly_trends_play_time_streaks(catalog):
    as_of = T0  # a Monday
    res = [make_result(catalog, "go_nogo", as_of - timedelta(days=d, hours=1), 0.0, minutes=3) for d in (0, 1, 2, 8, 20)]
    trends = weekly_trends(res, catalog, as_of)
    assert len(trends) == 8 * 6
    att = [t for t in trends if t.domain == SkillDomain.ATTENTION]
    assert [t.week_start.weekday() for t in att] == [0] * 8
    assert [t.session_count for t in att[-3:]] == [1, 2, 1] and att[-2].score == pytest.approx(50.0)
    assert not att[0].enough_data and att[0].session_count == 0
    daily, weekly = play_time(res, as_of)
    assert len(daily) == 14 and len(weekly) == 8
    assert sum(p.sessions for p in daily) == 4 and sum(p.seconds for p in daily) == 4 * 180
    assert weekly[-2].sessions == 2 and weekly[-2].seconds == 360
    assert sessions_in_last(res, as_of, 28) == 5


def test_streaks():
    d = date(2025, 3, 10)
    days = {d - timedelta(days=i) for i in (1, 2, 3, 7, 8, 9, 10, 11)}
    assert streaks(days, d) == (3, 5)  # played yesterday: still alive
    assert streaks(days, d + timedelta(days=1)) == (0, 5)
    assert streaks(set(), d) == (0, 0)
