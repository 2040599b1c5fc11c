"""Domain types of the analytics service.

Plain frozen dataclasses; the servicer converts protobuf <-> these. Enum values
are the proto enum names without their prefix, so the conversion is
``common_pb2.SkillDomain.Value("SKILL_DOMAIN_" + domain.value)`` and back
``SkillDomain(name.removeprefix("SKILL_DOMAIN_"))``.

All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from services.common.timeutil import age_months, as_utc


class SkillArea(StrEnum):
    COGNITIVE = "COGNITIVE"
    EMOTIONAL = "EMOTIONAL"
    SOCIAL = "SOCIAL"


class SkillDomain(StrEnum):
    WORKING_MEMORY = "WORKING_MEMORY"
    ATTENTION = "ATTENTION"
    PROBLEM_SOLVING = "PROBLEM_SOLVING"
    NUMBER_SENSE = "NUMBER_SENSE"
    EMOTION_RECOGNITION = "EMOTION_RECOGNITION"
    SOCIAL_INTERACTION = "SOCIAL_INTERACTION"
    MOOD = "MOOD"
    # Used only for flags that are not about one domain (proto value 0).
    UNSPECIFIED = "UNSPECIFIED"


DOMAIN_AREA: dict[SkillDomain, SkillArea] = {
    SkillDomain.WORKING_MEMORY: SkillArea.COGNITIVE,
    SkillDomain.ATTENTION: SkillArea.COGNITIVE,
    SkillDomain.PROBLEM_SOLVING: SkillArea.COGNITIVE,
    SkillDomain.NUMBER_SENSE: SkillArea.COGNITIVE,
    SkillDomain.EMOTION_RECOGNITION: SkillArea.EMOTIONAL,
    SkillDomain.SOCIAL_INTERACTION: SkillArea.SOCIAL,
    SkillDomain.MOOD: SkillArea.EMOTIONAL,
}

# The six domains measured by games (MOOD comes from check-ins).
SKILL_DOMAINS: tuple[SkillDomain, ...] = (
    SkillDomain.WORKING_MEMORY,
    SkillDomain.ATTENTION,
    SkillDomain.PROBLEM_SOLVING,
    SkillDomain.NUMBER_SENSE,
    SkillDomain.EMOTION_RECOGNITION,
    SkillDomain.SOCIAL_INTERACTION,
)

DOMAIN_LABEL: dict[SkillDomain, str] = {
    SkillDomain.WORKING_MEMORY: "working memory",
    SkillDomain.ATTENTION: "attention",
    SkillDomain.PROBLEM_SOLVING: "problem solving",
    SkillDomain.NUMBER_SENSE: "number sense",
    SkillDomain.EMOTION_RECOGNITION: "recognising emotions",
    SkillDomain.SOCIAL_INTERACTION: "social play",
    SkillDomain.MOOD: "mood and wellbeing",
    SkillDomain.UNSPECIFIED: "overall play",
}


class FieldType(StrEnum):
    INTEGER = "INTEGER"
    NUMBER = "NUMBER"
    STRING = "STRING"
    BOOLEAN = "BOOLEAN"
    INTEGER_LIST = "INTEGER_LIST"


class Mood(StrEnum):
    HAPPY = "HAPPY"
    CALM = "CALM"
    OKAY = "OKAY"
    TIRED = "TIRED"
    SAD = "SAD"
    WORRIED = "WORRIED"
    ANGRY = "ANGRY"


NEGATIVE_MOODS: frozenset[Mood] = frozenset({Mood.SAD, Mood.WORRIED, Mood.ANGRY})
POSITIVE_MOODS: frozenset[Mood] = frozenset({Mood.HAPPY, Mood.CALM})


class FlagLevel(StrEnum):
    ON_TRACK = "ON_TRACK"
    # Below the age comparison, but the comparison rests on provisional norms:
    # a gentle note with tips, never a referral (docs/flags.md).
    EARLY_SIGNAL = "EARLY_SIGNAL"
    KEEP_AN_EYE = "KEEP_AN_EYE"
    DISCUSS_WITH_PROFESSIONAL = "DISCUSS_WITH_PROFESSIONAL"


# Most serious first (the proto's numbers are not an order).
LEVEL_RANK: dict[FlagLevel, int] = {
    FlagLevel.DISCUSS_WITH_PROFESSIONAL: 0, FlagLevel.KEEP_AN_EYE: 1, FlagLevel.EARLY_SIGNAL: 2,
    FlagLevel.ON_TRACK: 3,
}


class NormStrength(StrEnum):
    """How far an age comparison can be trusted (docs/flags.md).

    NONE: no norm covers the results. PROVISIONAL: expert estimates (n = 0).
    GATHERING: platform norms from fewer children per age band than the policy's
    minimum. ESTABLISHED: platform norms with at least that many children per
    band, or published norms whose scoring matches the game's.
    """

    NONE = "NONE"
    PROVISIONAL = "PROVISIONAL"
    GATHERING = "GATHERING"
    ESTABLISHED = "ESTABLISHED"


# Weakest first: a mix of norms is as strong as its weakest part.
STRENGTH_ORDER: tuple[NormStrength, ...] = (
    NormStrength.NONE, NormStrength.PROVISIONAL, NormStrength.GATHERING, NormStrength.ESTABLISHED)


class FlagKind(StrEnum):
    SKILL = "SKILL"
    LOW_MOOD = "LOW_MOOD"
    ENGAGEMENT_DROP = "ENGAGEMENT_DROP"
    PERFORMANCE_DROP = "PERFORMANCE_DROP"


# -- raw play data -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trial:
    """One trial as the device recorded it (stimulus/response as plain JSON values)."""

    index: int
    stimulus: Mapping[str, Any]
    response: Mapping[str, Any]
    correct: bool
    responded: bool
    reaction_time_ms: int
    presented_at: datetime | None
    responded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    child_id: str
    game_id: str
    game_version: int
    started_at: datetime | None
    ended_at: datetime | None
    trials: tuple[Trial, ...]

    @property
    def duration_seconds(self) -> float:
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class MoodCheckIn:
    checkin_id: str
    child_id: str
    mood: Mood
    intensity: int  # 1 (a little) .. 5 (very)
    recorded_at: datetime


# -- derived data ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class SessionMetrics:
    """What `metrics.compute_metrics` returns. Absent metrics are simply not listed."""

    metrics: tuple[Metric, ...]
    valid_trials: int
    excluded_trials: int

    def get(self, name: str) -> Metric | None:
        for m in self.metrics:
            if m.name == name:
                return m
        return None


@dataclass(frozen=True, slots=True)
class MetricValue:
    """A metric with its age-norm comparison (mirrors the MetricValue proto).

    `z_score` is sign-corrected: higher is always better. `percentile` is 0..100.
    `norm_source` is "published", "provisional", "platform" or "" when not normed;
    `norm_n` the children behind the norm's age band (0 for expert estimates and
    for results read back from storage until re-normed).
    """

    name: str
    value: float
    unit: str
    normed: bool = False
    z_score: float = 0.0
    percentile: float = 0.0
    norm_source: str = ""
    norm_n: int = 0


@dataclass(frozen=True, slots=True)
class SessionResult:
    """A scored session, as stored by the service and used by reports and flags."""

    session_id: str
    child_id: str
    game_id: str
    game_version: int
    domain: SkillDomain
    started_at: datetime
    ended_at: datetime
    metrics: tuple[MetricValue, ...]
    valid_trials: int
    excluded_trials: int
    xp_awarded: int = 0

    def metric(self, name: str) -> MetricValue | None:
        for m in self.metrics:
            if m.name == name:
                return m
        return None

    @property
    def duration_seconds(self) -> float:
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class FlagEvidence:
    metric: str
    value: float
    z_score: float
    session_id: str
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class Tip:
    tip_id: str
    domain: SkillDomain
    age_band: str
    title: str
    body: str
    when_to_seek_help: str
    topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Flag:
    """A screening signal (mirrors the Flag proto). Never a diagnosis.

    `flag_id` is deterministic per (child, kind, domain), so the store can upsert
    and keep the first `first_seen_at` it saw.
    """

    flag_id: str
    child_id: str
    kind: FlagKind
    level: FlagLevel
    domain: SkillDomain
    headline: str
    explanation: str
    evidence: tuple[FlagEvidence, ...]
    tips: tuple[Tip, ...]
    session_count: int
    first_seen_at: datetime
    updated_at: datetime
    # The strength of the norms a skill or performance-drop flag rests on (NONE for
    # flags against the child's own baseline: mood and play time).
    norm_strength: NormStrength = NormStrength.NONE


# -- helpers -------------------------------------------------------------------------


# Aware UTC datetimes (naive input is taken to be UTC) and ages: the chassis' one copy.
utc = as_utc


@dataclass(frozen=True, slots=True)
class ChildInfo:
    child_id: str
    birth_year: int
    birth_month: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    def age_months_at(self, at: datetime | date) -> int:
        return age_months(self.birth_year, self.birth_month, at)
