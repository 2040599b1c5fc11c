"""After the model: diagnostic claims rewritten, the developmental note added.

`OutputStreamGuard` applies the check to streamed text, sending words as soon as no claim
can begin in them.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import regex

from services.inference.safety.rules.common import COND as _COND
from services.inference.safety.rules.common import COND_AFTER as _COND_AFTER
from services.inference.safety.rules.common import compile_all as _c
from services.inference.safety.text import SCAN_CHARS
from services.inference.safety.text import norm_out as _norm_out
from services.inference.textnorm import prompt_text

if TYPE_CHECKING:
    from services.inference.safety.guard import SafetyGuard

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
          r"too early|cant say|cannot say|can not say|not sure|"
          # a diagnosis the reply attributes to a professional or to the parent is not a claim
          r"diagnosed|diagnosis (?:from|by|of)|(?:said|says|told you|confirmed|found) (?:that )?"
          r"(?:he|she|they|your \w+)|you (?:said|mentioned|told me)|you ve said|you have said|"
          r"may be|might be|could be|possibly|referred|referral|waiting list)\b")  # fmt: skip
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
# Up to two words between a subject and its condition, none of them a word of attribution
# ("his paediatrician diagnosed autism", "the team has confirmed autism" are not claims).
_GAP = (r"(?:(?!(?:diagnosed|diagnosis|confirmed|been|said|says|suspected|suspects|thinks|think|"
        r"mentioned|asked|referred|assessed|assessment|evaluated|query|queried|possible|"
        r"maybe|any)\b)\w+ ){0,2}?")

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
            rf"\b{subj} {_ADV}(?:has|have|s got|has got|got|is suffering from|s suffering from|suffers from|(?:is |s )?showing (?:\w+ ){{0,2}}?(?:signs|symptoms) of|shows (?:\w+ ){{0,2}}?(?:signs|symptoms) of|has (?:\w+ ){{0,2}}?(?:signs|symptoms) of|meets the criteria for|fits the criteria for|is dealing with|struggles with|is living with|lives with) (?P<cond>{_COND_AFTER})\b",
            rf"\b{subj} {_ADV}(?:is suffering from|s suffering from|suffers from) (?P<cond>(?:severe |clinical |social )?(?:anxiety|depression))\b",
            rf"\b{subj} (?:(?:is|s|seems|appears|sounds|looks) (?:to be )?|(?:may|might|could|must|will|would|probably|likely|definitely|clearly|also) (?:\w+ )?be ){_ADV}(?:a bit |somewhat |mildly )?(?P<cond>autistic|dyslexic|dyspraxic|neurodivergent|lactose intolerant|twice exceptional|hypermobile|bipolar|depressed|on the (?:autism |autistic )?spectrum)\b",
            rf"\b{these} {verbs}(?: {_FILL})* {_SIGNS}?(?P<cond>{_COND_AFTER})\b",
            rf"^(?:(?:it|this|that) )?(?:sounds|looks|seems) like(?: {_FILL})* {_SIGNS}?(?P<cond>{_COND_AFTER})\b",
            rf"^(?:classic|textbook|definitely|clearly|obviously|typical|probably) (?P<cond>{_COND_AFTER})$",
            rf"\b(?P<cond>{_COND}) is what {subj} (?:has|have|is dealing with|s dealing with|s got)\b",
            r"\b(?:i|we) (?:would |can |will |could |d )?(?:diagnose|am diagnosing|have diagnosed)\b",
            # presupposed: "his ADHD", "with her depression", "Oscar s dyslexia"
            rf"\b(?:his|her|{nick} s|your (?:son|daughter|child|kid|boy|girl) s) {_GAP}(?P<cond>{_COND_AFTER})\b",
            rf"\b(?:it s|its|it is|this is|that s|thats|that is|what (?:she|he|they) (?:has|have) is) (?:{_FILL} |only |mild |a touch of |a mild |the mildest end of )*(?P<cond>{_COND_AFTER})\b",
            rf"\b(?:children|kids|boys|girls|a child|a boy|a girl) (?:with|on) (?:the )?(?P<cond>{_COND}|spectrum) like (?:{nick}|yours|him|her)\b",
            rf"\b(?P<cond>autistic|dyslexic|adhd) (?:children|kids|girls|boys) like (?:{nick}|yours|your \w+)\b",
            rf"\b(?:that s|thats|that is|which is) what (?:he|she|they|{nick}|your \w+) (?:has|have)\b",
            r"\bthe (?:likely |probable )?diagnosis here is\b",
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


# ------------------------------------------------------------------ claims, sentence by sentence

_HEDGE_RE = re.compile(_HEDGE)
_SHORT_NOTE = "only a professional can tell."
# A raw word with the whitespace after it. Reply normalisation never joins text across
# ASCII whitespace, so the normalised view of a sentence is its words' views joined by spaces.
_RAW_WORD = re.compile(r"[^ \t\r\n]*[ \t\r\n]+|[^ \t\r\n]+")


@dataclass(frozen=True, slots=True)
class Claim:
    start: int  # where the claim begins in the raw sentence: the start of its first word
    cond: str  # the condition claimed ("" if unnamed)


def _raw_offset(sentence: str, norm: str, pos: int) -> int:
    """Where the word at `pos` of the sentence's normalised view begins in the raw sentence.

    The raw word (with the whitespace after it) that holds it, and within that word the
    longest start whose view is still only the words before `pos` ("x.he" -> "he"). 0 if the
    views disagree (a view cut at SCAN_CHARS mid-word, say): the whole sentence is rewritten.
    """
    words = [(m.start(), m.group(), _norm_out(m.group())) for m in _RAW_WORD.finditer(sentence)]
    if not " ".join(w for _, _, w in words if w).startswith(norm):
        return 0
    end = -1
    for start, raw, w in words:
        if not w:
            continue
        if end + len(w) + 1 <= pos:
            end += len(w) + 1
            continue
        before = w[: pos - end - 1].rstrip()  # the view of this raw word before the claim
        j = 0
        while before and j < len(raw) and before.startswith(_norm_out(raw[: j + 1])):
            j += 1
        return start + j
    return 0


def find_claim(sentence: str, nickname: str | None = None) -> Claim | None:
    """The diagnostic claim a sentence makes about the child, if any.

    A claim preceded by a hedge in the same sentence ("whether", "only a professional can tell
    if") is not one.
    """
    text = _norm_out(sentence)
    first: re.Match[str] | None = None  # the claim that begins first: nothing before it stays
    for p in _claim_patterns(nickname or None):
        m = p.search(text)
        if m and not _HEDGE_RE.search(text, 0, m.start()):
            if first is None or m.start() < first.start():
                first = m
    if first is None:
        return None
    cond = first.groupdict().get("cond") or ""
    cond = cond.upper() if cond in _ABBREV else cond
    return Claim(_raw_offset(sentence, text, first.start()), cond)


def rewrite_sentence(sentence: str, claim: Claim, *, first: bool) -> str:
    """The sentence from its claim on replaced by the qualifying note (a short one after the
    first; nothing when a later claim takes the whole sentence). The words before the claim
    stay: a stream may already have sent them."""
    head = sentence[: claim.start]
    tail = sentence[len(sentence.rstrip()) :]
    if first:
        return head + _note(claim.cond) + tail
    return head + _SHORT_NOTE + tail if head.strip() else ""


def rewrite_claims(text: str, nickname: str | None = None) -> tuple[str, str | None]:
    """(text with every claiming sentence rewritten, "diagnostic_claim"), or (text, None)."""
    out: list[str] = []
    noted = False
    for part in _split_sentences(text):
        claim = find_claim(part, nickname)
        if claim is None:
            out.append(part)
            continue
        out.append(rewrite_sentence(part, claim, first=not noted))
        noted = True
    if not noted:
        return text, None
    return "".join(out).strip(), "diagnostic_claim"


@lru_cache(maxsize=512)
def _partial_patterns(nickname: str | None) -> tuple[regex.Pattern[str], ...]:
    # The same claim patterns under the `regex` package, which can tell whether more text
    # could still complete a match (partial=True).
    return tuple(regex.compile(p.pattern) for p in _claim_patterns(nickname))


_LETTERS = re.compile(r"[A-Za-z]+")
_SENTENCE_END = re.compile(r"(?:[.!?][\"')\]]*[ \t]+|\n)$")


class OutputStreamGuard:
    """Applies the claim check and the developmental note to streamed text.

    `feed` returns the text that is safe to send now; `finish` the rest, followed by
    `developmental_note` when the reply talked about development and carried no such note.
    `category` is "diagnostic_claim" once a sentence was rewritten (never for the note alone);
    `developmental_note_added` says whether the note was appended.

    Early release (the default): the words of an unfinished sentence are sent as soon as no
    claim pattern can begin in them any more, whatever text follows: each word start of the
    sentence's normalised view is tried with `regex` partial matching (a match that ran into
    the end of the text so far counts as possible); a pattern whose earliest possible start
    has a hedge before it is out for the rest of the sentence (the claim check ignores hedged
    claims). Words are normalised one by one (the view never joins text across whitespace);
    the word under way is sent before whitespace follows it only if it is plain ASCII
    letters, whose view cannot change but grow. When the sentence ends, the claim
    check of `check_output` runs on the whole sentence, and a claim is rewritten from its
    first word on, which was never sent: the words before it stay, as in `check_output`. A
    sentence longer than half the normaliser's window is held to its end, as before.
    `early_release=False` holds every sentence until it ends (the old behaviour, kept for the
    latency benchmark).
    """

    def __init__(self, guard: SafetyGuard, *, nickname: str | None = None,
                 early_release: bool = True) -> None:
        self._guard = guard
        self._nickname = nickname or None
        self._early = early_release
        self._buffer = ""  # the sentence under way
        self._noted = False
        self._topic = False
        self._has_note = False
        self._last = ""
        self.category: str | None = None
        self.developmental_note_added = False
        self._new_sentence()

    def _new_sentence(self) -> None:
        self._sent = 0  # raw characters of the sentence already sent
        self._scanned = 0  # raw characters whose words are in _norm
        self._norm = ""  # the normalised view of those words
        self._starts: list[int] = []  # raw start of each word with a normalised form
        self._ends: list[int] = []  # and the end of its normalised form in _norm
        self._hold = 0  # no claim can start in _norm before this
        self._live: list[int] | None = None  # patterns that may still claim (None: all)
        self._releasing = self._early

    def _close(self, sentence: str) -> str:
        sent = self._sent
        self._new_sentence()
        claim = find_claim(sentence, self._nickname)
        if claim is None:
            whole = sentence
        else:
            self.category = "diagnostic_claim"
            whole = rewrite_sentence(sentence, claim, first=not self._noted)
            self._noted = True
            # a claim always begins in the held part; should it not, nothing more of it is sent
            sent = min(sent, claim.start)
        if whole:
            norm = _norm_out(whole)
            self._topic = self._topic or bool(_DEV_TOPIC.search(norm))
            self._has_note = self._has_note or bool(_HAS_NOTE.search(norm))
        return whole[sent:]

    def _first_start(self, pattern: regex.Pattern[str], text: str, spaced: str) -> int | None:
        pos = self._hold
        while pos <= len(text):
            # a longer sentence (`spaced`: its next word has begun) or this one as it is
            if pattern.match(spaced, pos, partial=True) or pattern.match(text, pos):
                return pos
            nxt = text.find(" ", pos)
            if nxt < 0:
                return None
            pos = nxt + 1
        return None

    def _release(self) -> str:
        text = self._buffer
        cut = max(text.rfind(" "), text.rfind("\t"), text.rfind("\r"), text.rfind("\n")) + 1
        if cut <= self._scanned:
            free = not self._norm or self._hold > len(self._norm)  # nothing held back
            return self._release_word(text, cut) if free else ""
        for m in _RAW_WORD.finditer(text, self._scanned, cut):
            word = _norm_out(m.group())
            if word:
                self._norm = f"{self._norm} {word}" if self._norm else word
                self._starts.append(m.start())
                self._ends.append(len(self._norm))
        self._scanned = cut
        norm = self._norm
        if len(norm) > SCAN_CHARS // 2:
            self._releasing = False
            return ""
        patterns = _partial_patterns(self._nickname)
        hold: int | None = None
        live: list[int] = []
        for i in self._live if self._live is not None else range(len(patterns)):
            start = self._first_start(patterns[i], norm, norm + " ")
            if start is not None and _HEDGE_RE.search(norm, 0, start):
                continue  # hedged wherever it begins: this pattern cannot claim here
            live.append(i)
            if start is not None and (hold is None or start < hold):
                hold = start
        self._live = live
        if hold is None:
            self._hold = len(norm) + 1
            return self._release_word(text, cut)
        self._hold = hold
        k = bisect_right(self._ends, hold)
        return self._send(text, self._starts[k] if k < len(self._starts) else cut)

    def _release_word(self, text: str, cut: int) -> str:
        """Everything up to `cut` is free; the word under way too, if it is ASCII letters
        (its view can then only grow: it is lower case, whatever follows) and no claim can
        begin with it."""
        word = text[cut:]
        if word and _LETTERS.fullmatch(word):
            norm = f"{self._norm} {word.lower()}" if self._norm else word.lower()
            pos = len(self._norm) + 1 if self._norm else 0
            patterns = _partial_patterns(self._nickname)
            live = self._live if self._live is not None else range(len(patterns))
            hedged = bool(_HEDGE_RE.search(norm, 0, pos))
            if hedged or not any(patterns[i].match(norm, pos, partial=True) for i in live):
                return self._send(text, len(text))
        return self._send(text, cut)

    def _send(self, text: str, upto: int) -> str:
        upto = max(upto, self._sent)
        out, self._sent = text[self._sent : upto], upto
        return out

    def _out(self, text: str) -> str:
        if text:
            self._last = text[-1]
        return text

    def feed(self, chunk: str) -> str:
        self._buffer += chunk
        parts = _split_sentences(self._buffer)
        # the last part may be an unfinished sentence: keep it unless it ends a sentence
        done = parts if _SENTENCE_END.search(self._buffer) else parts[:-1]
        out = [self._close(p) for p in done]
        self._buffer = "".join(parts[len(done) :])
        if self._buffer and self._releasing:
            out.append(self._release())
        return self._out("".join(out))

    def finish(self) -> str:
        rest, self._buffer = self._buffer, ""
        out = self._close(rest) if rest else ""
        if self._topic and not self._has_note and not self.developmental_note_added:
            self.developmental_note_added = True
            last = out[-1] if out else self._last
            sep = "" if not last or last.isspace() else " "
            out += sep + developmental_note(self._nickname)
        return self._out(out)
