"""Flag rates over simulated populations (the issue's acceptance check).

Typical children: how many end the period with any "worth discussing" flag.
Children with a persistent weakness (ability about -2 in one domain): how many
get a "worth discussing" skill flag for that domain, and how many for others.
Flags are evaluated once, at the end of the simulated period.

"Typical" children are typically developing: above -2 SD among peers in every
domain (`typical_floor`); `typical_floor=None` draws an unselected population,
whose rate is a referral rate (it includes children with real low levels).

Norms (issue 17): children are simulated from one table (the truth, `norms`) and
may be scored against another (`scoring_norms`): the shipped provisional table,
`relabelled_as_platform` (the same values as if measured on n children per band)
or `simulated_platform_norms` (what `norms.platform_norms` recomputes from a
simulated population, the production pipeline).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from avatario_tools.simulation.simulator import SimulatedChild, draw_child, simulate_child
from services.analytics.domain.catalog import Catalog
from services.analytics.domain.flags import (
    DEFAULT_FLAG_POLICY,
    FlagEvaluation,
    FlagPolicy,
    evaluate_flags,
)
from services.analytics.domain.ingest import score_session
from services.analytics.domain.norms import (
    NormBand,
    NormTable,
    accumulate_population,
    platform_band_count,
    platform_norms,
)
from services.analytics.domain.tips import TipLibrary
from services.analytics.domain.types import (
    SKILL_DOMAINS,
    FlagKind,
    FlagLevel,
    SessionResult,
    SkillDomain,
    age_months,
)

DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday


def score_child(sim: SimulatedChild, catalog: Catalog, norms: NormTable) -> list[SessionResult]:
    out: list[SessionResult] = []
    for s in sim.sessions:
        game = catalog.get(s.game_id, s.game_version)
        assert game is not None
        out.append(score_session(s, game, norms, sim.child.birth_year, sim.child.birth_month))
    return out


def evaluate_simulated(
    sim: SimulatedChild, catalog: Catalog, norms: NormTable, tips: TipLibrary, as_of: datetime,
    policy: FlagPolicy = DEFAULT_FLAG_POLICY,
) -> FlagEvaluation:
    """Flags of a simulated child scored against `norms`."""
    results = score_child(sim, catalog, norms)
    age = age_months(sim.child.birth_year, sim.child.birth_month, as_of)
    return evaluate_flags(sim.child.child_id, results, sim.checkins, catalog, tips, age, as_of, policy)


def _discuss(ev: FlagEvaluation) -> list[tuple[FlagKind, SkillDomain]]:
    return [(f.kind, f.domain) for f in ev.flags if f.level == FlagLevel.DISCUSS_WITH_PROFESSIONAL]


def relabelled_as_platform(norms: NormTable, children: int) -> NormTable:
    """`norms` with every band's values kept but marked as platform norms of
    `children` children (norms that happen to be right, measured on that many)."""
    entries = [e.model_copy(update={"bands": tuple(
        NormBand(age_years=b.age_years, mean=b.mean, sd=b.sd, n=children, status="platform",
                 source=f"platform: {children} children") for b in e.bands)}) for e in norms.entries]
    return NormTable(f"{norms.version}+relabelled{children}", entries, norms.description)


def simulated_platform_norms(
    catalog: Catalog, truth: NormTable, *, children_per_age: int, weeks: int = 4, seed: int = 1,
    age_years: tuple[int, int] = (4, 12), start: datetime = DEFAULT_START, min_children: int = 50,
) -> tuple[NormTable, int]:
    """(platform norms recomputed by `norms.platform_norms` from a simulated,
    unselected population of `children_per_age` children per year of age who
    played `weeks` weeks, the number of platform bands). Children are drawn from
    `truth`; bands their play does not reach keep `truth`'s provisional values."""
    rng = random.Random(seed)
    rows: list[tuple[str, str, int, str, float]] = []
    for years in range(age_years[0], age_years[1] + 1):
        for _ in range(children_per_age):
            child = draw_child(rng, start, age_years=(years, years), typical_floor=None)
            sim = simulate_child(child, catalog, truth, start, weeks, rng)
            for r in score_child(sim, catalog, truth):
                age = age_months(child.birth_year, child.birth_month, r.started_at)
                rows += [(r.game_id, m.name, age, child.child_id, m.value) for m in r.metrics]
    table = platform_norms(accumulate_population(rows), truth, min_children=min_children,
                           version=f"{truth.version}+simulated{children_per_age}")
    return table, platform_band_count(table)


@dataclass(frozen=True, slots=True)
class FlagRates:
    n_typical: int
    typical_discuss_rate: float
    typical_skill_discuss_rate: float
    typical_any_flag_rate: float
    n_weak: int
    weak_right_domain_discuss_rate: float
    weak_right_domain_any_rate: float
    weak_other_domain_discuss_rate: float
    weak_by_domain: dict[SkillDomain, float] = field(default_factory=dict)
    population: str = "typically developing"
    # Referrals that rest on norms (skill and performance-drop "worth discussing").
    typical_norm_referral_rate: float = 0.0
    typical_early_signal_rate: float = 0.0

    def table(self) -> str:
        lines = [
            f"typical children (n={self.n_typical}, {self.population}):",
            f"  any 'worth discussing' flag      {self.typical_discuss_rate:6.1%}",
            f"  'worth discussing' skill flag    {self.typical_skill_discuss_rate:6.1%}",
            f"  any flag incl. 'keep an eye'     {self.typical_any_flag_rate:6.1%}",
            f"  referral resting on norms        {self.typical_norm_referral_rate:6.1%}",
            f"  early signal (provisional norms) {self.typical_early_signal_rate:6.1%}",
            f"children with a persistent weakness at z=-2 (n={self.n_weak}):",
            f"  'worth discussing', right domain {self.weak_right_domain_discuss_rate:6.1%}",
            f"  any flag, right domain           {self.weak_right_domain_any_rate:6.1%}",
            f"  'worth discussing', other domain {self.weak_other_domain_discuss_rate:6.1%}",
        ]
        lines += [f"    {d.value.lower():<22} {r:6.1%}" for d, r in self.weak_by_domain.items()]
        return "\n".join(lines)


def simulate_flag_rates(
    catalog: Catalog,
    norms: NormTable,
    tips: TipLibrary,
    *,
    n_typical: int = 200,
    n_weak_per_domain: int = 20,
    weeks: int = 10,
    seed: int = 7,
    start: datetime = DEFAULT_START,
    age_years: tuple[int, int] = (5, 11),
    weakness_z: float = -2.0,
    typical_floor: float | None = -2.0,
    domains: Sequence[SkillDomain] = SKILL_DOMAINS,
    policy: FlagPolicy = DEFAULT_FLAG_POLICY,
    scoring_norms: NormTable | None = None,
) -> FlagRates:
    """Children drawn from `norms` (the truth), flagged against `scoring_norms`
    (default: the same table)."""
    rng = random.Random(seed)
    as_of = start + timedelta(weeks=weeks)
    scored_by = scoring_norms if scoring_norms is not None else norms
    discuss = skill_discuss = anyflag = norm_referral = early = 0
    for _ in range(n_typical):
        child = draw_child(rng, start, age_years=age_years, typical_floor=typical_floor)
        ev = evaluate_simulated(simulate_child(child, catalog, norms, start, weeks, rng), catalog, scored_by,
                                tips, as_of, policy)
        found = _discuss(ev)
        discuss += bool(found)
        skill_discuss += any(k == FlagKind.SKILL for k, _ in found)
        norm_referral += any(k in (FlagKind.SKILL, FlagKind.PERFORMANCE_DROP) for k, _ in found)
        early += any(f.level == FlagLevel.EARLY_SIGNAL for f in ev.flags)
        anyflag += bool(ev.flags)
    right = right_any = other = 0
    by_domain: dict[SkillDomain, float] = {}
    for d in domains:
        hits = 0
        for _ in range(n_weak_per_domain):
            child = draw_child(rng, start, age_years=age_years, weakness=d, weakness_z=weakness_z,
                               typical_floor=typical_floor)
            ev = evaluate_simulated(simulate_child(child, catalog, norms, start, weeks, rng), catalog, scored_by,
                                    tips, as_of, policy)
            found = _discuss(ev)
            hit = (FlagKind.SKILL, d) in found
            hits += hit
            right_any += any(f.kind == FlagKind.SKILL and f.domain == d for f in ev.flags)
            other += any(k == FlagKind.SKILL and dd != d for k, dd in found)
        right += hits
        by_domain[d] = hits / n_weak_per_domain if n_weak_per_domain else 0.0
    n_weak = n_weak_per_domain * len(domains)
    return FlagRates(
        n_typical=n_typical,
        typical_discuss_rate=discuss / n_typical if n_typical else 0.0,
        typical_skill_discuss_rate=skill_discuss / n_typical if n_typical else 0.0,
        typical_any_flag_rate=anyflag / n_typical if n_typical else 0.0,
        n_weak=n_weak,
        weak_right_domain_discuss_rate=right / n_weak if n_weak else 0.0,
        weak_right_domain_any_rate=right_any / n_weak if n_weak else 0.0,
        weak_other_domain_discuss_rate=other / n_weak if n_weak else 0.0,
        weak_by_domain=by_domain,
        population="typically developing" if typical_floor is not None else "unselected population",
        typical_norm_referral_rate=norm_referral / n_typical if n_typical else 0.0,
        typical_early_signal_rate=early / n_typical if n_typical else 0.0,
    )
