"""A child's report from the stored window (use case over repo/ and domain/report.py):
re-norm, build, keep flag state.

`build_report` gets the last 10 weeks of results (re-normed against the table in
use, which also gives each metric its norm's sample size: flags are only as
strong as their norms), plus the newest older session without metrics
(it only tells the engagement rule that the child played before the window),
the window's check-ins, the streaks (from the maintained aggregates, or the
play dates when as_of lies before the latest play) and the flags' stored
first-seen times.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.analytics.domain.catalog import Catalog
from services.analytics.domain.flags import DEFAULT_FLAG_POLICY, FlagPolicy
from services.analytics.domain.norms import NormTable, renorm_result
from services.analytics.domain.norms_keeper import Norms
from services.analytics.domain.report import ChildReport, build_report
from services.analytics.domain.tips import TipLibrary
from services.analytics.domain.types import SessionResult
from services.analytics.repo import flags as flag_repo
from services.analytics.repo import reads
from services.analytics.repo.ingest import ChildRefData
from services.common.db import Database, in_transaction

# An as_of this close to now counts as "now": flag states are recorded.
NOW_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class Evaluated:
    report: ChildReport
    known: bool  # analytics has stored something about the child


def renormed(window: reads.ChildWindow, catalog: Catalog, table: NormTable) -> list[SessionResult]:
    """The window's results compared with `table`. Stored rows keep z-scores but not
    the norm's sample size, so every result is re-normed (arithmetic only)."""
    out: list[SessionResult] = []
    for s in window.results:
        game = catalog.get(s.result.game_id, s.result.game_version)
        out.append(renorm_result(s.result, game, table, s.age_months) if game is not None else s.result)
    return out


class Reporter:
    def __init__(self, db: Database, catalog: Catalog, tips: TipLibrary, norms: Norms,
                 flag_policy: FlagPolicy = DEFAULT_FLAG_POLICY) -> None:
        self.db, self.catalog, self.tips, self.norms = db, catalog, tips, norms
        self.flag_policy = flag_policy

    async def evaluate(self, ref: ChildRefData, as_of: datetime, now: datetime) -> Evaluated:
        async with self.db.session() as s:
            window = await reads.child_window(s, ref.family_id, ref.child_id, as_of)
        table = self.norms.table
        results = renormed(window, self.catalog, table)
        if window.before is not None:
            results.insert(0, window.before)
        today = as_of.date()
        dates = [d for d in window.play_dates
                 if d != today or any(r.started_at.date() == today for r in results)]
        report = build_report(ref.child_id, ref.birth_year, ref.birth_month, results,
                              window.checkins, as_of, self.catalog, self.tips, play_dates=dates,
                              flag_policy=self.flag_policy, norms=table)
        flags = flag_repo.with_stable_first_seen(report.flags, window.flag_states, as_of)
        report = replace(report, flags=flags)
        if window.streaks is not None:
            current, longest = window.streaks
            report = replace(report, current_streak_days=current, longest_streak_days=longest)
        if window.known and abs(as_of - now) <= NOW_TOLERANCE and flag_repo.needs_update(
                flags, window.flag_states):
            await in_transaction(self.db, lambda s: flag_repo.record_flags(
                s, ref.family_id, ref.child_id, flags, now))
        return Evaluated(report, window.known)
