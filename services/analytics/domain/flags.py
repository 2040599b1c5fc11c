"""Screening flags: signals to look closer, never diagnoses.

Skill bands (issue 3, modelled on ASQ-3 practice), on the domain z of
`scoring` (the mean session z over the child's recent window of up to 8 scorable
sessions in 56 days; higher is better):

* not enough data: fewer than `min_sessions` (3) normed sessions: no flag;
* DISCUSS_WITH_PROFESSIONAL: z <= -2 with enough evidence (>= 3 sessions), or
  z <= -1.5 over >= 3 valid sessions whose first and last lie >= 7 days apart
  (they cover two weeks);
* KEEP_AN_EYE: -2 < z < -1 and persisting: >= 2 of the window's sessions
  individually below -1;
* ON_TRACK otherwise (z >= -1, or a single bad session).

A flag is only as strong as its norm (issue 17; `norms.norm_strength`, the
weakest norm behind the window's primary metrics):

* PROVISIONAL norms (expert estimates, n = 0): any band below ON_TRACK becomes
  EARLY_SIGNAL, worded "an early signal; norms are still being gathered", with
  tips and never a referral;
* GATHERING (platform norms from fewer than `established_min_n`, default 200,
  children per age band): DISCUSS is capped at KEEP_AN_EYE;
* ESTABLISHED (platform norms with >= `established_min_n` children per band, or
  published norms that match the game's scoring): the bands above.

Emotional wellbeing (own baseline, no norms):

* LOW_MOOD: over the last 28 days with >= 6 check-ins: KEEP_AN_EYE with >= 3
  sad/worried/angry check-ins, >= 35 % of them, spread over >= 7 days;
  DISCUSS with >= 6, >= 50 %, spread over >= 14 days.
* ENGAGEMENT_DROP: sessions in the last 14 days <= 40 % of what the child's own
  rate over the 6 weeks before predicts (which must be >= 2/week over >= 4
  covered weeks), and a Poisson lower tail p < 0.01. KEEP_AN_EYE; DISCUSS only
  together with a low-mood signal.
* PERFORMANCE_DROP: a domain's mean z in the last 14 days is >= 1.0 below its
  mean in the 6 weeks before (>= 3 recent, >= 4 earlier sessions) and the drop
  is >= 2.5 standard errors. KEEP_AN_EYE; DISCUSS together with a low-mood
  signal, or when >= 2 domains with ESTABLISHED norms drop at once (the size of
  a drop is measured in the norms' SD, which provisional norms only guess).

Wording is plain and non-diagnostic, says it is a screening signal and what to do next.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from services.analytics.domain.catalog import Catalog
from services.analytics.domain.norms import ESTABLISHED_MIN_CHILDREN, metric_strength, weakest
from services.analytics.domain.scoring import (
    DEFAULT_POLICY,
    ScoringPolicy,
    SessionZ,
    domain_sessions,
    to_scale,
    window,
)
from services.analytics.domain.tips import TipLibrary
from services.analytics.domain.types import (
    DOMAIN_LABEL,
    LEVEL_RANK,
    NEGATIVE_MOODS,
    SKILL_DOMAINS,
    Flag,
    FlagEvidence,
    FlagKind,
    FlagLevel,
    MoodCheckIn,
    NormStrength,
    SessionResult,
    SkillDomain,
    utc,
)

_FLAG_NS = uuid.UUID("6f1c7a52-5f0e-4a8e-9a53-2b7f0d3c9e11")
NOT_DIAGNOSIS = "This is a screening signal from short games, not a diagnosis."

SkillState = Literal["not_enough_data", "no_norms", "on_track", "early_signal", "keep_an_eye", "discuss"]
_STATE: dict[FlagLevel, SkillState] = {
    FlagLevel.ON_TRACK: "on_track", FlagLevel.EARLY_SIGNAL: "early_signal",
    FlagLevel.KEEP_AN_EYE: "keep_an_eye", FlagLevel.DISCUSS_WITH_PROFESSIONAL: "discuss",
}


@dataclass(frozen=True, slots=True)
class FlagPolicy:
    keep_eye_z: float = -1.0
    discuss_z: float = -2.0
    persistent_discuss_z: float = -1.5
    keep_eye_min_low_sessions: int = 2
    persistent_min_sessions: int = 3
    persistent_min_span_days: int = 7
    allow_provisional_norms: bool = True
    # Children per age band platform norms need before a flag may suggest a referral.
    established_min_n: int = ESTABLISHED_MIN_CHILDREN
    mood_window_days: int = 28
    mood_min_checkins: int = 6
    mood_keep_eye: tuple[int, float, int] = (3, 0.35, 7)  # negatives, share, span days
    mood_discuss: tuple[int, float, int] = (6, 0.5, 14)
    recent_days: int = 14
    baseline_days: int = 42
    engagement_min_baseline_weeks: float = 4.0
    engagement_min_baseline_per_week: float = 2.0
    engagement_drop_ratio: float = 0.4
    engagement_max_p: float = 0.01
    perf_min_recent: int = 3
    perf_min_baseline: int = 4
    perf_min_drop: float = 1.0
    perf_min_t: float = 2.5
    perf_min_sd: float = 0.5


DEFAULT_FLAG_POLICY = FlagPolicy()


@dataclass(frozen=True, slots=True)
class DomainStatus:
    domain: SkillDomain
    state: SkillState
    level: FlagLevel | None
    z: float | None
    session_count: int
    note: str
    norm_strength: NormStrength = NormStrength.NONE


@dataclass(frozen=True, slots=True)
class FlagEvaluation:
    flags: tuple[Flag, ...]
    statuses: tuple[DomainStatus, ...]
    mood_state: Literal["not_enough_data", "no_signal", "keep_an_eye", "discuss"]


def flag_id(child_id: str, kind: FlagKind, domain: SkillDomain) -> str:
    return str(uuid.uuid5(_FLAG_NS, f"{child_id}/{kind.value}/{domain.value}"))


def _weeks(first: datetime, as_of: datetime) -> int:
    return max(1, round((as_of - first).days / 7))


def _evidence(sessions: Sequence[SessionZ]) -> tuple[FlagEvidence, ...]:
    return tuple(FlagEvidence(m.name, m.value, m.z_score, s.result.session_id, s.at)
                 for s in sessions for m in s.primary)


# -- skill ---------------------------------------------------------------------------------


def skill_level(win: Sequence[SessionZ], policy: FlagPolicy, min_sessions: int) -> FlagLevel | None:
    """The band for a window of scorable sessions (oldest first); None: not enough data."""
    if len(win) < min_sessions:
        return None
    z = statistics.fmean(s.z for s in win)
    span_days = (win[-1].at - win[0].at).total_seconds() / 86400
    if z <= policy.discuss_z:
        return FlagLevel.DISCUSS_WITH_PROFESSIONAL
    if (z <= policy.persistent_discuss_z and len(win) >= policy.persistent_min_sessions
            and span_days >= policy.persistent_min_span_days):
        return FlagLevel.DISCUSS_WITH_PROFESSIONAL
    low = sum(1 for s in win if s.z < policy.keep_eye_z)
    if z < policy.keep_eye_z and low >= policy.keep_eye_min_low_sessions:
        return FlagLevel.KEEP_AN_EYE
    return FlagLevel.ON_TRACK


def cap_level(level: FlagLevel, strength: NormStrength) -> FlagLevel:
    """The most a norm of `strength` lets a skill band say (module doc)."""
    if level == FlagLevel.ON_TRACK:
        return level
    if strength in (NormStrength.PROVISIONAL, NormStrength.NONE):
        return FlagLevel.EARLY_SIGNAL
    if strength == NormStrength.GATHERING and level == FlagLevel.DISCUSS_WITH_PROFESSIONAL:
        return FlagLevel.KEEP_AN_EYE
    return level


def window_strength(win: Sequence[SessionZ], policy: FlagPolicy) -> NormStrength:
    return weakest(metric_strength(m, policy.established_min_n) for s in win for m in s.primary)


def _skill_text(domain: SkillDomain, level: FlagLevel, win: Sequence[SessionZ], as_of: datetime,
                strength: NormStrength) -> tuple[str, str]:
    label = DOMAIN_LABEL[domain]
    z = statistics.fmean(s.z for s in win)
    score = to_scale(z)
    weeks = _weeks(win[0].at, as_of)
    if level == FlagLevel.EARLY_SIGNAL:
        return (f"{label.capitalize()}: an early signal (norms are still being gathered)",
                f"In recent sessions your child's {label} results were below what we currently "
                f"estimate for their age (average score {score:.0f} of 100, where 50 is the estimated "
                "age average). These age estimates are provisional: they come from expert judgement, "
                "not yet from enough children playing this game, so they may be off. Treat this as "
                f"an early signal only. {NOT_DIAGNOSIS} Keep playing, try the tips below if you like, "
                "and we will tell you more once the comparison rests on enough children.")
    if level == FlagLevel.DISCUSS_WITH_PROFESSIONAL:
        return (f"{label.capitalize()}: worth discussing with a pediatrician or teacher",
                f"Across {len(win)} sessions over the last {weeks} week{'s' if weeks > 1 else ''}, "
                f"your child's {label} game results stayed well below what is typical for their age "
                f"(average score {score:.0f} of 100, where 50 is the age average). {NOT_DIAGNOSIS} "
                "Tiredness, distractions or an unfamiliar game can all lower results. Because the "
                "pattern has held across several sessions, it is worth mentioning to your child's "
                "pediatrician or teacher, who can look at the whole picture. Meanwhile, the tips "
                "below are easy things to try at home.")
    gathering = (" The age comparison is still being built from the children who play: it rests on "
                 "fewer children than we require before suggesting a professional's view."
                 if strength == NormStrength.GATHERING else "")
    return (f"{label.capitalize()}: keep an eye on it",
            f"In recent sessions your child's {label} results were somewhat below the usual range "
            f"for their age (average score {score:.0f} of 100, where 50 is the age average). "
            f"Results vary from day to day, and {NOT_DIAGNOSIS[0].lower()}{NOT_DIAGNOSIS[1:]} Nothing "
            "more is needed for now than the tips below and regular play; we will tell you if the "
            f"pattern continues.{gathering}")


def skill_flags(
    child_id: str, results: Sequence[SessionResult], catalog: Catalog, tips: TipLibrary,
    age_months: int, as_of: datetime, policy: FlagPolicy, scoring: ScoringPolicy,
) -> tuple[list[Flag], list[DomainStatus]]:
    flags: list[Flag] = []
    statuses: list[DomainStatus] = []
    since = as_of - timedelta(days=scoring.window_days)
    for d in SKILL_DOMAINS:
        raw = sum(1 for r in results if r.domain == d and since < r.started_at <= as_of)
        sessions = domain_sessions(results, catalog, d, as_of)
        if not policy.allow_provisional_norms:
            sessions = [s for s in sessions if all(m.norm_source != "provisional" for m in s.primary)]
        win = window(sessions, as_of, scoring)
        level = skill_level(win, policy, scoring.min_sessions)
        if level is None:
            if raw >= scoring.min_sessions:
                statuses.append(DomainStatus(d, "no_norms", None, None, len(win),
                                             "No age norms for these results yet."))
            else:
                statuses.append(DomainStatus(d, "not_enough_data", None, None, len(win),
                                             f"Not enough data yet: {len(win)} of {scoring.min_sessions} sessions needed."))
            continue
        z = statistics.fmean(s.z for s in win)
        strength = window_strength(win, policy)
        level = cap_level(level, strength)
        statuses.append(DomainStatus(d, _STATE[level], level, z, len(win), "", strength))
        if level == FlagLevel.ON_TRACK:
            continue
        headline, text = _skill_text(d, level, win, as_of, strength)
        flags.append(Flag(flag_id(child_id, FlagKind.SKILL, d), child_id, FlagKind.SKILL, level, d,
                          headline, text, _evidence(win), tips.for_flag(FlagKind.SKILL, d, age_months),
                          len(win), win[0].at, as_of, strength))
    return flags, statuses


# -- mood ------------------------------------------------------------------------------------


def low_mood_flag(
    child_id: str, checkins: Sequence[MoodCheckIn], tips: TipLibrary, age_months: int,
    as_of: datetime, policy: FlagPolicy,
) -> tuple[Flag | None, Literal["not_enough_data", "no_signal", "keep_an_eye", "discuss"]]:
    since = as_of - timedelta(days=policy.mood_window_days)
    recent = sorted((c for c in checkins if since < utc(c.recorded_at) <= as_of), key=lambda c: c.recorded_at)
    if len(recent) < policy.mood_min_checkins:
        return None, "not_enough_data"
    neg = [c for c in recent if c.mood in NEGATIVE_MOODS]
    share = len(neg) / len(recent)
    span = (neg[-1].recorded_at - neg[0].recorded_at).total_seconds() / 86400 if neg else 0.0

    def meets(rule: tuple[int, float, int]) -> bool:
        return len(neg) >= rule[0] and share >= rule[1] and span >= rule[2]

    if meets(policy.mood_discuss):
        level = FlagLevel.DISCUSS_WITH_PROFESSIONAL
    elif meets(policy.mood_keep_eye):
        level = FlagLevel.KEEP_AN_EYE
    else:
        return None, "no_signal"
    counts = f"{len(neg)} of {len(recent)} mood check-ins in the last {policy.mood_window_days // 7} weeks"
    if level == FlagLevel.DISCUSS_WITH_PROFESSIONAL:
        headline = "Mood check-ins: worth talking about, and with a professional if it continues"
        text = (f"Your child chose sad, worried or angry in {counts}, spread over {span:.0f} days. "
                "Everyone has hard days, and check-ins in a game are a screening signal, not a "
                "diagnosis. But a low mood that lasts two weeks or more deserves a gentle "
                "conversation with your child and, if it continues, with your pediatrician or the "
                "school counsellor. If your child ever talks about hurting themselves, seek help right away.")
    else:
        headline = "Mood check-ins: keep an eye on it"
        text = (f"Your child chose sad, worried or angry in {counts}. Ups and downs are normal, and "
                "this is a screening signal, not a diagnosis. A relaxed chat about how things are "
                "going can help; the tips below have ideas. We will tell you if it continues.")
    evidence = [FlagEvidence("negative_mood_share", share, 0.0, "", as_of)]
    evidence += [FlagEvidence(f"mood_{c.mood.value.lower()}", float(c.intensity), 0.0, c.checkin_id,
                              c.recorded_at) for c in neg]
    flag = Flag(flag_id(child_id, FlagKind.LOW_MOOD, SkillDomain.MOOD), child_id, FlagKind.LOW_MOOD, level,
                SkillDomain.MOOD, headline, text, tuple(evidence),
                tips.for_flag(FlagKind.LOW_MOOD, SkillDomain.MOOD, age_months), 0, neg[0].recorded_at, as_of)
    state: Literal["keep_an_eye", "discuss"] = "discuss" if level == FlagLevel.DISCUSS_WITH_PROFESSIONAL else "keep_an_eye"
    return flag, state


# -- drops against the child's own baseline ----------------------------------------------------


def poisson_cdf(k: int, lam: float) -> float:
    if lam <= 0:
        return 1.0
    term = total = math.exp(-lam)
    for i in range(1, k + 1):
        term *= lam / i
        total += term
    return min(1.0, total)


def engagement_drop(
    results: Sequence[SessionResult], as_of: datetime, policy: FlagPolicy
) -> tuple[float, int, float] | None:
    """(baseline sessions/week, recent sessions, p) when play dropped sharply, else None."""
    if not results:
        return None
    recent_start = as_of - timedelta(days=policy.recent_days)
    base_start = recent_start - timedelta(days=policy.baseline_days)
    first = min(r.started_at for r in results)
    covered_weeks = (recent_start - max(first, base_start)).total_seconds() / (7 * 86400)
    if covered_weeks < policy.engagement_min_baseline_weeks:
        return None
    base = sum(1 for r in results if base_start < r.started_at <= recent_start)
    recent = sum(1 for r in results if recent_start < r.started_at <= as_of)
    rate = base / covered_weeks
    if rate < policy.engagement_min_baseline_per_week:
        return None
    expected = rate * policy.recent_days / 7
    p = poisson_cdf(recent, expected)
    if recent <= policy.engagement_drop_ratio * expected and p < policy.engagement_max_p:
        return rate, recent, p
    return None


def performance_drop(
    sessions: Sequence[SessionZ], as_of: datetime, policy: FlagPolicy
) -> tuple[float, float, list[SessionZ]] | None:
    """(baseline mean z, recent mean z, recent sessions) when a domain dropped sharply."""
    recent_start = as_of - timedelta(days=policy.recent_days)
    base_start = recent_start - timedelta(days=policy.baseline_days)
    recent = [s for s in sessions if recent_start < s.at <= as_of]
    base = [s for s in sessions if base_start < s.at <= recent_start]
    if len(recent) < policy.perf_min_recent or len(base) < policy.perf_min_baseline:
        return None
    mr, mb = statistics.fmean(s.z for s in recent), statistics.fmean(s.z for s in base)
    vr, vb = statistics.variance([s.z for s in recent]), statistics.variance([s.z for s in base])
    pooled = math.sqrt(((len(recent) - 1) * vr + (len(base) - 1) * vb) / (len(recent) + len(base) - 2))
    se = max(policy.perf_min_sd, pooled) * math.sqrt(1 / len(recent) + 1 / len(base))
    drop = mb - mr
    if drop >= policy.perf_min_drop and drop / se >= policy.perf_min_t:
        return mb, mr, recent
    return None


def _drop_flags(
    child_id: str, results: Sequence[SessionResult], catalog: Catalog, tips: TipLibrary,
    age_months: int, as_of: datetime, policy: FlagPolicy, low_mood: bool,
) -> list[Flag]:
    flags: list[Flag] = []
    eng = engagement_drop(results, as_of, policy)
    if eng is not None:
        rate, recent, _ = eng
        level = FlagLevel.DISCUSS_WITH_PROFESSIONAL if low_mood else FlagLevel.KEEP_AN_EYE
        text = (f"Your child played {recent} session{'s' if recent != 1 else ''} in the last 2 weeks, "
                f"compared with about {rate:.1f} a week before. Less play often just means a busy "
                "time or new interests, and is a screening signal, not a diagnosis.")
        if low_mood:
            text += (" Together with the low mood check-ins, it is worth a gentle conversation with "
                     "your child and, if things do not improve, with your pediatrician.")
        headline = ("Play time dropped alongside low mood: worth discussing" if low_mood
                    else "Play time dropped sharply: keep an eye on it")
        ev: tuple[FlagEvidence, ...] = (FlagEvidence("sessions_per_week_baseline", rate, 0.0, "", as_of - timedelta(days=policy.recent_days)),
              FlagEvidence("sessions_last_two_weeks", float(recent), 0.0, "", as_of))
        flags.append(Flag(flag_id(child_id, FlagKind.ENGAGEMENT_DROP, SkillDomain.MOOD), child_id,
                          FlagKind.ENGAGEMENT_DROP, level, SkillDomain.MOOD, headline, text, ev,
                          tips.for_flag(FlagKind.ENGAGEMENT_DROP, SkillDomain.MOOD, age_months), recent,
                          as_of - timedelta(days=policy.recent_days), as_of))
    drops = {d: found for d in SKILL_DOMAINS
             if (found := performance_drop(domain_sessions(results, catalog, d, as_of), as_of, policy))}
    strengths = {d: window_strength(recent_s, policy) for d, (_, _, recent_s) in drops.items()}
    several = sum(1 for st in strengths.values() if st == NormStrength.ESTABLISHED) >= 2
    for d, (mb, mr, recent_s) in drops.items():
        label = DOMAIN_LABEL[d]
        at_once = several and strengths[d] == NormStrength.ESTABLISHED
        discuss = at_once or low_mood
        text = (f"In the last 2 weeks your child's {label} results were clearly lower than their own "
                f"earlier results (score {to_scale(mr):.0f} compared with {to_scale(mb):.0f} of 100). "
                "A dip like this often comes from tiredness, illness or a busy or stressful patch; it is "
                "a screening signal, not a diagnosis.")
        if discuss:
            why = "in several games at once" if at_once else "together with low mood check-ins"
            text += (f" Because results dropped {why}, it is worth checking in on how your child is "
                     "doing and, if the dip continues, talking with your pediatrician or teacher.")
        else:
            text += " If it continues for a few more weeks, consider mentioning it to their teacher."
        headline = f"{label.capitalize()}: results dropped compared with your child's usual level"
        drop_ev = (FlagEvidence("baseline_mean_z", mb, mb, "", as_of - timedelta(days=policy.recent_days)),
                   *_evidence(recent_s))
        flags.append(Flag(flag_id(child_id, FlagKind.PERFORMANCE_DROP, d), child_id, FlagKind.PERFORMANCE_DROP,
                          FlagLevel.DISCUSS_WITH_PROFESSIONAL if discuss else FlagLevel.KEEP_AN_EYE, d,
                          headline, text, drop_ev, tips.for_flag(FlagKind.PERFORMANCE_DROP, d, age_months),
                          len(recent_s), recent_s[0].at, as_of, strengths[d]))
    return flags


_KIND_ORDER = {k: i for i, k in enumerate(FlagKind)}


def evaluate_flags(
    child_id: str,
    results: Sequence[SessionResult],
    checkins: Sequence[MoodCheckIn],
    catalog: Catalog,
    tips: TipLibrary,
    age_months: int,
    as_of: datetime,
    policy: FlagPolicy = DEFAULT_FLAG_POLICY,
    scoring: ScoringPolicy = DEFAULT_POLICY,
) -> FlagEvaluation:
    """All current flags of a child (most serious first) and each skill domain's state.

    Needs the child's results and check-ins of the last 8 weeks (more is fine).
    """
    as_of = utc(as_of)
    results = [r for r in results if r.started_at <= as_of]
    flags, statuses = skill_flags(child_id, results, catalog, tips, age_months, as_of, policy, scoring)
    mood_flag, mood_state = low_mood_flag(child_id, checkins, tips, age_months, as_of, policy)
    if mood_flag is not None:
        flags.append(mood_flag)
    flags += _drop_flags(child_id, results, catalog, tips, age_months, as_of, policy, mood_flag is not None)
    flags.sort(key=lambda f: (LEVEL_RANK[f.level], _KIND_ORDER[f.kind], f.domain.value))
    return FlagEvaluation(tuple(flags), tuple(statuses), mood_state)
