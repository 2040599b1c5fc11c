"""The play-write use cases: a game session and a mood check-in, from validated
domain values to stored rows and an XP award.

Both need the family's active gameplay-analytics consent, asked of profile on
each write after the input is validated (FAILED_PRECONDITION with ErrorInfo
CONSENT_REQUIRED without it, UNAVAILABLE while profile cannot answer). The
write and its XP award commit together (the outbox row); the award is then
tried once at once, and the outbox retries it while profile has not taken it.
Submissions are idempotent by their client id and content hash.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from services.analytics.domain.catalog import Catalog, derive_correct
from services.analytics.domain.ingest import score_session
from services.analytics.domain.norms_keeper import Norms
from services.analytics.domain.types import MoodCheckIn, Session, age_months
from services.analytics.domain.xp import XpOutbox
from services.analytics.metrics import AnalyticsMetrics
from services.analytics.repo import ingest
from services.analytics.repo.ingest import ChildRefData, StoredCheckIn, StoredSession
from services.common.db import Database, in_transaction


class ConsentCheck(Protocol):
    """Who knows the family's consents (clients.profile.ProfileClient)."""

    async def require_play_consent(self, family_id: str) -> None:
        """Return while the consent is active; raise a domain error otherwise."""
        ...


@dataclass(frozen=True)
class SubmittedSession:
    stored: StoredSession
    xp_pending: bool


class Submissions:
    def __init__(self, db: Database, *, catalog: Catalog, norms: Norms, consent: ConsentCheck,
                 outbox: XpOutbox, metrics: AnalyticsMetrics) -> None:
        self.db, self.catalog, self.norms = db, catalog, norms
        self.consent, self.outbox, self.metrics = consent, outbox, metrics

    async def session(self, ref: ChildRefData, raw: Session, *, content_hash: str,
                      now: datetime) -> SubmittedSession:
        """Score and store a validated session (its game is in the catalog)."""
        await self.consent.require_play_consent(ref.family_id)
        game = self.catalog.get(raw.game_id, raw.game_version)
        assert game is not None and raw.started_at is not None  # validated
        raw = derive_correct(raw, game)  # the game's rule decides, not the client
        table = self.norms.table
        result = score_session(raw, game, table, ref.birth_year, ref.birth_month)
        reason = f"Played {game.title}"
        stored = await in_transaction(self.db, lambda s: ingest.store_session(
            s, ref=ref, raw=raw, result=result, content_hash=content_hash,
            age_months=age_months(ref.birth_year, ref.birth_month, raw.started_at),
            norms_version=table.version, reason=reason, now=now))
        if stored.duplicate:
            self.metrics.duplicates.labels("session").inc()
        else:
            self.metrics.sessions_ingested.labels(game.game_id).inc()
        pending = stored.xp_pending
        if pending:
            pending = await self.outbox.try_now(ingest.Award(
                ingest.session_source(raw.session_id), ref.family_id, ref.child_id,
                stored.result.xp_awarded, reason))
        return SubmittedSession(stored, pending)

    async def checkin(self, ref: ChildRefData, checkin: MoodCheckIn, *, content_hash: str,
                      now: datetime) -> StoredCheckIn:
        """Store a validated mood check-in; the answer says the XP it earned."""
        await self.consent.require_play_consent(ref.family_id)
        xp = self.catalog.mood.xp_per_checkin
        stored = await in_transaction(self.db, lambda s: ingest.store_checkin(
            s, ref=ref, checkin=checkin, content_hash=content_hash, xp=xp, now=now))
        if stored.duplicate:
            self.metrics.duplicates.labels("checkin").inc()
        else:
            self.metrics.checkins_ingested.inc()
            if xp > 0:
                pending = await self.outbox.try_now(ingest.Award(
                    ingest.checkin_source(checkin.checkin_id), ref.family_id, ref.child_id, xp,
                    "mood check-in"))
                stored = replace(stored, xp_pending=pending)
        return stored
