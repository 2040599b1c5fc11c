"""Input validation helpers that collect every violation before failing.

    v = Violations()
    v.uuid("child_id", req.child_id)
    v.text("nickname", req.nickname, max_len=40)
    v.raise_if_any()
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Iterable

from services.common.errors import InvalidArgument

# Pragmatic address check: one @, a dot in the domain, no spaces; the real
# proof of an address is a confirmation mail, not a regex.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,63}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Unicode categories an address never needs: control (Cc, e.g. NUL, ESC) and
# format characters (Cf: zero-width space U+200B, bidi override U+202E, BOM
# U+FEFF, soft hyphen U+00AD...). They make look-alike accounts and spoofed
# text in mails and audit views.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf"})


def strip_control(value: str) -> str:
    """`value` without the control characters `Violations.text` refuses (tab, newline and
    carriage return stay): e.g. a model's reply made storable as it is streamed."""
    return _CONTROL.sub("", value)


def has_invisible(value: str) -> bool:
    """True if `value` holds a control or format character."""
    return any(unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in value)


# Format characters a one-line name may keep: the zero-width joiner and non-joiner
# (emoji sequences such as a family emoji, Persian and Indic spelling) and the tag
# characters of subdivision flag emoji. Every other one (bidi overrides and
# isolates, zero-width spaces, BOMs, soft hyphens...) spoofs how a name reads.
_NAME_FORMAT_OK = frozenset({"\u200c", "\u200d", *map(chr, range(0xE0020, 0xE0080))})


def _visible(value: str) -> str:
    """`value` without whitespace and format characters: what a reader sees."""
    return "".join(ch for ch in value if unicodedata.category(ch) != "Cf").strip()


def _spoofing_format_char(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cf" and ch not in _NAME_FORMAT_OK for ch in value)


class Violations:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    # -- checks; each returns True when the value is valid ------------------

    def required(self, field: str, value: object) -> bool:
        if value in ("", None, 0) or (isinstance(value, (list, tuple)) and not value):
            self.add(field, "is required")
            return False
        return True

    def uuid(self, field: str, value: str, *, required: bool = True) -> bool:
        if not value:
            if required:
                self.add(field, "is required")
                return False
            return True
        try:
            parsed = uuid.UUID(value)
        except (ValueError, AttributeError, TypeError):
            self.add(field, "must be a UUID")
            return False
        if str(parsed) != value:
            self.add(field, "must be a UUID in canonical form (lower-case, with dashes)")
            return False
        return True

    def text(
        self,
        field: str,
        value: str,
        *,
        min_len: int = 1,
        max_len: int,
        multiline: bool = False,
    ) -> bool:
        """Required unless min_len is 0; invisible-only text counts as empty. One-line
        text (names, titles) must not hold format characters that change how it
        reads (bidi overrides, zero-width spaces); multi-line text (chat) may, the
        inference node normalises it."""
        stripped = _visible(value)
        if len(stripped) < min_len:
            self.add(field, "is required" if not stripped else f"must be at least {min_len} characters")
            return False
        if len(value) > max_len:
            self.add(field, f"must be at most {max_len} characters")
            return False
        if _CONTROL.search(value) or (not multiline and ("\n" in value or "\r" in value)):
            self.add(field, "must not contain control characters")
            return False
        if not multiline and _spoofing_format_char(value):
            self.add(field, "must not contain invisible format characters (bidi controls, "
                            "zero-width spaces)")
            return False
        return True

    def email(self, field: str, value: str) -> bool:
        if not value:
            self.add(field, "is required")
            return False
        if has_invisible(value):
            self.add(field, "must not contain control or invisible format characters")
            return False
        if len(value) > 254 or not _EMAIL.match(value):
            self.add(field, "must be a valid email address")
            return False
        return True

    def int_range(self, field: str, value: int, lo: int, hi: int) -> bool:
        if not lo <= value <= hi:
            self.add(field, f"must be between {lo} and {hi}")
            return False
        return True

    def enum(self, field: str, value: int, allowed: Iterable[int]) -> bool:
        allowed = set(allowed)
        if value == 0:
            self.add(field, "is required")
            return False
        if value not in allowed:
            self.add(field, f"unknown value {value}")
            return False
        return True


def normalize_email(email: str) -> str:
    """Emails are unique case-insensitively: store and compare them folded."""
    return email.strip().casefold()


def parse_id_list(text: str) -> list[str]:
    """Ids from an operator's file: one canonical UUID per line (blank lines and
    `#` comments skipped), or a JSON array of ids or of objects with an "id" or
    "family_id". Order kept, duplicates dropped. ValueError names the bad entry."""
    stripped = text.strip()
    entries: list[tuple[str, object]] = []
    if stripped.startswith("["):
        for i, item in enumerate(json.loads(stripped)):
            if isinstance(item, dict):
                item = item.get("family_id", item.get("id"))
            entries.append((f"item {i}", item))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append((f"line {n}", line))
    out: dict[str, None] = {}
    for where, value in entries:
        v = Violations()
        if not isinstance(value, str) or not v.uuid(where, value):
            raise ValueError(f"{where}: not a canonical UUID: {value!r}")
        out[value] = None
    return list(out)
