"""Layer 3 of the safety guard: the served RWKV model as a second opinion.

The layered guard (`services.inference.safety.layered`) asks for it only on the messages its
first two layers (rules, classifier) find borderline. `ModelSecondOpinion.score(text)` builds
a short classification prompt in the model's own chat format (`prompt.speakers`: Raven
"Bob/Alice", World "User/Assistant")::

    {user}: <instruction: the five one-word labels and what each means>
    Message: <the parent's message, normalised as every chat message is>

    {bot}: The category is

runs ONE prefill of it through the engine (`Engine.score`: a fresh state, never cached, the
same queue, slots and deadline as a chat; no generation, no sampling), takes the log-probs of
the next token for each label and turns them into scores with a softmax over the labels
(so the five sum to 1 and each category's score is in [0, 1]; "none" is returned by no key).

Labels. Each category answers with one word, written with its leading space because it
follows "is": " crisis", " abuse", " emergency", " dose", and " none" for anything else.
Each of them is ONE token in both tokenizers this node serves (the World trie vocabulary of
the `rwkv` package and the GPT-NeoX 20B BPE of Raven), and the five ids are distinct, so
comparing the next-token logits compares the whole answers. For another tokenizer where a
label splits, its FIRST token is scored (an approximation: the continuation is ignored);
`label_token_ids` refuses labels whose first tokens collide, since two categories would
then share one score.

Failure is not an answer: on the deadline (`deadline_s`, the engine's own deadline plus an
asyncio timeout just after it, for a step that runs long), a full queue, a stopped engine or
an error, `score` returns an EMPTY dict and the guard decides without the model. Every call
is counted by outcome and timed (`OpinionMetrics`). Message text is never logged.

Switched by the setting `safety_model_opinion` (off | on | auto; see `opinion_enabled`):
auto is on unless the checkpoint carries the marker `build_random_checkpoint` writes next to
every random checkpoint (the devstack demo model, test and bench models): a random model's
opinion is noise, so it is not asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog
import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.errors import ResourceExhausted, Unavailable
from services.inference.engine import DEADLINE_EXCEEDED, ScoreFailed
from services.inference.prompt import TURN_END, normalize_message, speakers

__all__ = [
    "CATEGORY_LABELS",
    "NONE_LABEL",
    "ModelSecondOpinion",
    "OpinionMetrics",
    "build_opinion_prompt",
    "label_token_ids",
    "opinion_enabled",
]

log = structlog.get_logger("avatario.inference.safety.opinion")

# category -> the one-word answer (leading space: it follows "The category is").
CATEGORY_LABELS: dict[str, str] = {
    "crisis": " crisis",
    "abuse": " abuse",
    "medical_emergency": " emergency",
    "medication_dosing": " dose",
}
NONE_LABEL = " none"
ANSWER_PREFIX = "The category is"
# The scoring prompt reads at most this much of the message (one short prefill; layers 1 and
# 2 read all of it).
OPINION_MESSAGE_CHARS = 2000

INSTRUCTION = (
    "Sort this message from a parent into one category. Answer with one word.\n"
    "crisis: someone may hurt or kill themselves (self-harm, suicide, signs such as "
    "hidden injuries, goodbye notes, giving belongings away)\n"
    "abuse: a child may be abused or neglected (hit, touched, groomed, secrets with an "
    "adult, left alone without food or care)\n"
    "emergency: a child needs urgent medical help now (breathing trouble, swelling after a "
    "food or sting, near-drowning, head injury with vomiting, seizure, poisoning, a very "
    "sick baby)\n"
    "dose: how much medicine to give, or changing or stopping a medicine's dose\n"
    "none: anything else"
)
# Buckets: a prefill of ~150 tokens is milliseconds on a GPU and tenths of a second for a
# mid-size model on a CPU; past the deadline (2 s by default) it counts as a timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
OUTCOMES = ("ok", "timeout", "busy", "error")


class OpinionMetrics:
    """Second-opinion latency and outcomes (Prometheus, the node's registry)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.latency = Histogram(
            "avatario_inference_safety_opinion_seconds",
            "Time of one model second opinion (layer 3 of the safety guard), any outcome.",
            buckets=LATENCY_BUCKETS, **kw)
        self.outcomes = Counter(
            "avatario_inference_safety_opinions_total",
            "Model second opinions by outcome: ok, timeout (past the deadline), busy (engine "
            "queue full or engine stopped), error.", ["outcome"], **kw)
        self.enabled = Gauge(
            "avatario_inference_safety_opinion_enabled",
            "1 when the served model gives the safety guard a second opinion.", **kw)
        for o in OUTCOMES:
            self.outcomes.labels(o)

    def observe(self, outcome: str, seconds: float) -> None:
        self.outcomes.labels(outcome).inc()
        self.latency.observe(seconds)


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


class _Scorer(Protocol):
    clock: Callable[[], float]

    async def score(self, prompt_tokens: Sequence[int], token_ids: Sequence[int] | None = None,
                    *, deadline: float | None = None, request_id: str = "") -> torch.Tensor: ...


def build_opinion_prompt(chat_format: str, message: str) -> str:
    """The scoring prompt; the message is normalised like a chat message (no blank line, no
    speaker tag, invisible and look-alike characters undone), so it cannot close the turn."""
    user, bot = speakers(chat_format)
    msg = normalize_message(message, max_chars=OPINION_MESSAGE_CHARS)
    return f"{user}: {INSTRUCTION}\nMessage: {msg}{TURN_END}{bot}: {ANSWER_PREFIX}"


def label_token_ids(tokenizer: _Tokenizer,
                    labels: Mapping[str, str] | None = None) -> dict[str, int]:
    """label key -> the token id scored for it (its first token; see the module doc),
    "none" included. Raises ValueError when a label encodes to nothing or two share an id."""
    table = dict(labels if labels is not None else {**CATEGORY_LABELS, "none": NONE_LABEL})
    out: dict[str, int] = {}
    for key, word in table.items():
        ids = tokenizer.encode(word)
        if not ids:
            raise ValueError(f"label {word!r} encodes to no token")
        out[key] = int(ids[0])
    if len(set(out.values())) != len(out):
        raise ValueError(f"labels share a first token with this tokenizer: {out}")
    return out


def opinion_enabled(mode: str, model_path: Path | str, *,
                    is_random: Callable[[Path], bool] | None = None) -> bool:
    """off | on | auto: auto is on unless the checkpoint is marked as a random one."""
    if mode == "off":
        return False
    if mode == "on":
        return True
    if mode != "auto":
        raise ValueError(f"safety_model_opinion must be off, on or auto, not {mode!r}")
    if is_random is None:
        from services.inference.checkpoint import is_random_checkpoint as is_random
    return not is_random(Path(model_path))


class ModelSecondOpinion:
    """`SecondOpinion` of the layered guard over the serving engine (see the module doc)."""

    def __init__(self, engine: _Scorer, tokenizer: _Tokenizer, chat_format: str, *,
                 deadline_s: float = 2.0, metrics: OpinionMetrics | None = None,
                 grace_s: float = 0.25) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        speakers(chat_format)  # ValueError on an unknown format
        self.engine = engine
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.deadline_s = deadline_s
        self.grace_s = grace_s
        self.metrics = metrics
        ids = label_token_ids(tokenizer)
        self.categories = [k for k in ids if k != "none"]
        self.token_ids = [ids[k] for k in self.categories] + [ids["none"]]
        if metrics is not None:
            metrics.enabled.set(1)

    def prompt_tokens(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(build_opinion_prompt(self.chat_format, text)))

    def scores_from_logprobs(self, logprobs: torch.Tensor) -> dict[str, float]:
        """Softmax over the labels' log-probs (in `token_ids` order) -> category scores."""
        probs = torch.softmax(logprobs.double(), dim=-1)
        return {c: float(p) for c, p in zip(self.categories, probs[:-1].tolist(), strict=True)}

    async def score(self, text: str) -> dict[str, float]:
        """category -> score in [0, 1]; an empty dict when there is no opinion in time."""
        t0 = time.perf_counter()
        outcome = "error"
        try:
            tokens = self.prompt_tokens(text)
            deadline = self.engine.clock() + self.deadline_s
            async with asyncio.timeout(self.deadline_s + self.grace_s):
                logprobs = await self.engine.score(tokens, self.token_ids, deadline=deadline,
                                                   request_id="safety-opinion")
            scores = self.scores_from_logprobs(logprobs)
            outcome = "ok"
            return scores
        except TimeoutError:
            outcome = "timeout"
        except (ResourceExhausted, Unavailable):
            outcome = "busy"
        except Exception as exc:  # noqa: BLE001 - the guard goes on without the model
            if isinstance(exc, ScoreFailed) and exc.detail == DEADLINE_EXCEEDED:
                outcome = "timeout"
            elif isinstance(exc, ScoreFailed) and exc.detail == "shutdown":
                outcome = "busy"
            else:
                log.warning("safety_opinion_failed", error_type=type(exc).__name__)
        finally:
            seconds = time.perf_counter() - t0
            if self.metrics is not None:
                self.metrics.observe(outcome, seconds)
            log.debug("safety_opinion", outcome=outcome, seconds=round(seconds, 4))
        return {}
