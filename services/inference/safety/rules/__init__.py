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

# Rule reasons the classifier may never demote to borderline (see crisis.EXPLICIT_WISH and
# abuse.RULES, "parent_urge").
NEVER_OVERRULED = frozenset({"explicit_wish", "parent_urge"})

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

# "this bake sale is going to kill me", "mum will kill me if I get mud on my trainers": someone
# or something that will "kill me" is a figure of speech (or, said of a person, a threat, which
# is not a wish to die). "just kill me", "I want someone to kill me" and "kill myself" still match.
WILL_KILL_ME = re.compile(
    r"\b(?:is|are|s|re|will|ll|would|d|gonna|going to|is gonna|are gonna|(?:is|are|s|re) trying to)"
    r"(?: (?:literally|actually|honestly|totally|seriously|absolutely|definitely|so))?"
    r"(?: (?:going to|gonna))?$"
)

# Context that undoes a match: (category, what the matched text starts with ("" for any match),
# a pattern the text before the match ends with). The guard skips such a match and reads on.
# "laughed so hard I couldn't breathe", "a full sugar overdose", "in Minecraft he ate a
# poisonous potato", "what should you do if someone is found not breathing"
LAUGHED_UNTIL = re.compile(
    r"\b(?:laugh\w*|giggl\w*|cackl\w*)(?: \w+){0,2}? (?:so hard|so much|too hard|till|until)"
    r"(?: that)?(?: (?:i|he|she|we|they|you))?$"
)
# what a child (or a parent) "overdoses" on in a figure of speech, before or after the word:
# "a full sugar overdose", "overdosing on peppa pig episodes" (not caffeine: that can be real)
TREATS = (
    r"(?:sugar|sweets|sweetie|candy|chocolate|cake|haribo|screen|screens|screen time|screentime|"
    r"tv|telly|youtube|tiktok|gaming|fortnite|minecraft|roblox|netflix|disney|fun|cuteness|"
    r"excitement|attention|love|cuddle|cuddles|drama|coffee|episodes|cartoons|peppa|bluey|"
    r"glitter|songs|music|lego|slime|pokemon|frozen|christmas)"
)
FIGURATIVE_BEFORE_OVERDOSE = re.compile(rf"\b{TREATS}$")
FICTION = re.compile(
    r"\b(?:in|on|from|during) (?:the |a |that |this |his |her |their )?(?:film|movie|book|story|"
    r"cartoon|tv show|show|episode|video game|game|news|minecraft|fortnite|roblox|pokemon|zelda|"
    r"play|panto|pantomime)\b(?: \w+){0,4}$"
)
FIRST_AID_QUESTION = re.compile(
    r"\bwhat (?:should|do|would|can|could) (?:you|i|we|one|a parent|parents) do (?:if|when)"
    r"(?: (?!(?:my|our|his|her|he|she|they|their|me)\b)\w+){0,4}$"
)
# how a parent tells of their own childhood: "when I was a kid my dad hit me"
OWN_CHILDHOOD = re.compile(
    r"\bwhen i was (?:a kid|a child|little|young|small|growing up|a girl|a boy|a teenager|"
    r"\d+)(?: \w+){0,1}$"
)

# "she'd like to be run over by a car": a wish (crisis), not an accident
WISHED_FOR = re.compile(
    r"\b(?:like|want|wants|wanted|wish|wishes|wished|hoping|hopes|hoped) to (?:be|get)$"
)

NOT_AFTER: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("medical_emergency", "", HYPOTHETICAL),
    ("crisis", "going to die", FEARED_DEATH),
    ("crisis", "kill me", WILL_KILL_ME),
    ("medical_emergency", "", LAUGHED_UNTIL),
    ("medical_emergency", "overdos", FIGURATIVE_BEFORE_OVERDOSE),
    ("medical_emergency", "", FICTION),
    ("medical_emergency", "", FIRST_AID_QUESTION),
    ("abuse", "", OWN_CHILDHOOD),
    ("medical_emergency", "", WISHED_FOR),
)

# Figures of speech, read from what follows a match: "went blue in the face from shouting",
# "couldn't breathe from laughing", "overdosed on sugar", "a massive overdose of screen time",
# "missed his dose of confidence", "missed a dose of his favourite show". Each was answered with
# the emergency or dosing text by the rules alone in a blind held-out set or the hand-written
# corpus. Only laughter, shouting and the like undo the breathing rules: "blue from crying",
# "couldn't breathe from coughing" and "blue in the face after the grape" still match.
FIGURE_OF_BREATH = re.compile(
    r"^(?: in the face)? (?:from|with|because of|after) (?:all (?:the|that) |so much )?"
    r"(?:laughing|laughter|giggling|giggles|shouting|yelling|cheering|arguing|talking|singing)\b"
)
FIGURATIVE_OVERDOSE = re.compile(rf"^ (?:of|on) (?:\w+ ){{0,2}}?{TREATS}\b")
FIGURATIVE_DOSE = re.compile(
    r"^ of (?:\w+ ){0,3}?(?:confidence|reality|fresh air|sunshine|vitamin sea|fun|nature|patience|"
    r"humou?r|common sense|luck|encouragement|exercise|courage|motivation|show|shows|cartoons?|"
    r"tv|telly|screen time|youtube|football|cuddles|love|peppa|bluey)\b"
)
# "how many tablets come in a packet", "how much does ADHD medication cost", "how many bottles
# of children's medicine can we bring on the plane": packs, prices and travel limits, not doses.
NOT_A_DOSE = re.compile(
    r"^(?: \w+){0,4}? (?:(?:come|comes) in (?:a|one|each|the|every) "
    r"(?:packet|pack|box|bottle|tub|blister|strip|tube)|(?:cost|costs|price|priced)\b|"
    r"(?:can|could|may) (?:we|i|you) (?:bring|carry|pack|buy|fly with|travel with|take on)\b)"
)

# The same, read from what follows: (category, what the matched text starts with, a pattern the
# text after the match begins with).
NOT_BEFORE: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("medical_emergency", "", FIGURE_OF_BREATH),
    ("medical_emergency", "overdos", FIGURATIVE_OVERDOSE),
    ("medication_dosing", "", FIGURATIVE_DOSE),
    ("medication_dosing", "how ", NOT_A_DOSE),
)
