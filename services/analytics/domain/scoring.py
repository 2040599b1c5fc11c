"""Domain skill scores, area roll-ups, weekly trends, play time and streaks.

Session domain z: the weighted mean of the session's normed PRIMARY metrics
(catalog `primary_metrics`), each sign-corrected so higher is better. A session
without a normed primary metric (too few valid trials, or no norm for the age)
does not count towards scores.

Domain score: the mean session domain z over the child's last
`window_sessions` (8) such sessions within `window_days` (56) of `as_of`; it
needs `min_sessions` (3) sessions, otherwise the domain says "not enough data
yet". The z is relative to single-session age norms.

Parent scale: score = clamp(50 + 15 * z, 0, 100), so 50 is the age average and
35..65 is the usual range (within one SD). The percentile 100 * Phi(z) is
reported beside it. The linear scale keeps equal steps equal on a radar chart
and does not exaggerate small differences near the middle as percentiles do.

Areas: cognitive = mean z of working memory, attention, problem solving and
number sense (needs 2 of them with enough data); emotional = emotion
recognition; social = social interaction.

Norm status: each domain score says how far its age comparison can be trusted
(`norm_strength`, `norm_children`, `norm_note`; docs/flags.md): the weakest norm
behind the window's primary metrics, or, before there is enough play, the norm
the domain's game would be compared with at the child's age.

All periods are UTC; weeks start on Monday.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from services.analytics.domain.catalog import Catalog
from services.analytics.domain.norms import (
    ESTABLISHED_MIN_CHILDREN,
    DomainNorm,
    least_authoritative,
    metric_strength,
    percentile,
    weakest,
)
from services.analytics.domain.types import (
    DOMAIN_AREA,
    SKILL_DOMAINS,
    MetricValue,
    NormStrength,
    SessionResult,
    SkillArea,
    SkillDomain,
    utc,
)

SCALE_SD_POINTS = 15.0


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    window_sessions: int = 8
    window_days: int = 56
    min_sessions: int = 3
    trend_weeks: int = 8
    trend_min_sessions: int = 1
    daily_play_days: int = 14
    weekly_play_weeks: int = 8
    area_min_domains: dict[SkillArea, int] = field(default_factory=lambda: {
        SkillArea.COGNITIVE: 2, SkillArea.EMOTIONAL: 1, SkillArea.SOCIAL: 1})


DEFAULT_POLICY = ScoringPolicy()


@dataclass(frozen=True, slots=True)
class SessionZ:
    """One session's standing in its domain."""

    result: SessionResult
    z: float
    primary: tuple[MetricValue, ...]  # the normed primary metrics behind z

    @property
    def at(self) -> datetime:
        return self.result.started_at


@dataclass(frozen=True, slots=True)
class DomainScore:
    domain: SkillDomain
    area: SkillArea
    enough_data: bool
    score: float
    z_score: float
    percentile: float
    session_count: int
    norm_source: str
    note: str
    sessions: tuple[SessionZ, ...] = ()  # the window behind the score (newest last)
    norm_strength: NormStrength = NormStrength.NONE
    norm_children: int = 0  # children per age band behind the norm (0: expert estimate)
    norm_note: str = ""  # the norm status in plain words, for parents


@dataclass(frozen=True, slots=True)
class AreaScore:
    area: SkillArea
    enough_data: bool
    score: float
    z_score: float = 0.0


@dataclass(frozen=True, slots=True)
class TrendPoint:
    domain: SkillDomain
    week_start: datetime
    enough_data: bool
    score: float
    session_count: int


@dataclass(frozen=True, slots=True)
class PlayTime:
    period_start: datetime
    seconds: int
    sessions: int


def to_scale(z: float) -> float:
    return max(0.0, min(100.0, 50.0 + SCALE_SD_POINTS * z))


def session_z(result: SessionResult, catalog: Catalog) -> SessionZ | None:
    game = catalog.get(result.game_id, result.game_version)
    if game is None:
        return None
    total = weight = 0.0
    used: list[MetricValue] = []
    for name, w in game.primary_metrics.items():
        m = result.metric(name)
        if m is not None and m.normed:
            total += w * m.z_score
            weight += w
            used.append(m)
    if weight == 0:
        return None
    return SessionZ(result, total / weight, tuple(used))


def domain_sessions(
    results: Iterable[SessionResult], catalog: Catalog, domain: SkillDomain, until: datetime
) -> list[SessionZ]:
    """Scorable sessions of a domain started at or before `until`, oldest first."""
    until = utc(until)
    out = [z for r in results if r.domain == domain and r.started_at <= until
           for z in [session_z(r, catalog)] if z is not None]
    out.sort(key=lambda s: (s.at, s.result.session_id))
    return out


def window(sessions: Sequence[SessionZ], as_of: datetime, policy: ScoringPolicy = DEFAULT_POLICY) -> list[SessionZ]:
    since = utc(as_of) - timedelta(days=policy.window_days)
    recent = [s for s in sessions if since < s.at <= utc(as_of)]
    return recent[-policy.window_sessions:]


def _not_enough_note(n: int, need: int) -> str:
    return f"Not enough data yet: {n} of {need} sessions needed."


def norm_note(strength: NormStrength, children: int, source: str,
              min_children: int = ESTABLISHED_MIN_CHILDREN) -> str:
    """A domain's norm status in plain words (what a parent reads beside the score)."""
    if strength == NormStrength.PROVISIONAL:
        return ("Age comparison: provisional estimates from expert judgement, not yet measured on "
                "enough children. Treat the score as a rough guide.")
    if strength == NormStrength.GATHERING:
        return (f"Age comparison: being built from the children who play ({children} of the "
                f"{min_children} per age we want so far). A fair guide, still being refined.")
    if strength == NormStrength.ESTABLISHED:
        if source == "published":
            return "Age comparison: published age norms for this kind of game."
        return f"Age comparison: measured on {children} or more children of the same age."
    return "Age comparison: no age norms for this game yet."


def domain_score(
    domain: SkillDomain,
    sessions: Sequence[SessionZ],
    as_of: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
    *,
    expected: DomainNorm | None = None,
    min_norm_children: int = ESTABLISHED_MIN_CHILDREN,
) -> DomainScore:
    """`expected`: the norm the domain would be compared with at the child's age
    (its status is reported while there is not enough play)."""
    win = window(sessions, as_of, policy)
    area = DOMAIN_AREA[domain]
    if len(win) < policy.min_sessions:
        strength = expected.strength if expected is not None else NormStrength.NONE
        children = expected.n if expected is not None else 0
        source = {NormStrength.PROVISIONAL: "provisional"}.get(strength, "")
        return DomainScore(domain, area, False, 0.0, 0.0, 0.0, len(win), "",
                           _not_enough_note(len(win), policy.min_sessions), tuple(win),
                           strength, children, norm_note(strength, children, source, min_norm_children))
    z = statistics.fmean(s.z for s in win)
    primary = [m for s in win for m in s.primary]
    source = least_authoritative(m.norm_source for m in primary)
    strength = weakest(metric_strength(m, min_norm_children) for m in primary)
    children = min(m.norm_n for m in primary)
    note = ""
    if source == "provisional":
        note = "Compared with provisional age estimates; these will be refined as more children play."
    return DomainScore(domain, area, True, to_scale(z), z, percentile(z), len(win), source, note, tuple(win),
                       strength, children, norm_note(strength, children, source, min_norm_children))


def domain_scores(
    results: Sequence[SessionResult],
    catalog: Catalog,
    as_of: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
    *,
    expected: Mapping[SkillDomain, DomainNorm] | None = None,
    min_norm_children: int = ESTABLISHED_MIN_CHILDREN,
) -> list[DomainScore]:
    return [domain_score(d, domain_sessions(results, catalog, d, as_of), as_of, policy,
                         expected=(expected or {}).get(d), min_norm_children=min_norm_children)
            for d in SKILL_DOMAINS]


def area_scores(scores: Sequence[DomainScore], policy: ScoringPolicy = DEFAULT_POLICY) -> list[AreaScore]:
    out: list[AreaScore] = []
    for area in SkillArea:
        zs = [s.z_score for s in scores if s.area == area and s.enough_data]
        need = policy.area_min_domains.get(area, 1)
        if len(zs) >= need:
            z = statistics.fmean(zs)
            out.append(AreaScore(area, True, to_scale(z), z))
        else:
            out.append(AreaScore(area, False, 0.0))
    return out


def day_start(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def week_start(at: datetime | date) -> datetime:
    d = at.date() if isinstance(at, datetime) else at
    return day_start(d - timedelta(days=d.weekday()))


def weekly_trends(
    results: Sequence[SessionResult],
    catalog: Catalog,
    as_of: datetime,
    policy: ScoringPolicy = DEFAULT_POLICY,
) -> list[TrendPoint]:
    """Per domain and week (the last `trend_weeks`, oldest first): mean z of that week's sessions."""
    as_of = utc(as_of)
    first = week_start(as_of) - timedelta(weeks=policy.trend_weeks - 1)
    out: list[TrendPoint] = []
    for d in SKILL_DOMAINS:
        buckets: dict[datetime, list[float]] = {first + timedelta(weeks=i): [] for i in range(policy.trend_weeks)}
        for s in domain_sessions(results, catalog, d, as_of):
            wk = week_start(s.at)
            if wk in buckets:
                buckets[wk].append(s.z)
        for wk, zs in buckets.items():
            enough = len(zs) >= policy.trend_min_sessions
            score = to_scale(statistics.fmean(zs)) if enough and zs else 0.0
            out.append(TrendPoint(d, wk, enough, score, len(zs)))
    return out


def play_time(
    results: Iterable[SessionResult], as_of: datetime, policy: ScoringPolicy = DEFAULT_POLICY
) -> tuple[list[PlayTime], list[PlayTime]]:
    """(daily for the last `daily_play_days`, weekly for the last `weekly_play_weeks`), oldest first, zero-filled."""
    as_of = utc(as_of)
    today = as_of.date()
    days = {day_start(today - timedelta(days=i)): [0.0, 0] for i in range(policy.daily_play_days)}
    this_week = week_start(as_of)
    weeks = {this_week - timedelta(weeks=i): [0.0, 0] for i in range(policy.weekly_play_weeks)}
    for r in results:
        if r.started_at > as_of:
            continue
        for key, table in ((day_start(r.started_at.date()), days), (week_start(r.started_at), weeks)):
            if key in table:
                table[key][0] += r.duration_seconds
                table[key][1] += 1
    daily = [PlayTime(k, round(v[0]), int(v[1])) for k, v in sorted(days.items())]
    weekly = [PlayTime(k, round(v[0]), int(v[1])) for k, v in sorted(weeks.items())]
    return daily, weekly


def play_dates(results: Iterable[SessionResult]) -> set[date]:
    return {r.started_at.date() for r in results}


def streaks(dates: Collection[date], as_of: datetime | date) -> tuple[int, int]:
    """(current, longest) runs of consecutive UTC days with play.

    The current streak is still alive if the child played yesterday but not yet today.
    """
    today = as_of.date() if isinstance(as_of, datetime) else as_of
    days = sorted(d for d in set(dates) if d <= today)
    longest = run = 0
    prev: date | None = None
    for d in days:
        run = run + 1 if prev is not None and d - prev == timedelta(days=1) else 1
        longest = max(longest, run)
        prev = d
    current = 0
    if days and (today - days[-1]).days <= 1:
        current = run
    return current, longest


def sessions_in_last(results: Iterable[SessionResult], as_of: datetime, days: int = 28) -> int:
    as_of = utc(as_of)
    since = as_of - timedelta(days=days)
    return sum(1 for r in results if since < r.started_at <= as_of)
