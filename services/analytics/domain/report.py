"""The parent report and the short summary the chat assistant uses as context.

Inputs are the child's scored sessions (`SessionResult`, at least the last 10
weeks: trends cover 8 weeks and drop signals compare with the 6 weeks before the
last 2), mood check-ins (last 4 weeks suffice), the birth year-month and `as_of`.
Streaks need every play date; pass `play_dates` (a small set the store can keep
incrementally) when `results` is only the recent window. The avatar comes from
profile and is added by the servicer.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.analytics.domain.catalog import Catalog
from services.analytics.domain.flags import (
    DEFAULT_FLAG_POLICY,
    DomainStatus,
    FlagPolicy,
    evaluate_flags,
)
from services.analytics.domain.norms import NormTable, domain_norms
from services.analytics.domain.scoring import (
    DEFAULT_POLICY,
    AreaScore,
    DomainScore,
    PlayTime,
    ScoringPolicy,
    TrendPoint,
    area_scores,
    domain_scores,
    play_time,
    sessions_in_last,
    streaks,
    weekly_trends,
)
from services.analytics.domain.scoring import play_dates as _play_dates
from services.analytics.domain.tips import TipLibrary
from services.analytics.domain.types import (
    DOMAIN_LABEL,
    NEGATIVE_MOODS,
    Flag,
    FlagKind,
    FlagLevel,
    MoodCheckIn,
    SessionResult,
    age_months,
    utc,
)

STRENGTH_Z = 0.5
LOOKBACK_DAYS = 70


@dataclass(frozen=True, slots=True)
class ChildSummary:
    child_id: str
    age_months: int
    strengths: tuple[str, ...]
    watch_areas: tuple[str, ...]
    mood_trend: str
    sessions_last_four_weeks: int
    text: str


@dataclass(frozen=True, slots=True)
class ChildReport:
    child_id: str
    generated_at: datetime
    domain_scores: tuple[DomainScore, ...]
    area_scores: tuple[AreaScore, ...]
    weekly_trends: tuple[TrendPoint, ...]
    daily_play: tuple[PlayTime, ...]
    weekly_play: tuple[PlayTime, ...]
    current_streak_days: int
    longest_streak_days: int
    flags: tuple[Flag, ...]
    summary: ChildSummary
    enough_data: bool
    not_enough_data_reason: str
    domain_statuses: tuple[DomainStatus, ...] = ()


def mood_trend(checkins: Sequence[MoodCheckIn], as_of: datetime) -> str:
    """Plain description of the last 4 weeks of check-ins, with the direction when clear."""
    as_of = utc(as_of)
    recent = [c for c in checkins if as_of - timedelta(days=28) < utc(c.recorded_at) <= as_of]
    if len(recent) < 3:
        return "not enough check-ins yet"
    share = sum(c.mood in NEGATIVE_MOODS for c in recent) / len(recent)
    label = "mostly positive" if share < 0.2 else "mixed" if share < 0.4 else "often low"
    mid = as_of - timedelta(days=14)
    late = [c for c in recent if utc(c.recorded_at) > mid]
    early = [c for c in recent if utc(c.recorded_at) <= mid]
    if len(late) >= 3 and len(early) >= 3:
        diff = (sum(c.mood in NEGATIVE_MOODS for c in late) / len(late)
                - sum(c.mood in NEGATIVE_MOODS for c in early) / len(early))
        if diff >= 0.2:
            label += ", lower in the last two weeks"
        elif diff <= -0.2:
            label += ", brighter in the last two weeks"
    return f"{label} ({len(recent)} check-ins in the last 4 weeks)"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _watch_areas(flags: Sequence[Flag]) -> list[str]:
    out: list[str] = []
    for f in flags:
        what = {FlagKind.SKILL: DOMAIN_LABEL[f.domain],
                FlagKind.LOW_MOOD: "mood check-ins",
                FlagKind.ENGAGEMENT_DROP: "play time",
                FlagKind.PERFORMANCE_DROP: f"{DOMAIN_LABEL[f.domain]} (drop from usual level)"}[f.kind]
        level = {FlagLevel.DISCUSS_WITH_PROFESSIONAL: "worth discussing",
                 FlagLevel.EARLY_SIGNAL: "early signal, norms still being gathered"}.get(f.level, "keep an eye")
        out.append(f"{what} ({level})")
    return out


def build_summary(
    child_id: str, age: int, scores: Sequence[DomainScore], flags: Sequence[Flag],
    checkins: Sequence[MoodCheckIn], sessions_4w: int, as_of: datetime,
) -> ChildSummary:
    scored = [s for s in scores if s.enough_data]
    strengths = [DOMAIN_LABEL[s.domain] for s in sorted(scored, key=lambda s: -s.z_score) if s.z_score >= STRENGTH_Z]
    watch = _watch_areas(flags)
    trend = mood_trend(checkins, as_of)
    years, months = divmod(age, 12)
    sentences = [f"Your child is {years} years and {months} month{'s' if months != 1 else ''} old"
                 + (f" and played {sessions_4w} game session{'s' if sessions_4w != 1 else ''} in the last 4 weeks."
                    if sessions_4w else " and has not played in the last 4 weeks.")]
    if not scored:
        sentences.append("There is not enough play yet to compare skills with children of the same age.")
    elif strengths:
        sentences.append(f"Relative strengths: {_join(strengths[:3])}.")
    else:
        sentences.append("Results so far are around the typical range for their age.")
    discuss = [w for f, w in zip(flags, watch, strict=True) if f.level == FlagLevel.DISCUSS_WITH_PROFESSIONAL]
    keep = [w for f, w in zip(flags, watch, strict=True) if f.level == FlagLevel.KEEP_AN_EYE]
    if discuss:
        sentences.append("Worth discussing with a pediatrician or teacher: "
                         f"{_join([d.rsplit(' (', 1)[0] for d in discuss])} "
                         "(screening signals, not a diagnosis).")
    if keep:
        sentences.append(f"Worth keeping an eye on: {_join([k.rsplit(' (', 1)[0] for k in keep])}.")
    early = [w for f, w in zip(flags, watch, strict=True) if f.level == FlagLevel.EARLY_SIGNAL]
    if early:
        sentences.append(f"Early signals only, against provisional age estimates (no reason to seek a "
                         f"professional on their own): {_join([e.rsplit(' (', 1)[0] for e in early])}.")
    if not discuss and not keep and not early and scored:
        sentences.append("No screening signals at the moment.")
    sentences.append(f"Mood check-ins: {trend}.")
    return ChildSummary(child_id, age, tuple(strengths), tuple(watch), trend, sessions_4w, " ".join(sentences))


def build_report(
    child_id: str,
    birth_year: int,
    birth_month: int,
    results: Sequence[SessionResult],
    checkins: Sequence[MoodCheckIn],
    as_of: datetime,
    catalog: Catalog,
    tips: TipLibrary,
    *,
    play_dates: Collection[date] | None = None,
    flag_policy: FlagPolicy = DEFAULT_FLAG_POLICY,
    scoring_policy: ScoringPolicy = DEFAULT_POLICY,
    norms: NormTable | None = None,
) -> ChildReport:
    """`norms`: the table in use, to report each domain's norm status before there
    is enough play in it (results carry their own norms once scored)."""
    as_of = utc(as_of)
    age = age_months(birth_year, birth_month, as_of)
    results = [r for r in results if r.started_at <= as_of]
    min_n = flag_policy.established_min_n
    expected = domain_norms(norms, catalog, age, min_n) if norms is not None else None
    scores = domain_scores(results, catalog, as_of, scoring_policy, expected=expected, min_norm_children=min_n)
    evaluation = evaluate_flags(child_id, results, checkins, catalog, tips, age, as_of, flag_policy, scoring_policy)
    daily, weekly = play_time(results, as_of, scoring_policy)
    current, longest = streaks(play_dates if play_dates is not None else _play_dates(results), as_of)
    sessions_4w = sessions_in_last(results, as_of, 28)
    summary = build_summary(child_id, age, scores, evaluation.flags, checkins, sessions_4w, as_of)
    enough = any(s.enough_data for s in scores)
    reason = ""
    if not enough:
        most = max((s.session_count for s in scores), default=0)
        reason = (f"Not enough data yet: scores appear once a game has been played {scoring_policy.min_sessions} "
                  f"times in {scoring_policy.window_days // 7} weeks (so far at most {most}).")
    return ChildReport(
        child_id=child_id,
        generated_at=as_of,
        domain_scores=tuple(scores),
        area_scores=tuple(area_scores(scores, scoring_policy)),
        weekly_trends=tuple(weekly_trends(results, catalog, as_of, scoring_policy)),
        daily_play=tuple(daily),
        weekly_play=tuple(weekly),
        current_streak_days=current,
        longest_streak_days=longest,
        flags=evaluation.flags,
        summary=summary,
        enough_data=enough,
        not_enough_data_reason=reason,
        domain_statuses=evaluation.statuses,
    )
