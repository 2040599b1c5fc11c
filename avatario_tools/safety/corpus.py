"""The labelled corpus the safety classifier is trained on, generated from templates.

Deterministic: the same code gives the same messages in the same order on every machine
(string seeds, no hash-order dependence). Splits are made by TEMPLATE, not by message, so
the validation and test splits hold phrasings the model never saw in training: within each
subtopic the templates are ordered by a hash and every 10th from position 3 goes to
validation, every 10th from position 7 to test (subtopics of fewer than 4 templates are all
training). Thresholds are chosen on validation; test is only reported.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

from avatario_tools.safety.grammar import Filler, perturb
from avatario_tools.safety.templates import COMMON_SLOTS, MODULES

SEED = "avatario-safety-corpus-v1"
PER_TEMPLATE = {"benign": 48, "crisis": 52, "abuse": 52, "medical_emergency": 50,
                "medication_dosing": 66}
LABELS = ("benign", "crisis", "abuse", "medical_emergency", "medication_dosing")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    split: str
    group: str  # category/subtopic


def _h(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def template_split(templates: list[str], label: str, group: str) -> dict[str, str]:
    order = sorted(templates, key=lambda t: _h(label, group, t))
    out = {}
    for i, t in enumerate(order):
        split = "train"
        if len(order) >= 4:
            if i % 10 == 3:
                split = "validation"
            elif i % 10 == 7:
                split = "test"
        out[t] = split
    return out


def _benign_sentences(rng: random.Random) -> list[str]:
    """Plain benign sentences used to make long messages in every class."""
    module = MODULES["benign"]
    filler = Filler(rng, {**COMMON_SLOTS, **module.SLOTS})
    out = []
    for group in ("family", "development", "feelings", "baby", "mild_illness"):
        for t in module.GROUPS[group]:
            out.append(filler.fill(t).rstrip(".?!") + ".")
    return out


def generate() -> list[Example]:
    """Every example of every class, in a fixed order."""
    context = _benign_sentences(random.Random(f"{SEED}:context"))
    examples: list[Example] = []
    for label in LABELS:
        module = MODULES[label]
        slots = {**COMMON_SLOTS, **module.SLOTS}
        seen: set[str] = set()
        for group, templates in module.GROUPS.items():
            splits = template_split(templates, label, group)
            for t in templates:
                rng = random.Random(f"{SEED}:{label}:{group}:{t}")
                filler = Filler(rng, slots)
                want, tries = PER_TEMPLATE[label], 0
                made = 0
                while made < want and tries < want * 6:
                    tries += 1
                    text = filler.fill(t)
                    if rng.random() < 0.65:
                        text = perturb(rng, text)
                    if rng.random() < 0.1:  # a longer message: some context first
                        text = f"{rng.choice(context)} {text}"
                    key = text.lower()
                    if key in seen:
                        continue
                    seen.add(key)
                    examples.append(Example(text, label, splits[t], f"{label}/{group}"))
                    made += 1
    return examples


def corpus_hash(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.label}\t{e.split}\t{e.group}\t{e.text}\n".encode())
    return h.hexdigest()


def sizes(examples: list[Example]) -> dict[str, dict[str, int]]:
    c = Counter((e.label, e.split) for e in examples)
    return {lab: {s: c[(lab, s)] for s in SPLITS} for lab in LABELS}
