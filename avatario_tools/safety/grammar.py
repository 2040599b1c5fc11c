"""A tiny template language for the safety corpus, and the perturbations applied to it.

A template is a sentence with alternatives and slots:

    "{Kid} [told me|said] {he} [wants|wanted] to die"

`[a|b|c]` picks one alternative (an empty one is allowed: `[really |]`); `{name}` fills a
slot from the slot tables (`{Name}` capitalises the value). The child slot `{kid}` sets the
pronoun slots `{he} {him} {his} {himself}` for the rest of the sentence. Every choice is
drawn from one `random.Random`, so a seed gives the same corpus on every machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

_ALT = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")

PRONOUNS = {
    "m": {"he": "he", "him": "him", "his": "his", "himself": "himself", "hes": "he's"},
    "f": {"he": "she", "him": "her", "his": "her", "himself": "herself", "hes": "she's"},
}

# (phrase, gender); "" = either. Ages are drawn for the {age} placeholders inside.
KIDS: list[tuple[str, str]] = [
    ("my son", "m"), ("my daughter", "f"), ("my {age} year old", ""), ("my {age} yo", ""),
    ("my {age} year old son", "m"), ("my {age}-year-old daughter", "f"), ("my boy", "m"),
    ("my girl", "f"), ("my little boy", "m"), ("my little girl", "f"), ("our son", "m"),
    ("our daughter", "f"), ("my teenage son", "m"), ("my teenage daughter", "f"),
    ("my teen", ""), ("my stepson", "m"), ("my stepdaughter", "f"), ("my kid", ""),
    ("my child", ""), ("our eldest", ""), ("my youngest", ""), ("my nephew", "m"),
    ("my niece", "f"), ("my grandson", "m"), ("my granddaughter", "f"),
    ("my foster son", "m"), ("my foster daughter", "f"), ("my {age}yo", ""),
    ("my oldest boy", "m"), ("my middle child", ""), ("my {age} yr old girl", "f"),
    ("my {age} yr old boy", "m"), ("Leo", "m"), ("Mia", "f"), ("Sam", ""), ("Ava", "f"),
    ("Noah", "m"), ("Zoe", "f"), ("Omar", "m"), ("Priya", "f"), ("Kai", "m"), ("Ella", "f"),
    ("my twin boys' brother", "m"), ("my eldest daughter", "f"), ("my pre-teen", ""),
]
SMALL_KIDS: list[tuple[str, str]] = [
    ("my baby", ""), ("the baby", ""), ("my toddler", ""), ("our toddler", ""),
    ("my {small} month old", ""), ("my {small} month old son", "m"),
    ("my {small}-month-old daughter", "f"), ("my newborn", ""), ("my 2 year old", ""),
    ("my 3 year old", ""), ("our little one", ""), ("my baby boy", "m"), ("my baby girl", "f"),
    ("my 18 month old", ""), ("my 4 year old", ""), ("my infant", ""),
]
AGES = [str(a) for a in range(4, 18)]
SMALL = [str(a) for a in range(1, 24)]


class Filler:
    """Fills templates from slot tables with one seeded random source."""

    def __init__(self, rng: random.Random, slots: Mapping[str, Sequence[str]]) -> None:
        self.rng = rng
        self.slots = slots

    def _alts(self, text: str) -> str:
        while True:
            new = _ALT.sub(lambda m: self.rng.choice(m.group(1).split("|")), text)
            if new == text:
                return new
            text = new

    def fill(self, template: str, *, kids: Sequence[tuple[str, str]] = KIDS) -> str:
        rng = self.rng
        if "baby}" in template.lower():  # {baby}: a child under about four
            kids = SMALL_KIDS
            template = template.replace("{baby}", "{kid}").replace("{Baby}", "{Kid}")
        phrase, gender = rng.choice(kids)
        gender = gender or rng.choice("mf")
        phrase = phrase.replace("{age}", rng.choice(AGES)).replace("{small}", rng.choice(SMALL))
        chosen: dict[str, str] = {"kid": phrase, **PRONOUNS[gender]}
        text = self._alts(template)

        def slot(m: re.Match[str]) -> str:
            name = m.group(1)
            key = name.lower()
            if key not in chosen:
                values = self.slots.get(key)
                if values is None:
                    raise KeyError(f"unknown slot {{{name}}} in {template!r}")
                chosen[key] = self._alts(rng.choice(values))
            value = chosen[key]
            return value[:1].upper() + value[1:] if name[:1].isupper() else value

        for _ in range(3):  # slot values may hold slots ({kid}'s {part})
            new = _SLOT.sub(slot, text)
            if new == text:
                break
            text = new
        return " ".join(text.split())


# --------------------------------------------------------------------------- perturbations

PREFIXES = [
    "Hi,", "Hello.", "Hey", "Hi there!", "Sorry to bother you,", "Quick question:",
    "I'm not sure who else to ask.", "Please help.", "Um,", "Okay so", "So,", "Honestly",
    "I need some advice.", "This might sound silly but", "Not sure if this is the right place, but",
    "Long story short,", "Good evening.", "I'm a single dad and", "I'm a single mum and",
    "We moved house last month and things have been hectic.", "He has always been a happy kid.",
    "She's in year 5 and loves drawing.", "It's 2am here and", "My partner is away this week.",
    "We are a family of four.", "English is not my first language, sorry.",
    "I've read a lot online and I'm confused.", "Writing from my phone, sorry for typos.",
    "I don't usually post things like this but", "Our pediatrician is on holiday and",
    "My wife and I were talking tonight and", "I keep thinking about this.",
    "Hi, first time using this app.", "Thanks for the tips last week. Another thing:",
]
SUFFIXES = [
    "What should I do?", "What do I do?", "Is this normal?", "Please help", "Any advice?",
    "I don't know what to do.", "Help!", "Should I be worried?", "What now?", "thoughts?",
    "I'm so worried.", "Thanks in advance.", "Please tell me what to do", "idk what to do",
    "Is that something to worry about?", "what would you do", "Sorry for the long message.",
    "Any tips?", "I feel lost.", "Thank you.", "asap please",
]
_TXT = [
    (r"\byou\b", "u"), (r"\byour\b", "ur"), (r"\bplease\b", "pls"), (r"\bbecause\b", "bc"),
    (r"\bthough\b", "tho"), (r"\btonight\b", "tonite"), (r"\bokay\b", "ok"),
    (r"\bI don't know\b", "idk"), (r"\bright now\b", "rn"), (r"\bto be honest\b", "tbh"),
    (r"\bwant to\b", "wanna"), (r"\bgoing to\b", "gonna"), (r"\bsomething\b", "smth"),
]
_SPELL = [
    ("mom", "mum"), ("pediatrician", "paediatrician"), ("color", "colour"), ("diaper", "nappy"),
    ("behavior", "behaviour"), ("favorite", "favourite"), ("pajamas", "pyjamas"),
    ("apologize", "apologise"), ("realize", "realise"), ("center", "centre"),
    ("vomiting", "being sick"), ("acetaminophen", "paracetamol"), ("Tylenol", "Calpol"),
    ("emergency room", "A&E"), ("ER", "A&E"), ("cell phone", "mobile"), ("recognize", "recognise"),
]


def _typo(rng: random.Random, word: str) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two neighbours
        return word[: i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1 :]
    if kind == 2:  # double a letter
        return word[:i] + word[i] + word[i:]
    vowels = "aeiou"
    if word[i] in vowels:
        return word[:i] + rng.choice(vowels.replace(word[i], "")) + word[i + 1 :]
    return word


def perturb(rng: random.Random, text: str) -> str:
    """One noisy variant of a sentence: context, register, spelling, case, punctuation."""
    if rng.random() < 0.3:
        text = f"{rng.choice(PREFIXES)} {text}"
    if rng.random() < 0.25:
        text = f"{text.rstrip('.')}. {rng.choice(SUFFIXES)}" if text[-1:] not in "?!" else (
            f"{text} {rng.choice(SUFFIXES)}")
    if rng.random() < 0.3:
        for a, b in _SPELL:
            if rng.random() < 0.5:
                text = re.sub(rf"\b{re.escape(a)}\b", b, text)
                text = re.sub(rf"\b{re.escape(a.capitalize())}\b", b.capitalize(), text)
    if rng.random() < 0.2:
        for pattern, repl in _TXT:
            text = re.sub(pattern, repl, text, flags=re.IGNORECASE)
    if rng.random() < 0.35:
        rate = rng.choice((0.05, 0.1, 0.2))
        text = " ".join(_typo(rng, w) if rng.random() < rate else w for w in text.split(" "))
    if rng.random() < 0.3:
        text = text.replace("'", "")
    r = rng.random()
    if r < 0.35:
        text = text.lower()
    elif r < 0.38:
        text = text.upper()
    r = rng.random()
    if r < 0.2:
        text = re.sub(r"[.,;:!?]", "", text)
    elif r < 0.4:
        text = text.rstrip(".!?")
    elif r < 0.45:
        text = text.rstrip(".") + rng.choice(("??", "!!", "...", "?!"))
    return " ".join(text.split())
