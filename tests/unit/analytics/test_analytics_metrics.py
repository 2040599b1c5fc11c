from __future__ import annotations

import pytest

from services.analytics.domain.catalog import validate_session
from services.analytics.domain.metrics import compute_metrics, dprime_loglinear
from tests.unit.analytics.analytics_helpers import NOW, seq, session_of, trial


def values(session, catalog) -> dict[str, float]:
    validate_session(session, catalog, NOW)  # hand-built sessions are valid too
    game = catalog.get(session.game_id, session.game_version)
    return {m.name: m.value for m in compute_metrics(session, game).metrics}


def go_nogo_session(go_hits: int, go_total: int, fas: int, nogo_total: int, rts=None):
    times = seq(step_ms=2500)
    trials = []
    rts = list(rts or [])
    for i in range(go_total):
        rt = (rts.pop(0) if rts else 400 + 10 * i) if i < go_hits else 0
        trials.append(trial(len(trials), {"is_target": True}, {"pressed": rt > 0}, rt > 0, rt, next(times)))
    for i in range(nogo_total):
        rt = 350 if i < fas else 0
        trials.append(trial(len(trials), {"is_target": False}, {"pressed": rt > 0}, rt == 0, rt, next(times)))
    return session_of("go_nogo", trials)


def test_dprime_loglinear_hand_computed():
    # H = (18 + .5) / (20 + 1) = .8810 -> z = 1.1800;  F = (2 + .5) / (8 + 1) = .2778 -> z = -.5892
    d, c = dprime_loglinear(18, 20, 2, 8)
    assert d == pytest.approx(1.7692, abs=1e-4)
    assert c == pytest.approx(-0.2952, abs=1e-4)
    # Perfect performance stays finite: 2 * z(10.5 / 11)
    assert dprime_loglinear(10, 10, 0, 10)[0] == pytest.approx(3.3812, abs=1e-4)
    # Chance: equal corrected rates give 0
    assert dprime_loglinear(5, 10, 5, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_go_nogo_metrics(catalog):
    v = values(go_nogo_session(18, 20, 2, 8), catalog)
    assert v["dprime"] == pytest.approx(1.7692, abs=1e-4)
    assert v["omission_errors"] == 2 and v["commission_errors"] == 2
    assert v["omission_rate"] == pytest.approx(0.1) and v["commission_rate"] == pytest.approx(0.25)
    assert v["accuracy"] == pytest.approx((18 + 6) / 28)
    hits = [400 + 10 * i for i in range(18)]
    assert v["mean_rt_ms"] == pytest.approx(sum(hits) / 18)
    assert v["median_rt_ms"] == pytest.approx((480 + 490) / 2)


def test_dprime_needs_enough_no_go_trials(catalog):
    # 3 no-go trials < the 4 the catalog requires: d' absent, not 0
    v = values(go_nogo_session(20, 22, 1, 3), catalog)
    assert "dprime" not in v and "commission_rate" not in v
    assert "omission_rate" in v


def test_rt_coefficient_of_variation(catalog):
    rts = [300, 500] * 5  # mean 400, sample SD 105.41
    v = values(go_nogo_session(10, 20, 0, 8, rts), catalog)
    assert v["rt_cv"] == pytest.approx(105.409 / 400, abs=1e-4)


def test_corsi_span_and_total_score(catalog):
    times = seq(step_ms=9000)
    rows = [([1, 2], [1, 2], True), ([3, 4], [4, 3], False), ([0, 5, 7], [0, 5, 7], True),
            ([2, 6, 8], [2, 6, 8], True), ([1, 3, 5, 7], [1, 5, 3, 7], False), ([0, 2, 4, 6], [0, 2], False)]
    trials = [trial(i, {"sequence": s, "span_length": len(s)}, {"sequence": r}, ok, 3000, next(times))
              for i, (s, r, ok) in enumerate(rows)]
    v = values(session_of("corsi_blocks", trials), catalog)
    assert v["corsi_span"] == 3  # longest length recalled at least once
    assert v["corsi_total_score"] == 9  # span 3 x 3 correct
    assert v["accuracy"] == pytest.approx(0.5)


def test_corsi_span_when_nothing_recalled(catalog):
    times = seq(step_ms=9000)
    rows = [([1, 2], [2, 1]), ([3, 4], [4, 3]), ([0, 5, 7], [5, 0, 7]), ([2, 6, 8], [6, 2, 8])]
    trials = [trial(i, {"sequence": s, "span_length": len(s)}, {"sequence": r}, False, 3000, next(times))
              for i, (s, r) in enumerate(rows)]
    assert values(session_of("corsi_blocks", trials), catalog)["corsi_span"] == 1


def number_trials(rts: list[int], wrong: set[int] = frozenset()):
    times = seq(step_ms=3000)
    out = []
    for i, rt in enumerate(rts):
        ok = i not in wrong
        out.append(trial(i, {"left": 3, "right": 7, "format": "digits" if i % 2 else "dots"},
                         {"side": "right" if ok else "left"}, ok, rt, next(times)))
    return out


def test_anticipations_are_excluded(catalog):
    rts = [100, 120] + [800] * 6 + [1000] * 6  # 2 anticipations, 12 valid
    s = session_of("number_compare", number_trials(rts, wrong={13}))
    game = catalog.get("number_compare", 1)
    m = compute_metrics(s, game)
    assert (m.valid_trials, m.excluded_trials) == (12, 2)
    v = {x.name: x.value for x in m.metrics}
    assert v["accuracy"] == pytest.approx(11 / 12)
    assert v["mean_rt_ms"] == pytest.approx((6 * 800 + 5 * 1000) / 11)  # correct, valid trials only
    # rate-correct score: 11 correct / (6 * 0.8 + 6 * 1.0) s
    assert v["rate_correct_score"] == pytest.approx(11 / 10.8)


def test_too_few_valid_trials_make_metrics_absent(catalog):
    rts = [100, 120, 90] + [800] * 11  # 11 valid < 12 required for accuracy
    s = session_of("number_compare", number_trials(rts))
    v = values(s, catalog)
    assert "accuracy" not in v and "rate_correct_score" not in v
    assert "mean_rt_ms" in v  # needs only 8
    # 6 trials per format required: 6 valid digit trials, 5 valid dot trials
    assert v["accuracy_digits"] == 1.0 and "accuracy_dots" not in v


def test_emotion_per_emotion_accuracy_and_confusions(catalog):
    times = seq(step_ms=4000)
    rows = ([("happy", "happy")] * 4 + [("fearful", "fearful")] * 2 + [("fearful", "surprised")] * 2
            + [("sad", "sad")] * 3 + [("sad", "neutral")] + [("angry", "angry")] * 2)
    trials = [trial(i, {"emotion": e, "intensity": 2}, {"chosen": c}, e == c, 1500, next(times))
              for i, (e, c) in enumerate(rows)]
    v = values(session_of("emotion_faces", trials), catalog)
    assert v["accuracy"] == pytest.approx(11 / 14)
    assert v["accuracy_happy"] == 1.0 and v["accuracy_fearful"] == 0.5 and v["accuracy_sad"] == 0.75
    assert "accuracy_angry" not in v  # 2 trials < 3
    assert v["confusion_fearful_as_surprised"] == 2 and v["confusion_sad_as_neutral"] == 1


def test_tower_planning_efficiency(catalog):
    times = seq(step_ms=30000)
    rows = [(3, 3, True, 0), (4, 6, True, 1), (5, 9, False, 2)]
    trials = [trial(i, {"puzzle_id": f"p{i}", "optimal_moves": o}, {"moves": m, "solved": s, "hints_used": h},
                    s, 2000, next(times)) for i, (o, m, s, h) in enumerate(rows)]
    v = values(session_of("tower_planner", trials), catalog)
    assert v["planning_efficiency"] == pytest.approx((1 + 4 / 6 + 0) / 3)
    assert v["perfect_solution_rate"] == pytest.approx(1 / 3)
    assert v["hints_per_puzzle"] == pytest.approx(1.0)
    assert v["accuracy"] == pytest.approx(2 / 3)


def test_social_rates(catalog):
    times = seq(step_ms=8000)
    rows = ([("turn_taking", "waited")] * 3 + [("turn_taking", "grabbed")]
            + [("sharing", "shared")] * 2 + [("sharing", "grabbed")] * 2 + [("helping", "helped")] * 2)
    trials = [trial(i, {"situation": s}, {"choice": c}, c != "grabbed", 2500, next(times))
              for i, (s, c) in enumerate(rows)]
    v = values(session_of("friends_turns", trials), catalog)
    assert v["prosocial_rate"] == pytest.approx(7 / 10)
    assert v["waiting_rate"] == pytest.approx(0.75) and v["sharing_rate"] == pytest.approx(0.5)
    assert "helping_rate" not in v  # 2 scenes < 3
