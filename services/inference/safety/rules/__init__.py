"""The input rules, high-precision regular expressions over safety.text.norm, one
module per category. Order matters: the first rule that matches decides, so
medical emergencies come first, then crisis, abuse and dosing.
"""

from __future__ import annotations

import re

from services.inference.safety.rules import abuse, crisis, dosing, medical_emergency

INPUT_RULES: list[tuple[str, str, list[re.Pattern[str]]]] = [
    *medical_emergency.RULES, *crisis.RULES, *abuse.RULES, *dosing.RULES,
]

# "what are the signs of carbon monoxide poisoning?" asks for knowledge, not help now. A bare
# "what do I do if he stops breathing" still gets the emergency answer: panicked parents type
# it that way too, and calling the emergency number is the right first step either way.
HYPOTHETICAL = re.compile(
    r"\b(?:signs? (?:that|of)|symptoms of|prevent|preventing|avoid|avoiding|risk of|chance of)"
    r"(?: \w+){0,4}$"
)

# "she keeps asking if I'm going to die", "terrified that grandad is going to die": a child's
# fear of someone dying, not a wish to die (benign by the category definitions). The crisis
# rule's "going to die" is skipped when a question or a fear leads up to it; "he says he's
# going to die" and "I'm going to die tonight" still match. Every blind held-out set from v7
# to v9 had such a look-alike answered with the crisis text by the rules alone.
FEARED_DEATH = re.compile(
    r"(?<!care )\b(?:if|whether|scared|afraid|worried|worries|terrified|frightened|fears?|feared|panics?)"
    r"(?: that)?(?: \w+){0,3}$"
)

# Context that undoes a match: (category, what the matched text starts with ("" for any match),
# a pattern the text before the match ends with). The guard skips such a match and reads on.
NOT_AFTER: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("medical_emergency", "", HYPOTHETICAL),
    ("crisis", "going to die", FEARED_DEATH),
)
