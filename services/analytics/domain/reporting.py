"""A child's report from the stored window (use case over repo/ and domain/report.py):
re-norm, build, keep flag state.

`build_report` gets the last 10 weeks of results (re-normed when the norm
table changed since ingestion), plus the newest older session without metrics
(it only tells the engagement rule that the child played before the window),
the window's check-ins, the streaks (from the maintained aggregates, or the
play dates when as_of lies before the latest play) and the flags' stored
first-seen times.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.analytics.domain.catalog import Catalog
from services.analytics.domain.norms import renorm_result
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


def renormed(window: reads.ChildWindow, catalog: Catalog, norms: Norms) -> list[SessionResult]:
    table = norms.table
    out: list[SessionResult] = []
    for s in window.results:
        game = catalog.get(s.result.game_id, s.result.game_version)
        if s.norms_version != table.version and game is not None:
            out.append(renorm_result(s.result, game, table, s.age_months))
        else:
            out.append(s.result)
    return out


class Reporter:
    def __init__(self, db: Database, catalog: Catalog, tips: TipLibrary, norms: Norms) -> None:
        self.db, self.catalog, self.tips, self.norms = db, catalog, tips, norms

    async def evaluate(self, ref: ChildRefData, as_of: datetime, now: datetime) -> Evaluated:
        async with self.db.session() as s:
            window = await reads.child_window(s, ref.family_id, ref.child_id, as_of)
        results = renormed(window, self.catalog, self.norms)
        if window.before is not None:
            results.insert(0, window.before)
        today = as_of.date()
        dates = [d for d in window.play_dates
                 if d != today or any(r.started_at.date() == today for r in results)]
        report = build_report(ref.child_id, ref.birth_year, ref.birth_month, results,
                              window.checkins, as_of, self.catalog, self.tips, play_dates=dates)
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
