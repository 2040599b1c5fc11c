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
