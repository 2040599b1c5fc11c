"""Screening-flag rates on simulated children, by the strength of the norms in use.

Typically developing children (above -2 SD among peers in every domain), an
unselected population, and children with a persistent weakness (ability -2 in one
domain), scored against:

* the shipped norms (provisional expert estimates, n = 0): flags may only be early
  signals, so the false-referral rate must be 0 (issue 17);
* platform norms recomputed by the production pipeline (accumulate_population ->
  platform_norms) from a simulated unselected population with BENCH_FLAGS_POP
  children per year of age (default 240, so every band reaches the default 200):
  the typical-child false-referral rate must stay <= 5 %;
* the same values with fewer children per band than required (gathering): no
  referral at all.

"referral" = any "worth discussing with a professional" flag; "norm referral" =
one that rests on norms (skill or performance drop); low-mood referrals rest on
check-ins only. Not a speed benchmark: it reports rates. Writes
bench/results/flags.json. Run: python -m bench flags (BENCH_FLAGS_N=1000 typical
children, BENCH_FLAGS_WEAK=100 per domain).
"""

from __future__ import annotations

import os
import time

from avatario_tools.simulation.evaluation import (
    FlagRates,
    relabelled_as_platform,
    simulate_flag_rates,
    simulated_platform_norms,
)
from bench.common import print_table, write_result
from services.analytics.domain.catalog import load_catalog
from services.analytics.domain.norms import ESTABLISHED_MIN_CHILDREN, load_norms
from services.analytics.domain.tips import load_tips

N_TYPICAL = int(os.environ.get("BENCH_FLAGS_N", "1000"))
N_WEAK = int(os.environ.get("BENCH_FLAGS_WEAK", "100"))
POP_PER_AGE = int(os.environ.get("BENCH_FLAGS_POP", "240"))
WEEKS = 10


def _rows(norms_label: str, typical: FlagRates, unselected: FlagRates | None) -> list[dict]:
    rows = [{"norms": norms_label, "population": "typically developing", "children": typical.n_typical,
             "referral": typical.typical_discuss_rate, "norm_referral": typical.typical_norm_referral_rate,
             "early_signal": typical.typical_early_signal_rate, "any_flag": typical.typical_any_flag_rate}]
    if unselected is not None:
        rows.append({"norms": norms_label, "population": "unselected", "children": unselected.n_typical,
                     "referral": unselected.typical_discuss_rate,
                     "norm_referral": unselected.typical_norm_referral_rate,
                     "early_signal": unselected.typical_early_signal_rate,
                     "any_flag": unselected.typical_any_flag_rate})
    if typical.n_weak:
        rows.append({"norms": norms_label, "population": "weakness z=-2 (right domain)",
                     "children": typical.n_weak, "referral": typical.weak_right_domain_discuss_rate,
                     "norm_referral": typical.weak_right_domain_discuss_rate, "early_signal": float("nan"),
                     "any_flag": typical.weak_right_domain_any_rate})
    return rows


def main() -> int:
    catalog, shipped, tips = load_catalog(), load_norms(), load_tips()
    start = time.perf_counter()
    platform, bands = simulated_platform_norms(catalog, shipped, children_per_age=POP_PER_AGE, weeks=4,
                                               seed=99, min_children=50)
    band_ns = [b.n for e in platform.entries for b in e.bands if b.status == "platform"]
    gathering = relabelled_as_platform(shipped, ESTABLISHED_MIN_CHILDREN // 2)
    rows: list[dict] = []
    for label, table in (("shipped (provisional, n=0)", shipped),
                         (f"platform, recomputed (min n {min(band_ns)})", platform),
                         (f"platform, gathering (n={ESTABLISHED_MIN_CHILDREN // 2})", gathering)):
        typical = simulate_flag_rates(catalog, shipped, tips, n_typical=N_TYPICAL, n_weak_per_domain=N_WEAK,
                                      weeks=WEEKS, seed=2024, scoring_norms=table)
        unselected = simulate_flag_rates(catalog, shipped, tips, n_typical=N_TYPICAL, n_weak_per_domain=0,
                                         weeks=WEEKS, seed=2025, typical_floor=None, scoring_norms=table)
        rows += _rows(label, typical, unselected)
    elapsed = time.perf_counter() - start
    print_table(f"Flag rates after {WEEKS} weeks of simulated play, by the norms in use", rows)
    write_result("flags", rows, weeks=WEEKS, seconds=round(elapsed, 1), platform_bands=bands,
                 platform_min_children=min(band_ns), population_per_age=POP_PER_AGE,
                 established_min_children=ESTABLISHED_MIN_CHILDREN)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
