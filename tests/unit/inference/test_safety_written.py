"""The hand-written part of the safety classifier's corpus (avatario_tools/safety/written/):
the loader's checks, the split, the sizes, and that no held-out message leaked into it."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from avatario_tools.safety.corpus import LABELS, WRITTEN_DIR, is_written, load_written

HELDOUT = Path(__file__).parent
HARMFUL = [lab for lab in LABELS if lab != "benign"]


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def written():
    return load_written()


def test_every_label_has_many_hand_written_messages(written):
    counts = Counter(e.label for e in written)
    for label in HARMFUL:
        assert counts[label] >= 1000, (label, counts[label])
    assert counts["benign"] >= 3000
    assert all(is_written(e.group) for e in written)


def test_the_split_is_by_text_and_stable(written):
    splits = Counter(e.split for e in written)
    n = len(written)
    assert 0.07 < splits["validation"] / n < 0.13 and 0.07 < splits["test"] / n < 0.13
    again = load_written()
    assert [(e.text, e.split) for e in again] == [(e.text, e.split) for e in written]
    for label in LABELS:  # every label in every split
        assert {e.split for e in written if e.label == label} == {"train", "validation", "test"}


def test_no_text_is_in_two_files():
    seen: dict[str, str] = {}
    for path in sorted(WRITTEN_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            key = " ".join(json.loads(line)["text"].lower().split())
            assert key not in seen, f"{path.name} repeats a line of {seen.get(key)}"
            seen[key] = path.name


@pytest.mark.parametrize("folder", sorted(p.name for p in HELDOUT.glob("safety_heldout*")))
def test_no_held_out_message_is_in_the_training_corpus(written, folder):
    held = {_key(json.loads(line)["text"])
            for line in (HELDOUT / folder / "messages.jsonl").read_text().splitlines()
            if line.strip()}
    leaked = [e.text for e in written if _key(e.text) in held]
    assert leaked == []


@pytest.mark.parametrize("line, words", [
    ("not json", "not JSON"),
    ('{"text": "", "label": "crisis"}', "text must be a non-empty string"),
    ('{"text": "hello", "label": "danger"}', "label 'danger' is not one of"),
    ('{"label": "benign"}', "text must be a non-empty string"),
])
def test_a_bad_line_is_refused_naming_file_and_line(tmp_path, line, words):
    (tmp_path / "a.jsonl").write_text('{"text": "fine", "label": "benign"}\n' + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f"a.jsonl:2: {words}")):
        load_written(tmp_path)


def test_repeats_are_kept_once(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "Same  text", "label": "benign"}\n')
    (tmp_path / "b.jsonl").write_text('{"text": "same text", "label": "crisis"}\n')
    got = load_written(tmp_path)
    assert [(e.text, e.label) for e in got] == [("Same  text", "benign")]
