"""Trial generators for the simulator, one per scoring family.

Each generator takes the session's performance level (a z against the age norms
of the game's primary metric), sets trial-level parameters so the metric's
expected value is mean + level * sd, and draws timed trials.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from statistics import NormalDist

from services.analytics.domain.catalog import GameSpec
from services.analytics.domain.metrics import dprime_loglinear
from services.analytics.domain.norms import NormTable
from services.analytics.domain.types import Trial

_Z = NormalDist()
Generated = tuple[list[Trial], datetime]
Generator = Callable[[GameSpec, float, int, datetime, NormTable, random.Random], Generated]


def _target(norms: NormTable, game: GameSpec, metric: str, age: int, level: float,
            default: tuple[float, float]) -> float:
    ref = norms.lookup(game.game_id, metric, age)
    mean, sd = (ref.mean, ref.sd) if ref else default
    d = game.metric_def(metric)
    sign = -1.0 if d is not None and d.higher_is_better is False else 1.0
    return mean + sign * level * sd


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _lognormal_ms(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(_clamp(median * math.exp(sigma * rng.gauss(0, 1)), lo, hi))


def _ms(t: datetime, ms: float) -> datetime:
    return t + timedelta(milliseconds=ms)


def _trial(i: int, stim: dict[str, object], resp: dict[str, object], correct: bool, rt: int,
           t: datetime) -> Trial:
    return Trial(i, stim, resp, correct, rt > 0, rt, t, _ms(t, rt) if rt > 0 else None)


# -- working memory: Corsi -----------------------------------------------------------------

CORSI_W = 0.5
CORSI_MAX = 9


def _p_corsi(length: int, capacity: float) -> float:
    return 1.0 / (1.0 + math.exp((length - capacity) / CORSI_W))


def corsi_expected_span(capacity: float) -> float:
    """Expected measured span under the administration rule of `corsi`."""
    q = {n: 1 - (1 - _p_corsi(n, capacity)) ** 2 for n in range(2, CORSI_MAX + 1)}
    tail, reach = 0.0, 1.0
    for n in range(4, CORSI_MAX + 1):
        tail += (n - 1) * reach * (1 - q[n])
        reach *= q[n]
    tail += CORSI_MAX * reach
    return (1 - q[3]) * (1 + q[2]) + q[3] * tail


@lru_cache(maxsize=4096)
def corsi_capacity_for(span: float) -> float:
    lo, hi = -3.0, 14.0
    span = _clamp(span, corsi_expected_span(lo) + 1e-3, corsi_expected_span(hi) - 1e-3)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if corsi_expected_span(mid) < span else (lo, mid)
    return (lo + hi) / 2


def corsi(game: GameSpec, level: float, age: int, t0: datetime, norms: NormTable, rng: random.Random) -> Generated:
    cap = corsi_capacity_for(round(_target(norms, game, "corsi_span", age, level, (4.0, 1.0)), 2))
    trials: list[Trial] = []
    t = _ms(t0, 2000)
    tap = 900 - 25 * (age // 12)
    for length in range(2, CORSI_MAX + 1):
        passed = False
        for _ in range(2):
            seq = rng.sample(range(9), length)
            ok = rng.random() < _p_corsi(length, cap)
            resp = list(seq)
            if not ok:
                k = rng.randrange(length - 1)
                resp[k], resp[k + 1] = resp[k + 1], resp[k]
                if rng.random() < 0.3:
                    resp = resp[: rng.randint(1, length - 1)]
            rt = int(_clamp(length * 800 + len(resp) * tap * rng.uniform(0.7, 1.4), 300, 29000))
            trials.append(_trial(len(trials), {"sequence": seq, "span_length": length}, {"sequence": resp}, ok, rt, t))
            t = _ms(t, rt + 1500)
            passed = passed or ok
        if not passed and length >= 3:
            break
    return trials, t


# -- attention: go/no-go ----------------------------------------------------------------

N_GO, N_NOGO, CRITERION = 36, 12, -0.35


def _binom(n: int, p: float) -> list[float]:
    return [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]


@lru_cache(maxsize=1)
def _dprime_table() -> tuple[list[float], list[float]]:
    """Expected measured (log-linear) d' for true d on a grid, at the fixed criterion."""
    ds = [x / 20 for x in range(-10, 121)]
    measured: list[float] = []
    dp = [[dprime_loglinear(h, N_GO, f, N_NOGO)[0] for f in range(N_NOGO + 1)] for h in range(N_GO + 1)]
    for d in ds:
        ph = _binom(N_GO, _Z.cdf(d / 2 - CRITERION))
        pf = _binom(N_NOGO, _Z.cdf(-d / 2 - CRITERION))
        measured.append(sum(ph[h] * pf[f] * dp[h][f] for h in range(N_GO + 1) for f in range(N_NOGO + 1)))
    return ds, measured


def true_dprime_for(measured: float) -> float:
    ds, ms = _dprime_table()
    if measured <= ms[0]:
        return ds[0]
    if measured >= ms[-1]:
        return ds[-1]
    i = bisect.bisect_left(ms, measured)
    w = (measured - ms[i - 1]) / (ms[i] - ms[i - 1])
    return ds[i - 1] + w * (ds[i] - ds[i - 1])


def go_nogo(game: GameSpec, level: float, age: int, t0: datetime, norms: NormTable, rng: random.Random) -> Generated:
    d = true_dprime_for(_target(norms, game, "dprime", age, level, (2.4, 0.7)))
    hit_p, fa_p = _Z.cdf(d / 2 - CRITERION), _Z.cdf(-d / 2 - CRITERION)
    rt_level = 0.5 * level + math.sqrt(0.75) * rng.gauss(0, 1)
    median = _clamp(_target(norms, game, "median_rt_ms", age, rt_level, (550, 100)), 250, 1500)
    sigma = _clamp(_target(norms, game, "rt_cv", age, rt_level, (0.28, 0.07)), 0.1, 0.6)
    kinds = [True] * N_GO + [False] * N_NOGO
    rng.shuffle(kinds)
    trials: list[Trial] = []
    t = _ms(t0, 1500)
    for i, target in enumerate(kinds):
        if rng.random() < 0.015:
            rt = rng.randint(60, 140)  # anticipation
        elif target:
            rt = _lognormal_ms(rng, median, sigma, 160, 2400) if rng.random() < hit_p else 0
        else:
            rt = _lognormal_ms(rng, 0.85 * median, sigma, 160, 2400) if rng.random() < fa_p else 0
        pressed = rt > 0
        trials.append(_trial(i, {"is_target": target, "stimulus_id": "firefly" if target else "bee"},
                             {"pressed": pressed}, pressed == target, rt, t))
        t = _ms(t, max(1400 + rng.randint(0, 400), rt + 300))
    return trials, t


# -- problem solving: tower -----------------------------------------------------------------


def _puzzles(age: int) -> list[int]:
    if age < 84:
        return [2, 2, 3, 3, 3, 4, 4, 5]
    if age < 120:
        return [3, 3, 4, 4, 4, 5, 5, 6]
    return [3, 4, 4, 5, 5, 5, 6, 6]


def _mean_ratio(lam: float, opts: tuple[int, ...]) -> float:
    total = 0.0
    for opt in opts:
        term, acc = math.exp(-lam), 0.0
        for x in range(60):
            acc += term * opt / (opt + x)
            term *= lam / (x + 1)
        total += acc
    return total / len(opts)


@lru_cache(maxsize=8)
def _ratio_table(opts: tuple[int, ...]) -> tuple[list[float], list[float]]:
    """Expected mean optimal/moves for extra moves ~ Poisson(lambda), on a lambda grid."""
    lams = [x / 20 for x in range(0, 601)]
    return lams, [_mean_ratio(lam, opts) for lam in lams]


def _extra_moves_lambda(ratio: float, opts: tuple[int, ...]) -> float:
    """The Poisson rate of extra moves giving a mean optimal/moves of `ratio`."""
    lams, ratios = _ratio_table(opts)
    if ratio >= ratios[0]:
        return 0.0
    if ratio <= ratios[-1]:
        return lams[-1]
    neg = [-r for r in ratios]  # increasing
    i = bisect.bisect_left(neg, -ratio)
    w = (-ratio - neg[i - 1]) / (neg[i] - neg[i - 1])
    return lams[i - 1] + w * (lams[i] - lams[i - 1])


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def tower(game: GameSpec, level: float, age: int, t0: datetime, norms: NormTable, rng: random.Random) -> Generated:
    eff = _clamp(_target(norms, game, "planning_efficiency", age, level, (0.75, 0.12)), 0.05, 1.0)
    p_solve = _clamp(0.7 + 0.3 * eff, 0.5, 0.99)
    opts = tuple(_puzzles(age))
    lam = _extra_moves_lambda(min(1.0, eff / p_solve), opts)
    trials: list[Trial] = []
    t = _ms(t0, 2000)
    for i, opt in enumerate(opts):
        solved = rng.random() < p_solve
        moves = opt + _poisson(rng, lam) + (0 if solved else rng.randint(2, 6))
        rt = _lognormal_ms(rng, 4500 - 150 * (age // 12), 0.4, 400, 25000)
        solve_ms = min(590_000, rt + int(moves * rng.uniform(1200, 2000)))
        hints = _poisson(rng, 0.2 + max(0.0, 0.8 - eff))
        trials.append(_trial(i, {"puzzle_id": f"p{opt}-{i}", "optimal_moves": opt},
                             {"moves": moves, "solved": solved, "hints_used": hints, "solve_time_ms": solve_ms},
                             solved, rt, t))
        t = _ms(t, solve_ms + 2000)
    return trials, t


# -- number sense ---------------------------------------------------------------------------


def number_comparison(game: GameSpec, level: float, age: int, t0: datetime, norms: NormTable,
                      rng: random.Random) -> Generated:
    rcs = max(0.05, _target(norms, game, "rate_correct_score", age, level, (1.0, 0.25)))
    acc = _clamp(_target(norms, game, "accuracy", age, 0.8 * level + 0.6 * rng.gauss(0, 1), (0.88, 0.07)), 0.55, 0.99)
    sigma = 0.3
    mean_rt = _clamp(1000 * acc / rcs, 350, 9000)
    median = mean_rt / math.exp(sigma**2 / 2)
    top = 9 if age < 84 else 40
    trials: list[Trial] = []
    t = _ms(t0, 1500)
    pairs: list[tuple[int, int, float]] = []
    for _ in range(32):
        left = rng.randint(1, top)
        right = rng.choice([x for x in range(max(1, left - 6), min(top, left + 6) + 1) if x != left])
        # Ratio effect: closer pairs are harder (adjustments centred on zero).
        pairs.append((left, right, -0.12 * min(left, right) / max(left, right)))
    centre = sum(p[2] for p in pairs) / len(pairs)
    for i, (left, right, adj) in enumerate(pairs):
        ok = rng.random() < _clamp(acc + adj - centre, 0.3, 0.995)
        big = "left" if left > right else "right"
        side = big if ok else ("right" if big == "left" else "left")
        rt = rng.randint(60, 140) if rng.random() < 0.01 else _lognormal_ms(rng, median, sigma, 160, 20000)
        trials.append(_trial(i, {"left": left, "right": right, "format": "digits" if i % 2 else "dots"},
                             {"side": side}, ok, rt, t))
        t = _ms(t, rt + 800)
    return trials, t


# -- emotion recognition ------------------------------------------------------------------------

EMOTIONS = ("happy", "sad", "angry", "fearful", "surprised", "disgusted", "neutral")
_EMOTION_ADJ = {"happy": 0.12, "sad": 0.0, "angry": 0.03, "fearful": -0.10, "surprised": 0.0,
                "disgusted": -0.08, "neutral": 0.03}
_INTENSITY_ADJ = {1: -0.12, 2: 0.0, 3: 0.12}
_CONFUSABLE = {"happy": "surprised", "sad": "neutral", "angry": "disgusted", "fearful": "surprised",
               "surprised": "fearful", "disgusted": "angry", "neutral": "sad"}


def emotion_faces(game: GameSpec, level: float, age: int, t0: datetime, norms: NormTable,
                  rng: random.Random) -> Generated:
    acc = _clamp(_target(norms, game, "accuracy", age, level, (0.7, 0.1)), 0.05, 0.99)
    median = _clamp(_target(norms, game, "median_rt_ms", age, 0.5 * level, (2200, 600)), 600, 9000)
    items = [(e, k) for e in EMOTIONS for k in (1, 2, 3, rng.choice((1, 2, 3)), rng.choice((1, 2, 3)))]
    rng.shuffle(items)
    trials: list[Trial] = []
    t = _ms(t0, 1500)
    for i, (emotion, intensity) in enumerate(items):
        ok = rng.random() < _clamp(acc + _EMOTION_ADJ[emotion] + _INTENSITY_ADJ[intensity], 0.03, 0.995)
        if ok:
            chosen = emotion
        elif rng.random() < 0.6:
            chosen = _CONFUSABLE[emotion]
        else:
            chosen = rng.choice([e for e in EMOTIONS if e != emotion])
        rt = rng.randint(60, 140) if rng.random() < 0.01 else _lognormal_ms(rng, median, 0.35, 200, 20000)
        trials.append(_trial(i, {"emotion": emotion, "intensity": intensity, "face_id": f"f{rng.randint(1, 12)}"},
                             {"chosen": chosen}, ok, rt, t))
        t = _ms(t, rt + 900)
    return trials, t


# -- social ----------------------------------------------------------------------------------

_SITUATIONS = {"turn_taking": ("waited", -0.05), "sharing": ("shared", -0.05), "helping": ("helped", 0.10)}


def social_choices(game: GameSpec, level: float, age: int, t0: datetime, norms: NormTable,
                   rng: random.Random) -> Generated:
    rate = _clamp(_target(norms, game, "prosocial_rate", age, level, (0.7, 0.15)), 0.02, 0.99)
    items = [s for s in _SITUATIONS for _ in range(8)]
    rng.shuffle(items)
    trials: list[Trial] = []
    t = _ms(t0, 2000)
    for i, situation in enumerate(items):
        good, adj = _SITUATIONS[situation]
        kind = rng.random() < _clamp(rate + adj, 0.01, 0.995)
        rt = rng.randint(60, 140) if rng.random() < 0.01 else _lognormal_ms(rng, 3200 - 120 * (age // 12), 0.4, 300, 25000)
        trials.append(_trial(i, {"situation": situation, "scene_id": f"s{rng.randint(1, 20)}"},
                             {"choice": good if kind else "grabbed"}, kind, rt, t))
        t = _ms(t, rt + 4000)
    return trials, t


GENERATORS: dict[str, Generator] = {
    "corsi": corsi,
    "go_nogo": go_nogo,
    "tower": tower,
    "number_comparison": number_comparison,
    "emotion_faces": emotion_faces,
    "social_choices": social_choices,
}
