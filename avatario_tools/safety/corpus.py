"""The labelled corpus the safety classifier is trained on, generated from templates.

Deterministic: the same code gives the same messages in the same order on every machine
(string seeds, no hash-order dependence). Splits are made by TEMPLATE, not by message, so
the validation and test splits hold phrasings the model never saw in training: within each
subtopic the templates are ordered by a hash and every 10th from position 3 goes to
validation, every 10th from position 7 to test (subtopics of fewer than 4 templates are all
training). Thresholds are chosen on validation; test is only reported.

Benign has two sources: the look-alikes (templates/benign.py, full of the categories' words)
and ordinary chat (templates/chat.py: follow-ups, answers, thanks, everyday questions; its
subtopics start with `chat_`, see `is_ordinary_chat`). Some messages of every class get a
sentence of ordinary context in front; those sentences come from training templates only, so
no validation or test phrasing leaks into training through them.

Hand-written messages (`written/*.jsonl`, one {"text", "label", "note"} object per line, each
message written by hand from the category definitions, never generated) join the corpus with
group `<label>/written`. They are split by a hash of the normalised text: 1 in 10 to
validation, 1 in 10 to test, the rest to training. They are the realistic part of the corpus
(templates give breadth of vocabulary, the written messages the way parents actually write),
so the trainer weights them up (see avatario_tools/safety/train.py). `ordinary.jsonl` holds
ordinary parent chat (no look-alikes): its group is `benign/chat_written`, so it counts as
ordinary chat (`is_ordinary_chat`) as well as hand-written.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from avatario_tools.safety.grammar import Filler, perturb
from avatario_tools.safety.templates import COMMON_SLOTS, MODULES, SOURCES, chat

SEED = "avatario-safety-corpus-v1"
PER_TEMPLATE = {"benign": 48, "crisis": 52, "abuse": 52, "medical_emergency": 50,
                "medication_dosing": 66}
PER_CHAT_TEMPLATE = 36  # ordinary chat: many short templates, fewer variants each
ORDINARY_PREFIX = "chat_"
# Subtopics whose training templates may open a message of any class as context.
_CONTEXT_GROUPS = {
    "benign": ("family", "development", "feelings", "baby", "mild_illness"),
    "chat": ("chat_facts", "chat_sleep", "chat_food", "chat_school", "chat_routines"),
}
LABELS = ("benign", "crisis", "abuse", "medical_emergency", "medication_dosing")
SPLITS = ("train", "validation", "test")
WRITTEN_DIR = Path(__file__).resolve().parent / "written"
WRITTEN = "written"


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


def is_ordinary_chat(group: str) -> bool:
    """True for an Example.group of the ordinary chat source ("benign/chat_...")."""
    return group.split("/", 1)[-1].startswith(ORDINARY_PREFIX)


def _context_sentences(rng: random.Random) -> list[str]:
    """Plain benign sentences (training templates only) used to make longer messages."""
    out = []
    for name, module in (("benign", MODULES["benign"]), ("chat", chat)):
        filler = Filler(rng, {**COMMON_SLOTS, **module.SLOTS})
        for group in _CONTEXT_GROUPS[name]:
            templates = module.GROUPS[group]
            splits = template_split(templates, "benign", group)
            for t in templates:
                if splits[t] == "train":
                    out.append(filler.fill(t).rstrip(".?!") + ".")
    return out


def generate(written: Path | None = WRITTEN_DIR) -> list[Example]:
    """Every example of every class, in a fixed order: the templates' messages, then the
    hand-written ones (`written=None` leaves them out)."""
    context = _context_sentences(random.Random(f"{SEED}:context"))
    examples: list[Example] = []
    seen: dict[str, set[str]] = {label: set() for label in LABELS}
    for label, module in SOURCES:
        slots = {**COMMON_SLOTS, **module.SLOTS}
        for group, templates in module.GROUPS.items():
            splits = template_split(templates, label, group)
            want = PER_CHAT_TEMPLATE if group.startswith(ORDINARY_PREFIX) else PER_TEMPLATE[label]
            for t in templates:
                rng = random.Random(f"{SEED}:{label}:{group}:{t}")
                filler = Filler(rng, slots)
                made, tries = 0, 0
                while made < want and tries < want * 6:
                    tries += 1
                    text = filler.fill(t)
                    if rng.random() < 0.65:
                        text = perturb(rng, text)
                    r = rng.random()
                    if r < 0.15:  # a longer message: one or two sentences of context first
                        lead = rng.sample(context, 1 if r < 0.1 else 2)
                        text = " ".join((*lead, text))
                    key = text.lower()
                    if key in seen[label]:
                        continue
                    seen[label].add(key)
                    examples.append(Example(text, label, splits[t], f"{label}/{group}"))
                    made += 1
    if written is not None:
        hand = load_written(written)
        examples += hand + _with_context(hand, context)
    return examples


def _with_context(hand: list[Example], context: list[str]) -> list[Example]:
    """Copies of some hand-written TRAINING messages of every class with one or two ordinary
    sentences in front (from the ordinary chat's training messages and the template context
    sentences), as the templates get: a worry told after a thank-you is still a worry."""
    rng = random.Random(f"{SEED}:written-context")
    ordinary = [e.text.rstrip(".?! ") + "." for e in hand
                if e.split == "train" and is_ordinary_chat(e.group) and len(e.text.split()) <= 14]
    pool = ordinary + context
    out = []
    for e in hand:
        if e.split != "train" or is_ordinary_chat(e.group) or rng.random() >= 0.2:
            continue
        lead = rng.sample(pool, 1 if rng.random() < 0.6 else 2)
        out.append(Example(" ".join((*lead, e.text)), e.label, "train", e.group))
    return out


def is_written(group: str) -> bool:
    """True for an Example.group of the hand-written source ("<label>/written", or
    "benign/chat_written" for the hand-written ordinary chat of `ordinary*.jsonl`)."""
    return group.split("/", 1)[-1] in (WRITTEN, ORDINARY_PREFIX + WRITTEN)


def load_written(folder: Path = WRITTEN_DIR) -> list[Example]:
    """The hand-written messages of every `*.jsonl` in `folder`, in file then line order;
    a repeated text (same label or not) is kept once, at its first place. A bad line is a
    ValueError naming the file, the line and the field."""
    examples: list[Example] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path.name}:{n}: not JSON ({exc})") from exc
            text, label = row.get("text"), row.get("label")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path.name}:{n}: text must be a non-empty string")
            if label not in LABELS:
                raise ValueError(f"{path.name}:{n}: label {label!r} is not one of {LABELS}")
            key = " ".join(text.lower().split())
            if key in seen:
                continue
            seen.add(key)
            bucket = int(_h(WRITTEN, key)[:8], 16) % 10
            split = "validation" if bucket == 3 else "test" if bucket == 7 else "train"
            kind = ORDINARY_PREFIX + WRITTEN if path.stem.startswith("ordinary") else WRITTEN
            examples.append(Example(text, label, split, f"{label}/{kind}"))
    return examples


def corpus_hash(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.label}\t{e.split}\t{e.group}\t{e.text}\n".encode())
    return h.hexdigest()


def sizes(examples: list[Example]) -> dict[str, dict[str, int]]:
    c = Counter((e.label, e.split) for e in examples)
    return {lab: {s: c[(lab, s)] for s in SPLITS} for lab in LABELS}
