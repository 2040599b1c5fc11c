"""The family export as a sequence of records, read a page at a time.

Each page is its own short read, so an export of any size holds no connection
or transaction for long and never builds the whole export in memory; the caller
(the servicer) turns records into protobuf and sends them in batches. Records
are read in the order of repo.family.SECTIONS, each kind oldest first, every
conversation followed by its messages. Rows written while an export runs appear
in it when their kind has not been read past yet. docs/export.md lists every
field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.common.db import Database, in_transaction, read
from services.common.pagination import PageRequest, parse_page
from services.profile import models as m
from services.profile.repo import family as repo

PAGE_ROWS = 500


@dataclass(frozen=True)
class Header:
    family_id: str
    exported_at: datetime
    exported_by: str


@dataclass(frozen=True)
class AvatarRecord:
    avatar: m.Avatar
    item_ids: list[str]


async def records(db: Database, *, family_id: str, parent_id: str, now: datetime,
                  page_rows: int = PAGE_ROWS) -> AsyncIterator[tuple[str, Any]]:
    """(kind, record) pairs: first ("header", Header), then every row the requesting
    parent may see, kind by kind ("parent", "consent", ..., "conversation",
    "message", "audit_event"). The export is audited before anything is read."""
    await in_transaction(db, lambda s: repo.begin_export(
        s, family_id=family_id, parent_id=parent_id, now=now))
    yield "header", Header(family_id, now, parent_id)
    for kind in repo.SECTIONS:
        page: PageRequest | None = PageRequest(page_rows, None)
        while page is not None:
            result = await read(db, lambda s, k=kind, p=page: repo.export_page(
                s, family_id, k, p, viewer=parent_id))
            if kind == "avatar":
                equipped = await read(db, lambda s, rows=result.rows: repo.equipped_items(
                    s, [a.child_id for a in rows]))
                for row in result.rows:
                    yield kind, AvatarRecord(row, equipped.get(row.child_id, []))
            else:
                for row in result.rows:
                    yield kind, row
                    if kind == "conversation":
                        async for message in _messages(db, row.id, page_rows):
                            yield "message", message
            # The next page from the token's position (pages here may be larger than a
            # client's, so only the cursor is taken from it).
            page = (PageRequest(page_rows, parse_page(0, result.next_token).cursor)
                    if result.next_token else None)


async def _messages(db: Database, conversation_id: str, page_rows: int):
    after = -1
    while True:
        rows = await read(db, lambda s, a=after: repo.messages_after(
            s, conversation_id, a, page_rows))
        for row in rows:
            yield row
        if len(rows) < page_rows:
            return
        after = rows[-1].seq
