"""After the model: diagnostic claims rewritten, the developmental note added.

`OutputStreamGuard` applies the check to streamed text one sentence at a time.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from services.inference.safety.rules.common import COND as _COND
from services.inference.safety.rules.common import compile_all as _c
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

