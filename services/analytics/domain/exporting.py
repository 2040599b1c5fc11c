"""A child's play-data export as a sequence of records, read a page at a time.

Each page is its own short read, so a child with years of daily play exports
without holding a connection or the whole history in memory; the servicer turns
records into protobuf and streams them in batches. Order: every session (oldest
first) followed by what was derived from it and its xAPI statement, then every
mood check-in with its statement, then the flags as they stand now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.analytics.domain.catalog import Catalog
from services.analytics.domain.types import Flag
from services.analytics.domain.xapi import Actor, checkin_statement, session_statement
from services.analytics.repo import ingest, reads
from services.common.db import Database, read

PAGE_ROWS = 200


@dataclass(frozen=True)
class ChildKey:
    family_id: str
    child_id: str


async def records(
    db: Database, child: ChildKey, *, catalog: Catalog, actor: Actor,
    flags: Callable[[], Awaitable[list[Flag]]], page_rows: int = PAGE_ROWS,
) -> AsyncIterator[tuple[str, Any]]:
    """(kind, record) pairs: ("session", RawSession), ("result", ExportedSession: the
    result and when the session was received), ("statement", dict), ("mood_checkin", MoodCheckIn), ("flag", Flag). Nothing for a
    child analytics never saw; NOT_FOUND for another family's child."""
    if await read(db, lambda s: ingest.child_row(s, child.family_id, child.child_id)) is None:
        return
    after: tuple[datetime, str] | None = None
    while True:
        page = await read(db, lambda s, a=after: reads.session_page(
            s, child.child_id, a, page_rows))
        for item in page:
            yield "session", item.raw
            yield "result", item
            yield "statement", session_statement(item.result, catalog, actor)
        if len(page) < page_rows:
            break
        last = page[-1].raw.row
        after = (last.started_at, last.session_id)
    after = None
    while True:
        checkins = await read(db, lambda s, a=after: reads.checkin_page(
            s, child.child_id, a, page_rows))
        for checkin in checkins:
            yield "mood_checkin", checkin
            yield "statement", checkin_statement(checkin, actor)
        if len(checkins) < page_rows:
            break
        after = (checkins[-1].recorded_at, checkins[-1].checkin_id)
    for flag in await flags():
        yield "flag", flag
