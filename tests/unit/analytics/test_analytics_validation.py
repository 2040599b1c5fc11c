from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.analytics.domain.catalog import (
    CatalogError,
    correct_rule_text,
    derive_correct,
    load_catalog,
    validate_mood_checkin,
    validate_session,
)
from services.analytics.domain.metrics import compute_metrics
from services.analytics.domain.types import Mood, MoodCheckIn, Session, SkillArea, SkillDomain
from services.common.errors import InvalidArgument
from tests.unit.analytics.analytics_helpers import NOW, T0

GAMES = ["corsi_blocks", "go_nogo", "tower_planner", "number_compare", "emotion_faces", "friends_turns"]


def violations(session: Session, catalog, now=NOW) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as exc:
        validate_session(session, catalog, now)
    return dict(exc.value.violations)


def set_trial(session: Session, i: int, **changes) -> Session:
    trials = list(session.trials)
    trials[i] = replace(trials[i], **changes)
    return replace(session, trials=tuple(trials))


def test_catalog_covers_every_domain(catalog):
    domains = {g.domain for g in catalog.games}
    assert domains == set(SkillDomain) - {SkillDomain.MOOD, SkillDomain.UNSPECIFIED}
    assert {g.area for g in catalog.games} == set(SkillArea)
    assert catalog.mood.domain == SkillDomain.MOOD
    for g in catalog.games:
        assert g.primary_metrics and g.min_trials <= g.max_trials and g.xp_per_session > 0


def test_bad_catalog_refuses_to_load(tmp_path: Path):
    raw = json.loads((Path(__file__).parents[3] / "services/analytics/data/games.json").read_text())
    raw["games"][0]["primary_metrics"] = {"no_such_metric": 1.0}
    bad = tmp_path / "games.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(CatalogError):
        load_catalog(bad)


@pytest.mark.parametrize("game_id", GAMES)
def test_simulated_sessions_are_valid(game_id, make_valid, catalog):
    for seed in range(3):
        validate_session(make_valid(game_id, seed), catalog, NOW)


def test_unknown_game_and_version(make_valid, catalog):
    s = make_valid("go_nogo")
    assert "session.game_id" in violations(replace(s, game_id="chess"), catalog)
    v = violations(replace(s, game_version=7), catalog)
    assert "unknown version 7" in v["session.game_version"]


def test_trial_count_bounds(make_valid, catalog):
    s = make_valid("go_nogo")
    v = violations(replace(s, trials=s.trials[:10]), catalog)
    assert "between 24 and 120" in v["session.trials"]


def test_reaction_time_range(make_valid, catalog):
    s = make_valid("number_compare")
    assert "session.trials[3].reaction_time_ms" in violations(set_trial(s, 3, reaction_time_ms=45_000), catalog)
    assert "session.trials[4].reaction_time_ms" in violations(set_trial(s, 4, reaction_time_ms=0), catalog)
    # not responded: RT must be 0 and responded_at unset
    v = violations(set_trial(s, 5, responded=False), catalog)
    assert "session.trials[5].reaction_time_ms" in v and "session.trials[5].responded_at" in v
    # RT that disagrees with the timestamps
    t = s.trials[6]
    assert "session.trials[6].reaction_time_ms" in violations(
        set_trial(s, 6, reaction_time_ms=t.reaction_time_ms + 5000), catalog)


def test_timestamps_not_in_future_and_ordered(make_valid, catalog):
    s = make_valid("emotion_faces")
    v = violations(s, catalog, now=T0 - timedelta(hours=1))
    assert v["session.started_at"] == "must not be in the future"
    assert "session.ended_at" in v
    v = violations(replace(s, ended_at=s.started_at - timedelta(seconds=1)), catalog)
    assert "session.ended_at" in v
    earlier = s.trials[1].presented_at - timedelta(seconds=30)
    v = violations(set_trial(s, 2, presented_at=earlier, responded_at=earlier + timedelta(
        milliseconds=s.trials[2].reaction_time_ms)), catalog)
    assert v["session.trials[2].presented_at"] == "trials must be in time order"
    before = s.started_at - timedelta(seconds=5)
    assert "session.trials[0].presented_at" in violations(set_trial(s, 0, presented_at=before, responded_at=before + timedelta(
        milliseconds=s.trials[0].reaction_time_ms)), catalog)
    assert "session.started_at" in violations(replace(s, started_at=None), catalog)


def test_small_clock_skew_is_allowed(make_valid, catalog):
    s = make_valid("friends_turns")
    validate_session(s, catalog, now=s.ended_at - timedelta(seconds=60))


def test_indices_unique_and_contiguous(make_valid, catalog):
    s = make_valid("corsi_blocks")
    v = violations(set_trial(s, 2, index=1), catalog)
    assert "session.trials[2].index" in v
    v = violations(set_trial(s, 3, index=17), catalog)
    assert "must be 3" in v["session.trials[3].index"]


def test_schema_unknown_missing_wrong_type_out_of_range(make_valid, catalog):
    s = make_valid("number_compare")
    t = s.trials[0]
    v = violations(set_trial(s, 0, stimulus={**t.stimulus, "colour": "red"}), catalog)
    assert v["session.trials[0].stimulus.colour"] == "unknown field"
    v = violations(set_trial(s, 0, stimulus={k: x for k, x in t.stimulus.items() if k != "format"}), catalog)
    assert v["session.trials[0].stimulus.format"] == "is required"
    v = violations(set_trial(s, 0, stimulus={**t.stimulus, "left": "seven"}), catalog)
    assert v["session.trials[0].stimulus.left"] == "must be an integer"
    v = violations(set_trial(s, 0, stimulus={**t.stimulus, "left": 500}), catalog)
    assert v["session.trials[0].stimulus.left"] == "must be between 1 and 100"
    v = violations(set_trial(s, 0, response={"side": "up"}), catalog)
    assert "must be one of" in v["session.trials[0].response.side"]


def test_struct_numbers_as_floats_are_accepted(make_valid, catalog):
    s = make_valid("corsi_blocks")
    t = s.trials[0]
    floaty = {"sequence": [float(x) for x in t.stimulus["sequence"]], "span_length": float(t.stimulus["span_length"])}
    validate_session(set_trial(s, 0, stimulus=floaty), catalog, NOW)
    v = violations(set_trial(s, 0, stimulus={**floaty, "span_length": 2.5}), catalog)
    assert v["session.trials[0].stimulus.span_length"] == "must be an integer"
    v = violations(set_trial(s, 0, stimulus={**floaty, "sequence": [0, 12]}), catalog)
    assert "session.trials[0].stimulus.sequence[1]" in v


@pytest.mark.parametrize("game_id", ["corsi_blocks", "go_nogo", "tower_planner", "number_compare",
                                     "emotion_faces"])
def test_correct_is_derived_by_the_rule(make_valid, catalog, game_id):
    """A client's `correct` that disagrees with the game's rule is not an error: the
    server derives it (issue 17), and the metrics are those of the right flags."""
    s = make_valid(game_id)
    game = catalog.latest(game_id)
    wrong = s
    for i, t in enumerate(s.trials):
        wrong = set_trial(wrong, i, correct=not t.correct)
    validate_session(wrong, catalog, NOW)  # accepted
    fixed = derive_correct(wrong, game)
    assert [t.correct for t in fixed.trials] == [t.correct for t in s.trials]
    assert compute_metrics(fixed, game) == compute_metrics(s, game)
    assert derive_correct(s, game) is s  # nothing to change


def test_a_game_without_a_rule_keeps_correct(make_valid, catalog):
    s = make_valid("friends_turns")
    flipped = set_trial(s, 0, correct=not s.trials[0].correct)
    assert derive_correct(flipped, catalog.latest("friends_turns")) is flipped
    assert correct_rule_text(catalog.latest("friends_turns")) == ""


def test_responded_field_must_agree(make_valid, catalog):
    s = make_valid("go_nogo")
    t = s.trials[4]
    v = violations(set_trial(s, 4, response={"pressed": not t.responded}), catalog)
    assert "session.trials[4].response.pressed" in v


def test_all_violations_are_reported_at_once(make_valid, catalog):
    s = make_valid("emotion_faces")
    bad = set_trial(set_trial(s, 1, reaction_time_ms=-5), 2, stimulus={"emotion": "bored", "intensity": 9})
    v = violations(replace(bad, game_version=1, session_id=""), catalog)
    assert {"session.session_id", "session.trials[1].reaction_time_ms", "session.trials[2].stimulus.emotion",
            "session.trials[2].stimulus.intensity"} <= set(v)


def test_mood_checkin_validation(catalog):
    ok = MoodCheckIn("c1", "child-1", Mood.SAD, 3, T0)
    validate_mood_checkin(ok, catalog, NOW)
    with pytest.raises(InvalidArgument) as exc:
        validate_mood_checkin(replace(ok, intensity=9, recorded_at=NOW + timedelta(days=1), mood="BORED"),
                              catalog, NOW)
    assert set(exc.value.fields) == {"checkin.intensity", "checkin.recorded_at", "checkin.mood"}


def test_garbage_values_are_violations_not_crashes(make_valid, catalog):
    s = make_valid("corsi_blocks")
    v = violations(set_trial(s, 0, stimulus={"sequence": ["a", None], "span_length": {"x": 1}},
                             response={"sequence": "12"}), catalog)
    assert v["session.trials[0].stimulus.sequence"] == "must be a list of integers"
    assert v["session.trials[0].stimulus.span_length"] == "must be an integer"
    assert v["session.trials[0].response.sequence"] == "must be a list of integers"
    s = make_valid("go_nogo")
    v = violations(set_trial(s, 0, stimulus={"is_target": "yes"}, response={"pressed": 1}), catalog)
    assert v["session.trials[0].stimulus.is_target"] == "must be a boolean"
    assert v["session.trials[0].response.pressed"] == "must be a boolean"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(game_i=st.integers(0, len(GAMES) - 1), i=st.integers(0, 2), field=st.sampled_from(["stimulus", "response"]),
       key=st.sampled_from(["sequence", "is_target", "pressed", "left", "side", "emotion", "chosen", "choice",
                            "moves", "solved", "optimal_moves", "junk"]), value=json_values)
def test_fuzzed_trials_never_crash(make_valid, catalog, game_i, i, field, key, value):
    s = make_valid(GAMES[game_i])
    t = s.trials[i]
    s = set_trial(s, i, **{field: {**getattr(t, field), key: value}})
    try:
        validate_session(s, catalog, NOW)
    except InvalidArgument as exc:
        assert all(f.startswith("session.") for f in exc.fields)
        return
    compute_metrics(s, catalog.get(s.game_id, s.game_version))
