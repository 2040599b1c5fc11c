"""Pairing codes and device tokens: generation, normalisation and hashing.

Neither is stored in clear: the database holds HMAC-SHA-256(pepper, value), so
lookups are by hash and a database dump alone does not reveal them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

# Upper-case letters and digits without the look-alikes 0/O, 1/I/L: 31 symbols,
# so an 8-symbol code carries about 40 bits.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LEN = 8
# What a typed code may contain before normalisation: letters, digits, spaces, dashes.
_CODE_INPUT = re.compile(r"^[A-Za-z0-9 -]{1,32}$")

DEVICE_TOKEN_PREFIX = "dev_"
DEVICE_TOKEN_BYTES = 32
DEVICE_TOKEN_MAX_LEN = 128
_DEVICE_TOKEN = re.compile(r"^dev_[A-Za-z0-9_-]{43}$")


def new_pairing_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LEN))


def normalize_code(typed: str) -> str | None:
    """Upper-case, drop spaces and dashes ('abcd-2345' works); None if it cannot be a code."""
    if not _CODE_INPUT.fullmatch(typed):
        return None
    code = typed.replace(" ", "").replace("-", "").upper()
    if len(code) != CODE_LEN or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def new_device_token() -> str:
    return DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(DEVICE_TOKEN_BYTES)


def looks_like_device_token(token: str) -> bool:
    return bool(_DEVICE_TOKEN.fullmatch(token))


MIN_PEPPER_BYTES = 16


class Hasher:
    """HMAC-SHA-256 keyed with the configured pepper (required: at least 16 bytes)."""

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < MIN_PEPPER_BYTES:
            raise ValueError(f"the token pepper must be at least {MIN_PEPPER_BYTES} bytes")
        self._key = pepper

    def __call__(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def code(self, normalized_code: str) -> str:
        return self("pairing", normalized_code)

    def device_token(self, token: str) -> str:
        return self("device", token)

    def invite(self, normalized_code: str) -> str:
        return self("invite", normalized_code)
