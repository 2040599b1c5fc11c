"""One-line names refuse characters that change how they read; invisible-only text is empty."""

from __future__ import annotations

import pytest

from services.common.validation import Violations


def check(value: str, *, multiline: bool = False, min_len: int = 1) -> list[tuple[str, str]]:
    v = Violations()
    v.text("nickname", value, max_len=40, multiline=multiline, min_len=min_len)
    return v.items


@pytest.mark.parametrize("value", [
    "Mia\u202e",          # right-to-left override
    "\u2066Mia\u2069",    # isolate
    "Mi\u200ba",          # zero-width space
    "\ufeffMia",          # BOM
    "Mi\u00ada",          # soft hyphen
    "Mia\u2060",          # word joiner
])
def test_one_line_text_refuses_spoofing_format_characters(value):
    assert [f for f, _ in check(value)] == ["nickname"]


@pytest.mark.parametrize("value", ["\u200b", " \u200b\u200d ", "\u202e", "\ufeff\u00ad"])
def test_invisible_only_text_is_empty(value):
    assert check(value) == [("nickname", "is required")]
    assert check(value, multiline=True) == [("nickname", "is required")]
    # Optional one-line text (a title) may be empty, but not invisible characters.
    assert [f for f, _ in check(value, min_len=0)] == ["nickname"]


@pytest.mark.parametrize("value", [
    "Mia", "Zoë", "Сева", "ゆき", "👨\u200d👩\u200d👧",  # ZWJ emoji sequence
    "می\u200cخواهم",  # Persian with a zero-width non-joiner
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland flag
])
def test_ordinary_names_pass(value):
    assert check(value) == []


def test_multiline_text_keeps_format_characters_for_the_inference_node_to_normalise():
    assert check("k\u200bill the lights?\nthanks", multiline=True) == []
