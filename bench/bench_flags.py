"""Screening-flag rates on simulated children (larger populations than the unit test).

Typically developing children (above -2 SD among peers in every domain), an
unselected population, and children with a persistent weakness (ability -2 in one
domain). Not a speed benchmark: it reports rates. Writes bench/results/flags.json.
Run: python -m bench flags   (BENCH_FLAGS_N=1000 typical children, BENCH_FLAGS_WEAK=100 per domain)
"""

from __future__ import annotations

import os
import time

from avatario_tools.simulation.evaluation import simulate_flag_rates
from bench.common import print_table, write_result
from services.analytics.domain.catalog import load_catalog
from services.analytics.domain.norms import load_norms
from services.analytics.domain.tips import load_tips

N_TYPICAL = int(os.environ.get("BENCH_FLAGS_N", "1000"))
N_WEAK = int(os.environ.get("BENCH_FLAGS_WEAK", "100"))
WEEKS = 10


def main() -> int:
    catalog, norms, tips = load_catalog(), load_norms(), load_tips()
    start = time.perf_counter()
    typical = simulate_flag_rates(catalog, norms, tips, n_typical=N_TYPICAL, n_weak_per_domain=N_WEAK,
                                  weeks=WEEKS, seed=2024)
    unselected = simulate_flag_rates(catalog, norms, tips, n_typical=N_TYPICAL, n_weak_per_domain=0,
                                     weeks=WEEKS, seed=2025, typical_floor=None)
    elapsed = time.perf_counter() - start
    rows = [
        {"population": "typically developing", "children": typical.n_typical,
         "discuss_any": typical.typical_discuss_rate, "any_flag": typical.typical_any_flag_rate},
        {"population": "unselected", "children": unselected.n_typical,
         "discuss_any": unselected.typical_discuss_rate, "any_flag": unselected.typical_any_flag_rate},
        {"population": "weakness z=-2 (right domain)", "children": typical.n_weak,
         "discuss_any": typical.weak_right_domain_discuss_rate, "any_flag": typical.weak_right_domain_any_rate},
        {"population": "weakness z=-2 (other domains)", "children": typical.n_weak,
         "discuss_any": typical.weak_other_domain_discuss_rate, "any_flag": float("nan")},
    ]
    rows += [{"population": f"weakness: {d.value.lower()}", "children": N_WEAK, "discuss_any": r,
              "any_flag": float("nan")} for d, r in typical.weak_by_domain.items()]
    print_table(f"Flag rates after {WEEKS} weeks of simulated play", rows)
    write_result("flags", rows, weeks=WEEKS, seconds=round(elapsed, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
