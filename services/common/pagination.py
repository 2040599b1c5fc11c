"""Page size and opaque page tokens for every List RPC.

A token is urlsafe base64 of a small JSON cursor (e.g. the last row's sort key).
Tokens are opaque to clients; a token that does not decode is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from services.common.errors import InvalidArgument

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
