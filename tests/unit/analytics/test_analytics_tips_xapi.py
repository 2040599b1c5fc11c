from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from services.analytics.domain.tips import AGE_BANDS, age_band_for
from services.analytics.domain.types import SKILL_DOMAINS, FlagKind, Mood, MoodCheckIn, SkillDomain
from services.analytics.domain.xapi import (
    VERB_COMPLETED,
    VERB_EXPERIENCED,
    Actor,
    child_statements,
    iso_duration,
    pseudonymous_id,
)
from tests.unit.analytics.analytics_helpers import T0, make_result


def test_tips_count_and_coverage(tips):
    assert len(tips.tips) >= 40
    for domain in (*SKILL_DOMAINS, SkillDomain.MOOD):
        for band in AGE_BANDS:
            found = tips.list(domain, band)
            assert len(found) >= 2, (domain, band)
    for t in tips.tips:
        assert t.when_to_seek_help and len(t.body) > 80
    for kind in FlagKind:
        for band_age in (5 * 12, 8 * 12, 11 * 12):
            assert tips.for_flag(kind, SkillDomain.ATTENTION, band_age), kind


def test_tips_filters_and_bands(tips):
    assert age_band_for(4 * 12) == "4-6" and age_band_for(7 * 12) == "7-9" and age_band_for(12 * 12 + 11) == "10-12"
    assert tips.list() == list(tips.tips) == sorted(tips.tips, key=lambda t: t.tip_id)
    assert {t.age_band for t in tips.list(age_band="7-9")} == {"7-9"}
    assert {t.domain for t in tips.list(SkillDomain.NUMBER_SENSE)} == {SkillDomain.NUMBER_SENSE}
    picked = tips.for_flag(FlagKind.SKILL, SkillDomain.WORKING_MEMORY, 10 * 12)
    assert picked and all(t.domain == SkillDomain.WORKING_MEMORY and t.age_band == "10-12" for t in picked)


def test_xapi_statement_shape(catalog):
    key = b"server-secret"
    actor = Actor("https://avatario.app", pseudonymous_id("child-1", key))
    res = make_result(catalog, "go_nogo", T0, 0.3, sid="3f1d9a6c-9d0e-4a55-9d3d-4d8a1c0b7e21", minutes=2.5)
    mood = MoodCheckIn("c-1", "child-1", Mood.WORRIED, 4, T0 - timedelta(hours=3))
    statements = child_statements([res], [mood], catalog, actor)
    assert [s["verb"]["id"] for s in statements] == [VERB_EXPERIENCED, VERB_COMPLETED]  # oldest first
    checkin, session = statements
    assert session["actor"] == {"objectType": "Agent", "account": {
        "homePage": "https://avatario.app", "name": pseudonymous_id("child-1", key)}}
    assert "mbox" not in json.dumps(statements) and "child-1" not in json.dumps(statements)
    assert session["verb"]["display"] == {"en-US": "completed"}
    assert session["object"]["id"].endswith("/activities/games/go_nogo")
    assert session["object"]["definition"]["name"]["en-US"] == catalog.get("go_nogo", 1).title
    assert session["result"]["duration"] == "PT2M30S" and session["result"]["completion"] is True
    assert session["context"]["extensions"]["https://avatario.app/xapi/extensions/game-version"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", session["timestamp"])
    assert session["version"] == "1.0.3"
    assert checkin["result"]["response"] == "worried"
    assert statements == child_statements([res], [mood], catalog, actor)  # stable ids
    json.dumps(statements)  # plain JSON


def test_xapi_score_and_success(catalog, norms):
    from services.analytics.domain.types import MetricValue
    res = make_result(catalog, "number_compare", T0, 0.0)
    res = type(res)(**{**{f: getattr(res, f) for f in res.__slots__},
                       "metrics": (MetricValue("accuracy", 0.8, "proportion"),)})
    (st,) = child_statements([res], [], catalog, Actor("https://avatario.app", "abc"))
    assert st["result"]["score"] == {"scaled": 0.8, "raw": 80.0, "min": 0, "max": 100}
    assert st["result"]["success"] is True


@pytest.mark.parametrize("seconds, text", [(0, "PT0S"), (59.5, "PT59.5S"), (60, "PT1M"), (3725, "PT1H2M5S")])
def test_iso_duration(seconds, text):
    assert iso_duration(seconds) == text
