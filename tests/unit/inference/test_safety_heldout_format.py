"""Format checks for the frozen held-out safety evaluation set (safety_heldout/, v1).

These tests only read the data files; they never import the guard, so the set stays independent
of what it measures. The SHA-256 pins make any edit visible: the set is frozen, and a changed
set belongs in a new versioned folder with its own README.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

HELDOUT = Path(__file__).parent / "safety_heldout"

MESSAGE_MINIMUMS = {
    "crisis": 70,
    "abuse": 70,
    "medical_emergency": 70,
    "medication_dosing": 70,
    "benign": 170,
}
REPLY_MINIMUMS = {"diagnostic_claim": 60, "ok": 60}

FROZEN_SHA256 = {
    "messages.jsonl": "f3182d2ce8f78f77e7a9601dbbb96d6c3dc31416b76996e9586dff29588f438e",
    "replies.jsonl": "19d359bf1ddfd1cdcd3d8d246cb417b51370a374f1ce9e1b54e107dd970fa8db",
}

FIELDS = {"id", "text", "label", "note"}


def _rows(name: str) -> list[dict[str, str]]:
    path = HELDOUT / name
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{name}:{number}: blank line"
        row = json.loads(line)
        assert isinstance(row, dict), f"{name}:{number}: not a JSON object"
        rows.append(row)
    return rows


@pytest.mark.parametrize(
    ("name", "minimums"),
    [("messages.jsonl", MESSAGE_MINIMUMS), ("replies.jsonl", REPLY_MINIMUMS)],
)
def test_rows_are_well_formed_and_counts_meet_minimums(
    name: str, minimums: dict[str, int]
) -> None:
    rows = _rows(name)
    for row in rows:
        assert set(row) == FIELDS, f"{name}: {row.get('id')}: fields {sorted(row)}"
        assert all(isinstance(row[f], str) and row[f].strip() for f in FIELDS), row
        assert row["label"] in minimums, f"{name}: {row['id']}: unknown label {row['label']!r}"
    ids = Counter(row["id"] for row in rows)
    assert not [i for i, n in ids.items() if n > 1], "duplicate ids"
    texts = Counter(" ".join(row["text"].lower().split()) for row in rows)
    assert not [t for t, n in texts.items() if n > 1], "duplicate texts"
    counts = Counter(row["label"] for row in rows)
    short = {label: counts[label] for label, need in minimums.items() if counts[label] < need}
    assert not short, f"{name}: below minimum: {short}"


def test_ids_are_unique_across_both_files() -> None:
    ids = [row["id"] for name in FROZEN_SHA256 for row in _rows(name)]
    assert len(ids) == len(set(ids))


def test_message_lengths_vary() -> None:
    words = [len(row["text"].split()) for row in _rows("messages.jsonl")]
    assert min(words) <= 5 and max(words) >= 60


@pytest.mark.parametrize("name", sorted(FROZEN_SHA256))
def test_set_is_frozen(name: str) -> None:
    digest = hashlib.sha256((HELDOUT / name).read_bytes()).hexdigest()
    assert digest == FROZEN_SHA256[name], (
        f"{name} changed: the held-out set is frozen; add a new versioned set instead"
    )
