from __future__ import annotations

import re

import pytest

from services.profile import tokens


def test_pairing_codes_are_short_unambiguous_and_random():
    codes = {tokens.new_pairing_code() for _ in range(500)}
    assert len(codes) == 500
    for code in codes:
        assert len(code) == tokens.CODE_LEN == 8
        assert set(code) <= set(tokens.CODE_ALPHABET)
    assert not set("01OIL") & set(tokens.CODE_ALPHABET)
    assert len(set(tokens.CODE_ALPHABET)) == len(tokens.CODE_ALPHABET) == 31


@pytest.mark.parametrize(("typed", "code"), [
    ("ABCD2345", "ABCD2345"), ("abcd-2345", "ABCD2345"), (" abcd 2345 ", "ABCD2345"),
    ("ABCD-234", None), ("ABCD23450", None), ("ABCD2340", None), ("ABCD234I", None),
    ("ABCD_2345", None), ("", None), ("A" * 40, None), ("ABCD2345\n", None),
])
def test_normalize_code(typed, code):
    assert tokens.normalize_code(typed) == code


def test_device_tokens():
    token = tokens.new_device_token()
    assert token.startswith("dev_") and len(token) == 47
    assert re.fullmatch(r"dev_[A-Za-z0-9_-]{43}", token)
    assert tokens.looks_like_device_token(token)
    assert not tokens.looks_like_device_token(token + "x")
    assert not tokens.looks_like_device_token("tok_" + token[4:])
    assert tokens.new_device_token() != token


def test_hashes_are_keyed_and_kind_separated():
    plain, peppered = tokens.Hasher(b"p" * 16), tokens.Hasher(b"another-pepper-0123")
    assert len(plain.code("ABCD2345")) == 64
    assert plain.code("ABCD2345") == plain.code("ABCD2345")
    assert plain.code("ABCD2345") != peppered.code("ABCD2345")
    assert plain.code("X") != plain.device_token("X")


@pytest.mark.parametrize("pepper", [b"", b"short"])
def test_a_missing_or_short_pepper_is_refused(pepper):
    with pytest.raises(ValueError, match="pepper"):
        tokens.Hasher(pepper)
