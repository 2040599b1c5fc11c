"""Builders shared by the analytics unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from services.analytics.domain.types import Session, Trial

T0 = datetime(2025, 3, 3, 16, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


def trial(index: int, stimulus: dict, response: dict, correct: bool, rt: int, at: datetime) -> Trial:
    responded = rt > 0
    return Trial(index, stimulus, response, correct, responded, rt, at,
                 at + timedelta(milliseconds=rt) if responded else None)


def session_of(game_id: str, trials: list[Trial], version: int = 1, start: datetime = T0) -> Session:
    end = max((t.responded_at or t.presented_at) for t in trials) + timedelta(seconds=1) if trials else start
    return Session("8a6e0804-2bd0-4672-b79d-d97027f97e3a", "child-1", game_id, version, start, end, tuple(trials))


def seq(start: datetime = T0, step_ms: int = 2000) -> Iterator[datetime]:
    """Presentation times start+1s, +step, ..."""
    i = 0
    while True:
        yield start + timedelta(milliseconds=1000 + i * step_ms)
        i += 1


def make_result(catalog, game_id: str, at: datetime, z: float | None, *, sid: str | None = None,
                minutes: float = 2.0, source: str = "provisional", child_id: str = "child-1", n: int = 0):
    """A scored session whose primary metric has session z `z` (None: not normed),
    against a norm of status `source` built on `n` children per band."""
    from services.analytics.domain.norms import percentile
    from services.analytics.domain.types import MetricValue, SessionResult

    game = catalog.latest(game_id)
    name = next(iter(game.primary_metrics))
    unit = game.metric_def(name).unit
    metric = (MetricValue(name, 1.0 + z, unit, True, z, percentile(z), source, n) if z is not None
              else MetricValue(name, 1.0, unit))
    return SessionResult(sid or f"{game_id}-{at.isoformat()}", child_id, game_id, game.version, game.domain, at,
                         at + timedelta(minutes=minutes), (metric,), 20, 0, game.xp_per_session)
