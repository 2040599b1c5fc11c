"""Protobuf <-> domain conversion."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from google.protobuf import struct_pb2

from avatario.common.v1 import play_pb2, report_pb2
from avatario_tools.simulation.evaluation import score_child
from avatario_tools.simulation.simulator import draw_child, simulate_child
from services.analytics import convert
from services.analytics.domain.catalog import load_catalog, validate_mood_checkin
from services.analytics.domain.norms import load_norms
from services.analytics.domain.report import build_report
from services.analytics.domain.tips import load_tips
from services.analytics.domain.types import Mood, MoodCheckIn, SkillDomain
from services.common.errors import InvalidArgument
from services.common.timeutil import to_ts

START = datetime(2025, 1, 6, tzinfo=UTC)
CATALOG = load_catalog()
NORMS = load_norms()


def _sim(seed: int = 3, weeks: int = 4):
    rng = random.Random(seed)
    return simulate_child(draw_child(rng, START), CATALOG, NORMS, START, weeks, rng)


def test_sessions_round_trip():
    sim = _sim()
    for s in sim.sessions[:10]:
        msg = convert.session_pb(s)
        back = convert.session_from_pb(msg, s.child_id)
        assert back.session_id == s.session_id and back.started_at == s.started_at
        for a, b in zip(back.trials, s.trials, strict=True):
            assert a.index == b.index and a.correct == b.correct
            assert a.reaction_time_ms == b.reaction_time_ms and a.presented_at == b.presented_at
            assert a.responded_at == b.responded_at
            assert a.stimulus == {k: (float(v) if isinstance(v, int) and not isinstance(v, bool)
                                      else [float(x) for x in v] if isinstance(v, list) else v)
                                  for k, v in b.stimulus.items()}


def test_struct_values_convert_to_plain_python():
    s = struct_pb2.Struct()
    s.update({"a": 1, "b": "x", "c": True, "d": [1, 2], "e": {"f": None}})
    assert convert.struct_dict(s) == {"a": 1.0, "b": "x", "c": True, "d": [1.0, 2.0],
                                      "e": {"f": None}}


def test_enums():
    for d in SkillDomain:
        if d != SkillDomain.UNSPECIFIED:
            assert convert.domain_from_pb(convert.domain_pb(d)) == d
    assert convert.domain_pb(SkillDomain.UNSPECIFIED) == 0
    assert convert.domain_from_pb(0) is None and convert.domain_from_pb(99) is None
    assert convert.mood_name_from_pb(play_pb2.MOOD_TIRED) == "TIRED"


def test_bad_moods_reach_domain_validation_as_named_violations():
    for value, text in ((0, "is required"), (42, "unknown mood")):
        c = convert.checkin_from_pb(play_pb2.MoodCheckIn(
            checkin_id="x", mood=value, intensity=2, recorded_at=to_ts(START)), "kid")
        try:
            validate_mood_checkin(c, CATALOG, START + timedelta(days=1))
        except InvalidArgument as exc:
            assert ("checkin.mood", text) in exc.violations
        else:
            raise AssertionError("expected InvalidArgument")


def test_checkin_and_result_messages():
    c = MoodCheckIn("id-1", "kid", Mood.WORRIED, 4, START)
    msg = convert.checkin_pb(c)
    assert msg.mood == play_pb2.MOOD_WORRIED and msg.recorded_at.ToDatetime(tzinfo=UTC) == START
    results = score_child(_sim(), CATALOG, NORMS)
    r = results[0]
    pb_r = convert.result_pb(r, xp_pending=True, received_at=START)
    assert pb_r.xp_pending and pb_r.xp_awarded == r.xp_awarded
    assert [m.name for m in pb_r.metrics] == sorted(m.name for m in r.metrics)


def test_a_report_converts_completely():
    sim = _sim(weeks=8)
    results = score_child(sim, CATALOG, NORMS)
    c = sim.child
    rep = build_report(c.child_id, c.birth_year, c.birth_month, results, sim.checkins,
                       START + timedelta(weeks=8), CATALOG, load_tips())
    msg = convert.report_pb(rep)
    assert not msg.HasField("avatar") and len(msg.domain_scores) == 6
    assert len(msg.weekly_trends) == 48 and len(msg.area_scores) == 3
    assert msg.summary.text == rep.summary.text
    for f, m in zip(rep.flags, msg.flags, strict=True):
        assert report_pb2.FlagLevel.Name(m.level) == "FLAG_LEVEL_" + f.level.value
        assert len(m.evidence) == len(f.evidence)


def test_games_carry_their_schema():
    g = convert.game_pb(CATALOG.latest("corsi_blocks"))
    seq = next(f for f in g.stimulus_fields if f.name == "sequence")
    assert seq.type == play_pb2.TRIAL_FIELD_TYPE_INTEGER_LIST
    assert g.domain == play_pb2.SKILL_DOMAIN_WORKING_MEMORY and g.max_trials >= g.min_trials


# Fuzzing found these: an out-of-range Timestamp made ToDatetime raise ValueError (INTERNAL).
def test_out_of_range_timestamps_are_invalid_arguments_naming_the_field():
    import pytest
    from google.protobuf.timestamp_pb2 import Timestamp

    msg = convert.session_pb(_sim().sessions[0])
    cases = [("session.started_at", lambda m: m.started_at, (2**63 - 1, 0)),
             ("session.ended_at", lambda m: m.ended_at, (1_700_000_000, 1_000_000_000)),
             ("session.trials[1].presented_at", lambda m: m.trials[1].presented_at,
              (-62_135_596_801, 0)),
             ("session.trials[0].responded_at", lambda m: m.trials[0].responded_at,
              (1_700_000_000, -1))]
    for name, where, (seconds, nanos) in cases:
        bad = play_pb2.GameSession()
        bad.CopyFrom(msg)
        where(bad).CopyFrom(Timestamp(seconds=seconds, nanos=nanos))
        with pytest.raises(InvalidArgument) as info:
            convert.session_from_pb(bad, bad.child_id)
        assert info.value.fields == [name]
    checkin = play_pb2.MoodCheckIn(checkin_id="x", mood=play_pb2.MOOD_HAPPY, intensity=3)
    checkin.recorded_at.CopyFrom(Timestamp(seconds=253_402_300_800))
    with pytest.raises(InvalidArgument) as info:
        convert.checkin_from_pb(checkin, "c")
    assert info.value.fields == ["checkin.recorded_at"]


def test_report_as_of_out_of_range_is_an_invalid_argument():
    import pytest
    from google.protobuf.timestamp_pb2 import Timestamp

    from avatario.analytics.v1 import analytics_pb2
    from services.analytics import validate

    request = analytics_pb2.GetChildReportRequest(as_of=Timestamp(seconds=-(2**63)))
    with pytest.raises(InvalidArgument) as info:
        validate.as_of(request, START)
    assert info.value.fields == ["as_of"]
