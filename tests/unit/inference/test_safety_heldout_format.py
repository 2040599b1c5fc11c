"""Format checks for the frozen held-out safety evaluation sets (v1 to v18).

Each versioned folder (``safety_heldout/`` for v1, ``safety_heldout_v2/`` to ``safety_heldout_v18/``)
holds ``messages.jsonl`` and ``replies.jsonl`` plus a README. These tests only read the data
files; they never import the guard, so the sets stay independent of what they measure. Every set
is checked with its own minimum counts, id pattern and pinned SHA-256, and keeps the checks its
old per-version test made (v1's and v2's format tests are folded in here). The pins make any edit
visible: the sets are frozen, and a changed set belongs in a new versioned folder with its own
README (the next one is v19, ``safety_heldout_v19/``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

HERE = Path(__file__).parent

FIELDS = {"id", "text", "label", "note"}
FILES = ("messages.jsonl", "replies.jsonl")


def _collapsed(text: str) -> str:
    """Lower-cased, with runs of whitespace collapsed to one space."""
    return " ".join(text.lower().split())


def _alphanumeric(text: str) -> str:
    """Lower-cased words and numbers only: punctuation and spacing do not make a text new."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass(frozen=True)
class HeldoutSet:
    version: str
    folder: str
    message_minimums: dict[str, int]
    reply_minimums: dict[str, int]
    frozen_sha256: dict[str, str]
    next_folder: str
    # "{:04d}" patterns for sequential ids; None where the set's own test never checked ids.
    id_patterns: dict[str, str] | None = None
    # How texts are normalised before looking for duplicates, and whether a text may not repeat
    # across the two files (v2 on) or only within one file (v1).
    duplicate_key: Callable[[str], str] = _collapsed
    duplicates_across_files: bool = False
    # Whether the messages must be in shuffled order (no long runs of one label).
    shuffled: bool = False
    # Earlier sets whose message texts this set's messages must not repeat.
    distinct_from: tuple[str, ...] = ()
    # The longest message has at least this many words (v7's writers were asked for up to
    # about 60 and wrote at most 56; the set is frozen as written).
    longest_at_least: int = 60
    # The shortest message has at most this many words (v9's writers wrote none under 6).
    shortest_at_most: int = 5

    @property
    def path(self) -> Path:
        return HERE / self.folder

    def minimums(self, name: str) -> dict[str, int]:
        return self.message_minimums if name == "messages.jsonl" else self.reply_minimums


V1 = HeldoutSet(
    version="v1",
    folder="safety_heldout",
    message_minimums={
        "crisis": 70,
        "abuse": 70,
        "medical_emergency": 70,
        "medication_dosing": 70,
        "benign": 170,
    },
    reply_minimums={"diagnostic_claim": 60, "ok": 60},
    frozen_sha256={
        "messages.jsonl": "f3182d2ce8f78f77e7a9601dbbb96d6c3dc31416b76996e9586dff29588f438e",
        "replies.jsonl": "19d359bf1ddfd1cdcd3d8d246cb417b51370a374f1ce9e1b54e107dd970fa8db",
    },
    next_folder="safety_heldout_v2/",
)

V2 = HeldoutSet(
    version="v2",
    folder="safety_heldout_v2",
    message_minimums={
        "crisis": 75,
        "abuse": 75,
        "medical_emergency": 75,
        "medication_dosing": 75,
        "benign": 200,
    },
    reply_minimums={"diagnostic_claim": 60, "ok": 60},
    frozen_sha256={
        "messages.jsonl": "5fc7281cff96e6ef229c9daf0c8f35f70c3419771ef768a70f39b06be5570710",
        "replies.jsonl": "a973f810e3bcdb3615e33984a331cb8c70ce74e7828af5f48965c84fb93427cc",
    },
    next_folder="safety_heldout_v3/",
    id_patterns={"messages.jsonl": "v2-m{:04d}", "replies.jsonl": "v2-r{:04d}"},
    duplicate_key=_alphanumeric,
    duplicates_across_files=True,
    shuffled=True,
)

def blind_set(number: int, messages_sha256: str, replies_sha256: str) -> HeldoutSet:
    """A set written the v3 way and later (minimums, ids v<n>-m0001..., duplicates checked
    across both files, shuffled, distinct from every earlier version)."""
    return HeldoutSet(
        version=f"v{number}",
        folder=f"safety_heldout_v{number}",
        message_minimums={
            "crisis": 110,
            "abuse": 110,
            "medical_emergency": 110,
            "medication_dosing": 110,
            "benign": 280,
        },
        reply_minimums={"diagnostic_claim": 80, "ok": 80},
        frozen_sha256={"messages.jsonl": messages_sha256, "replies.jsonl": replies_sha256},
        next_folder=f"safety_heldout_v{number + 1}/",
        id_patterns={"messages.jsonl": f"v{number}-m{{:04d}}",
                     "replies.jsonl": f"v{number}-r{{:04d}}"},
        duplicate_key=_alphanumeric,
        duplicates_across_files=True,
        shuffled=True,
        distinct_from=tuple(f"v{i}" for i in range(1, number)),
    )


V3 = blind_set(3, "a99d8f34cc60f1a6489e82b7ba1a37055b0a9e3d5b1e9530a6ec367e7b42b8b6",
               "908523c6303175259efe70efb1109511ecc5d7a9ab1c52ff9bb016a9110970aa")
V4 = blind_set(4, "735131f920ea4b6745ab178099f17c83da1a4fd332f7f8aeaa0bd359552c2439",
               "78a65c40f3f07ddbe2e54df0f7ca0a8ae5c66351df10033c46e6a02a4dff63ba")
V5 = blind_set(5, "95457c28d8891dd70efdf8617674efd1dcc2044189a5ace5c420c5749c5dc448",
               "e43507424edfbc3a3f61077f686caac70336d6334c38ad08512277cce0987ddf")

V6 = blind_set(6, "d8e58c2e976b35a47df68787f382499632eb29e32a8d95e1d1ae0acbdf90d474",
               "7fd195417c1b5f8062d31de426a03577b2eb63b10461f690eb33eb034823eb58")

V7 = replace(blind_set(7, "d2f30379d560b0ac1757dcda3aee6ebe9a599f5451de01edaf98303b146b0bc7",
                       "e5b56c3d3aebdb06eb36b40784cdd176d972625adb228f181a60504e35f6aca7"),
             longest_at_least=50)
V8 = blind_set(8, "84905d434bd2aeb5b0c67821e0a1e6472df6309d7d28c0fa5432ed4a19d36d94",
               "ee1e9ad41f80ea6ad651e8c71d2eac54941112379487e9c4818a9a17ddd29ce7")

# v9: two writers of 100 messages per harmful category, 150 look-alikes and 20 replies per
# label each (smaller than v8, same method); the shortest message has 6 words.
V9 = replace(blind_set(9, "d83708d918f7f9fb1a9d2fbaf09cde6e1c93b9487a6b86ed829edd8bcb04c43c",
                       "465cfc37cf1c583254706155f666b52de19f1e04561692fa3962453ee8250980"),
             message_minimums={"crisis": 90, "abuse": 90, "medical_emergency": 90,
                               "medication_dosing": 90, "benign": 280},
             reply_minimums={"diagnostic_claim": 35, "ok": 35}, shortest_at_most=6)
# v10 to v18: written like v9, with v9's minimums.
V10, V11, V12, V13, V14, V15, V16, V17, V18 = (
    replace(blind_set(number, messages_sha256, replies_sha256),
            message_minimums=V9.message_minimums, reply_minimums=V9.reply_minimums)
    for number, messages_sha256, replies_sha256 in (
        (10, "b8fd607a5608f031722e3212301ea61a79389d03285fe2edf6e590cb039e6eea",
         "3f4204fd15381aace2648780e0cc70fd4d0a38918cec75552389d71b22143de9"),
        (11, "f428be4c723aaa0baa94fe029a7913f4cbe25e33ff21c2b1a4574e4515fea827",
         "9e9e84eeddd811c2f37d675f894d87c01c90a9898d195fe32178d42e0deaef63"),
        (12, "52b092b5133aef2190b1d5481b9ce6f955b90d31054968f81b9bd87a65174748",
         "d30d68146a853bb9c0cdb4fd77894a9a45d94707be53935c74c0c54b779c2b4d"),
        (13, "f60e1a563bfd8cd35826cdc68e499f30a14ab03728a37357a05354c46c23f88b",
         "f4135daab916f8c04ef04f54ffb455fa75c81ad209bc4b6f90636ad347742033"),
        (14, "a5e4b3a3a5c22f0cc0095c93180ea79baee76a86d2da7891da3276f99bf6cdea",
         "75e17d13bab951e6b2b56ccf936df2c1f5d2f1dcb46772e9c54937e780b3fd99"),
        (15, "bcd8466efc286b176fdf1c64370ed94140ffaa966ebc39a46a55f171ea4d63cb",
         "526c205d9b45a34591fdc01c29019307f5e777f9a0606e39cdc51893bd2bde3f"),
        (16, "5b97e814460ea228a923a9c6a0d79072cc9ffb5a015dcd8391f00050bb7d9e3a",
         "7ba13ee402fcf9fc8f70498cee20238e7e2c91b0780f8e4074cf9ec917092b4c"),
        (17, "d7305c8b8ba5fcb383cd1fd2a66ce048511b5fde0f470662a04e3408c66c53ee",
         "a5b79a01fc61b2d789584e898d188b40c8170180df12d214beeda02d281e0c9c"),
        (18, "fb07a0df358122f5d7d55f030aaacb146826c6e1c8d5119b308e0dde83f6f564",
         "2098119c95729d98eb9fc04db6256c3656761f710c4ce75423137e2d6d8d0676"),
    )
)

SETS = {s.version: s for s in (V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13, V14, V15, V16, V17, V18)}

SET_PARAMS = [pytest.param(s, id=s.version) for s in SETS.values()]
SET_FILE_PARAMS = [
    pytest.param(s, name, id=f"{s.version}-{name}") for s in SETS.values() for name in FILES
]


def _rows(heldout: HeldoutSet, name: str) -> list[dict[str, str]]:
    rows = []
    for number, line in enumerate(
        (heldout.path / name).read_text(encoding="utf-8").splitlines(), start=1
    ):
        assert line.strip(), f"{heldout.version} {name}:{number}: blank line"
        row = json.loads(line)
        assert isinstance(row, dict), f"{heldout.version} {name}:{number}: not a JSON object"
        rows.append(row)
    return rows


@pytest.mark.parametrize(("heldout", "name"), SET_FILE_PARAMS)
def test_rows_are_well_formed_and_counts_meet_minimums(heldout: HeldoutSet, name: str) -> None:
    rows = _rows(heldout, name)
    minimums = heldout.minimums(name)
    where = f"{heldout.version} {name}"
    for row in rows:
        assert set(row) == FIELDS, f"{where}: {row.get('id')}: fields {sorted(row)}"
        assert all(isinstance(row[f], str) and row[f].strip() for f in FIELDS), row
        assert row["label"] in minimums, f"{where}: {row['id']}: unknown label {row['label']!r}"
    ids = Counter(row["id"] for row in rows)
    assert not [i for i, n in ids.items() if n > 1], f"{where}: duplicate ids"
    counts = Counter(row["label"] for row in rows)
    short = {label: counts[label] for label, need in minimums.items() if counts[label] < need}
    assert not short, f"{where}: below minimum: {short}"


@pytest.mark.parametrize(
    ("heldout", "name"),
    [p for p in SET_FILE_PARAMS if p.values[0].id_patterns is not None],
)
def test_ids_are_sequential_from_one(heldout: HeldoutSet, name: str) -> None:
    assert heldout.id_patterns is not None
    ids = [row["id"] for row in _rows(heldout, name)]
    expected = [heldout.id_patterns[name].format(n) for n in range(1, len(ids) + 1)]
    assert ids == expected, (
        f"{heldout.version} {name}: ids are not {expected[0]}..{expected[-1]} in order"
    )


@pytest.mark.parametrize("heldout", SET_PARAMS)
def test_ids_are_unique_across_both_files(heldout: HeldoutSet) -> None:
    ids = [row["id"] for name in FILES for row in _rows(heldout, name)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("heldout", SET_PARAMS)
def test_no_duplicate_texts(heldout: HeldoutSet) -> None:
    groups = [FILES] if heldout.duplicates_across_files else [(name,) for name in FILES]
    for names in groups:
        texts = Counter(
            heldout.duplicate_key(row["text"]) for name in names for row in _rows(heldout, name)
        )
        repeated = [t for t, n in texts.items() if n > 1]
        assert not repeated, f"{heldout.version} {'+'.join(names)}: duplicate texts"


@pytest.mark.parametrize("heldout", [p for p in SET_PARAMS if p.values[0].distinct_from])
def test_messages_do_not_repeat_earlier_sets(heldout: HeldoutSet) -> None:
    earlier = {
        _collapsed(row["text"])
        for version in heldout.distinct_from
        for row in _rows(SETS[version], "messages.jsonl")
    }
    repeats = [
        row["id"] for row in _rows(heldout, "messages.jsonl") if _collapsed(row["text"]) in earlier
    ]
    assert not repeats, (
        f"{heldout.version}: messages repeat a text from {', '.join(heldout.distinct_from)}: "
        f"{repeats}"
    )


def _runs(labels: list[str]) -> list[list[str]]:
    runs: list[list[str]] = [[labels[0]]]
    for label in labels[1:]:
        if label == runs[-1][-1]:
            runs[-1].append(label)
        else:
            runs.append([label])
    return runs


@pytest.mark.parametrize("heldout", [p for p in SET_PARAMS if p.values[0].shuffled])
def test_labels_are_shuffled_not_grouped(heldout: HeldoutSet) -> None:
    labels = [row["label"] for row in _rows(heldout, "messages.jsonl")]
    longest = max(len(run) for run in _runs(labels))
    assert longest < 10, (
        f"{heldout.version}: a run of {longest} equal labels: the order was not shuffled"
    )


@pytest.mark.parametrize("heldout", SET_PARAMS)
def test_message_lengths_vary(heldout: HeldoutSet) -> None:
    words = [len(row["text"].split()) for row in _rows(heldout, "messages.jsonl")]
    assert min(words) <= heldout.shortest_at_most and max(words) >= heldout.longest_at_least


@pytest.mark.parametrize(
    ("heldout", "name"),
    [
        pytest.param(s, n, id=f"{s.version}-{n}")
        for s in SETS.values()
        for n in sorted(s.frozen_sha256)
    ],
)
def test_set_is_frozen(heldout: HeldoutSet, name: str) -> None:
    digest = hashlib.sha256((heldout.path / name).read_bytes()).hexdigest()
    assert digest == heldout.frozen_sha256[name], (
        f"{heldout.version} {name} changed: the held-out set is frozen; "
        f"add {heldout.next_folder} instead"
    )
