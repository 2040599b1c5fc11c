"""xAPI (Experience API 1.0.3) statements for data portability, as plain dicts.

The actor is an account (homePage + a pseudonymous name derived from the child
id with a server key); statements never carry an email, nickname or real name.
A game session is "completed" (ADL verb) on an activity per game; a mood check-in
is "experienced" on the mood check-in activity.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.analytics.domain.catalog import Catalog
from services.analytics.domain.types import MoodCheckIn, SessionResult, utc

XAPI_VERSION = "1.0.3"
VERB_COMPLETED = "http://adlnet.gov/expapi/verbs/completed"
VERB_EXPERIENCED = "http://adlnet.gov/expapi/verbs/experienced"
ACTIVITY_TYPE_GAME = "http://activitystrea.ms/schema/1.0/game"
ACTIVITY_TYPE_INTERACTION = "http://adlnet.gov/expapi/activities/interaction"
DEFAULT_BASE = "https://avatario.app/xapi"
_STATEMENT_NS = uuid.UUID("0d9b3a34-3c8e-4c55-8a8f-5b1e1f1f6a27")


@dataclass(frozen=True, slots=True)
class Actor:
    home_page: str
    name: str  # pseudonymous account name, never a real name or email

    def to_dict(self) -> dict[str, Any]:
        return {"objectType": "Agent", "account": {"homePage": self.home_page, "name": self.name}}


def pseudonymous_id(child_id: str, key: bytes) -> str:
    """Stable per-child pseudonym: HMAC-SHA256(key, child_id), 32 hex characters."""
    return hmac.new(key, child_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def iso_timestamp(dt: datetime) -> str:
    return utc(dt).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_duration(seconds: float) -> str:
    """ISO 8601 duration such as PT2M5.5S (hours, minutes and seconds)."""
    seconds = max(0.0, round(seconds, 2))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = "PT"
    if h:
        out += f"{int(h)}H"
    if m:
        out += f"{int(m)}M"
    if s or out == "PT":
        out += f"{s:g}S"
    return out


def _lang(text: str) -> dict[str, str]:
    return {"en-US": text}


def session_statement(result: SessionResult, catalog: Catalog, actor: Actor, base: str = DEFAULT_BASE) -> dict[str, Any]:
    game = catalog.get(result.game_id, result.game_version)
    title = game.title if game else result.game_id
    description = game.description if game else ""
    outcome: dict[str, Any] = {
        "completion": True,
        "duration": iso_duration(result.duration_seconds),
        "extensions": {f"{base}/extensions/metrics": {m.name: m.value for m in result.metrics},
                       f"{base}/extensions/valid-trials": result.valid_trials,
                       f"{base}/extensions/excluded-trials": result.excluded_trials},
    }
    if game and game.success_metric:
        m = result.metric(game.success_metric)
        if m is not None:
            scaled = max(0.0, min(1.0, m.value))
            outcome["score"] = {"scaled": round(scaled, 4), "raw": round(scaled * 100, 2), "min": 0, "max": 100}
            if game.success_threshold is not None:
                outcome["success"] = m.value >= game.success_threshold
    return {
        "id": str(uuid.uuid5(_STATEMENT_NS, f"session/{result.session_id}")),
        "actor": actor.to_dict(),
        "verb": {"id": VERB_COMPLETED, "display": _lang("completed")},
        "object": {
            "objectType": "Activity",
            "id": f"{base}/activities/games/{result.game_id}",
            "definition": {"name": _lang(title), "description": _lang(description), "type": ACTIVITY_TYPE_GAME},
        },
        "result": outcome,
        "context": {
            "registration": str(uuid.uuid5(_STATEMENT_NS, f"registration/{result.session_id}")),
            "platform": "Avatario",
            "extensions": {f"{base}/extensions/game-version": result.game_version,
                           f"{base}/extensions/session-id": result.session_id,
                           f"{base}/extensions/domain": result.domain.value},
        },
        "timestamp": iso_timestamp(result.ended_at),
        "version": XAPI_VERSION,
    }


def checkin_statement(checkin: MoodCheckIn, actor: Actor, base: str = DEFAULT_BASE) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(_STATEMENT_NS, f"checkin/{checkin.checkin_id}")),
        "actor": actor.to_dict(),
        "verb": {"id": VERB_EXPERIENCED, "display": _lang("experienced")},
        "object": {
            "objectType": "Activity",
            "id": f"{base}/activities/mood-checkin",
            "definition": {"name": _lang("Mood check-in"), "type": ACTIVITY_TYPE_INTERACTION,
                           "interactionType": "choice"},
        },
        "result": {"response": checkin.mood.value.lower(),
                   "extensions": {f"{base}/extensions/intensity": checkin.intensity}},
        "context": {"platform": "Avatario",
                    "extensions": {f"{base}/extensions/checkin-id": checkin.checkin_id}},
        "timestamp": iso_timestamp(checkin.recorded_at),
        "version": XAPI_VERSION,
    }


def child_statements(
    results: Iterable[SessionResult], checkins: Iterable[MoodCheckIn], catalog: Catalog, actor: Actor,
    base: str = DEFAULT_BASE,
) -> list[dict[str, Any]]:
    """All statements for a child, oldest first."""
    out: Sequence[tuple[datetime, dict[str, Any]]] = (
        [(r.ended_at, session_statement(r, catalog, actor, base)) for r in results]
        + [(c.recorded_at, checkin_statement(c, actor, base)) for c in checkins]
    )
    return [s for _, s in sorted(out, key=lambda x: (utc(x[0]), x[1]["id"]))]
