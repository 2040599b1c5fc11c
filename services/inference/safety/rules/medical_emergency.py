"""Medical emergencies described by what is happening: poisoning or overdose, breathing trouble, seizures, an unresponsive child, choking, a fever in a baby under three months."""

from __future__ import annotations

import re

from services.inference.safety.rules.common import (
    GAP,
    HARMFUL,
    KID,
    LOTS,
    MED,
    PAST,
    compile_all,
)

# A baby under three months: its age stated as the child's (weeks, days, 0-2 months, newborn).
_N_WEEKS = r"(?:[1-9]|1[0-2]|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve) ?(?:weeks?|wks?|wk)"
_N_DAYS = r"(?:[1-9]|[1-8]\d) ?days?"
_N_MONTHS = r"(?:[12]|one|two) ?(?:months?|mths?|mos?)"
_AGE = rf"(?:{_N_WEEKS}|{_N_DAYS}|{_N_MONTHS})"
_YOUNG = (rf"(?:\b{_AGE} old\b|\b(?:baby|newborn|infant|son|daughter|boy|girl|he|she|hes|shes|"
          rf"is|turned|just) {_AGE}\b(?! (?:ago|later|after|before|since|of|in|on|from))|"
          rf"\b{_AGE} (?:baby|newborn|infant|son|daughter|boy|girl)\b|\bnew ?borns?\b)")
# A fever: 38-42 (degrees C) or 100.4-106 (F) next to a temperature word, or a stated fever.
_TEMP = (r"(?:\b(?:3[89]|4[0-2])(?:[.,]\d{1,2})?(?! ?(?:weeks?|wks?|wk|days?|months?|years?|"
         r"yrs?|minutes?|mins?|hours?|hrs?|ml|mg|kg|g|lbs?|oz|cm|mm|percent|pounds?|times)\b)|"
         r"\b(?:100[.,][4-9]|10[1-6](?:[.,]\d)?) ?(?:f|degrees|fahrenheit)?\b)")
_FEVER_WORD = r"(?:\b(?:temp|temps|temperature|fever|feverish|febrile|degrees|thermometer|c|f)\b|\d ?[cf]\b)"
# A fever that is over ("two weeks ago", "back to normal") is a question for the model.
_OVER = (r"^(?!.*\b(?:ago|last (?:week|month|year)|back to normal|(?:went|came|gone|has gone|"
         r"have gone) down|normal now|no fever|no temperature|not feverish|was a new ?born)\b)")
# "has a temperature" is a fever in British English, unless a normal reading follows it ("has a
# temperature of 36.9, is that normal?": 36.0-37.4 C, 97-99.9 F; a low 35.4 in a newborn still
# matches).
_HAS_FEVER = (r"\b(?:has|has got|got|have|running|is running|with|developed|spiked) (?:a |an )?"
              r"(?:high |slight |low grade |little |bit of a )?(?:fever|temperature|temp)\b"
              r"(?! (?:of |is |was |at |reading )?(?:36(?:[.,]\d{1,2})?|37(?:[.,][0-4]\d?)?|"
              r"9[7-9](?:[.,]\d)?)(?![.,]?\d))")

RULES: list[tuple[str, str, list[re.Pattern[str]]]] = [
    (
        "medical_emergency",
        "poisoning",
        compile_all(
            rf"\b(?:swallowed|swallow|ate|eaten|drank|drunk|ingested|chewed|licked|got into|sucked on|bit into|bitten into|bit|vaped)\b(?: \w+){{0,3}}? {HARMFUL}\b",
            rf"\b(?:swallowed|ate|eaten|drank|drunk|took|taken|ingested|chewed|got into)\b (?:\w+ )?{LOTS} {GAP}{{0,4}}?{MED}\b",
            r"\b(?:swallowed|ate|eaten|drank|drunk|ingested|chewed|licked)\b(?: \w+){0,5}? (?:poisonous|toxic)\b",
            r"(?<!want to )(?<!wants to )(?<!wanted to )(?<!going to )(?<!planning to )(?<!plans to )(?<!thinking about )\b(?:overdose|overdosed|overdosing|overdoses)\b",
            r"\b(?:is|was|been|got|get|gets|being|be|hes|shes|theyve|has|have) poisoned\b",
            r"\bpoisoned (?:him|her|them|my|our|the baby)\b",
            r"\b(?:alcohol|carbon monoxide|co|medicine|medication|drug|iron|mushroom|plant|berry|chemical|bleach|accidental|nicotine) poisoning\b",
            r"\b(?:call|calling|called|ring|phone|contact|contacted) (?:the )?(?:poison (?:control|center|centre|help|line|hotline|information)|poisons (?:information|unit))\b",
            r"\b(?:double dose|two doses|too much|too many)\b(?: \w+){0,3}? (?:by mistake|by accident|accidentally)\b",
            r"\b(?:accidentally|by mistake) gave (?:\w+ ){1,3}?(?:too much|too many|a double dose|double|two doses|the wrong)\b",
            r"\bgot into (?:the |my |our )?(?:medicine|medicines|cleaning|chemical|chemicals)(?: \w+)? (?:cabinet|cupboard|supplies|drawer|bag)\b",
        ),
    ),
    (
        "medical_emergency",
        "breathing",
        compile_all(
            r"\b(?:not|isnt|is not|wasnt|stopped|stops|cant|can not|cannot|couldnt|struggling to|struggles to|struggled to|trouble|difficulty|hard time|fighting to|unable to|barely)\s+breath(?:e|ing|in)?\b(?! (?:through|out of|in (?:through|his|her)))",
            r"\bgasping(?: for (?:air|breath))?\b",
            r"\b(?:lips|face|skin|mouth) (?:is |are |has |have |went |turned |turning |going |gone |look |looks |looking )*(?:blue|grey|gray)\b",
            rf"\b(?:he|she|hes|shes|they|theyre|baby|(?:my|the|our) (?:\w+ )?{KID}) (?:is |was |has |just |s )?(?:went|turned|turning|going|gone|goes|turns) (?:a bit |slightly |all |really )?(?:blue|grey|gray)\b",
            r"\bblue (?:around|round|on|in) (?:the|his|her|their) (?:lips|mouth|face)\b",
            r"\bwheez\w* (?:\w+ ){0,3}?(?:cant|can not|cannot|struggling|gasping|turning|blue|wont stop|really bad|badly|a lot)\b",
            rf"\b(?:having|has|had|in the middle of|is in) (?:a|an) (?:bad |severe |serious |really bad |major |terrible |big )?asthma attack\b(?! {PAST})",
            r"\b(?:asthma attack|inhaler|puffer|epi ?pen) (?:\w+ ){0,4}?(?:isnt|is not|not|wont|doesnt|does not|didnt|did not|arent) (?:working|helping|help|work|stop|stopping)\b",
            r"\b(?:throat|tongue|airway) (?:\w+ ){0,2}?(?:swelling|swollen|swells|closing|closed|tight)\b",
            r"\banaphyla(?:ctic shock|ctic reaction|xis)\b(?! (?:to|from|plan|kit))",
            rf"\b(?:having|has|is in|is having) (?:a |an )?(?:\w+ ){{0,2}}?allergic reaction\b(?! (?:to (?:\w+ ){{0,2}}{PAST}|{PAST}))",
            r"\b(?:used|gave|give|giving|use|using) (?:him|her|them|the|his|her) (?:epi ?pen|adrenaline|auto ?injector)\b",
            r"\bgrunt\w* (?:with|on|at the end of) (?:every|each) breath\b",
            r"\b(?:chest|ribs|ribcage|tummy|belly|neck|skin between (?:his|her) ribs) (?:\w+ ){0,2}?(?:caving|sucking|pulling|sinking|going) in\b",
            r"\b(?:cant|can not|cannot|couldnt|unable to) (?:catch|get) (?:his|her|their|my) breath\b",
        ),
    ),
    (
        "medical_emergency",
        "seizure",
        compile_all(
            rf"\b(?:having|has|had just|just had|having had) (?:a |another |more |multiple )?(?:seizure|convulsion|febrile seizure)s?\b(?!(?: \w+)? {PAST})",
            r"\b(?:is|hes|shes|started|starts|keeps|has been|was|wont stop|been|still|is still) (?:seizing|convulsing|fitting|seizuring)\b(?! in)",
            r"\b(?:jerking|twitching|shaking) (?:and|but) (?:wont|isnt|not|cant) (?:respond|wake|stop)",
            r"\beyes (?:\w+ )?(?:rolled|rolling|roll|rolls) back\b",
            r"\b(?:whole|entire) body (?:\w+ )?(?:jerking|shaking|twitching|stiff|stiffened|convulsing|jerks|shakes)\b",
            r"\b(?:seizure|seizures|convulsions?|convulsing|seizing|seizuring)\b (?:\w+ ){0,2}?(?:right now|now|happening|still going|wont stop|for \d+ minutes)\b",
        ),
    ),
    (
        "medical_emergency",
        "unresponsive",
        compile_all(
            r"\b(?:unresponsive|unconscious|passed out|blacked out|went limp|gone limp|is limp|hes limp|shes limp|floppy and)\b",
            r"\b(?:is|went|gone|going|looks|seems|very|really|all|suddenly|hes|shes) (?:really |very |all )?floppy\b",
            r"\b(?:wont|will not|cant|can not|cannot|couldnt) (?:wake (?:him|her|them|my \w+)(?: up)?|wake up|be woken|rouse)\b(?! (?:for|in|on|early|before|until|till|when|at|after|without|by))",
            r"\b(?:not|isnt|is not|wasnt|hasnt|has not|didnt|still not) (?:waking up|woken up|woke up|waking|responding|breathing)\b(?! (?:to|for|in|on|when|at|early|before|until|till|from (?:his|her|their) nap|on time))",
            r"\b(?:isnt|is not|wasnt|stopped) responding\b(?! (?:to|for|when))",
            r"\b(?:not|isnt|is not|wasnt|stopped) responding to (?:anything|touch|pain|my voice|his name or touch|us at all|me at all|shaking)\b",
            r"\b(?:isnt|is not|not|wont|stopped|hasnt|still not) moving\b(?! (?:his|her|their|my|the|a|an|out|house|in|to|on|away|forward|fast|much|around|schools?|up|back)\b)",
            r"\b(?:wont|will not|doesnt|does not|not) respond\b(?! (?:to|when|well))",
            r"\b(?:fell|hit|banged) (?:\w+ ){0,3}head (?:\w+ ){0,4}(?:vomit|throwing up|drowsy|confused|unconscious|sleepy)",
            r"\b(?:eyes|eye) (?:wont|will not|cant|arent|are not|not|dont) (?:open|opening)\b",
            r"\bfell (?:out of|from|off) (?:a |the |an |our |his |her |their )?(?:\w+ ){0,2}?(?:window|balcony|roof|cliff|building|bridge|(?:second|third|top) floor|upstairs landing)\b",
            r"\b(?:was|got|been|is|hes|shes|being) knocked (?:out|unconscious)\b(?! (?:a|an|his|her|the|their|my|of|two|one|some|\w+ tooth|teeth))",
            rf"\b(?:he|she|baby|(?:my|the|our) (?:\w+ )?{KID}) (?:just |suddenly )?(?:fainted|collapsed)\b(?! (?:from|with) (?:excitement|laughter|laughing|embarrassment|relief)| (?:on|onto|into) (?:the |a |his |her )?(?:couch|sofa|bed|floor laughing|chair|beanbag|pile)| in (?:a heap of )?(?:giggles|laughter|a fit of))",
            r"\b(?:nearly|almost|is|was|hes|shes|started|been) drown(?:ed|ing)\b(?! in (?:homework|work|paperwork|laundry|tears|toys|questions|emails|lego|paper|medals|trophies|awards|presents|gifts|compliments|cuddles|sweets|chocolate|glitter))",
            rf"\bpulled (?:him|her|them|(?:my|the|our) (?:\w+ )?{KID}) out of the (?:pool|water|bath|lake|river|sea|pond)\b",
            r"\b(?:hit|struck|run over|ran over|knocked over|knocked down) by (?:a|the|an) (?:car|truck|van|bus|vehicle|lorry|motorbike|motorcycle|train)\b",
            r"\bbleed\w* (?:\w+ ){0,3}?(?:wont|will not|doesnt|does not|isnt|cant|can not) stop\b|\b(?:wont|will not|doesnt|cant) stop bleeding\b|\bbleeding (?:heavily|badly|profusely|everywhere|a lot|so much)\b",
        ),
    ),
    (
        "medical_emergency",
        "choking",
        compile_all(
            rf"\b(?:is|hes|shes|was|started|{KID}s?) choking\b(?! (?:hazard|risk|on (?:(?:his|her|their) )?(?:food|words|water|drinks?|milk|saliva|spit)))",
            r"\b(?:stuck|lodged) in (?:his|her|their|the|my) (?:throat|windpipe|airway)\b",
        ),
    ),
    (
        "medical_emergency",
        "infant_fever",
        # The definitions: any fever in a baby under three months is an emergency, however
        # well the baby seems. A linear model over n-grams cannot compare numbers, so the
        # age and the temperature are read here.
        compile_all(
            rf"{_OVER}(?=.*{_YOUNG})(?=.*{_FEVER_WORD})(?=.*{_TEMP})",
            rf"{_OVER}(?=.*{_YOUNG})(?=.*{_HAS_FEVER})",
        ),
    ),
]
