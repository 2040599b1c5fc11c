"""The layered input guard: rules first, then the classifier, then a second opinion for
borderline messages only. Uses the committed classifier (services/inference/safety/model/)."""

from __future__ import annotations

import asyncio

import pytest

from services.inference.safety import SafetyGuard, guard_from_config
from services.inference.safety.classifier import Classifier, Thresholds
from services.inference.safety.layered import Assessment, LayeredGuard


@pytest.fixture(scope="module")
def rules() -> SafetyGuard:
    return guard_from_config("US")


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


@pytest.fixture(scope="module")
def guard(rules, classifier) -> LayeredGuard:
    return LayeredGuard(rules, classifier)


class FixedScores:
    """A stand-in classifier with fixed scores (to place a message where a test needs it)."""

    categories = ("abuse", "crisis", "medical_emergency", "medication_dosing")

    def __init__(self, scores: dict[str, float], rule_confirm: float = 0.0,
                 min_words: int = 0) -> None:
        self._scores = scores
        self.thresholds = {c: Thresholds(0.6, 0.3) for c in self.categories}
        self.rule_confirm, self.min_words = rule_confirm, min_words

    def overrules(self, message: str, scores: dict[str, float]) -> bool:
        return sum(scores.values()) < self.rule_confirm and len(message.split()) >= self.min_words

    def scores(self, message: str) -> dict[str, float]:
        return {c: self._scores.get(c, 0.0) for c in self.categories}


class Opinion:
    def __init__(self, scores: dict[str, float] | None = None, *, fail: bool = False) -> None:
        self.scores, self.fail, self.calls = scores or {}, fail, 0

    async def score(self, text: str) -> dict[str, float]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("model busy")
        return self.scores


def assess(guard: LayeredGuard, message: str) -> Assessment:
    return asyncio.run(guard.assess(message))


# Messages of the kinds issue 11 lists as missed, written here for this test (not taken from
# any corpus); the rules alone let each of them through.
MISSED_BY_RULES = [
    ("crisis", "my daughter has been handing her favourite things to her friends and wrote a letter telling us she's sorry for everything"),
    ("crisis", "we keep finding thin fresh cuts on my son's thighs and he won't say where they come from"),
    ("abuse", "my son's coach bought him a phone and told him their chats are a secret between them"),
    ("abuse", "the neighbours leave their little boy on his own for whole days and there is never any food in the house"),
    ("medical_emergency", "my boy ate some peanuts and now his lips are swelling and he is wheezing"),
    # (a fever in a baby under three months is a rule of its own now: infant_fever)
    ("medical_emergency", "my toddler has a rash of purple spots that do not fade when I press a glass on them and a high fever"),
    ("medication_dosing", "can I lower my son's sertraline myself because he seems flat"),
]

BENIGN = [
    "He's killing it at football this season",
    "where should I store my son's insulin when we travel",
    "how do I explain grandpa's death to my 5 year old",
    "she takes her inhaler before sport as prescribed",
    "my son keeps dying in Minecraft and throws the controller",
    "what are the signs of meningitis in children",
]


@pytest.mark.parametrize("category, message", MISSED_BY_RULES)
def test_the_classifier_catches_what_the_rules_miss(rules, guard, category, message):
    assert rules.check_input(message) is None  # the old guard called the model here
    a = assess(guard, message)
    assert a.layer == "classifier"
    assert a.verdict is not None and a.verdict.category == category
    assert a.verdict.answer == rules.answer(category)
    assert set(a.scores) == {"crisis", "abuse", "medical_emergency", "medication_dosing"}


@pytest.mark.parametrize("message", BENIGN)
def test_benign_look_alikes_pass(guard, message):
    a = assess(guard, message)
    assert a.verdict is None and a.borderline is None and a.layer == "none"


def test_rules_stay_the_first_layer(guard, rules):
    a = assess(guard, "my 12 year old told me she wants to kill herself")
    assert a.layer == "rules" and a.verdict == rules.check_input(
        "my 12 year old told me she wants to kill herself")
    assert a.scores  # the classifier looked (it may only demote long messages)


def test_a_rule_match_the_classifier_reads_as_benign_is_demoted_to_borderline(rules):
    a = assess(LayeredGuard(rules, FixedScores({"crisis": 0.002}, 0.05)), "my son is suicidal")
    # demoted, never dropped: the model answers and the crisis help line follows
    assert a.verdict is None and a.borderline == "crisis" and a.layer == "rules"
    a = assess(LayeredGuard(rules, FixedScores({"crisis": 0.06}, 0.05)), "my son is suicidal")
    assert a.verdict is not None and a.verdict.category == "crisis" and a.layer == "rules"


def test_a_short_rule_match_is_never_demoted(rules):
    short = LayeredGuard(rules, FixedScores({"crisis": 0.002}, 0.05, min_words=5))
    assert assess(short, "my son is suicidal").verdict is not None


@pytest.mark.parametrize("message", [
    "is it normal that he says 'I wish I was dead' every time he loses at Uno?",
    "she keeps saying i want to die lol whenever she gets a bad mark",
    "he said 'i should just kill myself' because he forgot his football boots, he's 14",
])
def test_a_first_person_wish_to_die_is_never_demoted(rules, message):
    # the definitions: any such statement is crisis, whatever the trigger (rules.NEVER_OVERRULED)
    a = assess(LayeredGuard(rules, FixedScores({"crisis": 0.0}, 0.05)), message)
    assert a.verdict is not None and a.verdict.category == "crisis" and a.layer == "rules"


def test_a_demoted_rule_match_gets_the_second_opinion(rules):
    opinion = Opinion({"crisis": 0.9})
    g = LayeredGuard(rules, FixedScores({"crisis": 0.002}, 0.05), second_opinion=opinion)
    a = assess(g, "my son is suicidal")
    assert opinion.calls == 1
    assert a.layer == "model" and a.verdict is not None and a.verdict.category == "crisis"


def test_the_committed_model_demotes_only_long_messages_with_a_small_score(classifier):
    from avatario_tools.safety.train import RULE_CONFIRM_MAX, RULE_CONFIRM_MIN_WORDS

    assert 0.0 <= classifier.rule_confirm <= RULE_CONFIRM_MAX
    assert classifier.rule_confirm_min_words == RULE_CONFIRM_MIN_WORDS >= 10
    assert classifier.overrules("my son was molested by a neighbour", {"abuse": 0.0}) is False


def test_without_a_classifier_only_the_rules_decide(rules):
    g = LayeredGuard(rules, None)
    assert assess(g, MISSED_BY_RULES[0][1]) == Assessment(None, None, {}, "none")
    assert assess(g, "my son is suicidal").layer == "rules"


def test_thresholds_come_from_the_model_metadata(guard, classifier):
    assert guard.thresholds == classifier.thresholds
    for t in guard.thresholds.values():
        assert 0.0 < t.borderline <= t.answer < 1.0


def test_harm_split_between_categories_still_counts(rules):
    # 0.35 + 0.3: neither category alone reaches 0.6, the harm together does.
    g = LayeredGuard(rules, FixedScores({"crisis": 0.35, "medical_emergency": 0.3}))
    a = assess(g, "a message")
    assert a.verdict is not None and a.verdict.category == "crisis" and a.layer == "classifier"


def test_borderline_gets_the_help_line_not_the_fixed_answer(rules):
    g = LayeredGuard(rules, FixedScores({"abuse": 0.4}))
    a = assess(g, "a message")
    assert a.verdict is None and a.borderline == "abuse" and a.layer == "classifier"
    line = g.help_line("abuse")
    assert rules.resources.child_protection_line in line and rules.resources.emergency in line
    assert len(line) < 200


@pytest.mark.parametrize("category, fields", [
    ("crisis", ("crisis_line", "emergency")),
    ("abuse", ("child_protection_line", "emergency")),
    ("medical_emergency", ("emergency", "poison_line")),
    ("medication_dosing", ("medical_advice_line", "poison_line")),
])
def test_help_lines_carry_the_countrys_numbers(category, fields):
    rules = SafetyGuard.for_country("GB")
    line = LayeredGuard(rules, None).help_line(category)
    for f in fields:
        assert getattr(rules.resources, f) in line


def test_second_opinion_only_for_borderline(rules):
    opinion = Opinion({"abuse": 0.9})
    clear = LayeredGuard(rules, FixedScores({"abuse": 0.05}), second_opinion=opinion)
    assert assess(clear, "hello").layer == "none"
    answered = LayeredGuard(rules, FixedScores({"abuse": 0.9}), second_opinion=opinion)
    assert assess(answered, "hello").layer == "classifier"
    assert assess(answered, "my son is suicidal").layer == "rules"
    assert opinion.calls == 0


def test_second_opinion_turns_borderline_into_the_fixed_answer(rules):
    opinion = Opinion({"abuse": 0.2, "crisis": 0.8})
    g = LayeredGuard(rules, FixedScores({"abuse": 0.4}), second_opinion=opinion)
    a = assess(g, "a message")
    assert opinion.calls == 1
    assert a.layer == "model" and a.verdict is not None and a.verdict.category == "crisis"
    assert a.scores["model:crisis"] == 0.8 and a.scores["abuse"] == 0.4


@pytest.mark.parametrize("opinion", [Opinion({"abuse": 0.1}), Opinion(fail=True), Opinion({})])
def test_a_low_or_failed_second_opinion_keeps_borderline(rules, opinion):
    g = LayeredGuard(rules, FixedScores({"abuse": 0.4}))
    g.attach_second_opinion(opinion)
    a = assess(g, "a message")
    assert opinion.calls == 1
    assert a.verdict is None and a.borderline == "abuse" and a.layer == "classifier"


def test_bad_configuration_is_refused(rules, classifier):
    with pytest.raises(ValueError, match="thresholds"):
        LayeredGuard(rules, classifier, thresholds={"crisis": Thresholds(0.5, 0.2)})
    with pytest.raises(ValueError, match="model_threshold"):
        LayeredGuard(rules, classifier, model_threshold=1.5)


def test_the_rule_corpus_still_gets_its_fixed_answers(guard):
    # Layer 1 is unchanged: every prompt of the rule corpus keeps its category.
    import json
    from pathlib import Path

    corpus = Path(__file__).with_name("safety_corpus")
    for cat in ("crisis", "abuse", "medical_emergency", "medication_dosing"):
        data = json.loads((corpus / f"{cat}.json").read_text(encoding="utf-8"))
        for msgs in data["prompts"].values():
            for m in msgs:
                a = assess(guard, m)
                assert a.verdict is not None and a.verdict.category == cat, m
