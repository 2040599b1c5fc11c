"""Page size and opaque page tokens for every List RPC.

A token is urlsafe base64 of a small JSON cursor (e.g. the last row's sort key).
Tokens are opaque to clients; a token that does not decode is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.common.errors import InvalidArgument
from services.common.timeutil import as_utc

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_TOKEN_LEN = 512


@dataclass(frozen=True)
class PageRequest:
    size: int
    cursor: dict[str, Any] | None


def encode_token(cursor: dict[str, Any]) -> str:
    raw = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page(page_size: int, page_token: str, *, prefix: str = "") -> PageRequest:
    if page_size < 0:
        raise InvalidArgument.field(f"{prefix}page_size", "must not be negative")
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument.field(f"{prefix}page_size", f"must be at most {MAX_PAGE_SIZE}")
    size = page_size or DEFAULT_PAGE_SIZE
    if not page_token:
        return PageRequest(size, None)
    if len(page_token) > MAX_TOKEN_LEN:
        raise InvalidArgument.field(f"{prefix}page_token", "is not a valid page token")
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        cursor = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument.field(f"{prefix}page_token", "is not a valid page token") from exc
    if not isinstance(cursor, dict):
        raise InvalidArgument.field(f"{prefix}page_token", "is not a valid page token")
    return PageRequest(size, cursor)


def cursor_value(page: PageRequest, key: str, typ: type, *, prefix: str = "") -> Any:
    """A typed value from the cursor, or INVALID_ARGUMENT naming page_token."""
    if page.cursor is None:
        return None
    value = page.cursor.get(key)
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise InvalidArgument.field(f"{prefix}page_token", "is not a valid page token")
    return value


# -- keyset pages over (timestamp, id) --------------------------------------------


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next_token: str


def _bad_token(prefix: str = "") -> InvalidArgument:
    return InvalidArgument.field(f"{prefix}page_token", "is not a valid page token")


def time_cursor(page: PageRequest) -> tuple[datetime, str] | None:
    """The (timestamp, id) position stored in a page token."""
    if page.cursor is None:
        return None
    t, i = cursor_value(page, "t", str), cursor_value(page, "id", str)
    try:
        return as_utc(datetime.fromisoformat(t)), i
    except ValueError as exc:
        raise _bad_token() from exc


def after_time(stmt: Select, t_col: InstrumentedAttribute, id_col: InstrumentedAttribute,
               page: PageRequest, *, desc: bool = False) -> Select:
    """Order by (t, id) and start after the token's position; fetch one extra row."""
    pos = time_cursor(page)
    if pos is not None:
        t, i = pos
        if desc:
            stmt = stmt.where(or_(t_col < t, and_(t_col == t, id_col < i)))
        else:
            stmt = stmt.where(or_(t_col > t, and_(t_col == t, id_col > i)))
    order = (t_col.desc(), id_col.desc()) if desc else (t_col.asc(), id_col.asc())
    return stmt.order_by(*order).limit(page.size + 1)


async def time_page(session: AsyncSession, stmt: Select, t_col: InstrumentedAttribute,
                    id_col: InstrumentedAttribute, page: PageRequest, *,
                    desc: bool = False) -> Page:
    rows = list((await session.execute(after_time(stmt, t_col, id_col, page, desc=desc)))
                .scalars().all())
    return cut_page(rows, page.size, lambda r: {
        "t": as_utc(getattr(r, t_col.key)).isoformat(), "id": getattr(r, id_col.key)})


def cut_page(rows: Sequence[Any], size: int, cursor_of: Callable[[Any], dict]) -> Page:
    """rows were fetched with limit size+1; the extra one says there is a next page."""
    if len(rows) > size:
        rows = rows[:size]
        return Page(list(rows), encode_token(cursor_of(rows[-1])))
    return Page(list(rows), "")
