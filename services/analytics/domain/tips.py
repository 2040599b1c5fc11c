"""The curated tips library (data/tips.json), written for this project.

Every tip has a skill domain (MOOD for emotional wellbeing, engagement and
performance-drop tips), an age band ("4-6", "7-9", "10-12"), topics
("skill", "low_mood", "engagement", "performance_drop") and when to seek
professional advice. Listing order is by tip_id (stable for pagination).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.analytics.domain.catalog import DATA_DIR, CatalogError
from services.analytics.domain.types import FlagKind, SkillDomain, Tip

DEFAULT_TIPS_PATH = DATA_DIR / "tips.json"
AGE_BANDS: tuple[str, ...] = ("4-6", "7-9", "10-12")
TOPICS: tuple[str, ...] = ("skill", "low_mood", "engagement", "performance_drop")
KIND_TOPIC: dict[FlagKind, str] = {
    FlagKind.SKILL: "skill",
    FlagKind.LOW_MOOD: "low_mood",
    FlagKind.ENGAGEMENT_DROP: "engagement",
    FlagKind.PERFORMANCE_DROP: "performance_drop",
}


class _TipModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tip_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    domain: SkillDomain
    age_band: str
    topics: tuple[str, ...] = Field(min_length=1)
    title: str = Field(min_length=3, max_length=80)
    body: str = Field(min_length=40, max_length=1000)
    when_to_seek_help: str = Field(min_length=20, max_length=600)


class _TipsFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tips_version: str
    tips: tuple[_TipModel, ...]


def age_band_for(age_months: int) -> str:
    years = age_months // 12
    if years <= 6:
        return "4-6"
    if years <= 9:
        return "7-9"
    return "10-12"


class TipLibrary:
    def __init__(self, version: str, tips: Iterable[Tip]) -> None:
        self.version = version
        self.tips: tuple[Tip, ...] = tuple(sorted(tips, key=lambda t: t.tip_id))
        ids = [t.tip_id for t in self.tips]
        if len(set(ids)) != len(ids):
            raise CatalogError("duplicate tip ids")
        for t in self.tips:
            if t.age_band not in AGE_BANDS:
                raise CatalogError(f"tip {t.tip_id}: unknown age band {t.age_band!r}")
            if not set(t.topics) <= set(TOPICS):
                raise CatalogError(f"tip {t.tip_id}: unknown topic in {t.topics}")

    def list(self, domain: SkillDomain | None = None, age_band: str | None = None) -> list[Tip]:
        """ListTips: optional filters (None or "" means any)."""
        return [t for t in self.tips
                if (not domain or domain == SkillDomain.UNSPECIFIED or t.domain == domain)
                and (not age_band or t.age_band == age_band)]

    def for_flag(self, kind: FlagKind, domain: SkillDomain, age_months: int, limit: int = 3) -> tuple[Tip, ...]:
        """Tips for a flag: same topic and age band; skill tips also match the domain."""
        band = age_band_for(age_months)
        topic = KIND_TOPIC[kind]
        picked = [t for t in self.tips if t.age_band == band and topic in t.topics
                  and (kind != FlagKind.SKILL or t.domain == domain)]
        if kind == FlagKind.PERFORMANCE_DROP:
            # A practice idea for the domain that dropped.
            picked += [t for t in self.tips if t.age_band == band and "skill" in t.topics
                       and t.domain == domain][:1]
        if kind in (FlagKind.ENGAGEMENT_DROP, FlagKind.PERFORMANCE_DROP):
            # A drop is worth a gentle conversation about wellbeing.
            picked += [t for t in self.tips if t.age_band == band and "low_mood" in t.topics][:1]
        return tuple(picked[:limit])


def load_tips(path: Path | str = DEFAULT_TIPS_PATH) -> TipLibrary:
    try:
        parsed = _TipsFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise CatalogError(f"bad tips file {path}: {exc}") from exc
    return TipLibrary(parsed.tips_version, (
        Tip(t.tip_id, t.domain, t.age_band, t.title, t.body, t.when_to_seek_help, t.topics) for t in parsed.tips
    ))
