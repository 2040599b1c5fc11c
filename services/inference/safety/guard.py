"""SafetyGuard: the fixed answers before the model, the claim check after it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from services.inference.planner import ConfigError
from services.inference.safety.answers import _ANSWERS
from services.inference.safety.output import find_claim, rewrite_claims
from services.inference.safety.resources import CountryResources, load_resources
from services.inference.safety.rules import INPUT_RULES as _INPUT_RULES
from services.inference.safety.rules import NOT_AFTER as _NOT_AFTER
from services.inference.safety.rules import NOT_BEFORE as _NOT_BEFORE
from services.inference.safety.text import norm as _norm

CATEGORIES = ("medical_emergency", "crisis", "abuse", "medication_dosing", "diagnostic_claim")


@dataclass(frozen=True, slots=True)
class SafetyVerdict:
    category: str  # one of CATEGORIES
    answer: str  # the fixed reply to send instead of the model's
    reason: str  # which rule matched (for metrics and logs; never the message itself)


class SafetyGuard:
    """Fixed answers with one country's help lines; see the package docstring."""

    def __init__(self, resources: CountryResources) -> None:
        self.resources = resources
        values = {f.name: getattr(resources, f.name) for f in fields(resources)}
        self._answers = {k: v.format(**values) for k, v in _ANSWERS.items()}

    @classmethod
    def for_country(cls, code: str | None, *, path: str | Path | None = None) -> SafetyGuard:
        table = load_resources(path)
        key = (code or "default").strip()
        key = "default" if key.lower() == "default" else key.upper()
        if key not in table:
            known = ", ".join(sorted(table))
            raise ConfigError(f"no safety resources for country {code!r}; known: {known}")
        return cls(table[key])

    def answer(self, category: str) -> str:
        return self._answers[category]

    def check_input(self, message: str) -> SafetyVerdict | None:
        """A fixed verdict for a risky parent message, else None (call the model)."""
        text = _norm(message)
        if not text:
            return None
        for category, reason, patterns in _INPUT_RULES:
            for p in patterns:
                for m in p.finditer(text):
                    # "signs of poisoning", "asking if I'm going to die", "overdosed on
                    # sugar": see rules.NOT_AFTER and rules.NOT_BEFORE
                    if any(c == category and m.group(0).startswith(start)
                           and before.search(text[: m.start()].rstrip())
                           for c, start, before in _NOT_AFTER):
                        continue
                    if any(c == category and m.group(0).startswith(start)
                           and after.search(text[m.end():])
                           for c, start, after in _NOT_BEFORE):
                        continue
                    return SafetyVerdict(category, self._answers[category], reason)
        return None

    def sentence_claim(self, sentence: str, *, nickname: str | None = None) -> str | None:
        """The condition a sentence claims the child has ("" if unnamed), else None."""
        claim = find_claim(sentence, nickname)
        return None if claim is None else claim.cond

    def check_output(self, text: str, *, nickname: str | None = None) -> tuple[str, str | None]:
        """(reply, "diagnostic_claim") with claims rewritten from their first word, or (text, None).

        The developmental note is not added here; see `needs_developmental_note`.
        """
        return rewrite_claims(text, nickname)




def guard_from_config(
    country: str | None, overrides: Mapping[str, str] | None = None
) -> SafetyGuard:
    """A guard for `country`, with fields optionally overridden (e.g. a local crisis line)."""
    guard = SafetyGuard.for_country(country)
    if not overrides:
        return guard
    current = {f.name: getattr(guard.resources, f.name) for f in fields(CountryResources)}
    unknown = set(overrides) - set(current)
    if unknown:
        raise ConfigError(f"unknown safety resource fields: {', '.join(sorted(unknown))}")
    return SafetyGuard(CountryResources(**{**current, **overrides}))

