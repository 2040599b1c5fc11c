"""Age norms (data/norms.json): lookup, z-scores, percentiles and platform norms.

Norms describe ONE session's metric for children of a whole year of age
(`age_years` = completed years). A lookup by age in months interpolates mean and
SD linearly between the centres of neighbouring year bands (a child does not
jump 0.3 SD on their birthday); inside the first/last band it uses that band;
outside the covered ages there is no norm.

z-scores are sign-corrected so that higher is better for every metric: for
metrics where lower is better (reaction time, commission errors) the sign is
flipped. z is clamped to +-4 (metrics are bounded and skewed in the tails).
Percentiles are 100 * Phi(z) (0..100).

Sources: "published" (a citation), "provisional" (expert estimate, n = 0) and
"platform" (recomputed from this platform's population by `platform_norms`).

Strength (`norm_strength`, what a flag may say; docs/flags.md): provisional
bands are PROVISIONAL; platform bands are GATHERING below `min_children`
children per band (default `ESTABLISHED_MIN_CHILDREN`, 200) and ESTABLISHED
from there; published bands are ESTABLISHED, and an entry may only be
"published" when it cites a paper whose values were taken for this game's own
scoring (`PublishedNorm.transfers`, with the table, the sample and how the
scoring was aligned). Papers that exist for a game's construct but do not
transfer are cited with `transfers: false` and the reason.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.analytics.domain.catalog import DATA_DIR, Catalog, CatalogError, GameSpec
from services.analytics.domain.types import (
    SKILL_DOMAINS,
    STRENGTH_ORDER,
    Metric,
    MetricValue,
    NormStrength,
    SessionResult,
    SkillDomain,
)

DEFAULT_NORMS_PATH = DATA_DIR / "norms.json"
Z_CLAMP = 4.0
NormStatus = Literal["published", "provisional", "platform"]
# Least to most authoritative; a mix reports the least authoritative.
_CAUTION_ORDER: tuple[str, ...] = ("provisional", "platform", "published")
_STD = NormalDist()
# Children per age band from which platform norms may carry a referral (the
# analytics setting flag_min_norm_children overrides it).
ESTABLISHED_MIN_CHILDREN = 200


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NormBand(_Frozen):
    age_years: int = Field(ge=0, le=25)
    mean: float
    sd: float = Field(gt=0)
    n: int = Field(ge=0)
    # Per-band overrides of the entry's status/source (platform bands set them).
    status: NormStatus | None = None
    source: str | None = None


class PublishedNorm(_Frozen):
    """A published study of children's norms for the construct a game measures."""

    citation: str = Field(min_length=10)  # authors (year). Title. Journal volume(issue), pages
    doi: str = ""
    # The table the values were taken from; "" when none were taken (transfers false).
    table: str = ""
    # Children in the normative sample; None when the source consulted does not state it.
    sample_size: int | None = Field(default=None, ge=1)
    ages: str = Field(min_length=1)
    # True only when the bands of this entry ARE this paper's values, aligned to
    # the game's scoring as `alignment` explains; else `alignment` says why not.
    transfers: bool
    alignment: str = Field(min_length=10)


class NormEntry(_Frozen):
    game_id: str
    metric: str
    status: NormStatus
    source: str
    informed_by: str = ""
    # What published child norms exist for the construct and whether they transfer.
    published_review: str = ""
    published_norms: tuple[PublishedNorm, ...] = ()
    bands: tuple[NormBand, ...]

    @model_validator(mode="after")
    def _published_needs_a_transferable_citation(self) -> NormEntry:
        used = [p for p in self.published_norms if p.transfers]
        if self.status == "published":
            if not any(p.table and p.sample_size for p in used):
                raise ValueError(f"{self.game_id}.{self.metric}: a published entry needs a cited paper "
                                 "that transfers, with its table and sample size")
            if any(b.n <= 0 and (b.status or "published") == "published" for b in self.bands):
                raise ValueError(f"{self.game_id}.{self.metric}: published bands need their sample size n")
        elif used:
            raise ValueError(f"{self.game_id}.{self.metric}: a paper whose values transfer makes the "
                             "entry published")
        return self


class _NormsFile(_Frozen):
    norms_version: str
    description: str = ""
    entries: tuple[NormEntry, ...]


@dataclass(frozen=True, slots=True)
class NormRef:
    """The norm a value is compared with (possibly interpolated between bands)."""

    mean: float
    sd: float
    n: int
    status: str
    source: str

    def strength(self, min_children: int = ESTABLISHED_MIN_CHILDREN) -> NormStrength:
        return norm_strength(self.status, self.n, min_children)


def norm_strength(status: str, n: int, min_children: int = ESTABLISHED_MIN_CHILDREN) -> NormStrength:
    """What a norm of this status, built on `n` children per band, may support."""
    if status == "published":
        return NormStrength.ESTABLISHED
    if status == "platform":
        return NormStrength.ESTABLISHED if n >= min_children else NormStrength.GATHERING
    if status == "provisional":
        return NormStrength.PROVISIONAL
    return NormStrength.NONE


def weakest(strengths: Iterable[NormStrength]) -> NormStrength:
    """The weakest of several strengths (NONE when there are none)."""
    present = set(strengths)
    for s in STRENGTH_ORDER:
        if s in present:
            return s
    return NormStrength.NONE


def metric_strength(m: MetricValue, min_children: int = ESTABLISHED_MIN_CHILDREN) -> NormStrength:
    return norm_strength(m.norm_source, m.norm_n, min_children) if m.normed else NormStrength.NONE


def least_authoritative(statuses: Iterable[str]) -> str:
    present = set(statuses)
    for s in _CAUTION_ORDER:
        if s in present:
            return s
    return ""


class NormTable:
    def __init__(self, version: str, entries: Iterable[NormEntry], description: str = "") -> None:
        self.version = version
        self.description = description
        self.entries: tuple[NormEntry, ...] = tuple(entries)
        self._bands: dict[tuple[str, str], list[NormBand]] = {}
        self._entry: dict[tuple[str, str], NormEntry] = {}
        for e in self.entries:
            key = (e.game_id, e.metric)
            if key in self._entry:
                raise CatalogError(f"duplicate norms for {key}")
            years = [b.age_years for b in e.bands]
            if not years or len(set(years)) != len(years):
                raise CatalogError(f"norms for {key} need distinct age bands")
            self._entry[key] = e
            self._bands[key] = sorted(e.bands, key=lambda b: b.age_years)

    def has(self, game_id: str, metric: str) -> bool:
        return (game_id, metric) in self._entry

    def band(self, game_id: str, metric: str, age_years: int) -> NormBand | None:
        for b in self._bands.get((game_id, metric), ()):
            if b.age_years == age_years:
                return b
        return None

    def _ref(self, e: NormEntry, b: NormBand) -> NormRef:
        return NormRef(b.mean, b.sd, b.n, b.status or e.status, b.source or e.source)

    def lookup(self, game_id: str, metric: str, age_months: int) -> NormRef | None:
        key = (game_id, metric)
        bands = self._bands.get(key)
        if not bands:
            return None
        e = self._entry[key]
        lo_age, hi_age = bands[0].age_years * 12, (bands[-1].age_years + 1) * 12
        if not lo_age <= age_months < hi_age:
            return None
        centre = age_months + 0.5  # completed months -> middle of that month
        if centre <= bands[0].age_years * 12 + 6:
            return self._ref(e, bands[0])
        for a, b in zip(bands, bands[1:], strict=False):
            ca, cb = a.age_years * 12 + 6, b.age_years * 12 + 6
            if ca <= centre <= cb:
                w = (centre - ca) / (cb - ca)
                ra, rb = self._ref(e, a), self._ref(e, b)
                return NormRef(
                    mean=ra.mean + w * (rb.mean - ra.mean),
                    sd=ra.sd + w * (rb.sd - ra.sd),
                    n=min(ra.n, rb.n),
                    status=least_authoritative((ra.status, rb.status)),
                    source=ra.source if w < 0.5 else rb.source,
                )
        return self._ref(e, bands[-1])

    def to_json(self) -> dict[str, object]:
        return _NormsFile(norms_version=self.version, description=self.description,
                          entries=self.entries).model_dump(mode="json", exclude_none=True)


def load_norms(path: Path | str = DEFAULT_NORMS_PATH) -> NormTable:
    try:
        parsed = _NormsFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise CatalogError(f"bad norms file {path}: {exc}") from exc
    return NormTable(parsed.norms_version, parsed.entries, parsed.description)


def table_from_json(text: str) -> NormTable:
    raw = json.loads(text)
    return NormTable(raw["norms_version"], [NormEntry.model_validate(e) for e in raw["entries"]],
                     raw.get("description", ""))


def platform_band_count(table: NormTable) -> int:
    return sum(1 for e in table.entries for b in e.bands if (b.status or e.status) == "platform")


def check_norms_against_catalog(table: NormTable, games: Iterable[GameSpec]) -> None:
    """Every normed metric must be a declared, directed metric of a known game."""
    by_id = {g.game_id: g for g in games}
    for e in table.entries:
        g = by_id.get(e.game_id)
        d = g.metric_def(e.metric) if g else None
        if d is None or d.higher_is_better is None:
            raise CatalogError(f"norms for unknown or undirected metric {e.game_id}.{e.metric}")


@dataclass(frozen=True, slots=True)
class DomainNorm:
    """The norm a domain's score would be compared with at an age."""

    domain: SkillDomain
    strength: NormStrength
    n: int  # children per band behind it (the smallest of its metrics)
    game_id: str = ""


def domain_norms(table: NormTable, catalog: Catalog, age_months: int,
                 min_children: int = ESTABLISHED_MIN_CHILDREN) -> dict[SkillDomain, DomainNorm]:
    """Per skill domain: the strength of the norms of the primary metrics of the
    newest game a child of `age_months` plays in it."""
    out: dict[SkillDomain, DomainNorm] = {}
    for d in SKILL_DOMAINS:
        games = [g for g in catalog.games_for_domain(d)
                 if g.min_age_years * 12 <= age_months < (g.max_age_years + 1) * 12]
        if not games:
            out[d] = DomainNorm(d, NormStrength.NONE, 0)
            continue
        game = max(games, key=lambda g: g.version)
        refs = [table.lookup(game.game_id, name, age_months) for name in game.primary_metrics]
        if not refs or any(r is None for r in refs):
            out[d] = DomainNorm(d, NormStrength.NONE, 0, game.game_id)
            continue
        found = [r for r in refs if r is not None]
        out[d] = DomainNorm(d, weakest(r.strength(min_children) for r in found),
                            min(r.n for r in found), game.game_id)
    return out


# -- comparison --------------------------------------------------------------------------


def zscore(value: float, ref: NormRef, higher_is_better: bool) -> float:
    z = (value - ref.mean) / ref.sd
    if not higher_is_better:
        z = -z
    return max(-Z_CLAMP, min(Z_CLAMP, z))


def percentile(z: float) -> float:
    """Percent of same-age children expected to score lower (0..100)."""
    return 100.0 * _STD.cdf(z)


def norm_metrics(
    metrics: Iterable[Metric | MetricValue], game: GameSpec, table: NormTable, age_months: int
) -> tuple[MetricValue, ...]:
    """Attach norms to raw metrics; metrics without a norm stay un-normed."""
    out: list[MetricValue] = []
    for m in metrics:
        d = game.metric_def(m.name)
        ref = table.lookup(game.game_id, m.name, age_months)
        if ref is None or d is None or d.higher_is_better is None:
            out.append(MetricValue(m.name, m.value, m.unit))
            continue
        z = zscore(m.value, ref, d.higher_is_better)
        out.append(MetricValue(m.name, m.value, m.unit, True, z, percentile(z), ref.status, ref.n))
    return tuple(out)


def renorm_result(result: SessionResult, game: GameSpec, table: NormTable, age_months: int) -> SessionResult:
    """The same stored result compared with (new) norms."""
    return replace(result, metrics=norm_metrics(result.metrics, game, table, age_months))


# -- platform norms ------------------------------------------------------------------------

PopulationKey = tuple[str, str, int]  # (game_id, metric, age_years)


def accumulate_population(
    rows: Iterable[tuple[str, str, int, str, float]],
) -> dict[PopulationKey, dict[str, list[float]]]:
    """Group (game_id, metric, age_months, child_id, value) rows by band and child."""
    out: dict[PopulationKey, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for game_id, metric, age_m, child_id, value in rows:
        if math.isfinite(value):
            out[(game_id, metric, age_m // 12)][child_id].append(value)
    return {k: dict(v) for k, v in out.items()}


def population_moments(values_by_child: Mapping[str, Sequence[float]]) -> tuple[float, float] | None:
    """(mean, SD) of one session's value, every child weighted equally.

    The mean is the mean of child means. The variance of a single session is
    between-child variance + mean within-child variance; the variance of child
    means overstates the between part by within/n_c, which is removed.
    """
    means = [statistics.fmean(v) for v in values_by_child.values() if v]
    if len(means) < 2:
        return None
    within: list[float] = []
    excess: list[float] = []
    for v in values_by_child.values():
        if len(v) >= 2:
            w = statistics.variance(v)
            within.append(w)
            excess.append(w / len(v))
    w_mean = statistics.fmean(within) if within else 0.0
    excess_mean = statistics.fmean(excess) if excess else 0.0
    between = max(0.0, statistics.variance(means) - excess_mean)
    sd = math.sqrt(between + w_mean)
    return statistics.fmean(means), sd if sd > 0 else 1e-6


def platform_norms(
    population_values_by_band: Mapping[PopulationKey, Mapping[str, Sequence[float]]],
    base: NormTable,
    *,
    min_children: int = 50,
    override_published: bool = False,
    version: str | None = None,
) -> NormTable:
    """A new table where bands with >= `min_children` distinct children are replaced
    by platform values (status "platform", n = children). Provisional and earlier
    platform bands are replaced; published bands only when `override_published`.
    Metrics without any base entry are not added (their direction is unknown here).
    """
    entries: list[NormEntry] = []
    for e in base.entries:
        bands = {b.age_years: b for b in e.bands}
        for age in sorted({k[2] for k in population_values_by_band if k[:2] == (e.game_id, e.metric)}):
            values = population_values_by_band[(e.game_id, e.metric, age)]
            children = sum(1 for v in values.values() if v)
            if children < min_children:
                continue
            old = bands.get(age)
            old_status = (old.status or e.status) if old else None
            if old_status == "published" and not override_published:
                continue
            moments = population_moments(values)
            if moments is None:
                continue
            mean, sd = moments
            bands[age] = NormBand(age_years=age, mean=mean, sd=sd, n=children, status="platform",
                                  source=f"platform: {children} children")
        entries.append(e.model_copy(update={"bands": tuple(bands[a] for a in sorted(bands))}))
    return NormTable(version or f"{base.version}+platform", entries, base.description)
