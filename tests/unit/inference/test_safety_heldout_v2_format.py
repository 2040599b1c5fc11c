"""Format checks for the frozen held-out safety evaluation set v2 (safety_heldout_v2/).

The tests only read the data files and never import the guard, so the set stays independent of
what it measures. The SHA-256 pins make any edit visible: v2 is frozen, and a changed set belongs
in a new versioned folder (safety_heldout_v3/) with its own README.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

HELDOUT = Path(__file__).parent / "safety_heldout_v2"

MESSAGE_MINIMUMS = {
    "crisis": 75,
    "abuse": 75,
    "medical_emergency": 75,
    "medication_dosing": 75,
    "benign": 200,
}
REPLY_MINIMUMS = {"diagnostic_claim": 60, "ok": 60}
ID_PATTERN = {"messages.jsonl": "v2-m{:04d}", "replies.jsonl": "v2-r{:04d}"}

FROZEN_SHA256 = {
    "messages.jsonl": "5fc7281cff96e6ef229c9daf0c8f35f70c3419771ef768a70f39b06be5570710",
    "replies.jsonl": "a973f810e3bcdb3615e33984a331cb8c70ce74e7828af5f48965c84fb93427cc",
}

FIELDS = {"id", "text", "label", "note"}


def _rows(name: str) -> list[dict[str, str]]:
    rows = []
    for number, line in enumerate(
        (HELDOUT / name).read_text(encoding="utf-8").splitlines(), start=1
    ):
        assert line.strip(), f"{name}:{number}: blank line"
        row = json.loads(line)
        assert isinstance(row, dict), f"{name}:{number}: not a JSON object"
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    ("name", "minimums"),
    [("messages.jsonl", MESSAGE_MINIMUMS), ("replies.jsonl", REPLY_MINIMUMS)],
)
def test_rows_are_well_formed_and_counts_meet_minimums(name: str, minimums: dict[str, int]) -> None:
    rows = _rows(name)
    for row in rows:
        assert set(row) == FIELDS, f"{name}: {row.get('id')}: fields {sorted(row)}"
        assert all(isinstance(row[f], str) and row[f].strip() for f in FIELDS), row
        assert row["label"] in minimums, f"{name}: {row['id']}: unknown label {row['label']!r}"
    counts = Counter(row["label"] for row in rows)
    short = {label: counts[label] for label, need in minimums.items() if counts[label] < need}
    assert not short, f"{name}: below minimum: {short}"


@pytest.mark.parametrize("name", sorted(ID_PATTERN))
def test_ids_are_sequential_from_one(name: str) -> None:
    ids = [row["id"] for row in _rows(name)]
    expected = [ID_PATTERN[name].format(n) for n in range(1, len(ids) + 1)]
    assert ids == expected, f"{name}: ids are not {expected[0]}..{expected[-1]} in order"


def test_ids_are_unique_across_both_files() -> None:
    ids = [row["id"] for name in FROZEN_SHA256 for row in _rows(name)]
    assert len(ids) == len(set(ids))


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def test_no_duplicate_texts_within_or_across_files() -> None:
    texts = Counter(_normalised(row["text"]) for name in FROZEN_SHA256 for row in _rows(name))
    assert not [t for t, n in texts.items() if n > 1], "duplicate texts"


def test_labels_are_shuffled_not_grouped() -> None:
    labels = [row["label"] for row in _rows("messages.jsonl")]
    longest = max(len(list(run)) for run in _runs(labels))
    assert longest < 10, f"a run of {longest} equal labels: the order was not shuffled"


def _runs(labels: list[str]) -> list[list[str]]:
    runs: list[list[str]] = [[labels[0]]]
    for label in labels[1:]:
        if label == runs[-1][-1]:
            runs[-1].append(label)
        else:
            runs.append([label])
    return runs


def test_message_lengths_vary() -> None:
    words = [len(row["text"].split()) for row in _rows("messages.jsonl")]
    assert min(words) <= 5 and max(words) >= 60


@pytest.mark.parametrize("name", sorted(FROZEN_SHA256))
def test_set_is_frozen(name: str) -> None:
    digest = hashlib.sha256((HELDOUT / name).read_bytes()).hexdigest()
    assert digest == FROZEN_SHA256[name], (
        f"{name} changed: the held-out set v2 is frozen; add safety_heldout_v3/ instead"
    )
