"""Per-session derived metrics computed from raw trials.

Rules shared by every game:

* A trial with a response faster than the game's `anticipation_ms` (150 ms) is an
  anticipatory response: it is excluded from every metric and counted in
  `excluded_trials`. All other trials are valid.
* Reaction-time metrics use correct, responded, valid trials only.
* Every metric declares `min_trials` in the catalog: with fewer valid trials
  behind it the metric is ABSENT from the result (never reported as zero).

Per game family (the catalog's `scoring`):

* corsi: block span = the longest sequence length recalled correctly at least
  once (Kessels et al., 2000); when nothing was recalled it is one less than the
  shortest length presented. Total score = span x correctly recalled sequences.
* go_nogo: omission/commission errors and rates; d' = z(H) - z(F) and criterion
  c = -(z(H) + z(F)) / 2 with the log-linear correction of Hautus (1995):
  H = (hits + 0.5) / (go + 1), F = (false alarms + 0.5) / (no-go + 1).
* tower: planning efficiency = mean over puzzles of optimal/moves (0 if unsolved).
* number_comparison: rate-correct score = correct answers / summed RT in seconds.
* emotion_faces: accuracy per emotion shown and confusion counts.
* social_choices: prosocial (waited/shared/helped) rate overall and per situation.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from statistics import NormalDist

from services.analytics.domain.catalog import GameSpec
from services.analytics.domain.types import Metric, Session, SessionMetrics, Trial

_Z = NormalDist()


class _Builder:
    """Collects metrics, dropping those without enough valid trials."""

    def __init__(self, game: GameSpec) -> None:
        self.game = game
        self.items: list[Metric] = []

    def add(self, name: str, value: float | None, n: int, by_class: dict[str, int] | None = None) -> None:
        d = self.game.metric_def(name)
        if d is None:
            raise KeyError(f"metric {name!r} is not declared for {self.game.game_id}")
        if value is None or n < d.min_trials:
            return
        for cls, need in d.min_trials_by_class.items():
            if (by_class or {}).get(cls, 0) < need:
                return
        self.items.append(Metric(name, float(value), d.unit))


def dprime_loglinear(hits: int, go: int, false_alarms: int, nogo: int) -> tuple[float, float]:
    """(d', c) with the log-linear correction (Hautus, 1995)."""
    h = (hits + 0.5) / (go + 1)
    f = (false_alarms + 0.5) / (nogo + 1)
    zh, zf = _Z.inv_cdf(h), _Z.inv_cdf(f)
    return zh - zf, -(zh + zf) / 2


def rt_stats(rts: Sequence[float]) -> tuple[float, float, float | None]:
    """(mean, median, coefficient of variation); CV is None below 2 values."""
    mean = statistics.fmean(rts)
    median = statistics.median(rts)
    cv = statistics.stdev(rts) / mean if len(rts) >= 2 and mean > 0 else None
    return mean, median, cv


def corsi_span(trials: Sequence[Trial]) -> int:
    """Longest length recalled correctly at least once; else shortest length - 1."""
    lengths = [len(t.stimulus.get("sequence") or ()) for t in trials]
    correct = [n for n, t in zip(lengths, trials, strict=True) if t.correct]
    if correct:
        return max(correct)
    return max(0, min(lengths) - 1) if lengths else 0


def _add_rt(b: _Builder, rts: list[float], with_cv: bool = True) -> None:
    if not rts:
        return
    mean, median, cv = rt_stats(rts)
    b.add("mean_rt_ms", mean, len(rts))
    b.add("median_rt_ms", median, len(rts))
    if with_cv:
        b.add("rt_cv", cv, len(rts))


def _accuracy(trials: Sequence[Trial]) -> float | None:
    return sum(t.correct for t in trials) / len(trials) if trials else None


def _correct_rts(trials: Sequence[Trial]) -> list[float]:
    return [float(t.reaction_time_ms) for t in trials if t.correct and t.responded]


def _corsi(b: _Builder, trials: list[Trial]) -> None:
    n = len(trials)
    b.add("accuracy", _accuracy(trials), n)
    if n:
        span = corsi_span(trials)
        b.add("corsi_span", span, n)
        b.add("corsi_total_score", span * sum(t.correct for t in trials), n)


def _go_nogo(b: _Builder, trials: list[Trial]) -> None:
    go = [t for t in trials if t.stimulus.get("is_target") is True]
    nogo = [t for t in trials if t.stimulus.get("is_target") is False]
    hits = sum(t.responded for t in go)
    fas = sum(t.responded for t in nogo)
    misses = len(go) - hits
    classes = {"go": len(go), "nogo": len(nogo)}
    b.add("accuracy", (hits + len(nogo) - fas) / len(trials) if trials else None, len(trials))
    b.add("omission_errors", misses, len(go))
    b.add("commission_errors", fas, len(nogo))
    b.add("omission_rate", misses / len(go) if go else None, len(go))
    b.add("commission_rate", fas / len(nogo) if nogo else None, len(nogo))
    if go and nogo:
        d, c = dprime_loglinear(hits, len(go), fas, len(nogo))
        b.add("dprime", d, len(go), classes)
        b.add("criterion", c, len(go), classes)
    _add_rt(b, [float(t.reaction_time_ms) for t in go if t.responded])


def _tower(b: _Builder, trials: list[Trial]) -> None:
    n = len(trials)
    eff: list[float] = []
    perfect = 0
    hints: list[float] = []
    for t in trials:
        opt = float(t.stimulus.get("optimal_moves", 0))
        moves = float(t.response.get("moves", 0) or 0)
        done = bool(t.response.get("solved", False))
        eff.append(min(1.0, opt / moves) if done and moves > 0 else 0.0)
        perfect += done and moves <= opt
        hints.append(float(t.response.get("hints_used", 0) or 0))
    b.add("accuracy", _accuracy(trials), n)
    b.add("planning_efficiency", statistics.fmean(eff) if eff else None, n)
    b.add("perfect_solution_rate", perfect / n if n else None, n)
    b.add("hints_per_puzzle", statistics.fmean(hints) if hints else None, n)
    solved = [t for t in trials if t.correct and t.responded]
    if solved:
        b.add("mean_planning_time_ms", statistics.fmean(t.reaction_time_ms for t in solved), len(solved))
    times = [float(t.response["solve_time_ms"]) for t in solved if t.response.get("solve_time_ms")]
    if times:
        b.add("mean_solve_time_ms", statistics.fmean(times), len(times))


def _number(b: _Builder, trials: list[Trial]) -> None:
    n = len(trials)
    b.add("accuracy", _accuracy(trials), n)
    for fmt in ("digits", "dots"):
        sub = [t for t in trials if t.stimulus.get("format") == fmt]
        b.add(f"accuracy_{fmt}", _accuracy(sub), len(sub))
    _add_rt(b, _correct_rts(trials))
    responded = [t for t in trials if t.responded]
    total_s = sum(t.reaction_time_ms for t in responded) / 1000.0
    if total_s > 0:
        b.add("rate_correct_score", sum(t.correct for t in responded) / total_s, n)


def _emotion(b: _Builder, trials: list[Trial]) -> None:
    b.add("accuracy", _accuracy(trials), len(trials))
    _add_rt(b, _correct_rts(trials), with_cv=False)
    by_emotion: dict[str, list[Trial]] = {}
    for t in trials:
        by_emotion.setdefault(str(t.stimulus.get("emotion")), []).append(t)
    for emotion in sorted(by_emotion):
        sub = by_emotion[emotion]
        b.add(f"accuracy_{emotion}", _accuracy(sub), len(sub))
    confusions = Counter(
        (str(t.stimulus.get("emotion")), str(t.response.get("chosen")))
        for t in trials
        if t.responded and not t.correct and t.response.get("chosen") is not None
    )
    for (shown, chosen), count in sorted(confusions.items()):
        b.add(f"confusion_{shown}_as_{chosen}", count, count)


_PROSOCIAL = {"turn_taking": "waited", "sharing": "shared", "helping": "helped"}
_SITUATION_METRIC = {"turn_taking": "waiting_rate", "sharing": "sharing_rate", "helping": "helping_rate"}


def _social(b: _Builder, trials: list[Trial]) -> None:
    answered = [t for t in trials if t.responded and t.response.get("choice") is not None]
    prosocial = [t.response["choice"] != "grabbed" for t in answered]
    b.add("prosocial_rate", sum(prosocial) / len(answered) if answered else None, len(answered))
    for situation, metric in _SITUATION_METRIC.items():
        sub = [t for t in answered if t.stimulus.get("situation") == situation]
        good = sum(t.response["choice"] == _PROSOCIAL[situation] for t in sub)
        b.add(metric, good / len(sub) if sub else None, len(sub))
    rts = [float(t.reaction_time_ms) for t in answered]
    if rts:
        b.add("median_rt_ms", statistics.median(rts), len(rts))


_FAMILIES: dict[str, Callable[[_Builder, list[Trial]], None]] = {
    "corsi": _corsi,
    "go_nogo": _go_nogo,
    "tower": _tower,
    "number_comparison": _number,
    "emotion_faces": _emotion,
    "social_choices": _social,
}


def is_anticipatory(trial: Trial, game: GameSpec) -> bool:
    return trial.responded and 0 < trial.reaction_time_ms < game.anticipation_ms


def compute_metrics(session: Session, game: GameSpec) -> SessionMetrics:
    """Derived metrics of a (validated) session of `game`."""
    valid = [t for t in session.trials if not is_anticipatory(t, game)]
    b = _Builder(game)
    _FAMILIES[game.scoring](b, valid)
    return SessionMetrics(tuple(b.items), len(valid), len(session.trials) - len(valid))
