"""The layered input guard that serves every chat.

1. Rules (`SafetyGuard.check_input`): regular expressions, precise on the phrasings they were
   written for. A match gets the category's fixed answer unless the message carries enough
   context (at least `rule_confirm_min_words` words) AND the classifier reads it as clearly
   benign (total harm score below `rule_confirm`, chosen on the validation split so that
   almost no harmful message the rules catch falls below it): then the match is demoted to
   BORDERLINE (the model answers, plus the help line). On messages written by people who
   never saw the rules, the phrases also fire on talk about death in a school book, a past
   emergency that is over, or "it's going to kill me" about a loose tooth; it takes context
   to tell, and on short messages the linear classifier is not sure enough to overrule a
   rule ("my son was molested" scores low for lack of words). A demoted match never goes
   unanswered: the help line still follows the reply.
2. The classifier (`classifier.Classifier`): softmax scores per input category over hashed
   word and character n-grams of the same normalised text. The total harm score
   (1 - P(benign)) is read against the thresholds of the most likely category, chosen on the
   validation split of the classifier's corpus (see avatario_tools/safety/train.py):
   - at or above `answer`: the category's fixed answer, as for a rule match;
   - at or above `borderline` (below `answer`): BORDERLINE: the model answers, and the
     reply ends with one short line carrying the category's help line (`help_line`);
   - below: the model answers as usual.
3. A second opinion (`SecondOpinion`, the served model scoring the categories when a real
   model is configured): consulted only for borderline messages. At or above
   `model_threshold` for a category, the message gets that category's fixed answer;
   otherwise, or when it fails, it stays borderline (the guard never loses recall because
   layer 3 is slow or broken).

Plain Python: no grpc, no protobuf. Message text is never logged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Protocol

import structlog

from services.inference.safety.classifier import Classifier, Thresholds, decide
from services.inference.safety.guard import SafetyGuard, SafetyVerdict
from services.inference.safety.rules import NEVER_OVERRULED

log = structlog.get_logger("avatario.inference")

LAYERS = ("rules", "classifier", "model", "none")

# The one line appended after a borderline reply; {fields} come from the country's resources.
_HELP_LINES = {
    "crisis": "If you or your child might be at risk of self-harm, you can talk to someone "
              "now through {crisis_line}, or call {emergency} in an emergency.",
    "abuse": "If you're worried a child is being harmed, {child_protection_line} can help; "
             "call {emergency} if a child is in danger now.",
    "medical_emergency": "If this could be an emergency, call {emergency} now; for something "
                         "swallowed, contact {poison_line}.",
    "medication_dosing": "For medicine doses, please check the label and ask a pharmacist or "
                         "{medical_advice_line}; if too much was taken, contact {poison_line}.",
}
DEFAULT_MODEL_THRESHOLD = 0.5


class SecondOpinion(Protocol):
    async def score(self, text: str) -> dict[str, float]:  # input category -> score in [0, 1]
        ...


@dataclass(frozen=True)
class Assessment:
    verdict: SafetyVerdict | None  # the fixed answer to send instead of the model's reply
    borderline: str | None  # category: the model answers, then help_line(category)
    scores: dict[str, float] = field(default_factory=dict)  # classifier (and "model:<cat>")
    layer: str = "none"  # "rules" | "classifier" | "model" | "none": which layer decided


class LayeredGuard:
    """Rules, then the classifier, then (for borderline messages) a second opinion."""

    def __init__(self, rules: SafetyGuard, classifier: Classifier | None, *,
                 second_opinion: SecondOpinion | None = None,
                 thresholds: Mapping[str, Thresholds] | None = None,
                 model_threshold: float = DEFAULT_MODEL_THRESHOLD) -> None:
        self.rules = rules
        self.classifier = classifier
        self.second_opinion = second_opinion
        if thresholds is None and classifier is not None:
            thresholds = classifier.thresholds
        self.thresholds = dict(thresholds or {})
        if classifier is not None:
            missing = [c for c in classifier.categories if c not in self.thresholds]
            if missing:
                raise ValueError(f"no thresholds for {', '.join(missing)}")
        if not 0.0 <= model_threshold <= 1.0:
            raise ValueError("model_threshold must be within [0, 1]")
        self.model_threshold = model_threshold
        values = {f.name: getattr(rules.resources, f.name) for f in fields(rules.resources)}
        self._help = {k: v.format(**values) for k, v in _HELP_LINES.items()}

    def attach_second_opinion(self, second_opinion: SecondOpinion | None) -> None:
        """Set layer 3 once the model it needs is loaded (None switches it off)."""
        self.second_opinion = second_opinion

    def help_line(self, category: str) -> str:
        """The short line appended after a borderline reply (the category's help line)."""
        return self._help[category]

    def check(self, message: str) -> Assessment:
        """Layers 1 and 2 only (synchronous; no second opinion)."""
        verdict = self.rules.check_input(message)
        if verdict is not None and self.classifier is None:
            return Assessment(verdict, None, {}, "rules")
        if self.classifier is None:
            return Assessment(None, None, {}, "none")
        scores = self.classifier.scores(message)
        if verdict is not None:
            if (verdict.reason not in NEVER_OVERRULED
                    and self.classifier.overrules(message, scores)):
                return Assessment(None, verdict.category, scores, "rules")
            return Assessment(verdict, None, scores, "rules")
        answer, borderline = decide(scores, self.thresholds)
        if answer is not None:
            return Assessment(self._verdict(answer, "classifier"), None, scores, "classifier")
        if borderline is not None:
            return Assessment(None, borderline, scores, "classifier")
        return Assessment(None, None, scores, "none")

    async def assess(self, message: str) -> Assessment:
        """The decision for one parent message; see the module docstring."""
        first = self.check(message)
        if first.borderline is None or self.second_opinion is None:
            return first
        t0 = time.perf_counter()
        try:
            opinion = await self.second_opinion.score(message)
        except Exception as exc:  # layer 3 must never cost recall: stay borderline
            log.warning("inference.safety_second_opinion_failed", error=type(exc).__name__)
            return first
        finally:
            log.debug("inference.safety_second_opinion", seconds=time.perf_counter() - t0)
        scores = {**first.scores, **{f"model:{k}": float(v) for k, v in opinion.items()}}
        known = {k: float(v) for k, v in opinion.items() if k in self._help}
        if known:
            category = max(known, key=lambda c: (known[c], c))
            if known[category] >= self.model_threshold:
                return Assessment(self._verdict(category, "model"), None, scores, "model")
        return Assessment(None, first.borderline, scores, "classifier")

    def _verdict(self, category: str, layer: str) -> SafetyVerdict:
        return SafetyVerdict(category, self.rules.answer(category), layer)
