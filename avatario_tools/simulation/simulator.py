"""Simulated children: realistic trial-level sessions and mood check-ins.

Model (z units are those of the age norms for ONE session):

* A child's true level in a domain is `ability[d]`, the expected session z.
  Typical children draw it as sqrt(rho_d) * (sqrt(g) * G + sqrt(1 - g) * U_d)
  (G shared across domains, g = 0.3), so the between-child variance is rho_d, the
  single-session reliability of that game.
* Each session adds day-to-day state noise; the trial-level generators add the
  sampling noise of finite trials (`measurement_var`, calibrated by simulation),
  so a session's z has variance ~1 in the population, as the norms assume.
* From the session level s, a generator targets the primary metric's value
  mean + s * sd from the norms at the child's age and draws trials whose metric
  has that expected value (exact inversion for Corsi span and log-linear d').
* A persistent weakness sets ability[d] to about -2 in one domain.
* "Typical" (typically developing) children are redrawn until they stand above
  -2 SD among peers in every domain (`typical_floor`); children below that are
  cases by the usual -2 SD convention. `typical_floor=None` gives an unselected
  population.
* Reliabilities of 0.35-0.5 for a 2-3 minute session are assumptions
  (plausible for short gamified tasks in children), not measured values.

Sessions pass `catalog.validate_session`. Randomness comes only from the given seed.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from avatario_tools.simulation import simgames
from services.analytics.domain.catalog import Catalog, GameSpec
from services.analytics.domain.norms import NormTable
from services.analytics.domain.types import (
    SKILL_DOMAINS,
    Mood,
    MoodCheckIn,
    Session,
    SkillDomain,
    age_months,
)

G_SHARE = 0.3
# Single-session reliability (share of session variance stable between children)
# and the trial-sampling variance of each game's generator (z units, calibrated).
RELIABILITY: dict[SkillDomain, float] = {
    SkillDomain.WORKING_MEMORY: 0.40,
    SkillDomain.ATTENTION: 0.40,
    SkillDomain.PROBLEM_SOLVING: 0.35,
    SkillDomain.NUMBER_SENSE: 0.50,
    SkillDomain.EMOTION_RECOGNITION: 0.35,
    SkillDomain.SOCIAL_INTERACTION: 0.35,
}
MEASUREMENT_VAR: dict[SkillDomain, float] = {
    SkillDomain.WORKING_MEMORY: 0.51,
    SkillDomain.ATTENTION: 0.51,
    SkillDomain.PROBLEM_SOLVING: 0.57,
    SkillDomain.NUMBER_SENSE: 0.15,
    SkillDomain.EMOTION_RECOGNITION: 0.49,
    SkillDomain.SOCIAL_INTERACTION: 0.44,
}

_MOODS = list(Mood)
_MOOD_WEIGHTS: dict[str, list[float]] = {
    #          HAPPY CALM OKAY TIRED SAD  WORRIED ANGRY
    "typical": [0.32, 0.20, 0.20, 0.13, 0.06, 0.05, 0.04],
    "low":     [0.08, 0.07, 0.12, 0.13, 0.28, 0.18, 0.14],
}


@dataclass(frozen=True, slots=True)
class SimChild:
    child_id: str
    birth_year: int
    birth_month: int
    ability: Mapping[SkillDomain, float]
    preference: Mapping[SkillDomain, float]
    play_day_prob: float = 0.6
    checkin_prob: float = 0.6
    mood_profile: Literal["typical", "low"] = "typical"
    weakness: SkillDomain | None = None
    # Optional changes part-way through (for demos and drop signals).
    engagement_drop_from_week: int | None = None
    decline_from_week: int | None = None
    decline: Mapping[SkillDomain, float] = field(default_factory=dict)


@dataclass(slots=True)
class SimulatedChild:
    child: SimChild
    sessions: list[Session]
    checkins: list[MoodCheckIn]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def draw_child(
    rng: random.Random,
    start: datetime,
    *,
    age_years: tuple[int, int] = (5, 11),
    weakness: SkillDomain | None = None,
    weakness_z: float = -2.0,
    mood_profile: Literal["typical", "low"] = "typical",
    typical_floor: float | None = -2.0,
) -> SimChild:
    """A child aged `age_years` (inclusive, whole years) at `start`.

    Typically developing: with `typical_floor` (default -2), every domain other
    than `weakness` is redrawn until the child stands above -2 SD among peers
    (between-child z); children below that are cases, not typical. None draws
    from the whole, unselected population.
    """
    months = rng.randint(age_years[0] * 12, age_years[1] * 12 + 11)
    total = start.year * 12 + (start.month - 1) - months
    while True:
        g = rng.gauss(0, 1)
        between = {d: math.sqrt(G_SHARE) * g + math.sqrt(1 - G_SHARE) * rng.gauss(0, 1) for d in SKILL_DOMAINS}
        if typical_floor is None or all(z > typical_floor for d, z in between.items() if d != weakness):
            break
    ability = {d: math.sqrt(RELIABILITY[d]) * z for d, z in between.items()}
    if weakness is not None:
        ability[weakness] = weakness_z + rng.gauss(0, 0.15)
    return SimChild(
        child_id=_uuid(rng),
        birth_year=total // 12,
        birth_month=total % 12 + 1,
        ability=ability,
        preference={d: rng.uniform(0.6, 1.4) for d in SKILL_DOMAINS},
        play_day_prob=rng.uniform(0.45, 0.85),
        checkin_prob=rng.uniform(0.4, 0.9),
        mood_profile=mood_profile,
        weakness=weakness,
    )


def _state_sd(domain: SkillDomain) -> float:
    return math.sqrt(max(0.02, 1.0 - RELIABILITY[domain] - MEASUREMENT_VAR[domain]))


def simulate_session(
    game: GameSpec, child: SimChild, level: float, started_at: datetime, norms: NormTable, rng: random.Random
) -> Session:
    """One session of `game` for a child whose performance today is `level` (session z)."""
    age = age_months(child.birth_year, child.birth_month, started_at)
    trials, ended_at = simgames.GENERATORS[game.scoring](game, level, age, started_at, norms, rng)
    return Session(_uuid(rng), child.child_id, game.game_id, game.version, started_at, ended_at, tuple(trials))


def simulate_child(
    child: SimChild,
    catalog: Catalog,
    norms: NormTable,
    start: datetime,
    weeks: int,
    rng: random.Random,
) -> SimulatedChild:
    """`weeks` of play from `start` (UTC): sessions on some days, mood check-ins on others."""
    sessions: list[Session] = []
    checkins: list[MoodCheckIn] = []
    games = {d: catalog.games_for_domain(d) for d in SKILL_DOMAINS}
    day0 = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for day in range(weeks * 7):
        date0 = day0 + timedelta(days=day)
        week = day // 7
        if rng.random() < child.checkin_prob:
            weights = _MOOD_WEIGHTS[child.mood_profile]
            mood = rng.choices(_MOODS, weights)[0]
            negative = mood in (Mood.SAD, Mood.WORRIED, Mood.ANGRY)
            intensity = rng.choice([2, 3, 3, 4, 5] if negative and child.mood_profile == "low" else [1, 2, 2, 3, 3, 4])
            checkins.append(MoodCheckIn(_uuid(rng), child.child_id, mood, intensity,
                                        date0 + timedelta(hours=7, minutes=rng.randint(0, 120))))
        p_play = child.play_day_prob
        if child.engagement_drop_from_week is not None and week >= child.engagement_drop_from_week:
            p_play *= 0.15
        if rng.random() >= p_play:
            continue
        t = date0 + timedelta(hours=15, minutes=rng.randint(0, 240))
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            age = age_months(child.birth_year, child.birth_month, t)
            domains = [d for d in SKILL_DOMAINS
                       if any(g.min_age_years * 12 <= age < (g.max_age_years + 1) * 12 for g in games[d])]
            if not domains:
                break
            d = rng.choices(domains, [child.preference[x] for x in domains])[0]
            game = next(g for g in games[d] if g.min_age_years * 12 <= age < (g.max_age_years + 1) * 12)
            level = child.ability[d] + _state_sd(d) * rng.gauss(0, 1)
            if child.decline_from_week is not None and week >= child.decline_from_week:
                level += child.decline.get(d, 0.0)
            s = simulate_session(game, child, level, t, norms, rng)
            sessions.append(s)
            assert s.ended_at is not None
            t = s.ended_at + timedelta(seconds=rng.randint(20, 300))
    return SimulatedChild(child, sessions, checkins)


def with_changes(child: SimChild, **changes: object) -> SimChild:
    return replace(child, **changes)  # type: ignore[arg-type]
