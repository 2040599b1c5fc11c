"""Safety guard around the model: fixed answers for risky messages, no diagnoses in replies.

`check_input` runs before the model. Crisis (self-harm or suicide, child or parent), abuse or
neglect disclosures, medical emergencies and medication-dosing questions get a fixed, warm
answer carrying the configured country's help lines; the model is not called.
`check_output` runs on the reply and rewrites sentences that state a diagnosis.

Detection is English phrase lists and regular expressions over a normalised text (lower
case, apostrophes dropped, punctuation as spaces). It leans towards answering with help lines
when in doubt, but avoids common figures of speech ("killing it at math").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from services.inference.planner import ConfigError

__all__ = [
    "CATEGORIES",
    "CountryResources",
    "OutputStreamGuard",
    "SafetyGuard",
    "SafetyVerdict",
    "load_resources",
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


def _norm(text: str) -> str:
    text = text[:_SCAN_CHARS].lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"(?<=\w)'(?=\w)", "", text)  # can't -> cant, he's -> hes
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _c(*patterns: str) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


_KID = r"(?:son|daughter|child|children|kids?|baby|infant|newborn|toddler|boy|girl|little one|teen|teenager|twins?)"
_VICTIM = rf"(?:him|her|them|me|us|(?:my|our|the|his|her) {_KID})"
_ADULT = (
    r"(?:(?:my|his|her|their|our|the) )?(?:dad|daddy|father|stepdad|stepfather|step dad|mom|"
    r"mommy|mum|mother|stepmom|stepmum|stepmother|boyfriend|girlfriend|partner|husband|wife|"
    r"ex|ex husband|ex wife|uncle|aunt|grandpa|grandfather|grandma|grandmother|teacher|coach|"
    r"babysitter|nanny|neighbou?r|priest|caregiver|carer|tutor|foster \w+)"
)
_SELF = r"(?:my|him|her|them|your)sel(?:f|ves)"
_MEDNAME = (
    r"(?:tylenol|acetaminophen|paracetamol|calpol|panadol|ibuprofen|advil|motrin|nurofen|"
    r"aspirin|benadryl|diphenhydramine|zyrtec|cetirizine|claritin|loratadine|allegra|"
    r"melatonin|antihistamines?|antibiotics?|amoxicillin|augmentin|azithromycin|"
    r"cough (?:syrup|medicine)|cold medicine|fever (?:medicine|reducer)|pain ?killers?|"
    r"ritalin|methylphenidate|adderall|concerta|vyvanse|guanfacine|clonidine|sertraline|"
    r"zoloft|fluoxetine|prozac|risperidone|prednisone|prednisolone|steroids?|miralax|"
    r"laxatives?|dramamine|imodium|loperamide|albuterol|ventolin|insulin|iron supplements?)"
)
_MED = rf"(?:{_MEDNAME}|medicines?|medications?|meds|syrup|drops|tablets?|pills?|suppositor(?:y|ies)|gummies|doses?)"
_UNIT = r"(?:mg|ml|mls|milligrams?|millilit(?:er|re)s?|teaspoons?|tsp|tablespoons?|tablets?|pills?|drops|puffs|units|capsules?)"
_HARMFUL = (
    r"(?:bleach|detergent|laundry (?:pod|pods|capsule|capsules)|dishwasher (?:tablet|tablets|pod|pods)|"
    r"cleaning (?:product|products|fluid|liquid|spray)|chemicals?|poison|rat poison|pesticides?|"
    r"weed killer|antifreeze|paint thinner|lamp oil|kerosene|gasoline|petrol|lighter fluid|"
    r"drain cleaner|oven cleaner|batter(?:y|ies)|button batter(?:y|ies)|magnets?|nicotine|"
    r"vape (?:liquid|juice)|e liquid|alcohol|vodka|whiskey|wine|mouthwash|essential oils?|"
    r"hand sanitizer|wild mushrooms?|cannabis|edibles?)"
)
_LOTS = (
    r"(?:some|several|a handful of|a bunch of|a lot of|lots of|all (?:of )?(?:the|my|his|her)|"
    r"the whole (?:bottle|pack|packet|box) of|too many|too much|an? (?:entire |whole )?"
    r"(?:bottle|pack|packet|box|sheet|strip) of|my|mommys|daddys|grandmas|grandpas|\d+)"
)
_COND = (
    r"(?:adhd|add|asd|ocd|odd|ptsd|attention deficit(?: hyperactivity)?(?: disorder)?|"
    r"autism(?: spectrum disorder)?|aspergers?(?: syndrome)?|dyslexia|dyscalculia|dyspraxia|"
    r"dysgraphia|(?:clinical |major )?depression|bipolar(?: disorder)?|tourettes?(?: syndrome)?|"
    r"oppositional defiant disorder|obsessive compulsive disorder|selective mutism|"
    r"schizophrenia|anorexia|bulimia|apraxia|sensory processing disorder|"
    r"an? (?:anxiety|mood|eating|learning|language|speech|conduct|attachment|personality|"
    r"developmental|attention|processing|behaviou?r(?:al)?) (?:disorder|disability|delay)|"
    r"(?:an? )?(?:generali[sz]ed )?anxiety disorder|an? intellectual disability|"
    r"an? developmental delay|an? learning disability)"
)

_INPUT_RULES: list[tuple[str, str, list[re.Pattern[str]]]] = [
    (
        "medical_emergency",
        "poisoning",
        _c(
            rf"\b(?:swallowed|swallow|ate|eaten|drank|drunk|ingested|chewed|licked|got into|sucked on)\b(?: \w+){{0,3}}? {_HARMFUL}\b",
            rf"\b(?:swallowed|ate|eaten|drank|drunk|took|taken|ingested|chewed|got into)\b (?:\w+ )?{_LOTS} (?:\w+ ){{0,2}}?{_MED}\b",
            r"\b(?:overdose|overdosed|overdosing|poisoned|poisoning)\b",
            r"\b(?:double dose|two doses|too much|too many)\b(?: \w+){0,3}? (?:by mistake|by accident|accidentally)\b",
            r"\b(?:accidentally|by mistake) gave (?:\w+ ){1,3}?(?:too much|too many|a double dose|double|two doses|the wrong)\b",
            r"\bgot into (?:the |my |our )?(?:medicine|medicines|cleaning|chemical|chemicals)(?: \w+)? (?:cabinet|cupboard|supplies|drawer|bag)\b",
        ),
    ),
    (
        "medical_emergency",
        "breathing",
        _c(
            r"\b(?:not|isnt|is not|wasnt|stopped|stops|cant|can not|cannot|struggling to|struggles to|trouble|difficulty|hard time|fighting to)\s+breath(?:e|ing)\b(?! through)",
            r"\bgasping(?: for (?:air|breath))?\b",
            r"\b(?:lips|face|skin|mouth) (?:is |are |has |have |went |turned |turning |going |gone )*(?:blue|grey|gray)\b",
        ),
    ),
    (
        "medical_emergency",
        "seizure",
        _c(
            r"\b(?:having|has|had just|just had) (?:a |another )?(?:seizure|convulsion|febrile seizure)s?\b(?!(?: \w+)? (?:last|ago|before|in the past|when (?:he|she) was))",
            r"\b(?:is|hes|shes|started|starts|keeps|has been|was|wont stop) (?:seizing|convulsing|fitting)\b(?! in)",
            r"\b(?:jerking|twitching|shaking) (?:and|but) (?:wont|isnt|not|cant) (?:respond|wake|stop)",
        ),
    ),
    (
        "medical_emergency",
        "unresponsive",
        _c(
            r"\b(?:unresponsive|unconscious|passed out|blacked out|went limp|gone limp|is limp|floppy and)\b",
            r"\b(?:wont|will not|cant|can not|cannot|couldnt) (?:wake (?:him|her|them|my \w+)(?: up)?|wake up|be woken|rouse)\b(?! (?:for|in|on|early|before|until|till|when|at|after|without|by))",
            r"\bnot (?:waking up|responding|breathing)\b(?! (?:to|for|in|on|when))",
            r"\b(?:isnt|is not|wasnt|stopped) responding\b(?! (?:to|for|when))",
            r"\b(?:fell|hit|banged) (?:\w+ ){0,3}head (?:\w+ ){0,4}(?:vomit|throwing up|drowsy|confused|unconscious)",
        ),
    ),
    (
        "medical_emergency",
        "choking",
        _c(
            r"\b(?:is|hes|shes|was|started|keeps|(?:baby|toddler|son|daughter|child|kid)s?) choking\b(?! (?:hazard|risk|on (?:his|her) (?:food|words)))",
            r"\b(?:stuck|lodged) in (?:his|her|their|the) (?:throat|windpipe|airway)\b",
        ),
    ),
    (
        "crisis",
        "suicide",
        _c(
            r"\bsuicid(?:e|al|ally)\b(?! squad)",
            rf"\bkill (?:{_SELF}|me)\b",
            rf"\bkilled {_SELF}\b",
            rf"\bkilling {_SELF}\b(?! (?:trying|to|working|laughing|with|over|doing|for))",
            r"\b(?:want|wants|wanted|wanting|wish|wishes|wished|going|gonna|ready) to (?:die|be dead|not be alive|not exist|disappear forever|never wake up|end it)\b",
            r"\b(?:wish|wishes|wished) (?:i|he|she|they) (?:was|were) (?:dead|never born|not alive|gone)\b",
            r"\b(?:doesnt|dont|does not|do not|didnt|did not|no longer) want to (?:live|be alive|be here anymore|exist|wake up)\b",
            r"\b(?:end|ending|take|taking) (?:my|his|her|their) (?:own )?life\b",
            r"\b(?:end it all|better off dead|better off without me|no reason to live|no point (?:in )?living|nothing to live for)\b",
            r"\b(?:cant|cannot|can not) (?:go on|keep going|do this) (?:anymore|any more|any longer|like this)\b",
            r"\b(?:hang|hanging|drown|drowning|strangle|strangling|shoot|shooting) (?:my|him|her|them)sel(?:f|ves)\b",
        ),
    ),
    (
        "crisis",
        "self_harm",
        _c(
            r"\bself ?(?:harm|harming|injury|injuring|injure|mutilat\w*)\b",
            rf"\b(?:want|wants|wanted|trying|tried|try|going|gonna|threaten\w*|thinking about|thinking of|thought about|talks about|talked about|talking about|planning|plans|urge) (?:to )?(?:kill|hurt|harm|cut|burn|starve|punish)(?:ing)? {_SELF}\b",
            rf"\b(?:hurt|hurts|hurting|harm|harms|harming|cut|cuts|cutting|burn|burns|burning|scratch\w*|hit|hits|hitting|bang\w*) {_SELF} (?:on purpose|deliberately|intentionally|to feel)\b",
            rf"\b(?:cutting|cuts) {_SELF}\b",
            r"\bcuts? (?:on|all over) (?:his|her|their|my) (?:wrists?|arms?|thighs?|legs?)\b",
        ),
    ),
    (
        "abuse",
        "abuse",
        _c(
            rf"\b{_ADULT} (?:\w+ ){{0,2}}?(?:hits?|hitting|beats?|beating|beaten|punch(?:es|ed|ing)?|kicks?|kicked|kicking|slaps?|slapped|slapping|chokes?|choked|choking|strangl\w+|burns?|burned|burnt|burning|whips?|whipped|whipping|shakes?|shook|throws?|threw) {_VICTIM}\b",
            r"\b(?:is|was|been|being|got|gets|get) (?:\w+ )?(?:abused|molested|raped|sexually assaulted|groomed|beaten up by)\b",
            r"\b(?:molest\w*|raped|raping|rapes|sexually abus\w+|shaken baby)\b",
            rf"\babus(?:es|ed|ing|ive to) {_VICTIM}\b",
            rf"\btouch(?:es|ed|ing)? {_VICTIM} (?:\w+ ){{0,2}}?(?:private|privates|inappropriately|down there|genitals|in a sexual way|sexually)\b",
            rf"\b(?:makes|made|forces|forced) {_VICTIM} (?:\w+ ){{0,2}}?(?:touch (?:him|her)|watch porn|undress)\b",
            rf"\b{_ADULT} (?:\w+ ){{0,2}}?(?:leaves?|left|locks?|locked) {_VICTIM} (?:alone (?:for days|all day|all night|overnight)|in (?:a|the|his|her) (?:closet|cupboard|car|basement|cage))\b",
            rf"\b(?:doesnt|dont|does not|do not|never|wont|refuses to) (?:feed|fed) {_VICTIM}\b",
            rf"\bstarv(?:es|ed|ing) {_VICTIM}\b",
            rf"\b(?:afraid|scared|worried|terrified|frightened)(?: that)? (?:i (?:will|might|could|may|am going to|am gonna)|ill|id|im going to|im gonna) (?:\w+ )?(?:hurt|harm|shake|hit|smother) {_VICTIM}\b",
            rf"\b(?:i (?:want to|feel like|keep wanting to|am going to|almost)|im going to|im gonna|im about to) (?:hurt|harm|shake|hit|smother|throw) (?:my {_KID}|the baby|him|her)\b",
            r"\bi (?:shook|shake|hit|slapped|punched|kicked|choked) (?:my|the) (?:baby|infant|newborn)\b",
        ),
    ),
    (
        "medication_dosing",
        "dosing",
        _c(
            rf"\bhow (?:much|many) (?:\w+ ){{0,3}}?{_MED}\b",
            rf"\bhow (?:much|many) {_UNIT}\b",
            rf"\b(?:what|whats|which|right|correct|proper|safe|maximum|max|recommended|usual|normal|typical|daily)(?: is| s)?(?: the| a| his| her)?(?: right| correct| proper| safe| maximum| max| recommended| usual| normal| typical)? (?:dose|dosage|doses|dosing|amount of {_MED})\b",
            rf"\b(?:dose|dosage|dosing|doses)(?: chart)? (?:of|for) (?:\w+ ){{0,3}}?(?:{_MEDNAME}|\d+ ?(?:year|month|yr|kg|kilo|lb|pound|yo|y o)\w*|(?:an? |my |our )?(?:toddler|baby|infant|child|kid|son|daughter|\d+ year old)s?)\b",
            rf"\b(?:can|should|could|do) i give (?:\w+ ){{0,4}}?(?:\d+(?:\.\d+)? ?{_UNIT}|(?:half|a half|a whole|two|three|another|more|extra|a second|a double|double|a full|an adult) (?:\w+ )?(?:{_MED}|{_UNIT}|mls?|dose|doses))\b",
            rf"\b(?:can|should|could|is it (?:ok|okay|safe|fine) to|is it (?:ok|okay|safe|fine) if i) (?:i )?give (?:\w+ ){{0,4}}?{_MEDNAME}\b",
            r"\b(?:\d+(?:\.\d+)? ?)?(?:mg|ml|milligrams?) (?:per|a|for each|for every) (?:kg|kilo|kilogram|pound|lb)\b",
            rf"\bhow (?:often|frequently|many times a day) (?:can|should|do|could) (?:i|we|you) give (?:\w+ ){{0,3}}?{_MED}\b",
            rf"\b(?:mix|combine|alternate|alternating) (?:\w+ ){{0,2}}?{_MEDNAME} (?:and|with) {_MEDNAME}\b",
        ),
    ),
]

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

_DIAG_NOTE = (
    "Only a qualified professional, such as your pediatrician or a child psychologist, can tell "
    "whether a child has {cond}; if what you're seeing continues or worries you, it is worth "
    "asking one for an assessment."
)
_SUBJ = r"(?:your (?:son|daughter|child|kid|little one|toddler|baby|boy|girl|teen|teenager)|he|she|they|{nick})"
_HEDGE = (r"\b(?:if|whether|only a|cant tell|cannot tell|can not tell|not possible to|doesnt mean|"
          r"does not mean|dont mean|not necessarily|rule out|ruled out|children with|kids with|"
          r"some children|many children|any child|assess|evaluat|screen|no way to know|"
          r"would need|professional can|doctor can|not a sign|isnt a sign|not signs?)\b")  # fmt: skip
_ABBREV = {"adhd", "add", "asd", "ocd", "odd", "ptsd"}


def _claim_patterns(nickname: str | None) -> list[re.Pattern[str]]:
    nick = re.escape(_norm(nickname)) if nickname and _norm(nickname) else r"(?!x)x"
    subj = _SUBJ.format(nick=nick)
    adv = r"(?:(?:most |very |quite )?(?:likely|probably|clearly|definitely|certainly|obviously|almost certainly|may|might|could|does|must|also|still|already|really|actually) )*"
    return _c(
        rf"\b{subj} {adv}(?:has|have|is suffering from|suffers from|is showing (?:\w+ )?signs of|shows (?:\w+ )?signs of|meets the criteria for|fits the criteria for|is dealing with|struggles with) (?P<cond>{_COND})\b",
        rf"\b{subj} (?:is|s|seems|appears|sounds|looks) (?:to be )?{adv}(?:a bit |somewhat )?(?P<cond>autistic|dyslexic|bipolar|depressed|on the (?:autism|autistic) spectrum)\b",
        rf"\b(?:this|that|it|these|those|what you describe|what youre describing)(?: behaviou?rs?)? (?:is|are|sounds like|sound like|looks like|look like|seems like|seem like|points to|point to|indicates|indicate|suggests|suggest)(?: \w+){{0,2}}? (?:signs? of |symptoms? of |a case of )?(?P<cond>{_COND})\b",
        rf"\b(?:classic|clear|definite|obvious|textbook|typical|strong) (?:signs?|symptoms?|case|indicators?) of (?P<cond>{_COND})\b",
        r"\b(?:i|we) (?:would |can |will |could )?(?:diagnose|am diagnosing|have diagnosed)\b",
        r"\b(?:my|the|a|this) diagnosis (?:is|would be|here is)\b",
    )


def _split_sentences(text: str) -> list[str]:
    parts = re.findall(r"[^.!?\n]+(?:[.!?]+[\"')\]]*)?[ \t]*|[.!?]+[ \t]*|\n+", text)
    return parts if "".join(parts) == text else [text]


class SafetyGuard:
    """Fixed answers with one country's help lines; see the module docstring."""

    def __init__(self, resources: CountryResources) -> None:
        self.resources = resources
        values = {f.name: getattr(resources, f.name) for f in fields(resources)}
        self._answers = {k: v.format(**values) for k, v in _ANSWERS.items()}
        self._claims_cache: dict[str, list[re.Pattern[str]]] = {}

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
            if any(p.search(text) for p in patterns):
                return SafetyVerdict(category, self._answers[category], reason)
        return None

    def _claims(self, nickname: str | None) -> list[re.Pattern[str]]:
        key = nickname or ""
        if key not in self._claims_cache:
            if len(self._claims_cache) > 256:
                self._claims_cache.clear()
            self._claims_cache[key] = _claim_patterns(nickname)
        return self._claims_cache[key]

    def sentence_claim(self, sentence: str, *, nickname: str | None = None) -> str | None:
        """The condition a sentence claims the child has ("" if unnamed), else None."""
        text = _norm(sentence)
        for p in self._claims(nickname):
            m = p.search(text)
            if m and not re.search(_HEDGE, text[: m.start()]):
                cond = m.groupdict().get("cond") or ""
                return cond.upper() if cond in _ABBREV else cond
        return None

    def check_output(self, text: str, *, nickname: str | None = None) -> tuple[str, str | None]:
        """(reply, "diagnostic_claim") with claiming sentences rewritten, or (text, None)."""
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


_COND_NOUN = {
    "autistic": "autism",
    "on the autism spectrum": "autism",
    "on the autistic spectrum": "autism",
    "dyslexic": "dyslexia",
    "bipolar": "bipolar disorder",
    "depressed": "depression",
}


def _note(cond: str) -> str:
    cond = _COND_NOUN.get(cond, cond) or "a condition like this"
    return _DIAG_NOTE.format(cond=cond)


class OutputStreamGuard:
    """Applies `check_output` to streamed text one sentence at a time.

    `feed` returns the text that is safe to send now (whole sentences); `finish` the rest.
    `category` is "diagnostic_claim" once a sentence was rewritten.
    """

    def __init__(self, guard: SafetyGuard, *, nickname: str | None = None) -> None:
        self._guard = guard
        self._nickname = nickname
        self._buffer = ""
        self._noted = False
        self.category: str | None = None

    def _emit(self, sentence: str) -> str:
        cond = self._guard.sentence_claim(sentence, nickname=self._nickname)
        if cond is None:
            return sentence
        self.category = "diagnostic_claim"
        if self._noted:
            return ""
        self._noted = True
        return _note(cond) + sentence[len(sentence.rstrip()) :]

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
        return self._emit(rest) if rest else ""


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
