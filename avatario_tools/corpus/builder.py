"""Chat samples from the material, in the node's own chat format.

Every sample is a conversation exactly as the inference node lays it out
(services.inference.prompt): the header (system text, what is known about the child, the
greeting exchange), then a few turns ``{user}: question\\n\\n{bot}: answer\\n\\n``. A sample
keeps the pieces the node tokenizes separately (header, ``{user}: q\\n\\n{bot}:``, `` answer``,
``\\n\\n``), so the trained model sees the token boundaries it meets when it serves.

Steps, each deterministic:

1. de-duplication: a question seen before (case, spacing and punctuation folded; intents in
   id order) is dropped, and an intent left with no question is dropped;
2. split by intent (``group``): a stable hash of the group id decides, so every phrasing of
   one intent lands on the same side and adding material never moves another intent;
3. conversations: the split's question/answer pairs, shuffled with a fixed seed, are grouped
   two to four turns per conversation under a header with an invented child context
   (nickname, age, a summary in the analytics report's wording, or nothing).

`opening_samples` adds, for a small model that must learn which answer a question asks for,
single turns pairing more wordings of the training intents (data/qa_expanded/) with the
first sentence of their answer.
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from avatario_tools.corpus.material import QaItem
from services.inference.prompt import (
    TURN_END,
    ChildContext,
    build_turn_suffix,
    normalize_message,
    prompt_header,
    speakers,
)

__all__ = [
    "BuildConfig",
    "Corpus",
    "Sample",
    "build_corpus",
    "dedupe",
    "first_sentence",
    "opening_samples",
    "split_of",
]

Split = str  # "train" | "validation"


@dataclass(frozen=True)
class BuildConfig:
    # "raven" because the node gives every tokenizers-JSON tokenizer the Raven speakers
    # (services.inference.tokenizer.load_tokenizer); the demo tokenizer is one.
    chat_format: str = "raven"
    validation_fraction: float = 0.12
    seed: int = 16
    # Each pass shuffles the training pairs again into new conversations and contexts.
    passes: int = 4
    # several turns per conversation: the header (about 200 tokens) is paid once for them
    min_turns: int = 3
    max_turns: int = 6

    def __post_init__(self) -> None:
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be between 0 and 1")
        if self.passes < 1 or not 1 <= self.min_turns <= self.max_turns:
            raise ValueError("passes >= 1 and 1 <= min_turns <= max_turns required")
        speakers(self.chat_format)  # ValueError on an unknown format


@dataclass(frozen=True)
class Sample:
    """One conversation: `segments` are the pieces the node tokenizes one by one."""

    groups: tuple[str, ...]
    segments: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.segments)


@dataclass
class Corpus:
    config: BuildConfig
    train: list[Sample]
    validation: list[Sample]
    pairs: dict[Split, list[tuple[str, str, str]]] = field(default_factory=dict)
    dropped_duplicates: int = 0

    def texts(self, split: Split) -> list[str]:
        return [s.text for s in getattr(self, split)]

    def stats(self) -> dict[str, int]:
        return {
            "train_pairs": len(self.pairs.get("train", [])),
            "validation_pairs": len(self.pairs.get("validation", [])),
            "train_groups": len({g for g, _, _ in self.pairs.get("train", [])}),
            "validation_groups": len({g for g, _, _ in self.pairs.get("validation", [])}),
            "train_samples": len(self.train),
            "validation_samples": len(self.validation),
            "dropped_duplicates": self.dropped_duplicates,
        }


_PUNCT = re.compile(r"[^\w\s]")


def _key(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", folded).split())


def dedupe(items: Iterable[QaItem]) -> tuple[list[QaItem], int]:
    """Drop repeated questions (first wins) and intents left without one; (kept, dropped)."""
    seen: set[str] = set()
    kept: list[QaItem] = []
    dropped = 0
    for item in items:
        questions = []
        for q in item.questions:
            k = _key(q)
            if k in seen:
                dropped += 1
                continue
            seen.add(k)
            questions.append(q)
        if questions:
            kept.append(QaItem(item.group, item.topic, tuple(questions), item.answer, item.source))
    return kept, dropped


def split_of(group: str, validation_fraction: float) -> Split:
    """Stable: depends on the group id only (sha256), not on order or other groups."""
    h = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2.0**64
    return "validation" if h < validation_fraction else "train"


# Invented contexts, in the shapes the gateway sends (nickname, age, analytics summary).
_NICKNAMES = ("Mia", "Leo", "Sam", "Ava", "Noah", "Zoe", "Max", "Lily", "Ben", "Ella", "Kai",
              "Nora", "Theo", "Ivy", "Finn", "Ruby")
_DOMAINS = ("working memory", "attention", "problem solving", "number sense",
            "emotion recognition", "social interaction")
_MOODS = ("mostly positive", "mixed", "mostly low", "steady")


def _summary(rng: random.Random, age_months: int) -> str:
    years, months = divmod(age_months, 12)
    sessions = rng.randint(0, 40)
    out = [f"Your child is {years} years and {months} month{'s' if months != 1 else ''} old"
           + (f" and played {sessions} game sessions in the last 4 weeks." if sessions
              else " and has not played in the last 4 weeks.")]
    domains = rng.sample(_DOMAINS, 3)
    kind = rng.randrange(4)
    if kind == 0:
        out.append("There is not enough play yet to compare skills with children of the same age.")
    else:
        out.append(f"Relative strengths: {domains[0]}.")
        if kind == 2:
            out.append(f"Worth keeping an eye on: {domains[1]}.")
        elif kind == 3:
            out.append(f"Worth discussing with a pediatrician or teacher: {domains[2]} "
                       "(screening signals, not a diagnosis).")
        else:
            out.append("No screening signals at the moment.")
    checkins = rng.randint(0, 12)
    out.append(f"Mood check-ins: {rng.choice(_MOODS)} ({checkins} check-ins in the last 4 weeks)."
               if checkins else "Mood check-ins: none yet.")
    return " ".join(out)


def _child(rng: random.Random) -> ChildContext | None:
    kind = rng.randrange(4)
    if kind == 0:
        return None
    age = rng.randint(48, 155)
    nickname = rng.choice(_NICKNAMES)
    return ChildContext(nickname=nickname, age_months=age,
                        summary=_summary(rng, age) if kind >= 2 else "")


def _conversations(pairs: Sequence[tuple[str, str, str]], cfg: BuildConfig,
                   rng: random.Random, passes: int) -> list[Sample]:
    out: list[Sample] = []
    for _ in range(passes):
        order = list(pairs)
        rng.shuffle(order)
        i = 0
        while i < len(order):
            n = rng.randint(cfg.min_turns, cfg.max_turns)
            turns = order[i:i + n]
            i += n
            segments = [prompt_header(cfg.chat_format, _child(rng))]
            for _, q, a in turns:
                segments.append(build_turn_suffix(cfg.chat_format, q))
                segments.append(" " + normalize_message(a))
                segments.append(TURN_END)
            out.append(Sample(tuple(g for g, _, _ in turns), tuple(segments)))
    return out


def build_corpus(items: Iterable[QaItem], config: BuildConfig | None = None) -> Corpus:
    cfg = config or BuildConfig()
    # sorted first: which intent keeps a repeated question must not depend on input order
    kept, dropped = dedupe(sorted(items, key=lambda it: it.group))
    pairs: dict[Split, list[tuple[str, str, str]]] = {"train": [], "validation": []}
    for item in kept:
        side = split_of(item.group, cfg.validation_fraction)
        pairs[side].extend((item.group, q, item.answer) for q in item.questions)
    if not pairs["train"] or not pairs["validation"]:
        raise ValueError("the material is too small to give both a train and a validation split")
    train = _conversations(pairs["train"], cfg, random.Random(f"{cfg.seed}:train"), cfg.passes)
    # one pass: each held-out pair is scored once
    validation = _conversations(pairs["validation"], cfg, random.Random(f"{cfg.seed}:validation"),
                                1)
    return Corpus(cfg, train, validation, pairs, dropped)


# a full stop followed by a capital (not "e.g. bath"), or the end of the text
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z\"'(]|$)")


def first_sentence(answer: str) -> str:
    """The answer's first sentence, normalised as the node writes replies."""
    text = normalize_message(answer)
    end = _SENTENCE_END.search(text)
    return text[:end.end()] if end else text


def opening_samples(wordings: Iterable[QaItem], corpus: Corpus, passes: int) -> list[Sample]:
    """Single turns ("{user}: q\\n\\n{bot}:", " first sentence", "") for every wording of a
    training intent in `wordings`, `passes` times, each pass shuffled with the corpus seed.

    What a reply starts with decides which answer a small model recites, and a conversation
    has one such decision per ~100 tokens of answer; these turns train it on many more
    wordings for a few tokens each. The reply is the opening of the answer the corpus trains
    on for that intent (the same text), and it does not end the turn: the end piece is empty,
    because the answer goes on. Validation intents are never used, nor a wording equal to a
    validation question."""
    if passes < 0:
        raise ValueError(f"passes must be >= 0, got {passes}")
    answers = {g: a for g, _, a in corpus.pairs["train"]}
    held = {_key(q) for _, q, _ in corpus.pairs["validation"]}
    fmt = corpus.config.chat_format
    turns = [(item.group, q) for item in sorted(wordings, key=lambda it: it.group)
             if item.group in answers for q in item.questions if _key(q) not in held]
    rng = random.Random(f"{corpus.config.seed}:openings")
    out: list[Sample] = []
    for _ in range(passes):
        order = list(turns)
        rng.shuffle(order)
        out.extend(Sample((g,), (build_turn_suffix(fmt, q), " " + first_sentence(answers[g]), ""))
                   for g, q in order)
    return out
