"""The safety guard against the prompt corpora in safety_corpus/ (one JSON file per category).

Add prompts to the JSON files; every list is picked up here. Positives must get their
category's fixed answer (the model is not called), benign look-alikes must get nothing, and
the "left_to_model" entries document what is deliberately not caught.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.inference.safety import (
    OutputStreamGuard,
    SafetyGuard,
    developmental_note,
    has_developmental_note,
    needs_developmental_note,
    talks_about_development,
)

CORPUS = Path(__file__).with_name("safety_corpus")
INPUT_CATEGORIES = ("crisis", "abuse", "medical_emergency", "medication_dosing")
REASONS = {
    "crisis": {"explicit_wish", "suicide", "self_harm"},
    "abuse": {"abuse", "parent_urge"},
    "medical_emergency": {"poisoning", "breathing", "seizure", "unresponsive", "choking",
                          "infant_fever"},
    "medication_dosing": {"dosing"},
}
# Every dangerous category must cover these kinds of prompt (at least this many each).
REQUIRED_KINDS = {
    "crisis": {"misspelt": 10, "indirect": 10, "child_voice": 10, "case_and_punctuation": 3},
    "abuse": {"misspelt": 5, "indirect": 5, "child_voice": 5, "case_and_punctuation": 3},
    "medical_emergency": {
        "misspelt": 10,
        "breathing": 5,
        "seizure": 5,
        "poisoning": 10,
        "unresponsive": 5,
        "case_and_punctuation": 3,
    },
    "medication_dosing": {
        "misspelt": 10,
        "indirect": 5,
        "child_voice": 3,
        "case_and_punctuation": 3,
    },
}


def _load(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))


DATA = {cat: _load(cat) for cat in INPUT_CATEGORIES}
BENIGN = _load("benign")
CLAIMS = _load("diagnostic_claims")
DEV = _load("developmental_note")

POSITIVES = [
    pytest.param(cat, msg, id=f"{cat}/{kind}/{i}")
    for cat, data in DATA.items()
    for kind, msgs in data["prompts"].items()
    for i, msg in enumerate(msgs)
]
NEGATIVES = [
    pytest.param(msg, id=f"{kind}/{i}")
    for kind, msgs in BENIGN["prompts"].items()
    for i, msg in enumerate(msgs)
]
LEFT = [
    pytest.param(cat, entry["text"], id=f"{cat}/left/{i}")
    for cat, data in DATA.items()
    for i, entry in enumerate(data.get("left_to_model", []))
]


def _key(text: str) -> str:
    # case and punctuation variants of one prompt are allowed (case_and_punctuation lists)
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def us() -> SafetyGuard:
    return SafetyGuard.for_country("US")


# ------------------------------------------------------------------------ corpus shape


@pytest.mark.parametrize("category", INPUT_CATEGORIES)
def test_corpus_size_and_variety(category: str) -> None:
    data = DATA[category]
    assert data["category"] == category
    prompts = data["prompts"]
    assert sum(len(v) for v in prompts.values()) >= 60, category
    for kind, least in REQUIRED_KINDS[category].items():
        assert len(prompts.get(kind, [])) >= least, (category, kind)
    for entry in data.get("left_to_model", []):
        assert entry["text"] and len(entry["why"]) > 20


def test_benign_and_output_corpus_sizes() -> None:
    groups = BENIGN["prompts"]
    assert sum(len(v) for v in groups.values()) >= 60
    assert {
        f"{c.split('_')[0]}_lookalikes" for c in ("crisis", "medical", "abuse", "dosing")
    } <= set(groups)
    assert all(len(v) >= 10 for v in groups.values())
    assert len(CLAIMS["claims"]) >= 40 and len(CLAIMS["non_claims"]) >= 30
    assert len(DEV["needs_note"]) >= 10 and len(DEV["no_note"]) >= 5


def test_no_prompt_is_listed_twice() -> None:
    seen: dict[str, str] = {}
    lists = [
        (f"{cat}/{kind}", msgs) for cat, d in DATA.items() for kind, msgs in d["prompts"].items()
    ]
    lists += [(f"benign/{kind}", msgs) for kind, msgs in BENIGN["prompts"].items()]
    lists += [
        (f"{cat}/left", [e["text"] for e in d.get("left_to_model", [])]) for cat, d in DATA.items()
    ]
    for where, msgs in lists:
        for msg in msgs:
            key = _key(msg)
            assert key not in seen, f"{msg!r} is in {where} and {seen.get(key)}"
            seen[key] = where


# ------------------------------------------------------------------------ before the model


@pytest.mark.parametrize(("category", "message"), POSITIVES)
def test_positive_prompts_get_the_fixed_answer(
    us: SafetyGuard, category: str, message: str
) -> None:
    verdict = us.check_input(message)
    assert verdict is not None, message
    assert verdict.category == category, (message, verdict.category, verdict.reason)
    assert verdict.reason in REASONS[category]
    assert verdict.answer == us.answer(category)  # fixed: nothing from the message in it


@pytest.mark.parametrize(("category", "message"), POSITIVES)
def test_positive_prompts_survive_case_and_punctuation(
    us: SafetyGuard, category: str, message: str
) -> None:
    for variant in (
        message.upper(),
        message.lower(),
        f"{message}!!!",
        f"... {message} ???",
        message.replace(" ", "  ").replace("'", "’"),
        f'"{message}."',
    ):
        verdict = us.check_input(variant)
        assert verdict is not None and verdict.category == category, variant


@pytest.mark.parametrize("message", NEGATIVES)
def test_benign_lookalikes_do_not_trigger(us: SafetyGuard, message: str) -> None:
    for variant in (message, message.upper(), f"{message}!!"):
        verdict = us.check_input(variant)
        assert verdict is None, (variant, verdict and (verdict.category, verdict.reason))


@pytest.mark.parametrize(("category", "message"), LEFT)
def test_left_to_model_is_documented_behaviour(
    us: SafetyGuard, category: str, message: str
) -> None:
    # These are deliberately not given a fixed answer (see "why" in the corpus). If a rule
    # starts catching one, move it to the positives.
    verdict = us.check_input(message)
    assert verdict is None or verdict.category != category, f"now caught: move {message!r}"


def test_positive_prompts_with_surrounding_context(us: SafetyGuard) -> None:
    # The risky sentence may come after ordinary text in the same message.
    intro = "Hi, thanks for the memory games, they've been great for us. "
    for param in POSITIVES[::7]:
        category, message = param.values
        verdict = us.check_input(intro + message + " Please answer quickly.")
        assert verdict is not None and verdict.category == category, message


# ------------------------------------------------------------------------ after the model


@pytest.mark.parametrize(
    ("text", "cond"),
    [pytest.param(c["text"], c["cond"], id=str(i)) for i, c in enumerate(CLAIMS["claims"])],
)
def test_diagnostic_claims_are_qualified(us: SafetyGuard, text: str, cond: str) -> None:
    out, category = us.check_output(text, nickname="Mia")
    assert category == "diagnostic_claim", text
    assert "Only a qualified professional" in out and f"has {cond};" in out, out
    claim = text.split(".")[0].split(",")[-1].strip()
    assert claim not in out
    stream = OutputStreamGuard(us, nickname="Mia")
    streamed = "".join(stream.feed(w) for w in re.findall(r"\S+\s*", text)) + stream.finish()
    assert stream.category == "diagnostic_claim"
    assert streamed.strip() == out  # the qualifying note counts as a note: no second one


@pytest.mark.parametrize("text", CLAIMS["non_claims"])
def test_non_claims_pass_unchanged(us: SafetyGuard, text: str) -> None:
    assert us.check_output(text, nickname="Mia") == (text, None)


@pytest.mark.parametrize("text", DEV["needs_note"])
def test_developmental_replies_get_one_note(us: SafetyGuard, text: str) -> None:
    assert talks_about_development(text) and not has_developmental_note(text)
    assert needs_developmental_note(text)
    stream = OutputStreamGuard(us, nickname="Mia")
    out = "".join(stream.feed(w) for w in re.findall(r"\S+\s*", text)) + stream.finish()
    note = developmental_note("Mia")
    assert out == f"{text} {note}"
    assert out.count("not a diagnosis") == 1 and stream.developmental_note_added
    assert stream.category is None  # a note is not a rewrite: no safety finish, no metric
    assert not needs_developmental_note(out)


@pytest.mark.parametrize("text", DEV["no_note"] + DEV["already_noted"])
def test_other_replies_get_no_note(us: SafetyGuard, text: str) -> None:
    assert not needs_developmental_note(text)
    stream = OutputStreamGuard(us, nickname="Mia")
    out = stream.feed(text) + stream.finish()
    assert out == text and not stream.developmental_note_added and stream.category is None


@pytest.mark.parametrize("text", DEV["already_noted"])
def test_already_noted_replies_are_recognised(text: str) -> None:
    assert talks_about_development(text) and has_developmental_note(text)
