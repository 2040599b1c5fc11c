"""What the rules read: a normalised view of a message or a reply.

Lower case, Unicode tricks folded (textnorm.guard_view), apostrophes dropped,
punctuation as spaces, "k!ll"/"su1cide" read as letters, slang expanded, and
misspelt key words corrected to the nearest word of a small vocabulary when they
are not real English words. `norm` is for parents' messages, `norm_out` for
the model's replies (no spelling fixes; "he's" keeps its "s").
"""

from __future__ import annotations

import re
from functools import lru_cache

from services.inference.textnorm import guard_view

SCAN_CHARS = 8000

# --------------------------------------------------------------------------- text helpers

# Slang and misspellings that are real words or too short for the fuzzy matcher.
_PHRASES = [
    (r"\bsewer ?slide\b", "suicide"),
    (r"\bunalive\b", "kill"),
    (r"\bkms\b", "kill myself"),
    (r"\bkys\b", "kill yourself"),
    (r"\bwann?a\b", "want to"),
    (r"\bgonna\b", "going to"),
    (r"\bkil\b", "kill"),
    (r"\btoo (?=(?:die|kill|hurt|end|be dead)\b)", "to "),
    (r"\bmeny\b", "many"),
    (r"\bhisself\b", "himself"),
    (r"\btheirselves\b", "themselves"),
    (r"\bchock(ing|ed|es)\b", r"chok\1"),
    (r"\b(an|an accidental|an intentional) overdoes\b", r"\1 overdose"),
    (r"\boverdoes (on|with)\b", r"overdose \1"),
    (r"\b(\d+) ?(?:yo|y o|yr old|yrs old)\b", r"\1 year old"),
    (r"\bbreath (?=(?:properly|right|normally|well)\b)", "breathe "),
]
_PHRASES_RE = [(re.compile(p), r) for p, r in _PHRASES]

# Key words whose misspellings matter; see _fix_spelling.
_FUZZY_VOCAB = frozenset(
    """
    suicide suicidal myself himself herself themselves yourself overdose overdosed overdosing
    harming cutting hurting killing seizure seizures seizing seizuring convulsing convulsion
    convulsions unresponsive unconscious breathe breathing choking swallowed poisoned poisoning
    poison battery batteries bleach detergent magnet molested molesting abused abusing abusive
    sexually babysitter boyfriend girlfriend husband stepdad stepfather stepmom stepmother
    grandpa grandfather daughter daughters ibuprofen acetaminophen paracetamol tylenol benadryl
    motrin calpol nurofen panadol melatonin amoxicillin antibiotic antibiotics antihistamine
    cetirizine medicine medication medications dosage teaspoon milligrams inhaler ventolin
    albuterol diphenhydramine claritin disappear
""".split()
)

# Real English words within the fuzzy distance of a vocabulary word; never "corrected".
# Generated from the Debian wamerican-large and wbritish-large word lists; when they are
# installed, test_safety.py::test_real_words_are_never_corrected lists what to add here after
# a change to _FUZZY_VOCAB or _fuzzy_limit.
_REAL_WORDS = frozenset(
    """
    abased abasing abuse abuser abuses acetaminophens amoxicillins ampicillin amused amusing
    antibiosis antihistamines antihistaminic antimitotic babysitters bacterias bakeries
    bathing batter battered batterer batterers battering batterings batters batterys beach
    beaching beating befriend berating berthing bleaching bleachs bleating blench bletch
    boyfriends breach breaching breading breaking breasting breath breathed breather breathes
    breathier breathings breaths breathy breeching broaching butterier butteries butteriest
    buttery catting chocking chowing coking compulsion compulsions conclusion conclusions
    concussing concussion concussions confusing confusion confusions consulting contusing
    contusion contusions conversing conversion conversions convolving convulsant convulsive
    cooking cuttings daughterly deferent deferment deterge detergency detergents determent
    determents deterrent deterrents disappeared disappears divergent dosages dotage
    girlfriends grandfathered grandfatherly grandfathers grandma grandmother grandpas hamming
    harding haring harking harping hunting hurling hurtling husbands ibuprofens inhale inhaled
    inhalers inhales killings kilning kipling magneto magnets manet mediation mediations
    medicating medicative medicines meditation meditations melanin melatonins metrication
    metrications milligram milligramme milligrammes moleskin moleskins molester molting morin
    motrins overcoming overdoes overdoing overdone overdoses overjoyed overjoying overused
    overusing paracetamols poising poisoner poisonings poisons poisson prison sallower
    scalloped securing seining seizin seizings shallower sizing stepbrother stepdads
    stepfathers stepmoms stepmothers suicides swallow swallower swallows teaspoons tylenols
    unconsciously unconsciouss unresponsively ventolins
""".split()
)


_FUZZY_ORDER = tuple(sorted(_FUZZY_VOCAB))  # ties go to the first word, whatever the hash seed


def _osa(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance (edits and adjacent swaps), capped at limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _fuzzy_limit(word: str) -> int:
    return 1 if len(word) <= 8 else 2


@lru_cache(maxsize=8192)
def _fix_word(token: str) -> str:
    if len(token) < 5 or token in _FUZZY_VOCAB or token in _REAL_WORDS or not token.isalpha():
        return token
    best, best_d = token, 3
    for word in _FUZZY_ORDER:
        if word[0] != token[0]:
            continue
        d = _osa(token, word, _fuzzy_limit(word))
        if d <= _fuzzy_limit(word) and d < best_d:
            best, best_d = word, d
    return best


def _fix_spelling(text: str) -> str:
    return " ".join(_fix_word(t) for t in text.split())


def _base_norm(text: str) -> str:
    # Unicode tricks first (zero-width, fullwidth, look-alikes, marks): see textnorm.guard_view
    text = guard_view(text[: 2 * SCAN_CHARS])[:SCAN_CHARS].replace("’", "'").replace("‘", "'")
    text = re.sub(r"(?<=[a-z])[!1|](?=[a-z])", "i", text)  # k!ll, su1cide
    text = re.sub(r"(?<=[a-z])0(?=[a-z])", "o", text)
    text = re.sub(r"(?<=[a-z])@(?=[a-z])", "a", text)
    text = re.sub(r"(?<=\d)[.,](?=\d)", "\x00", text)  # 2.5 ml keeps its point
    return text


def _norm(text: str) -> str:
    """Input normalisation: he's -> hes, punctuation -> spaces, slang and misspellings fixed."""
    text = _base_norm(text)
    text = re.sub(r"(?<=\w)'(?=\w)", "", text)  # can't -> cant, he's -> hes
    text = " ".join(re.sub(r"[^a-z0-9\x00]+", " ", text).split()).replace("\x00", ".")
    for pattern, repl in _PHRASES_RE:
        text = pattern.sub(repl, text)
    return _fix_spelling(text)


def _norm_out(text: str) -> str:
    """Reply normalisation: he's -> he s (so 'is' and 'has' stay visible), no spelling fixes."""
    text = _base_norm(text)
    text = re.sub(r"(?<=\w)'s\b", " s", text)
    text = re.sub(r"(?<=\w)'(?=\w)", "", text)
    return " ".join(re.sub(r"[^a-z0-9\x00]+", " ", text).split()).replace("\x00", ".")

norm = _norm
norm_out = _norm_out
