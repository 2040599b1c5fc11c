"""Safety guard around the model: fixed answers for risky messages, no diagnoses in replies.

`check_input` runs before the model. Crisis (self-harm or suicide, child or parent), abuse or
neglect disclosures, medical emergencies (breathing trouble, choking, seizures, poisoning or
overdose, an unresponsive child, and a few others such as near-drowning) and medication-dosing
questions get a fixed, warm answer carrying the configured country's help lines; the model is
not called. The answers are fixed texts: nothing from the message or the child is put in them.

After the model, `OutputStreamGuard` (or `check_output` on a whole reply) rewrites sentences
that state a diagnosis ("your child has ADHD") into a note that only a professional can tell,
and `finish()` ends replies about development, learning, attention, behaviour, emotions or
milestones with one short "not a diagnosis" sentence (`developmental_note`) unless the reply
already says so. That note is not a rewrite: `category` stays None for it.

Detection is English phrase lists and regular expressions over a normalised text (Unicode
tricks undone first by `textnorm.guard_view`: NFKC, invisible characters dropped, combining
marks dropped, look-alike letters of other scripts folded to ASCII; then lower case,
apostrophes dropped, punctuation as spaces, "k!ll"/"su1cide" read as letters, a few slang
words expanded). Misspelt key words ("sucide", "siezure", "ibuprofin") are corrected to the
nearest word of a small vocabulary (`_FUZZY_VOCAB`) when they are not real English words.
The guard leans towards answering with help lines when in doubt on the dangerous categories,
but avoids common figures of speech ("killing it at math", "dying to try the new game", "a
dose of patience", "he choked on the final question"). The test corpora live in
tests/unit/inference/safety_corpus/; each file also lists messages deliberately left to the
model ("left_to_model"), with the reason.

What counts as medication dosing: how much or how often to give, the maximum, missed, doubled
or repeated doses, splitting adult tablets, two amounts compared, and whether to give a named
medicine at all. Taking a prescribed medicine at some time ("her inhaler before sport"),
getting a child to take medicine, storage, taste and what a medicine does are left to the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

from services.inference.planner import ConfigError
from services.inference.textnorm import guard_view, prompt_text

__all__ = [
    "CATEGORIES",
    "CountryResources",
    "OutputStreamGuard",
    "SafetyGuard",
    "SafetyVerdict",
    "developmental_note",
    "has_developmental_note",
    "load_resources",
    "needs_developmental_note",
    "talks_about_development",
]

CATEGORIES = ("medical_emergency", "crisis", "abuse", "medication_dosing", "diagnostic_claim")
RESOURCES_PATH = Path(__file__).with_name("safety_resources.json")
_SCAN_CHARS = 8000


@dataclass(frozen=True, slots=True)
class CountryResources:
    code: str
    country: str
    emergency: str
    crisis_line: str
    poison_line: str
    child_protection_line: str
    medical_advice_line: str


def load_resources(path: str | Path | None = None) -> dict[str, CountryResources]:
    """Country code -> resources; the file must have a 'default' entry."""
    p = Path(path) if path is not None else RESOURCES_PATH
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read safety resources {p}: {exc}") from exc
    names = [f.name for f in fields(CountryResources) if f.name != "code"]
    out: dict[str, CountryResources] = {}
    for code, entry in raw.items():
        if code.startswith("_"):
            continue
        missing = [n for n in names if not isinstance(entry.get(n), str)]
        if missing:
            raise ConfigError(f"safety resources {p}: {code} lacks {', '.join(missing)}")
        out[code] = CountryResources(code=code, **{n: entry[n] for n in names})
    if "default" not in out:
        raise ConfigError(f"safety resources {p}: no 'default' entry")
    return out


@dataclass(frozen=True, slots=True)
class SafetyVerdict:
    category: str  # one of CATEGORIES
    answer: str  # the fixed reply to send instead of the model's
    reason: str  # which rule matched (for metrics and logs; never the message itself)


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
    text = guard_view(text[: 2 * _SCAN_CHARS])[:_SCAN_CHARS].replace("’", "'").replace("‘", "'")
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


def _c(*patterns: str) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


_KID = (
    r"(?:sons?|daughters?|child|children|kids?|bab(?:y|ies)|infants?|newborns?|toddlers?|boys?|"
    r"girls?|little ones?|teens?|teenagers?|twins?|niece|nephew|grandson|granddaughter|"
    r"grandchild(?:ren)?|stepson|stepdaughter|students?|pupils?|"
    r"\d+ (?:year|yr|month)s? olds?)"
)
_VICTIM = rf"(?:him|her|them|me|us|(?:my|our|the|his|her|their) (?:\w+ )?{_KID})"
_ADULT = (
    r"(?:(?:my|his|her|their|our|the|mommys|mummys|mums|moms|daddys|dads) )?(?:dad|daddy|father|"
    r"stepdad|stepfather|step dad|step father|mom|mommy|mum|mummy|mother|stepmom|stepmum|"
    r"stepmother|step mom|step mum|boyfriend|girlfriend|partner|husband|wife|ex|ex husband|"
    r"ex wife|uncle|aunt|auntie|grandpa|grandfather|grandma|grandmother|granddad|grandad|"
    r"teacher|coach|babysitter|nanny|neighbou?r|priest|pastor|caregiver|carer|tutor|"
    r"brother in law|sister in law|mother in law|father in law|cousin|foster \w+|"
    r"(?:grown|older|adult) (?:man|woman|guy)|stepbrother|stepsister|childminder|"
    r"(?:daycare|nursery|day care|creche) (?:worker|teacher|staff|lady|man)|bus driver|"
    r"(?:scout|youth|camp|church|swim|football|soccer|dance|music) (?:leader|counsel(?:l)?or|coach|teacher|instructor)|"
    r"counsel(?:l)?or|instructor|landlord|lodger)"
)
_NOT_ACC = r"(?:(?!accident|by accident)\w+ ){0,2}?"
_SELF = r"(?:my|him|her|them|your) ?sel(?:f|ves)\b(?! (?:esteem|confidence|worth|image|care|control|doubt|talk))"
_MEDNAME = (
    r"(?:tylenol|acetaminophen|paracetamol|calpol|panadol|ibuprofen|advil|motrin|nurofen|"
    r"aspirin|benadryl|diphenhydramine|zyrtec|cetirizine|claritin|loratadine|allegra|"
    r"melatonin|antihistamines?|antibiotics?|amoxicillin|augmentin|azithromycin|"
    r"cough (?:syrup|medicine)|cold medicine|fever (?:medicine|reducer)|pain ?killers?|"
    r"ritalin|methylphenidate|adderall|concerta|vyvanse|guanfacine|clonidine|sertraline|"
    r"zoloft|fluoxetine|prozac|risperidone|prednisone|prednisolone|steroids?|miralax|"
    r"laxatives?|dramamine|imodium|loperamide|albuterol|salbutamol|ventolin|insulin|"
    r"iron supplements?|gripe water|teething gel|orajel|simethicone|gas drops|pedialyte|"
    r"dioralyte|electrolyte solution|oral rehydration \w+|nyquil|dayquil|sudafed|robitussin|"
    r"piriton|chlorphenamine|chlorpheniramine|benylin|tixylix|calprofen|medised|hydroxyzine|"
    r"montelukast|singulair|omeprazole|gaviscon|antidepressants?|sleeping (?:pills|tablets)|"
    r"xanax|valium|diazepam|lorazepam|oxycodone|opioids?|percocet|vicodin|tramadol|codeine|"
    r"lithium|blood thinners?|warfarin|birth control pills|the pill|clonazepam|vitamin d|"
    r"iron (?:pills|tablets|drops)|fluoride (?:tablets|drops))"
)
_MED = (
    rf"(?:{_MEDNAME}|medicines?|medications?|meds|syrup|drops|tablets?|pills?|capsules?|"
    r"suppositor(?:y|ies)|gummies|doses?|vitamins?|inhaler|puffer)"
)
_UNIT = (
    r"(?:mg|ml|mls|milligrams?|millilit(?:er|re)s?|teaspoons?|tsp|tablespoons?|tablets?|pills?|"
    r"drops|puffs?|units|capsules?|mcg|micrograms?)"
)
_HARMFUL = (
    r"(?:bleach|detergent|laundry (?:pod|pods|capsule|capsules|liquid)|dishwasher (?:tablet|tablets|pod|pods|liquid)|"
    r"cleaning (?:product|products|fluid|liquid|spray)|chemicals?|poison|rat poison|pesticides?|"
    r"weed killer|antifreeze|paint thinner|lamp oil|kerosene|gasoline|petrol|lighter fluid|"
    r"drain cleaner|oven cleaner|(?:button )?batter(?:y|ies)(?! (?:powered|operated|charger|life))|magnets?|nicotine|"
    r"vape (?:liquid|juice|pod|pods)|e liquid|alcohol|vodka|whiskey|whisky|rum|gin|wine|"
    r"mouthwash|essential oils?|hand sanitiz(?:er|ers)|hand saniti[sz]er|wild mushrooms?|"
    r"cannabis|edibles?|nail polish(?: remover)?|acetone|coins?|marbles?|superglue|glue|"
    r"perfume|cologne|aftershave|(?:windshield |windscreen )?washer fluid|screenwash|brake fluid|motor oil|turpentine|"
    r"fertili[sz]er|bug spray|insecticide|toilet cleaner|descaler|caustic soda|lye|ammonia)"
)
_LOTS = (
    r"(?:some|several|a handful of|a bunch of|a lot of|lots of|all (?:of )?(?:the|my|his|her)|"
    r"the whole (?:bottle|pack|packet|box) of|too many|too much|an? (?:entire |whole )?"
    r"(?:bottle|pack|packet|box|sheet|strip|handful|bunch) of|my|mommys|mummys|daddys|grandmas|"
    r"grandpas|nanas|someones|\d+)"
)
_GAP = r"(?:(?!before|after|with|and|then|but|because|so)\w+ )"
_COND = (
    r"(?:adhd|add|asd|ocd|odd|ptsd|attention deficit(?: hyperactivity)?(?: disorder)?|"
    r"autism(?: spectrum disorder)?|asperger(?: ?s)?(?: syndrome)?|dyslexia|dyscalculia|dyspraxia|"
    r"dysgraphia|(?:clinical |major )?depression|bipolar(?: disorder)?|tourette(?: ?s)?(?: syndrome)?|"
    r"oppositional defiant disorder|obsessive compulsive disorder|selective mutism|"
    r"schizophrenia|anorexia|bulimia|apraxia|sensory processing disorder|"
    r"an? (?:anxiety|mood|eating|learning|language|speech|conduct|attachment|personality|"
    r"developmental|attention|processing|behaviou?r(?:al)?) (?:disorder|disability|delay)|"
    r"(?:an? )?(?:generali[sz]ed |social )?anxiety disorder|an? intellectual disability|"
    r"an? developmental delay|an? learning disability)"
)
_PAST = r"(?:last|ago|before|in the past|when (?:he|she|they) was|yesterday|a while)"

_INPUT_RULES: list[tuple[str, str, list[re.Pattern[str]]]] = [
    (
        "medical_emergency",
        "poisoning",
        _c(
            rf"\b(?:swallowed|swallow|ate|eaten|drank|drunk|ingested|chewed|licked|got into|sucked on|bit into|bitten into|bit|vaped)\b(?: \w+){{0,3}}? {_HARMFUL}\b",
            rf"\b(?:swallowed|ate|eaten|drank|drunk|took|taken|ingested|chewed|got into)\b (?:\w+ )?{_LOTS} {_GAP}{{0,4}}?{_MED}\b",
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
        _c(
            r"\b(?:not|isnt|is not|wasnt|stopped|stops|cant|can not|cannot|couldnt|struggling to|struggles to|struggled to|trouble|difficulty|hard time|fighting to|unable to|barely)\s+breath(?:e|ing|in)?\b(?! (?:through|out of|in (?:through|his|her)))",
            r"\bgasping(?: for (?:air|breath))?\b",
            r"\b(?:lips|face|skin|mouth) (?:is |are |has |have |went |turned |turning |going |gone |look |looks |looking )*(?:blue|grey|gray)\b",
            rf"\b(?:he|she|hes|shes|they|theyre|baby|(?:my|the|our) (?:\w+ )?{_KID}) (?:is |was |has |just |s )?(?:went|turned|turning|going|gone|goes|turns) (?:a bit |slightly |all |really )?(?:blue|grey|gray)\b",
            r"\bblue (?:around|round|on|in) (?:the|his|her|their) (?:lips|mouth|face)\b",
            r"\bwheez\w* (?:\w+ ){0,3}?(?:cant|can not|cannot|struggling|gasping|turning|blue|wont stop|really bad|badly|a lot)\b",
            rf"\b(?:having|has|had|in the middle of|is in) (?:a|an) (?:bad |severe |serious |really bad |major |terrible |big )?asthma attack\b(?! {_PAST})",
            r"\b(?:asthma attack|inhaler|puffer|epi ?pen) (?:\w+ ){0,4}?(?:isnt|is not|not|wont|doesnt|does not|didnt|did not|arent) (?:working|helping|help|work|stop|stopping)\b",
            r"\b(?:throat|tongue|airway) (?:\w+ ){0,2}?(?:swelling|swollen|swells|closing|closed|tight)\b",
            r"\banaphyla(?:ctic shock|ctic reaction|xis)\b(?! (?:to|from|plan|kit))",
            rf"\b(?:having|has|is in|is having) (?:a |an )?(?:\w+ ){{0,2}}?allergic reaction\b(?! (?:to (?:\w+ ){{0,2}}{_PAST}|{_PAST}))",
            r"\b(?:used|gave|give|giving|use|using) (?:him|her|them|the|his|her) (?:epi ?pen|adrenaline|auto ?injector)\b",
            r"\bgrunt\w* (?:with|on|at the end of) (?:every|each) breath\b",
            r"\b(?:chest|ribs|ribcage|tummy|belly|neck|skin between (?:his|her) ribs) (?:\w+ ){0,2}?(?:caving|sucking|pulling|sinking|going) in\b",
            r"\b(?:cant|can not|cannot|couldnt|unable to) (?:catch|get) (?:his|her|their|my) breath\b",
        ),
    ),
    (
        "medical_emergency",
        "seizure",
        _c(
            rf"\b(?:having|has|had just|just had|having had) (?:a |another |more |multiple )?(?:seizure|convulsion|febrile seizure)s?\b(?!(?: \w+)? {_PAST})",
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
        _c(
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
            rf"\b(?:he|she|baby|(?:my|the|our) (?:\w+ )?{_KID}) (?:just |suddenly )?(?:fainted|collapsed)\b(?! (?:from|with) (?:excitement|laughter|laughing|embarrassment|relief)| (?:on|onto|into) (?:the |a |his |her )?(?:couch|sofa|bed|floor laughing|chair|beanbag|pile)| in (?:a heap of )?(?:giggles|laughter|a fit of))",
            r"\b(?:nearly|almost|is|was|hes|shes|started|been) drown(?:ed|ing)\b(?! in (?:homework|work|paperwork|laundry|tears|toys|questions|emails|lego|paper))",
            rf"\bpulled (?:him|her|them|(?:my|the|our) (?:\w+ )?{_KID}) out of the (?:pool|water|bath|lake|river|sea|pond)\b",
            r"\b(?:hit|struck|run over|ran over|knocked over|knocked down) by (?:a|the|an) (?:car|truck|van|bus|vehicle|lorry|motorbike|motorcycle|train)\b",
            r"\bbleed\w* (?:\w+ ){0,3}?(?:wont|will not|doesnt|does not|isnt|cant|can not) stop\b|\b(?:wont|will not|doesnt|cant) stop bleeding\b|\bbleeding (?:heavily|badly|profusely|everywhere|a lot|so much)\b",
        ),
    ),
    (
        "medical_emergency",
        "choking",
        _c(
            rf"\b(?:is|hes|shes|was|started|{_KID}s?) choking\b(?! (?:hazard|risk|on (?:(?:his|her|their) )?(?:food|words|water|drinks?|milk|saliva|spit)))",
            r"\b(?:stuck|lodged) in (?:his|her|their|the|my) (?:throat|windpipe|airway)\b",
        ),
    ),
    (
        "crisis",
        "suicide",
        _c(
            r"\bsuicid(?:e|al|ally)\b(?! (?:squad|bomb\w*|attack\w*|mission|doors?|vest|drone|run|pact of the))",
            rf"\bkill (?:{_SELF}|me)\b",
            rf"\bkilled {_SELF}",
            rf"\bkilling {_SELF}(?! (?:trying|to|working|laughing|with|over|doing|for))",
            r"\b(?:want|wants|wanted|wanting|wish|wishes|wished|going|ready|try|trying|tried|plan|plans|planning) to (?:die|be dead|not be alive|not exist|disappear forever|never wake up|end it|stop existing|stop living|not be here|not live)\b(?! (?:of|from|laughing|her hair|his hair|my hair|their hair|with laughter))",
            r"\b(?:wish|wishes|wished) (?:i|he|she|they) (?:was|were|could be) (?:dead|never born|not alive|gone forever)\b",
            r"\b(?:wish|wishes|wished) (?:i|he|she|they) (?:had never been|hadnt been|wasnt|werent) born\b",
            r"\b(?:wish|wishes|wished) (?:id|hed|shed|theyd|i had|he had|she had|they had) never (?:been born|existed|lived)\b",
            r"\b(?:wish|wishes|wished) (?:i|he|she|they) (?:could|would) (?:just )?(?:die|be dead|disappear forever|not wake up|never wake up|stop existing)\b",
            r"\b(?:want|wants|wanted|wanting|going|trying|tried|plan|plans|planning|thinking about|thought about|talks about|talking about) to overdose\b|\b(?:thinking|thought|talks|talked|talking) about overdosing\b",
            r"\b(?:doesnt|dont|does not|do not|didnt|did not|no longer) want to (?:live|be alive|be here anymore|exist|be around anymore)\b",
            r"\b(?:doesnt|dont|does not|do not|didnt|did not|no longer) (?:want|wanna) to wake up\b(?! (?:for|in (?:the|time)|early|before|at|on|so early|when|until|till))",
            r"\b(?:end|ending|take|taking) (?:my|his|her|their) (?:own )?life\b",
            r"\b(?:end it all|better off dead|better off without me|no reason to live|nothing to live for|not worth living)\b",
            r"\blife (?:isnt|is not|aint) worth (?:it|living)\b",
            r"\bno point (?:in )?(?:me |him |her |them |my |his |their )?(?:being alive|living|existing|being here|going on|waking up)\b",
            r"\b(?:cant|cannot|can not) (?:go on|keep going|do this) (?:anymore|any more|any longer|like this)\b",
            r"\b(?:hang|hanging|hanged|drown|drowning|strangle|strangling|shoot|shooting|stab|stabbing|poison|poisoning|suffocate|suffocating) (?:my|him|her|them)sel(?:f|ves)\b",
            r"\b(?:better|happier|easier) (?:off )?if (?:i|he|she|they) (?:was|were|wasnt|werent|was not|were not|had never been|hadnt been|never) (?:here|around|alive|born|gone|dead|existed)\b",
            r"\b(?:better|happier|easier) (?:off )?without (?:me\b|(?:him|her|them)(?: (?:around|here|alive|in (?:this|the) world))?$)",
            r"\b(?:nobody|no one|noone|none of you|nobody else) (?:would|will|wd|d)? ?(?:care|notice|miss (?:me|him|her|them)) if (?:i|he|she|they) (?:died|disappeared|was gone|were gone|was dead|were dead|wasnt here|werent here|wasnt around|was not here|killed \w+|didnt exist|never existed|stopped existing)\b",
            r"\b(?:stop|stopped|stopping) existing\b",
            r"\b(?:think|thinks|thinking|thought) (?:about|of) (?:ending it|ending (?:my|his|her|their) (?:own )?life|ending things|dying|killing|suicide)\b",
            r"\b(?:talk\w*|say\w*|said|mention\w*|jok\w*|writ\w*|wrote) (?:\w+ )?about (?:not being (?:around|here|alive)|wanting to die|being dead|killing (?:him|her|my|them)sel\w*)\b(?! (?:for|to|when|at|on|during|next|this|tomorrow))",
            r"\b(?:he|she|they|i) (?:wont|will not|isnt going to|is not going to|not going to) be (?:around|here|alive) (?:much longer|anymore|any more|for long|for much longer|next year|for (?:his|her|their|my) (?:own )?birthday)\b",
            r"\b(?:should|might as well|may as well) (?:just )?(?:die|be dead)\b(?! (?:of|from))",
            r"\b(?:plan|plans|planning|want|wants|going|decided) to end (?:it|things|everything)\b(?! (?:with|between|here|now|early|there|on|at|for|before|after|by))",
            r"\b(?:stockpil\w*|hoard\w*|saving up|collecting) (?:\w+ ){0,2}?(?:pills|tablets|meds|medication|medicines|painkillers|razors?|razor blades|blades)\b",
            r"\b(?:how many|enough) (?:\w+ ){0,2}?(?:pills|tablets|meds) (?:\w+ ){0,3}?(?:to die|to kill|to not wake up|to never wake up|to overdose)\b",
            r"\b(?:how to|ways to|best way to|painless way to) (?:die|kill (?:my|him|her|them)sel\w*|end (?:my|his|her|their) life)\b",
            r"\b(?:im|i am|hes|he is|shes|she is|theyre|they are) (?:just |such |only )?a burden\b|\ba burden (?:to|on) (?:everyone|everybody|us|you|my family|the family|his family|her family)\b",
            r"\b(?:want|wants|wanted|wanting) to (?:go to heaven|be in heaven|die and be with|join (?:\w+ ){0,2}in heaven|be with (?:\w+ ){0,2}in heaven)\b(?! (?:one day|someday|when (?:i|he|she|they) (?:am|is|are|get|gets|grow|grows) old))",
            r"\b(?:run away|disappear|go away|leave) and never come back\b",
            r"\b(?:go to sleep|fall asleep|sleep|close (?:my|his|her|their) eyes) and (?:never|not) wake up\b",
            r"\b(?:want|wants|wanted|wish|wishes|wished) to (?:just )?disappear\b(?! (?:into|under|behind|in|to|from|for (?:a|the) (?:day|weekend|bit|while|minute|moment|hour|week)))",
            r"\b(?:threaten\w*|going|trying|tried|try|wants?|wanted) to (?:jump off|jump from|throw (?:my|him|her|them)sel\w* (?:off|from|in front of)|jump in front of|step in front of|walk in front of) (?:\w+ )?(?:bridge|roof|building|balcony|window|cliff|overpass|tower|parking garage|train|traffic|car|bus|truck)\b",
        ),
    ),
    (
        "crisis",
        "self_harm",
        _c(
            r"\bself ?(?:harm|harms|harmed|harming|injury|injuring|injure|mutilat\w*)\b",
            rf"\b(?:want|wants|wanted|trying|tried|try|going|threaten\w*|thinking about|thinking of|thought about|talks about|talked about|talking about|planning|plans|urge|urges) (?:to )?(?:kill|hurt|harm|cut|burn|starve|punish|stab|shoot|hang|drown|strangle|poison|suffocate|injure)(?:ing|s)? {_SELF}",
            rf"(?<!not )(?<!never )(?<!dont )\bto (?:hurt|harm|punish|injure|cut|burn) {_SELF}",
            rf"\b(?:hurt|hurts|hurting|harm|harms|harming|harmed|cut|cuts|cutting|burn|burns|burning|burned|burnt|scratch\w*|hit|hits|hitting|bang\w*|bit|bites|biting|starv\w*) {_SELF} (?:on purpose|deliberately|intentionally|to feel|again|with (?:a |an )?(?:lighter|knife|razor|blade|scissors|compass|pen knife|cigarette|match|matches|sharpener blade)|because|when (?:i|he|she|they) (?:am|is|are|get|gets|feel|feels)|when (?:im|hes|shes|theyre) (?:sad|upset|angry|mad|stressed|anxious|overwhelmed|down|lonely|frustrated|low))",
            rf"\b(?:cutting|cuts) {_SELF}",
            r"\b(?:been|started|caught (?:him|her|them|me)|is|was|keeps|stop|stopped) cutting(?: again)?$",
            r"\b(?:cutting|cut|slitting|slit|slashing) (?:his|her|their|my) (?:wrists?|arms?|thighs?|legs?|skin|stomach)\b",
            r"\bcuts? (?:on|all over) (?:his|her|their|my) (?:wrists?|arms?|thighs?|legs?|stomach)\b",
            r"\b(?:scratch|cut|pick|bit|bite|hit|bang|punch)\w* (?:\w+ ){0,3}?until (?:it|they|he|she|i) (?:bleed|bleeds|bled|bruise|bruises|bruised)\b",
            r"\b(?:razor|razors|blades?) (?:hidden|hid|hiding) (?:in|under)\b",
        ),
    ),
    (
        "abuse",
        "abuse",
        _c(
            rf"\b{_ADULT} {_NOT_ACC}(?:hits?|hitting|beats?|beating|beaten|punch(?:es|ed|ing)?|slaps?|slapped|slapping|smack(?:s|ed|ing)?|chokes?|choked|choking|strangl\w+|burns?|burned|burnt|burning|whips?|whipped|whipping|shakes?|shook|shaking|smother\w*|drugs|drugged|drugging|bites?|pinch(?:es|ed|ing)|starves?|starved|starving) {_VICTIM}\b(?! (?:at|in (?:chess|games|a|the race|cards)|to (?:it|the)|by accident|accidentally|with (?:a |the )?(?:ball|pillow|snowball|water))\b)",
            rf"\b(?:hits?|hitting|hit|beats?|beating|beat|whips?|whipped|whipping|spank(?:s|ed|ing)?|smack(?:s|ed|ing)?|strikes?|struck) {_VICTIM} (?:\w+ ){{0,2}}?with (?:a |the |an |his |her |their |my )?(?:belt|stick|cane|wooden spoon|spoon|hanger|coat hanger|cord|cable|extension cord|whip|shoe|slipper|paddle|ruler|hose|wire|switch|fist|closed fist)\b",
            rf"\b(?:makes|made|forces|forced) {_VICTIM} do (?:\w+ )?things\b(?: \w+){{0,2}}? (?:i|he|she|they) (?:dont|doesnt|didnt|do not|does not|did not) (?:like|want)\b",
            rf"\b{_ADULT} {_NOT_ACC}(?:hurts?|hurting|hurt) {_VICTIM}\b(?! (?:feelings|pride|chances|by accident|accidentally)\b)",
            rf"\b{_ADULT} {_NOT_ACC}(?:kicks?|kicked|kicking) {_VICTIM}\b(?! (?:off|out|the ball|a ball|by accident|accidentally)\b)",
            rf"\b{_ADULT} {_NOT_ACC}(?:throws?|threw|throwing) {_VICTIM}\b(?! (?:in|into|up|around|onto|a|the|on the bed|by accident)\b)",
            rf"\b{_ADULT} (?:\w+ ){{0,2}}?(?:grab(?:s|bed|bing)?|pull(?:s|ed|ing)?|lift(?:s|ed|ing)?|drag(?:s|ged|ging)?) {_VICTIM} by the (?:neck|throat|hair)\b",
            rf"\b{_ADULT} (?:\w+ ){{0,3}}?(?:will|would|is going to|going to|gonna|ll|threaten\w* to|said he would|said she would|says he will|says she will) (?:kill|hurt|beat|hit|drown|smother|throw|shake) {_VICTIM}\b",
            rf"\b(?:hell|shell|he will|she will|hes going to|shes going to) (?:kill|hurt|beat|drown|smother|throw|shake) (?:the baby|(?:my|our|the) (?:\w+ )?{_KID}|her|him)(?: \w+){{0,2}}? (?:out the window|against|if|unless|when)\b",
            r"\b(?:is|was|been|being|got|gets|get|has been|have been) (?:\w+ )?(?:abused|molested|raped|sexually assaulted|groomed|beaten up by|shaken)\b",
            r"\b(?:molest\w*|raped|raping|rapes|sexually abus\w+|sexually assault\w*|shaken baby|sextort\w*)\b",
            rf"\babus(?:es|ed|ing|ive to) {_VICTIM}",
            rf"\b{_ADULT} (?:\w+ ){{0,2}}?(?:is |was |has been |keeps |started )?groom(?:ing|ed|s) {_VICTIM}\b(?! (?:hair|pony|horse|dog|cat|pet|doll|puppy))",
            rf"\btouch(?:es|ed|ing)? {_VICTIM} (?:\w+ ){{0,2}}?(?:private|privates|inappropriately|down there|genitals|in a sexual way|sexually|where (?:i|he|she|they) (?:didnt|did not|dont|doesnt|do not|does not))",
            r"\btouch(?:es|ed|ing)? (?:my|his|her|their) (?:private|privates|private parts|private area|bum|butt|vagina|penis|genitals|chest|breasts|no no)\b",
            rf"\b(?:{_ADULT}|man|woman|stranger|someone|somebody|guy|older (?:boy|girl|kid|cousin)) (?:\w+ ){{0,2}}?(?:has been |keeps |is |was |kept )?touching {_VICTIM}\b(?! (?:hair|arm|shoulder|hand|head|back|cheek)\b)",
            rf"\b{_ADULT} (?:\w+ ){{0,6}}?(?:and )?(?:touches|touched) (?:me|him|her)$",
            rf"\b(?:makes|made|forces|forced|make|force|tells|told) {_VICTIM} (?:\w+ ){{0,2}}?(?:touch (?:him|her|his|them)|watch porn|undress|get naked|take (?:my|his|her|their|off) clothes|take off (?:my|his|her|their) clothes)",
            rf"\b(?:shows?|showed|showing|sends?|sent|sending|asks?|asked|asking|pressur\w+) {_VICTIM} (?:\w+ ){{0,3}}?(?:naked|nude|nudes|topless|explicit|sexual|sexy|dirty|porn\w*|privates|private parts|penis|genitals)\b",
            rf"\b(?:asks?|asked|asking|keeps asking|tells?|told) {_VICTIM} (?:to )?(?:meet (?:him|her|up)(?: \w+)? (?:alone|in secret|secretly|without)|keep (?:\w+ ){{0,2}}secrets? from)\b",
            r"\bexpos(?:ed|es|ing) (?:him|her|them)sel(?:f|ves) to\b",
            rf"\b{_ADULT} (?:\w+ ){{0,6}}?touch(?:es|ed|ing) (?:me|him|her)\b(?! (?:hair|arm|arms|shoulder|hand|hands|head|back|cheek|face|forehead|tummy|belly|nose|feet|foot|toes|knee|leg|chin|ear|fingers|on the|with|to|gently|lightly|softly|for)\b)",
            rf"\b(?:man|woman|stranger|someone|somebody|adult|guy|person|older (?:boy|man|guy|teen|kid))(?: \w+){{0,2}}? (?:is |was |keeps |has been |kept )?ask(?:s|ed|ing)? {_VICTIM} (?:to send|for|to take|to share) (?:\w+ )?(?:pictures|photos|pics|selfies|videos|images)\b",
            r"\bnot to tell (?:anyone|anybody|mom|mommy|mum|dad|daddy|you|us|me|her mom|his mom|their parents) (?:what|about what) (?:he|she|they) (?:does|did|do|is doing)\b",
            r"\b(?:does|did|doing|do) (?:bad |weird |strange |gross |scary )?things to (?:me|him|her|them)\b(?: that| which)? (?:hurt|hurts|i dont|he doesnt|she doesnt)",
            rf"\b(?:doesnt|dont|does not|do not|didnt) (?:like|want) (?:being|to be) alone with (?:{_ADULT}|him|that man|grandpa|her uncle|his uncle)\b",
            rf"\b{_ADULT} (?:\w+ ){{0,2}}?(?:leaves?|left|locks?|locked) {_VICTIM} (?:alone (?:for days|all day|all night|overnight|with no food|without food)|in (?:a|the|his|her|my) (?:closet|cupboard|car|basement|cage|room for days|shed|cellar))",
            rf"\b(?:leaves?|left|locks?|locked) {_VICTIM} (?:alone )?(?:for days|for \d+ days|with no food|without food)\b",
            rf"\b{_ADULT} (?:\w+ ){{0,2}}?(?:ties|tied|tying|chains?|chained) {_VICTIM} (?:up|to)\b",
            rf"\b(?:doesnt|dont|does not|do not|never|wont|refuses to) (?:feed|fed) {_VICTIM}",
            rf"\b(?:doesnt|dont|does not|do not|never|wont|refuses to) give {_VICTIM} (?:any )?food\b",
            rf"\bstarv(?:es|ed|ing) {_VICTIM}",
            rf"\bhold(?:s|ing)? (?:{_VICTIM}|his|her|their) (?:\w+ )?(?:head )?under (?:the )?water\b",
            r"\b(?:hand ?prints?|belt marks|cigarette burns|bite marks|finger marks|fingermarks) on (?:his|her|their|my)\b",
            r"\bbruises? (?:shaped like|in the shape of) (?:a |an )?(?:hand|belt|fingers|handprint)\b",
            r"\bhands? (?:in|down|inside|under) (?:his|her|my|their) (?:pants|underwear|knickers|shorts|skirt|pyjamas|pajamas)\b",
            rf"\b(?:afraid|scared|worried|terrified|frightened)(?: that)? (?:i (?:will|might|could|may|am going to|am gonna)|ill|id|im going to|im gonna|i am going to|my \w+ (?:will|might|could|is going to)) (?:\w+ )?(?:hurt|harm|shake|hit|smother|kill) {_VICTIM}\b",
            rf"\b(?:afraid|scared|worried|terrified|frightened)(?: that)? {_ADULT} (?:will|might|could|is going to|going to) (?:hurt|harm|shake|hit|smother|kill|beat) {_VICTIM}\b",
            rf"\b(?:i (?:want to|feel like|keep wanting to|am going to|almost)|im going to|im about to|i feel like i want to) (?:hurt|harm|shake|hit|smother|throw|smothering|shaking|hurting|hitting) (?:my (?:\w+ )?{_KID}|the baby|him|her)\b",
            rf"\bfeel (?:like|like i want to) (?:hurting|shaking|smothering|hitting|harming|strangling) (?:my (?:\w+ )?{_KID}|the baby)\b",
            r"\b(?:i|and|then) (?:shook|shake|hit|slapped|punched|kicked|choked) (?:my|the|our) (?:baby|infant|newborn)\b",
            r"\bshook (?:my|the|our) (?:baby|infant|newborn)\b(?! (?:rattle|bottle|formula|blanket|toy|monitor|seat|carrier|swing|food|awake gently))",
        ),
    ),
    (
        "medication_dosing",
        "dosing",
        _c(
            rf"\bhow (?:much|many) (?:\w+ ){{0,3}}?{_MED}\b",
            rf"\bhow (?:much|many) {_UNIT}\b",
            rf"^(?=.*\b{_MED}\b).*\bhow (?:much|many) (?:\w+ )?(?:do|should|can|could|would|to) (?:i |we |you )?give\b",
            rf"\b(?:what|whats|which|right|correct|proper|safe|maximum|max|recommended|usual|normal|typical)(?: is| s)?(?: the| a| his| her)?(?: right| correct| proper| safe| maximum| max| recommended| usual| normal| typical| daily| starting)? (?:dose|dosage|doses|dosing|amount of {_MED})\b",
            rf"\b(?:dose|dosage|dosing|doses)(?: chart)? (?:of|for) (?:\w+ ){{0,3}}?{_MEDNAME}\b",
            r"\b(?:dose|dosage|dosing|doses)(?: chart)? for (?:an? |my |our |the )?(?:\d+ ?(?:year|month|yr|kg|kilo|lb|pound|yo|y o)\w*|(?:toddler|baby|infant|child|kid|son|daughter|\d+ year old|under \d+)s?)\b",
            rf"\bdouble up (?:on )?(?:\w+ ){{0,2}}?{_MED}\b",
            rf"\b(?:max|maximum|safe|right|correct|recommended) (?:amount of |dose of |daily )?{_MEDNAME}\b",
            rf"\b(?:right|correct|proper|safe|max|maximum|recommended|usual) (?:number of )?(?:{_UNIT}|amount|dose|dosage) (?:of|for) (?:\w+ ){{0,2}}?{_MED}\b",
            rf"\b{_MEDNAME} (?:dose|dosage|dosing|doses|amount)(?: (?:for|by|per|chart|table|calculator|\d)\b|$)",
            rf"\b(?:can|should|could|do) i give (?:\w+ ){{0,4}}?(?:\d+(?:\.\d+)? ?{_UNIT}|(?:half|a half|a whole|two|three|another|more|extra|a second|a double|double|a full|an adult) (?:\w+ )?(?:{_MED}|{_UNIT}|mls?|dose|doses))\b",
            rf"\b(?:can|should|could|is it (?:ok|okay|safe|fine) to|is it (?:ok|okay|safe|fine) if i) (?:i )?give (?:\w+ ){{0,8}}?{_MEDNAME}\b",
            rf"\b(?:can|should|could|may|is it (?:ok|okay|safe|fine) (?:for|if)) (?:he|she|they|(?:my|our|a|an|the) (?:\w+ ){{0,3}}?{_KID}|kids) (?:have|take|get|be given|use) (?:\w+ ){{0,3}}?(?:{_MEDNAME}|\d+(?:\.\d+)? ?{_UNIT}|another dose|more {_MED}|extra {_MED}|a double dose|double)\b",
            rf"\b(?:can|should|could) i (?:take|have) (?:\w+ ){{0,2}}?(?:\d+ |{_MEDNAME})",
            rf"\bis it (?:ok|okay|safe|fine|bad) (?:to|if i) (?:take|give) (?:\w+ ){{0,3}}?(?:\d+ (?:\w+ )?(?:{_MED}|{_UNIT})|{_MEDNAME})",
            r"\b(?:\d+(?:\.\d+)? ?)?(?:mg|ml|milligrams?) (?:per|a|for each|for every) (?:kg|kilo|kilogram|pound|lb)\b",
            rf"\bhow (?:often|frequently|many times a day|soon|long) (?:\w+ )?(?:can|should|do|could|before) (?:i|we|you) (?:give|repeat) (?:\w+ ){{0,3}}?(?:{_MED}|it again|another)\b",
            rf"\b(?:how (?:long|many hours|much time)|hours?|time) (?:\w+ )?between (?:\w+ ){{0,2}}?(?:doses|dose|{_MED})\b",
            rf"\b(?:mix|combine|alternate|alternating) (?:\w+ ){{0,2}}?{_MEDNAME} (?:and|with) {_MEDNAME}\b",
            rf"\b\d+(?:\.\d+)? ?{_UNIT} (?:of )?(?:\w+ ){{0,2}}?{_MED}\b(?: \w+){{0,4}}? (?:too much|too many|too little|enough|safe|ok|okay|right|correct|fine)\b",
            r"\b\d+(?:\.\d+)? ?(?:mg|milligrams?|puffs?|tablets?|pills?|capsules?)\b(?: \w+){0,4}? (?:too much|too many|too little|enough|safe|ok|okay|right|correct|fine)\b",
            rf"\b\d+(?:\.\d+)? ?(?:mg|ml|mls|milligrams?|tsp|teaspoons?|drops|puffs?|tablets?)\b(?: \w+){{0,6}}? (?:but|or|vs|versus|instead of) (?:\w+ ){{0,4}}?\d+(?:\.\d+)? ?{_UNIT}\b",
            r"\b(?:missed|skipped|forgot|forgotten|forgot to give) (?:\w+ ){0,3}?dose\b",
            rf"\b(?:next|missed|skipped|forgotten|extra|double|second) dose (?:of )?(?:\w+ ){{0,2}}?{_MED}\b",
            r"\b(?:double|repeat|redo) (?:the|a|his|her|that) (?:next |missed |last )?(?:dose|one)\b",
            r"\b(?:give|repeat|redo|take) (?:\w+ ){0,2}?(?:the |her |his |another |a )?(?:dose|doses|medicine|medication|antibiotic\w*|\w+ dose) again\b",
            r"\b(?:half|a half|quarter|a quarter|a third) (?:a |of a |an |of an )?(?:adult )?(?:tablet|pill|capsule|dose)\b",
            r"\b(?:cut|split|break|halve) (?:\w+ ){0,3}?(?:tablet|pill|capsule)s? (?:in half|in two|into (?:half|halves|quarters))\b",
            r"\bwhat (?:medicine|medication|meds|painkiller|pain relief|fever reducer|\w+ medicine) (?:\w+ )?(?:can|should|could|do) (?:i|we) give\b",
            r"\bwhat (?:can|should|could) (?:i|we) give (?:\w+ ){0,3}?for (?:\w+ )?(?:fever|pain|temperature|cough|cold|teething|allergies|congestion|diarrhea|diarrhoea|vomiting|earache|ear infection|headache|rash|itching|itchiness|hay fever)\b",
        ),
    ),
]

# "what are the signs of carbon monoxide poisoning?" asks for knowledge, not help now. A bare
# "what do I do if he stops breathing" still gets the emergency answer: panicked parents type
# it that way too, and calling the emergency number is the right first step either way.
_HYPOTHETICAL = re.compile(
    r"\b(?:signs? (?:that|of)|symptoms of|prevent|preventing|avoid|avoiding|risk of|chance of)"
    r"(?: \w+){0,4}$"
)

_ANSWERS = {
    "crisis": (
        "I'm really glad you reached out, and I'm sorry things feel this hard right now. You "
        "don't have to face this alone. If anyone is in immediate danger, call {emergency} now. "
        "You can talk to someone trained to help through {crisis_line}. If this is about your "
        "child, stay close to them, keep medicines and sharp objects out of reach, and contact "
        "their doctor or a mental health professional as soon as you can."
    ),
    "abuse": (
        "Thank you for telling me; that takes courage, and it matters. If a child is in danger "
        "right now, call {emergency}. You can talk it through with {child_protection_line}, who "
        "can explain what to do next. Keep your child near adults they trust, believe them if "
        "they tell you something, and let their doctor check on them. If you are worried you "
        "might hurt your child, put them somewhere safe, step away for a moment and call for "
        "support; asking for help is the right thing to do."
    ),
    "medical_emergency": (
        "This could be an emergency, so please call {emergency} now and follow what they tell "
        "you. Stay with your child, keep them safe from falling or hitting anything, and don't "
        "give them food, drink or medicine unless told to. If they may have swallowed something "
        "harmful, contact {poison_line} too, keep the packaging with you, and don't make them "
        "vomit. I'm not able to help with emergencies here."
    ),
    "medication_dosing": (
        "I can't give medicine doses, because the right amount depends on your child's exact "
        "weight, age and health and on the strength of the product. Please follow the label and "
        "check with a pharmacist or {medical_advice_line}. If your child may have taken too "
        "much, contact {poison_line} straight away, or call {emergency} if they seem very unwell."
    ),
}

# Which resource fields each fixed answer must carry (checked by the tests).
ANSWER_FIELDS = {
    "crisis": ("emergency", "crisis_line"),
    "abuse": ("emergency", "child_protection_line"),
    "medical_emergency": ("emergency", "poison_line"),
    "medication_dosing": ("emergency", "poison_line", "medical_advice_line"),
}

# --------------------------------------------------------------------------- after the model

_DIAG_NOTE = (
    "Only a qualified professional, such as your pediatrician or a child psychologist, can tell "
    "whether a child has {cond}; if what you're seeing continues or worries you, it is worth "
    "asking one for an assessment."
)
_SUBJ = (
    r"(?:(?:your|the) (?:son|daughter|child|kid|little one|toddler|baby|boy|girl|teen|teenager|"
    r"preschooler|little boy|little girl)|he|she|they|{nick})"
)
_HEDGE = (r"\b(?:if|whether|only a|cant tell|cannot tell|can not tell|not possible to|doesnt mean|"
          r"does not mean|dont mean|not necessarily|rule out|ruled out|children with|kids with|"
          r"some children|many children|any child|assess|evaluat|screen|no way to know|"
          r"would need|professional can|doctor can|not a sign|isnt a sign|not signs?|"
          r"too early|cant say|cannot say|can not say|not sure)\b")  # fmt: skip
_ABBREV = {"adhd", "add", "asd", "ocd", "odd", "ptsd"}
_ADV = (
    r"(?:(?:most |very |quite )?(?:likely|probably|clearly|definitely|certainly|obviously|"
    r"almost certainly|may|might|could|does|must|also|still|already|really|actually|truly|"
    r"undoubtedly|surely|plainly) )*"
)
_FILL = (
    r"(?:an?|the|most|very|quite|probably|likely|clearly|definitely|certainly|obviously|"
    r"textbook|classic|typical|clear|strong|real|all|just|simply|basically|almost|surely)"
)
_SIGNS = r"(?:(?:signs?|symptoms?|case|form|type|hallmarks?|indicators?|features?) of )"


@lru_cache(maxsize=512)
def _claim_patterns(nickname: str | None) -> tuple[re.Pattern[str], ...]:
    nick = re.escape(_norm_out(nickname)) if nickname and _norm_out(nickname) else r"(?!x)x"
    subj = _SUBJ.format(nick=nick)
    these = (
        rf"(?:this|that|it|these|those|what you describe|what youre describing|"
        rf"what you are describing|what youve described|(?:his|her|their|{nick} s) "
        r"(?:behaviou?rs?|symptoms|signs|traits|struggles|difficulties))(?: (?:behaviou?rs?|symptoms|signs|traits))?"
    )
    verbs = (
        r"(?:is|s|are|sounds like|sound like|looks like|look like|seems like|seem like|"
        r"points to|point to|indicates|indicate|suggests|suggest|is consistent with|"
        r"are consistent with|is typical of|are typical of|is characteristic of|"
        r"are characteristic of|fits|fit)"
    )
    return tuple(
        _c(
            rf"\b{subj} {_ADV}(?:has|have|s got|has got|got|is suffering from|s suffering from|suffers from|(?:is |s )?showing (?:\w+ ){{0,2}}?(?:signs|symptoms) of|shows (?:\w+ ){{0,2}}?(?:signs|symptoms) of|has (?:\w+ ){{0,2}}?(?:signs|symptoms) of|meets the criteria for|fits the criteria for|is dealing with|struggles with|is living with|lives with) (?P<cond>{_COND})\b",
            rf"\b{subj} {_ADV}(?:is suffering from|s suffering from|suffers from) (?P<cond>(?:severe |clinical |social )?(?:anxiety|depression))\b",
            rf"\b{subj} (?:(?:is|s|seems|appears|sounds|looks) (?:to be )?|(?:may|might|could|must|will|would|probably|likely|definitely|clearly|also) (?:\w+ )?be ){_ADV}(?:a bit |somewhat )?(?P<cond>autistic|dyslexic|bipolar|depressed|on the (?:autism |autistic )?spectrum)\b",
            rf"\b{these} {verbs}(?: {_FILL})* {_SIGNS}?(?P<cond>{_COND})\b",
            rf"^(?:(?:it|this|that) )?(?:sounds|looks|seems) like(?: {_FILL})* {_SIGNS}?(?P<cond>{_COND})\b",
            rf"^(?:classic|textbook|definitely|clearly|obviously|typical|probably) (?P<cond>{_COND})$",
            rf"\b(?P<cond>{_COND}) is what {subj} (?:has|have|is dealing with|s dealing with|s got)\b",
            r"\b(?:i|we) (?:would |can |will |could |d )?(?:diagnose|am diagnosing|have diagnosed)\b",
            r"\b(?:my|this|a likely|the likely|the most likely|the obvious|my likely) diagnosis (?:is|would be|here is|s)\b",
        )
    )


def _split_sentences(text: str) -> list[str]:
    parts = re.findall(r"[^.!?\n]+(?:[.!?]+[\"')\]]*)?[ \t]*|[.!?]+[ \t]*|\n+", text)
    return parts if "".join(parts) == text else [text]


_COND_NOUN = {
    "autistic": "autism",
    "on the autism spectrum": "autism",
    "on the autistic spectrum": "autism",
    "on the spectrum": "autism",
    "dyslexic": "dyslexia",
    "bipolar": "bipolar disorder",
    "depressed": "depression",
    "tourette": "Tourette syndrome",
    "tourettes": "Tourette syndrome",
    "tourette s": "Tourette syndrome",
    "tourette syndrome": "Tourette syndrome",
    "tourettes syndrome": "Tourette syndrome",
    "tourette s syndrome": "Tourette syndrome",
    "asperger": "Asperger syndrome",
    "aspergers": "Asperger syndrome",
    "asperger s": "Asperger syndrome",
    "asperger syndrome": "Asperger syndrome",
    "aspergers syndrome": "Asperger syndrome",
    "asperger s syndrome": "Asperger syndrome",
}


def _note(cond: str) -> str:
    cond = _COND_NOUN.get(cond, cond) or "a condition like this"
    return _DIAG_NOTE.format(cond=cond)


# Replies about development get one short note (see developmental_note).
_DEV_TOPIC = re.compile(
    r"\b(?:develop\w*|milestones?|learn\w*|attention|attentive|focus\w*|concentrat\w*|"
    r"distract\w*|behaviou?r\w*|tantrums?|meltdowns?|emotion\w*|feelings|anxious|anxiety|"
    r"frustrat\w*|self (?:control|regulation|esteem|confidence)|regulat\w*|speech|language|"
    r"vocabulary|first words|talkers?|babbl\w*|motor skills|crawl\w*|walking|social skills|"
    r"memory|executive function\w*|impuls\w*|hyperactiv\w*|reading|literacy|numeracy|delays?|"
    r"delayed|regress\w*|on track|for (?:his|her|their) age|age appropriate|adhd|autis\w*|"
    r"dyslexi\w*|dyspraxi\w*|spectrum|sensory|shy|shyness|separation anxiety)\b"
)
_HAS_NOTE = re.compile(
    r"\b(?:not a diagnosis|isnt a diagnosis|is not a diagnosis|cant diagnose|cannot diagnose|"
    r"can not diagnose|not able to diagnose|unable to diagnose|dont diagnose|do not diagnose|"
    r"only a (?:qualified )?(?:professional|doctor|pediatrician|paediatrician|specialist|clinician)|"
    r"(?:pediatrician|paediatrician|doctor|gp|professional|specialist|psychologist|health visitor|"
    r"clinician|therapist) can (?:assess|evaluate|check|tell|screen|diagnose|look at|take a)|"
    r"general guidance)\b"
)
_DEV_NOTE = "This is general guidance, not a diagnosis; if you're worried, {who} doctor can take a closer look."


def developmental_note(nickname: str | None = None) -> str:
    """The short 'not a diagnosis' sentence, naming the child by nickname when there is one."""
    nick = " ".join(prompt_text(nickname or "").split())
    if not nick or len(nick) > 40 or not any(ch.isalpha() for ch in nick) or "{" in nick:
        return _DEV_NOTE.format(who="your child's")
    return _DEV_NOTE.format(who=f"{nick}'s")


def talks_about_development(text: str) -> bool:
    """Whether a reply talks about development, learning, attention, behaviour, emotions..."""
    return any(_DEV_TOPIC.search(_norm_out(s)) for s in _split_sentences(text))


def has_developmental_note(text: str) -> bool:
    """Whether a reply already says it is not a diagnosis or points to a professional."""
    return any(_HAS_NOTE.search(_norm_out(s)) for s in _split_sentences(text))


def needs_developmental_note(text: str) -> bool:
    """A reply about development without a note yet (see developmental_note)."""
    return talks_about_development(text) and not has_developmental_note(text)


class SafetyGuard:
    """Fixed answers with one country's help lines; see the module docstring."""

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
                    # "signs of poisoning" is a question for the model (see _HYPOTHETICAL)
                    if category == "medical_emergency" and _HYPOTHETICAL.search(
                        text[: m.start()].rstrip()
                    ):
                        continue
                    return SafetyVerdict(category, self._answers[category], reason)
        return None

    def sentence_claim(self, sentence: str, *, nickname: str | None = None) -> str | None:
        """The condition a sentence claims the child has ("" if unnamed), else None."""
        text = _norm_out(sentence)
        for p in _claim_patterns(nickname or None):
            m = p.search(text)
            if m and not re.search(_HEDGE, text[: m.start()]):
                cond = m.groupdict().get("cond") or ""
                return cond.upper() if cond in _ABBREV else cond
        return None

    def check_output(self, text: str, *, nickname: str | None = None) -> tuple[str, str | None]:
        """(reply, "diagnostic_claim") with claiming sentences rewritten, or (text, None).

        The developmental note is not added here; see `needs_developmental_note`.
        """
        parts = _split_sentences(text)
        out: list[str] = []
        noted = False
        for part in parts:
            cond = self.sentence_claim(part, nickname=nickname)
            if cond is None:
                out.append(part)
                continue
            if not noted:
                tail = part[len(part.rstrip()) :]
                out.append(_note(cond) + tail)
                noted = True
        if not noted:
            return text, None
        return "".join(out).strip(), "diagnostic_claim"


class OutputStreamGuard:
    """Applies `check_output` to streamed text one sentence at a time.

    `feed` returns the text that is safe to send now (whole sentences); `finish` the rest,
    followed by `developmental_note` when the reply talked about development and carried no
    such note. `category` is "diagnostic_claim" once a sentence was rewritten (never for the
    note alone); `developmental_note_added` says whether the note was appended.
    """

    def __init__(self, guard: SafetyGuard, *, nickname: str | None = None) -> None:
        self._guard = guard
        self._nickname = nickname
        self._buffer = ""
        self._noted = False
        self._topic = False
        self._has_note = False
        self._last = ""
        self.category: str | None = None
        self.developmental_note_added = False

    def _emit(self, sentence: str) -> str:
        cond = self._guard.sentence_claim(sentence, nickname=self._nickname)
        if cond is None:
            out = sentence
        else:
            self.category = "diagnostic_claim"
            if self._noted:
                return ""
            self._noted = True
            out = _note(cond) + sentence[len(sentence.rstrip()) :]
        norm = _norm_out(out)
        self._topic = self._topic or bool(_DEV_TOPIC.search(norm))
        self._has_note = self._has_note or bool(_HAS_NOTE.search(norm))
        if out:
            self._last = out[-1]
        return out

    def feed(self, chunk: str) -> str:
        self._buffer += chunk
        parts = _split_sentences(self._buffer)
        # the last part may be an unfinished sentence: keep it unless it ends a sentence
        complete = re.search(r"(?:[.!?][\"')\]]*[ \t]+|\n)$", self._buffer)
        done = parts if complete else parts[:-1]
        self._buffer = "".join(parts[len(done) :])
        return "".join(self._emit(p) for p in done)

    def finish(self) -> str:
        rest, self._buffer = self._buffer, ""
        out = self._emit(rest) if rest else ""
        if self._topic and not self._has_note and not self.developmental_note_added:
            self.developmental_note_added = True
            sep = "" if not self._last or self._last.isspace() else " "
            out += sep + developmental_note(self._nickname)
        return out


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
