"""Validation perplexity of the demo model against two baselines.

- trained: the demo model;
- untrained: a random RWKV-4 of the same shape and vocabulary
  (services.inference.checkpoint.build_random_checkpoint, what `--random-model` serves);
- unigram: token frequencies of the training split (add-one smoothed), no context at all.

Each is scored on three held-out streams of the validation split: whole conversations as the
node lays them out (header included: the fixed system text is easy to predict); the
question/answer turns alone (no header), which says whether the model learned anything about
parents' questions and answers; and the replies alone (the same turns, only the assistant's
reply tokens scored, the question read as context), which is what the node generates.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatario_tools.corpus.bpe import encode_samples
from avatario_tools.corpus.builder import Corpus, _key
from avatario_tools.corpus.demo import (
    DemoConfig,
    DemoModel,
    prepare_tokens,
    turn_pieces,
    weighted_stream,
)
from avatario_tools.corpus.material import (
    DEFAULT_QA_DIR,
    DEFAULT_TIPS_PATH,
    DEFAULT_WORDINGS_DIR,
    load_material,
)

__all__ = ["HELDOUT_QUESTIONS", "IntentCheck", "Perplexities", "Sample", "TopicCheck",
           "evaluate_demo", "held_out_questions", "intent_agreement", "load_heldout_questions",
           "sample_answers", "topic_agreement", "turns_only", "unigram_loss"]

# New wordings of the material's intents, written blind (only ids and answers seen) and
# frozen: never trained on (see its README).
HELDOUT_QUESTIONS = DEFAULT_QA_DIR.parent / "heldout" / "questions.jsonl"


@dataclass(frozen=True)
class Perplexities:
    stream: str
    tokens: int
    trained: float
    untrained: float
    unigram: float


def unigram_loss(train: np.ndarray, validation: np.ndarray, vocab_size: int,
                 weights: np.ndarray | None = None) -> float:
    """Mean next-token loss (nats) of add-one smoothed training-split frequencies (weighted by
    `weights`, one per validation token, as the trainer weighs them)."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    if weights is None:
        return float(-logp[validation[1:]].mean())
    w = weights[1:].astype(np.float64)
    return float(-(logp[validation[1:]] * w).sum() / w.sum())


def turns_only(corpus: Corpus, tokenizer) -> np.ndarray:
    """The validation question/answer turns without the header, one pair per sample."""
    return encode_samples(tokenizer, turn_pieces(corpus))


def evaluate_demo(model: DemoModel, config: DemoConfig | None = None, *,
                  qa_dir: Path = DEFAULT_QA_DIR, tips_path: Path = DEFAULT_TIPS_PATH
                  ) -> list[Perplexities]:
    from avatario_tools.train.api import evaluate_model
    from services.inference.checkpoint import build_random_checkpoint

    cfg = config or DemoConfig()
    data = prepare_tokens(cfg, qa_dir, tips_path)
    replies, reply_w = weighted_stream(data.tokenizer, turn_pieces(data.corpus), 0.0)
    streams = {"conversations": (data.validation, None),
               "turns only": (data.validation_turns, None),
               "replies only": (replies, reply_w)}
    out: list[Perplexities] = []
    with tempfile.TemporaryDirectory() as tmp:
        untrained = build_random_checkpoint(Path(tmp) / "untrained.pth", n_layer=cfg.n_layer,
                                            n_embd=cfg.n_embd, vocab_size=data.vocab_size,
                                            seed=cfg.seed)
        for name, (tokens, w) in streams.items():
            def ppl(path: Path, tokens: np.ndarray = tokens, w: np.ndarray | None = w) -> float:
                return math.exp(evaluate_model(path, tokens, ctx_len=cfg.ctx_len,
                                               max_tokens=len(tokens), weights=w))

            scored = len(tokens) if w is None else int((w[1:] > 0).sum())
            out.append(Perplexities(
                name, scored, ppl(model.model), ppl(untrained),
                math.exp(unigram_loss(data.train, tokens, data.vocab_size, w))))
    return out


@dataclass(frozen=True)
class Sample:
    group: str
    question: str
    answer: str          # the model's reply
    reference: str       # the held-out answer the material gives


def held_out_questions(corpus: Corpus, n: int = 5) -> list[tuple[str, str, str]]:
    """n validation (group, question, answer): one per intent, intents of different topics
    first (group ids are "<topic>-..."), in group order."""
    first: dict[str, tuple[str, str, str]] = {}
    for g, q, a in corpus.pairs["validation"]:
        first.setdefault(g, (g, q, a))
    ordered = [first[g] for g in sorted(first)]
    picked: list[tuple[str, str, str]] = []
    topics: set[str] = set()
    for item in ordered:
        topic = item[0].split("-")[0]
        if topic not in topics:
            picked.append(item)
            topics.add(topic)
    picked += [it for it in ordered if it not in picked]
    return picked[:n]


def _replier(model: DemoModel, chat_format: str, max_tokens: int):
    """reply(question) -> the model's first-turn reply, prompted as the node prompts it (the
    header without a child context, then the turn), decoded greedily with the node's default
    presence/frequency penalties (0.2 each), up to the blank line that ends a turn."""
    import torch

    from avatario_tools.train.model import load_raw
    from services.inference.prompt import TURN_END, build_turn_suffix, prompt_header
    from services.inference.tokenizer import HfTokenizer

    tok = HfTokenizer(model.tokenizer)
    net = load_raw(model.model).eval()
    with torch.no_grad():
        _, header_state = net(torch.tensor([tok.encode(prompt_header(chat_format, None))]))

    def reply(question: str) -> str:
        made: list[int] = []
        counts = torch.zeros(net.shape.vocab_size)
        with torch.no_grad():
            logits, state = net(torch.tensor([tok.encode(build_turn_suffix(chat_format,
                                                                           question))]),
                                header_state)
            for _ in range(max_tokens):
                last = logits[0, -1].float() - (counts > 0) * 0.2 - counts * 0.2
                nxt = int(torch.argmax(last))
                if nxt == 0:
                    break
                made.append(nxt)
                counts[nxt] += 1
                if TURN_END in tok.decode(made):
                    break
                logits, state = net(torch.tensor([[nxt]]), state)
        return tok.decode(made).split(TURN_END)[0].strip()

    return reply


def sample_answers(model: DemoModel, config: DemoConfig | None = None, n: int = 5,
                   max_tokens: int = 96, *, qa_dir: Path = DEFAULT_QA_DIR,
                   tips_path: Path = DEFAULT_TIPS_PATH) -> list[Sample]:
    """The model's replies to n held-out questions (see `_replier` for the prompt and the
    decoding)."""
    cfg = config or DemoConfig()
    data = prepare_tokens(cfg, qa_dir, tips_path)
    reply = _replier(model, cfg.build.chat_format, max_tokens)
    return [Sample(group, question, reply(question), reference)
            for group, question, reference in held_out_questions(data.corpus, n)]


# Topic families for the on-topic check: the tips' skill domains and mood topics folded into
# the question topics of the written material.
_TOPIC_FAMILY = {
    "tips:ATTENTION": "attention", "tips:WORKING_MEMORY": "learning",
    "tips:NUMBER_SENSE": "learning", "tips:PROBLEM_SOLVING": "learning",
    "tips:EMOTION_RECOGNITION": "emotions", "tips:SOCIAL_INTERACTION": "friendships",
    "tips:low_mood": "emotions", "tips:engagement": "app", "tips:performance_drop": "app",
    "siblings": "family",
}
_WORD = re.compile(r"[a-z]{4,}")


def _bag(text: str) -> Counter[str]:
    return Counter(_WORD.findall(text.lower()))


def _nearest(answers: dict[str, Counter[str]], text: str) -> str:
    """The intent whose answer (word counts) is closest to text by cosine; ties by id."""
    bag = _bag(text)
    return max(sorted(answers), key=lambda g: _cosine(bag, answers[g]))


def _cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(v * b[k] for k, v in a.items())
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    return dot / (na * nb) if na and nb else 0.0


@dataclass(frozen=True)
class TopicCheck:
    group: str
    question: str
    reply: str
    topic: str           # the held-out intent's topic family
    nearest: str         # the training intent whose answer the reply is closest to
    nearest_topic: str

    @property
    def on_topic(self) -> bool:
        return self.topic == self.nearest_topic


def topic_agreement(model: DemoModel, config: DemoConfig | None = None, max_tokens: int = 64,
                    *, qa_dir: Path = DEFAULT_QA_DIR, tips_path: Path = DEFAULT_TIPS_PATH
                    ) -> list[TopicCheck]:
    """A rough, automatic on-topic check over every held-out intent (its first phrasing): the
    reply's nearest training answer (cosine of word counts) should come from an intent of the
    same topic family as the question. A reply that copies no training answer still gets a
    nearest one, so one generic reply given to every question lands on the right topic by
    chance now and then; a reply that answers well in new words may be counted off topic.
    Read the replies (TopicCheck.reply) before trusting the count."""
    cfg = config or DemoConfig()
    data = prepare_tokens(cfg, qa_dir, tips_path)
    topics = {it.group: _TOPIC_FAMILY.get(it.topic, it.topic)
              for it in load_material(qa_dir, tips_path)}
    answers = {g: _bag(a) for g, _, a in data.corpus.pairs["train"]}
    reply = _replier(model, cfg.build.chat_format, max_tokens)
    out: list[TopicCheck] = []
    seen: set[str] = set()
    for group, question, _ in data.corpus.pairs["validation"]:
        if group in seen:
            continue
        seen.add(group)
        text = reply(question)
        nearest = _nearest(answers, text)
        out.append(TopicCheck(group, question, text, topics[group], nearest, topics[nearest]))
    return out


def load_heldout_questions(path: Path = HELDOUT_QUESTIONS) -> list[tuple[str, str]]:
    """(intent id, question) of the frozen held-out wordings."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [(r["id"], r["question"]) for r in rows]


@dataclass(frozen=True)
class IntentCheck:
    group: str           # the intent the question was written for
    question: str
    reply: str
    trained: bool        # the intent is in the training split (its answer was learned)
    nearest: str         # the training intent whose answer the reply is closest to
    topic: str
    nearest_topic: str

    @property
    def right_intent(self) -> bool:
        return self.nearest == self.group

    @property
    def on_topic(self) -> bool:
        return self.topic == self.nearest_topic


def intent_agreement(model: DemoModel, config: DemoConfig | None = None, max_tokens: int = 64,
                     *, qa_dir: Path = DEFAULT_QA_DIR, tips_path: Path = DEFAULT_TIPS_PATH,
                     heldout: Path = HELDOUT_QUESTIONS, limit: int | None = None
                     ) -> list[IntentCheck]:
    """Does the model answer a new wording of a known question with that question's answer?
    For each frozen held-out question (`load_heldout_questions`), the reply's nearest
    training answer (cosine of word counts, as in `topic_agreement`): `right_intent` when it
    is the answer of the intent the question was written for (only possible for intents in
    the training split: `trained`), `on_topic` when it is of the same topic family."""
    cfg = config or DemoConfig()
    data = prepare_tokens(cfg, qa_dir, tips_path)
    items = load_material(qa_dir, tips_path)
    topics = {it.group: _TOPIC_FAMILY.get(it.topic, it.topic) for it in items}
    answers = {g: _bag(a) for g, _, a in data.corpus.pairs["train"]}
    wordings = load_material(DEFAULT_WORDINGS_DIR, None) if cfg.opening_passes else []
    material = {_key(q) for it in [*items, *wordings] for q in it.questions}
    reply = _replier(model, cfg.build.chat_format, max_tokens)
    out: list[IntentCheck] = []
    for group, question in load_heldout_questions(heldout)[:limit]:
        if group not in topics or _key(question) in material:
            continue  # an intent the material no longer has, or a wording it trains on
        text = reply(question)
        nearest = _nearest(answers, text)
        out.append(IntentCheck(group, question, text, group in answers, nearest,
                               topics[group], topics[nearest]))
    return out
