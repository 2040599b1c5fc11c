"""Medication dosing: how much or how often to give, maximum, missed, doubled or repeated doses, splitting tablets, two amounts compared, whether to give a named medicine at all."""

from __future__ import annotations

import re

from services.inference.safety.rules.common import (
    KID,
    MED,
    MEDNAME,
    UNIT,
    compile_all,
)

RULES: list[tuple[str, str, list[re.Pattern[str]]]] = [
    (
        "medication_dosing",
        "dosing",
        compile_all(
            rf"\bhow (?:much|many) (?:\w+ ){{0,3}}?{MED}\b",
            rf"\bhow (?:much|many) {UNIT}\b",
            rf"^(?=.*\b{MED}\b).*\bhow (?:much|many) (?:\w+ )?(?:do|should|can|could|would|to) (?:i |we |you )?give\b",
            rf"\b(?:what|whats|which|right|correct|proper|safe|maximum|max|recommended|usual|normal|typical)(?: is| s)?(?: the| a| his| her)?(?: right| correct| proper| safe| maximum| max| recommended| usual| normal| typical| daily| starting)? (?:dose|dosage|doses|dosing|amount of {MED})\b",
            rf"\b(?:dose|dosage|dosing|doses)(?: chart)? (?:of|for) (?:\w+ ){{0,3}}?{MEDNAME}\b",
            r"\b(?:dose|dosage|dosing|doses)(?: chart)? for (?:an? |my |our |the )?(?:\d+ ?(?:year|month|yr|kg|kilo|lb|pound|yo|y o)\w*|(?:toddler|baby|infant|child|kid|son|daughter|\d+ year old|under \d+)s?)\b",
            rf"\bdouble up (?:on )?(?:\w+ ){{0,2}}?{MED}\b",
            rf"\b(?:max|maximum|safe|right|correct|recommended) (?:amount of |dose of |daily )?{MEDNAME}\b",
            rf"\b(?:right|correct|proper|safe|max|maximum|recommended|usual) (?:number of )?(?:{UNIT}|amount|dose|dosage) (?:of|for) (?:\w+ ){{0,2}}?{MED}\b",
            rf"\b{MEDNAME} (?:dose|dosage|dosing|doses|amount)(?: (?:for|by|per|chart|table|calculator|\d)\b|$)",
            rf"\b(?:can|should|could|do) i give (?:\w+ ){{0,4}}?(?:\d+(?:\.\d+)? ?{UNIT}|(?:half|a half|a whole|two|three|another|more|extra|a second|a double|double|a full|an adult) (?:\w+ )?(?:{MED}|{UNIT}|mls?|dose|doses))\b",
            rf"\b(?:can|should|could|is it (?:ok|okay|safe|fine) to|is it (?:ok|okay|safe|fine) if i) (?:i )?give (?:\w+ ){{0,8}}?{MEDNAME}\b",
            rf"\b(?:can|should|could|may|is it (?:ok|okay|safe|fine) (?:for|if)) (?:he|she|they|(?:my|our|a|an|the) (?:\w+ ){{0,3}}?{KID}|kids) (?:have|take|get|be given|use) (?:\w+ ){{0,3}}?(?:{MEDNAME}|\d+(?:\.\d+)? ?{UNIT}|another dose|more {MED}|extra {MED}|a double dose|double)\b",
            rf"\b(?:can|should|could) i (?:take|have) (?:\w+ ){{0,2}}?(?:\d+ (?!(?:years?|yrs?|months?|weeks?|days?|yo)(?: old)? (?:to|for|with|on|into|out)\b)|{MEDNAME})",
            rf"\bis it (?:ok|okay|safe|fine|bad) (?:to|if i) (?:take|give) (?:\w+ ){{0,3}}?(?:\d+ (?:\w+ )?(?:{MED}|{UNIT})|{MEDNAME})",
            r"\b(?:\d+(?:\.\d+)? ?)?(?:mg|ml|milligrams?) (?:per|a|for each|for every) (?:kg|kilo|kilogram|pound|lb)\b",
            rf"\bhow (?:often|frequently|many times a day|soon|long) (?:\w+ )?(?:can|should|do|could|before) (?:i|we|you) (?:give|repeat) (?:\w+ ){{0,3}}?(?:{MED}|it again|another)\b",
            rf"\b(?:how (?:long|many hours|much time)|hours?|time) (?:\w+ )?between (?:\w+ ){{0,2}}?(?:doses|dose|{MED})\b",
            rf"\b(?:mix|combine|alternate|alternating) (?:\w+ ){{0,2}}?{MEDNAME} (?:and|with) {MEDNAME}\b",
            rf"\b\d+(?:\.\d+)? ?{UNIT} (?:of )?(?:\w+ ){{0,2}}?{MED}\b(?: \w+){{0,4}}? (?:too much|too many|too little|enough|safe|ok|okay|right|correct|fine)\b",
            r"\b\d+(?:\.\d+)? ?(?:mg|milligrams?|puffs?|tablets?|pills?|capsules?)\b(?: \w+){0,4}? (?:too much|too many|too little|enough|safe|ok|okay|right|correct|fine)\b",
            rf"\b\d+(?:\.\d+)? ?(?:mg|ml|mls|milligrams?|tsp|teaspoons?|drops|puffs?|tablets?)\b(?: \w+){{0,6}}? (?:but|or|vs|versus|instead of) (?:\w+ ){{0,4}}?\d+(?:\.\d+)? ?{UNIT}\b",
            r"\b(?:missed|skipped|forgot|forgotten|forgot to give) (?:\w+ ){0,3}?dose\b",
            rf"\b(?:next|missed|skipped|forgotten|extra|double|second) dose (?:of )?(?:\w+ ){{0,2}}?{MED}\b",
            r"\b(?:double|repeat|redo) (?:the|a|his|her|that) (?:next |missed |last )?(?:dose|one)\b",
            r"\b(?:give|repeat|redo|take) (?:\w+ ){0,2}?(?:the |her |his |another |a )?(?:dose|doses|medicine|medication|antibiotic\w*|\w+ dose) again\b",
            r"\b(?:half|a half|quarter|a quarter|a third) (?:a |of a |an |of an )?(?:adult )?(?:tablet|pill|capsule|dose)\b",
            r"\b(?:cut|split|break|halve) (?:\w+ ){0,3}?(?:tablet|pill|capsule)s? (?:in half|in two|into (?:half|halves|quarters))\b",
            r"\b(?:by|on|going by|go by|use|based on) (?:his |her |their |the )?(?:age|weight) or (?:by |on |his |her |their |the )*(?:age|weight)\b",
            rf"\b(?:is|are|if|whether) (?:he|she|they|(?:the|my|our|a|an) (?:\w+ ){{0,2}}?{KID}) (?:\w+ )?(?:allowed|old enough for|too young for|old enough to (?:have|take)|too young to (?:have|take)) (?:\w+ ){{0,2}}?{MEDNAME}\b",
            r"\bwhat (?:medicine|medication|meds|painkiller|pain relief|fever reducer|\w+ medicine) (?:\w+ )?(?:can|should|could|do) (?:i|we) give\b",
            r"\bwhat (?:can|should|could) (?:i|we) give (?:\w+ ){0,3}?for (?:\w+ )?(?:fever|pain|temperature|cough|cold|teething|allergies|congestion|diarrhea|diarrhoea|vomiting|earache|ear infection|headache|rash|itching|itchiness|hay fever)\b",
        ),
    ),
]
