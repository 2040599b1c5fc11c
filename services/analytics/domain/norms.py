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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.analytics.domain.catalog import DATA_DIR, CatalogError, GameSpec
from services.analytics.domain.types import Metric, MetricValue, SessionResult

DEFAULT_NORMS_PATH = DATA_DIR / "norms.json"
Z_CLAMP = 4.0
NormStatus = Literal["published", "provisional", "platform"]
# Least to most authoritative; a mix reports the least authoritative.
_CAUTION_ORDER: tuple[str, ...] = ("provisional", "platform", "published")
_STD = NormalDist()


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


class NormEntry(_Frozen):
    game_id: str
    metric: str
    status: NormStatus
    source: str
    informed_by: str = ""
    bands: tuple[NormBand, ...]


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
        out.append(MetricValue(m.name, m.value, m.unit, True, z, percentile(z), ref.status))
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
