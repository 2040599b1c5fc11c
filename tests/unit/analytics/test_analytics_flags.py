from __future__ import annotations

from datetime import timedelta

import pytest

from services.analytics.domain.flags import FlagPolicy, evaluate_flags, flag_id, poisson_cdf
from services.analytics.domain.tips import age_band_for
from services.analytics.domain.types import (
    FlagKind,
    FlagLevel,
    Mood,
    MoodCheckIn,
    NormStrength,
    SkillDomain,
)
from tests.unit.analytics.analytics_helpers import T0, make_result

AGE = 8 * 12 + 4
AS_OF = T0
# Platform norms from enough children per age band: flags may say all they find.
ESTABLISHED = {"source": "platform", "n": 200}


def skill(catalog, tips, zs, days_apart=3.0, game="go_nogo", policy=FlagPolicy(), **kw):
    """Evaluate a child with sessions of `game` at z-scores `zs` (oldest first)."""
    n = len(zs)
    res = [make_result(catalog, game, AS_OF - timedelta(days=days_apart * (n - 1 - i), hours=1), z, sid=f"s{i}", **kw)
           for i, z in enumerate(zs)]
    ev = evaluate_flags("child-1", res, [], catalog, tips, AGE, AS_OF, policy)
    flags = [f for f in ev.flags if f.kind == FlagKind.SKILL]
    status = next(s for s in ev.statuses if s.domain == catalog.latest(game).domain)
    return (flags[0].level if flags else None), status, flags


@pytest.mark.parametrize("zs, days, expected", [
    ([-1.0, -1.0, -1.0], 3, None),                                  # z >= -1: on track
    ([-1.05, -1.05, -1.05], 3, FlagLevel.KEEP_AN_EYE),              # just below -1, persisting
    ([-3.0, -0.3, -0.3], 3, None),                                  # mean -1.2 but only one low session
    ([-1.5, -1.5, -1.5], 3.5, FlagLevel.DISCUSS_WITH_PROFESSIONAL),  # -1.5 over 3 sessions across 7 days
    ([-1.5, -1.5, -1.5], 3.0, FlagLevel.KEEP_AN_EYE),               # same, but only 6 days
    ([-1.49, -1.49, -1.49, -1.49], 5, FlagLevel.KEEP_AN_EYE),       # not quite -1.5
    ([-2.0, -2.0, -2.0], 0.1, FlagLevel.DISCUSS_WITH_PROFESSIONAL),  # -2 with enough evidence, same day
])
def test_skill_bands_at_the_boundaries(catalog, tips, zs, days, expected):
    level, status, _ = skill(catalog, tips, zs, days, **ESTABLISHED)
    assert level == expected
    assert status.state == {None: "on_track", FlagLevel.KEEP_AN_EYE: "keep_an_eye",
                            FlagLevel.DISCUSS_WITH_PROFESSIONAL: "discuss"}[expected]


def test_no_flag_without_enough_evidence(catalog, tips):
    level, status, _ = skill(catalog, tips, [-3.5, -3.5])
    assert level is None and status.state == "not_enough_data"
    assert status.note == "Not enough data yet: 2 of 3 sessions needed."


def test_no_flag_without_norms(catalog, tips):
    level, status, _ = skill(catalog, tips, [None] * 5)
    assert level is None and status.state == "no_norms"
    level, status, _ = skill(catalog, tips, [-3.0] * 5, policy=FlagPolicy(allow_provisional_norms=False))
    assert level is None and status.state == "no_norms"
    level, _, _ = skill(catalog, tips, [-3.0] * 5, policy=FlagPolicy(allow_provisional_norms=False),
                        source="published")
    assert level == FlagLevel.DISCUSS_WITH_PROFESSIONAL


def test_skill_flag_content(catalog, tips):
    _, _, (flag,) = skill(catalog, tips, [-2.2, -2.5, -1.9, -2.4], game="emotion_faces", **ESTABLISHED)
    assert flag.domain == SkillDomain.EMOTION_RECOGNITION and flag.session_count == 4
    assert flag.flag_id == flag_id("child-1", FlagKind.SKILL, SkillDomain.EMOTION_RECOGNITION)
    assert [e.session_id for e in flag.evidence] == ["s0", "s1", "s2", "s3"]
    assert [e.z_score for e in flag.evidence] == [-2.2, -2.5, -1.9, -2.4]
    assert all(e.metric == "accuracy" for e in flag.evidence)
    assert flag.first_seen_at == flag.evidence[0].observed_at and flag.updated_at == AS_OF
    assert flag.tips and all(t.domain == SkillDomain.EMOTION_RECOGNITION and t.age_band == age_band_for(AGE)
                             for t in flag.tips)
    text = (flag.headline + " " + flag.explanation).lower()
    assert "not a diagnosis" in text and "pediatrician" in text and "provisional" not in text
    assert "your child has" not in text and "disorder" not in text
    assert flag.norm_strength == NormStrength.ESTABLISHED


@pytest.mark.parametrize("zs, days", [
    ([-1.05, -1.05, -1.05], 3),     # keep-an-eye evidence
    ([-1.5, -1.5, -1.5], 3.5),      # persistent discuss evidence
    ([-4.0] * 8, 1),                # as low as it gets
])
def test_provisional_norms_give_only_an_early_signal(catalog, tips, zs, days):
    """Against expert estimates (n = 0) a low result is an early signal with tips and
    never a referral, however low (issue 17)."""
    level, status, (flag,) = skill(catalog, tips, zs, days, source="provisional")
    assert level == FlagLevel.EARLY_SIGNAL and status.state == "early_signal"
    assert status.norm_strength == NormStrength.PROVISIONAL and flag.norm_strength == NormStrength.PROVISIONAL
    text = (flag.headline + " " + flag.explanation).lower()
    assert "early signal" in text and "norms are still being gathered" in text and "provisional" in text
    assert "not a diagnosis" in text and flag.tips
    for referral in ("pediatrician", "teacher", "professional", "worth discussing", "doctor"):
        assert referral not in text


def test_a_mix_of_norms_is_as_strong_as_its_weakest(catalog, tips):
    res = [make_result(catalog, "go_nogo", AS_OF - timedelta(days=3 * (4 - i), hours=1), -2.5, sid=f"s{i}",
                       **(ESTABLISHED if i else {"source": "provisional"})) for i in range(5)]
    ev = evaluate_flags("child-1", res, [], catalog, tips, AGE, AS_OF)
    (flag,) = [f for f in ev.flags if f.kind == FlagKind.SKILL]
    assert flag.level == FlagLevel.EARLY_SIGNAL


@pytest.mark.parametrize("n, min_n, expected", [
    (199, 200, FlagLevel.KEEP_AN_EYE),                 # platform norms still gathering: no referral
    (200, 200, FlagLevel.DISCUSS_WITH_PROFESSIONAL),   # the default minimum reached
    (80, 50, FlagLevel.DISCUSS_WITH_PROFESSIONAL),     # a configured, lower minimum
    (300, 500, FlagLevel.KEEP_AN_EYE),                 # a configured, higher minimum
])
def test_referrals_need_platform_norms_from_enough_children(catalog, tips, n, min_n, expected):
    level, status, (flag,) = skill(catalog, tips, [-2.5] * 4, policy=FlagPolicy(established_min_n=min_n),
                                   source="platform", n=n)
    assert level == expected
    assert status.norm_strength == (NormStrength.ESTABLISHED if n >= min_n else NormStrength.GATHERING)
    if expected == FlagLevel.KEEP_AN_EYE:
        text = flag.explanation.lower()
        assert "fewer children" in text and "pediatrician" not in text


def test_published_norms_support_a_referral(catalog, tips):
    level, status, _ = skill(catalog, tips, [-2.5] * 4, source="published", n=376)
    assert level == FlagLevel.DISCUSS_WITH_PROFESSIONAL and status.norm_strength == NormStrength.ESTABLISHED


def checkins(moods: list[Mood], days_apart: float) -> list[MoodCheckIn]:
    n = len(moods)
    return [MoodCheckIn(f"c{i}", "child-1", m, 3, AS_OF - timedelta(days=days_apart * (n - 1 - i), hours=2))
            for i, m in enumerate(moods)]


def mood_level(catalog, tips, moods, days_apart):
    ev = evaluate_flags("child-1", [], checkins(moods, days_apart), catalog, tips, AGE, AS_OF)
    flags = [f for f in ev.flags if f.kind == FlagKind.LOW_MOOD]
    return (flags[0] if flags else None), ev.mood_state


def test_low_mood_rules(catalog, tips):
    S, H = Mood.SAD, Mood.HAPPY
    spread = [S, H, Mood.WORRIED, H, Mood.ANGRY, H, S, H, S, S]
    flag, state = mood_level(catalog, tips, spread, 1.6)
    assert flag.level == FlagLevel.DISCUSS_WITH_PROFESSIONAL and state == "discuss"  # 6 of 10 over 14.4 days
    assert flag.domain == SkillDomain.MOOD and flag.evidence[0].metric == "negative_mood_share"
    assert "not a diagnosis" in flag.explanation and flag.tips
    flag, _ = mood_level(catalog, tips, spread, 1.4)  # only 12.6 days
    assert flag.level == FlagLevel.KEEP_AN_EYE
    flag, _ = mood_level(catalog, tips, [S, H, S, H, S, H, H, H], 1.2)  # 3 of 8 (37.5 %) over 4.8 days
    assert flag is None
    flag, _ = mood_level(catalog, tips, [S, H, H, S, H, H, H, S], 1.2)  # 3 of 8 over 8.4 days
    assert flag.level == FlagLevel.KEEP_AN_EYE
    flag, state = mood_level(catalog, tips, [S] * 5, 3)  # 5 check-ins: not enough
    assert flag is None and state == "not_enough_data"
    flag, state = mood_level(catalog, tips, [H, Mood.CALM, Mood.OKAY, Mood.TIRED, H, H], 3)
    assert flag is None and state == "no_signal"


def play_history(catalog, per_week: int, weeks: int, recent: int):
    out = []
    for w in range(weeks):
        for k in range(per_week):
            out.append(make_result(catalog, "friends_turns", AS_OF - timedelta(days=14 + 7 * w + k, hours=3), 0.0,
                                   sid=f"b{w}-{k}"))
    out += [make_result(catalog, "friends_turns", AS_OF - timedelta(days=1 + i), 0.0, sid=f"r{i}") for i in range(recent)]
    return out


def test_engagement_drop(catalog, tips):
    def kinds(res, moods=()):
        ev = evaluate_flags("child-1", res, list(moods), catalog, tips, AGE, AS_OF)
        return {f.kind: f.level for f in ev.flags}

    assert kinds(play_history(catalog, 4, 6, 1))[FlagKind.ENGAGEMENT_DROP] == FlagLevel.KEEP_AN_EYE
    assert FlagKind.ENGAGEMENT_DROP not in kinds(play_history(catalog, 4, 6, 6))  # 6 of ~8 expected: fine
    assert FlagKind.ENGAGEMENT_DROP not in kinds(play_history(catalog, 4, 3, 0))  # too little history
    assert FlagKind.ENGAGEMENT_DROP not in kinds(play_history(catalog, 1, 6, 0))  # rare players
    low = checkins([Mood.SAD, Mood.HAPPY] * 5, 1.6)
    assert kinds(play_history(catalog, 4, 6, 1), low)[FlagKind.ENGAGEMENT_DROP] == FlagLevel.DISCUSS_WITH_PROFESSIONAL
    assert poisson_cdf(1, 8.0) == pytest.approx(9 * 2.718281828 ** -8, rel=1e-6)


def test_performance_drop(catalog, tips):
    def history(game, prefix):
        base = [make_result(catalog, game, AS_OF - timedelta(days=16 + 4 * i), z, sid=f"{prefix}b{i}")
                for i, z in enumerate([0.3, -0.2, 0.1, 0.4, 0.0, -0.1])]
        recent = [make_result(catalog, game, AS_OF - timedelta(days=1 + 3 * i), z, sid=f"{prefix}r{i}")
                  for i, z in enumerate([-1.4, -1.1, -1.6])]
        return base + recent

    ev = evaluate_flags("child-1", history("number_compare", "n"), [], catalog, tips, AGE, AS_OF)
    (drop,) = [f for f in ev.flags if f.kind == FlagKind.PERFORMANCE_DROP]
    assert drop.level == FlagLevel.KEEP_AN_EYE and drop.domain == SkillDomain.NUMBER_SENSE
    assert drop.evidence[0].metric == "baseline_mean_z" and drop.session_count == 3
    both = history("number_compare", "n") + history("corsi_blocks", "c")
    ev = evaluate_flags("child-1", both, [], catalog, tips, AGE, AS_OF)
    drops = [f for f in ev.flags if f.kind == FlagKind.PERFORMANCE_DROP]
    # A drop's size is measured in the norms' SD: provisional norms only guess it.
    assert len(drops) == 2 and all(f.level == FlagLevel.KEEP_AN_EYE for f in drops)
    assert all(f.norm_strength == NormStrength.PROVISIONAL for f in drops)


def test_performance_drops_in_several_domains_with_established_norms(catalog, tips):
    def history(game, prefix):
        base = [make_result(catalog, game, AS_OF - timedelta(days=16 + 4 * i), z, sid=f"{prefix}b{i}", **ESTABLISHED)
                for i, z in enumerate([0.3, -0.2, 0.1, 0.4, 0.0, -0.1])]
        recent = [make_result(catalog, game, AS_OF - timedelta(days=1 + 3 * i), z, sid=f"{prefix}r{i}", **ESTABLISHED)
                  for i, z in enumerate([-1.4, -1.1, -1.6])]
        return base + recent

    both = history("number_compare", "n") + history("corsi_blocks", "c")
    ev = evaluate_flags("child-1", both, [], catalog, tips, AGE, AS_OF)
    drops = [f for f in ev.flags if f.kind == FlagKind.PERFORMANCE_DROP]
    assert len(drops) == 2 and all(f.level == FlagLevel.DISCUSS_WITH_PROFESSIONAL for f in drops)
    assert ev.flags[0].level == FlagLevel.DISCUSS_WITH_PROFESSIONAL  # most serious first
