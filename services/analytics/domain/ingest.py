"""Ingestion pipeline for one submitted session: validate -> metrics -> norms -> result.

The servicer calls `ingest_session` once per new session id (idempotency and
storage are the servicer's job) and stores the raw trials plus the returned
result. When norms change, `norms.renorm_result` re-norms a stored result (or
`score_session` recomputes everything from the stored raw session).
"""

from __future__ import annotations

from datetime import datetime

from services.analytics.domain.catalog import Catalog, GameSpec, validate_session
from services.analytics.domain.metrics import compute_metrics
from services.analytics.domain.norms import NormTable, norm_metrics
from services.analytics.domain.types import Session, SessionResult, age_months, utc


def score_session(session: Session, game: GameSpec, norms: NormTable, birth_year: int,
                  birth_month: int) -> SessionResult:
    """Metrics of a valid session, normed for the child's age when it started."""
    assert session.started_at is not None and session.ended_at is not None
    computed = compute_metrics(session, game)
    age = age_months(birth_year, birth_month, utc(session.started_at))
    return SessionResult(
        session_id=session.session_id,
        child_id=session.child_id,
        game_id=game.game_id,
        game_version=game.version,
        domain=game.domain,
        started_at=utc(session.started_at),
        ended_at=utc(session.ended_at),
        metrics=norm_metrics(computed.metrics, game, norms, age),
        valid_trials=computed.valid_trials,
        excluded_trials=computed.excluded_trials,
        xp_awarded=game.xp_per_session if computed.valid_trials > 0 else 0,
    )


def ingest_session(session: Session, catalog: Catalog, norms: NormTable, birth_year: int,
                   birth_month: int, now: datetime) -> SessionResult:
    """Validate (raises InvalidArgument naming every bad field) and score a session."""
    validate_session(session, catalog, now)
    game = catalog.get(session.game_id, session.game_version)
    assert game is not None  # validated
    return score_session(session, game, norms, birth_year, birth_month)
