"""The frozen held-out parent questions (avatario_tools/corpus/data/heldout/): written blind
from the intents' ids and answers, never trained on. These checks keep them frozen and
apart from the material; scoring the demo model on them is `intent_agreement`."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from avatario_tools.corpus.builder import _key
from avatario_tools.corpus.evaluate import HELDOUT_QUESTIONS, load_heldout_questions
from avatario_tools.corpus.material import DEFAULT_QA_DIR, load_material

EXPANDED_QA_DIR = DEFAULT_QA_DIR.parent / "qa_expanded"

FROZEN_SHA256 = "93ec0c3d7ef7975e265d7f2aa92f6b20766acd6e575d7fffcc89c8e319f6d205"


def test_the_set_is_frozen() -> None:
    assert hashlib.sha256(HELDOUT_QUESTIONS.read_bytes()).hexdigest() == FROZEN_SHA256


def test_rows_are_well_formed_two_per_known_intent() -> None:
    rows = [json.loads(line) for line in HELDOUT_QUESTIONS.read_text().splitlines()]
    assert all(set(r) == {"id", "question"} and r["question"].strip() for r in rows)
    counts = Counter(r["id"] for r in rows)
    assert set(counts.values()) == {2}
    groups = {it.group for it in load_material()}
    assert set(counts) <= groups
    assert len(counts) >= 200


@pytest.mark.parametrize("qa_dir", [DEFAULT_QA_DIR, EXPANDED_QA_DIR], ids=["qa", "expanded"])
def test_held_out_questions_stay_apart_from_the_material(qa_dir: Path) -> None:
    """A held-out wording that is also a training question would measure recall, not
    generalisation (folded as the builder folds duplicates). One blind wording happens to
    equal a question the material had before the set was written; `intent_agreement`
    skips it, and no other may join it."""
    material = {_key(q) for it in load_material(qa_dir) for q in it.questions}
    held = [q for _, q in load_heldout_questions()]
    assert len({_key(q) for q in held}) == len(held)
    assert [q for q in held if _key(q) in material] == [
        "How do I prepare my toddler for a new baby?"]


def test_the_expanded_material_has_the_same_intents_and_answers() -> None:
    base = {it.group: it for it in load_material(DEFAULT_QA_DIR, None)}
    more = {it.group: it for it in load_material(EXPANDED_QA_DIR, None)}
    assert base.keys() == more.keys()
    for g, it in base.items():
        assert more[g].answer == it.answer and more[g].topic == it.topic
        assert set(it.questions) <= set(more[g].questions)
        assert len(more[g].questions) >= len(it.questions) + 7
