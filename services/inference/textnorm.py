"""Unicode normalisation of every piece of user-controlled text on the inference node.

Parents type (or paste) text that can look harmless to a person and different to a regular
expression or a tokenizer: ``k\\u200bill`` (a zero-width space inside a word), ``ｋｉｌｌ``
(fullwidth letters), ``kіll`` (a Cyrillic і), ``k̶i̶l̶l̶`` (combining strokes), bidi overrides
that reorder what is shown, a soft hyphen, or ``<|endoftext|>``. Two views of a text are made
here, one for the safety guard and one for the prompt:

`clean` (both views): Unicode NFKC (fullwidth and mathematical letters, ligatures, odd spaces
become plain characters), then every invisible character is dropped: format characters
(category Cf: zero-width space and joiners, bidi embeddings, overrides and isolates, soft
hyphen, word joiner, BOM, tag characters...), the other default-ignorable code points that
are not Cf (variation selectors, the combining grapheme joiner, Hangul fillers, Khmer
inherent vowels, Mongolian free variation selectors), private-use code points and surrogates,
and control characters other than newline and tab (whose handling is the prompt rules' job,
see services.inference.prompt). Line and paragraph separators are kept for the same reason.

`guard_view` (what services.inference.safety matches its English rules against): `clean`,
then canonical decomposition with the combining marks dropped (``é`` -> ``e``, strokes and
"zalgo" marks gone), then every character that has a look-alike in Unicode's confusables
data (UTS #39, shipped by the maintained `confusable-homoglyphs` package) is folded to its
ASCII look-alike: Cyrillic and Greek letters, Cherokee, Latin small capitals and the like.
Unicode maps a few Cyrillic and Greek letters (к, т, м, н, в; κ) to Latin small capitals or
kra rather than to ASCII; the fold follows the data one more step and reads a Latin small
capital as its letter. The whole text is folded, genuine Russian or Greek included: the rules
are English phrases, so Cyrillic words folded to Latin-looking letters do not form them (the
tests check benign Russian, Greek and accented sentences), while a disguised English word
always does.

`prompt_text` (what the model reads): `clean`, and words that mix Latin letters with
look-alike letters of another script (``kіll``, ``mysеlf``) are folded to their Latin
skeleton. A word written wholly in one script is left alone, so a parent writing in Russian,
Greek or with accents is not mangled. Special-token text such as ``<|endoftext|>`` is not
touched here: the tokenizer encodes it as plain text (services.inference.tokenizer), which is
the only place that can guarantee it never becomes a control id.

Model replies get the guard view in the output guard (`_norm_out`), so a diagnosis spelled
with look-alikes is caught too; replies sent back as history stay verbatim (the state cache
resumes on their exact tokens), with special tokens neutralised by the tokenizer.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from confusable_homoglyphs import confusables

__all__ = ["clean", "guard_view", "prompt_text"]

_CONFUSABLES: dict[str, list[dict[str, str]]] = confusables.confusables_data
_KEEP_CONTROLS = frozenset("\n\t\u2028\u2029\x85\x0b\x0c\r")
# Not Cn (unassigned): this Python's Unicode tables may predate a genuine new emoji.
_DROP_CATEGORIES = frozenset({"Cf", "Cc", "Co", "Cs"})
# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt) outside category Cf.
_IGNORABLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef]"
)
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")  # the Cc that _drop drops
_SMALL_CAPITAL = re.compile(r"LATIN LETTER SMALL CAPITAL ([A-Z])")
_WORD = re.compile(r"\w+")


def _drop(ch: str) -> bool:
    return ch not in _KEEP_CONTROLS and unicodedata.category(ch) in _DROP_CATEGORIES


def clean(text: str) -> str:
    """NFKC with invisible and control characters removed (newlines and tabs kept)."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return _ASCII_CONTROL.sub("", text)
    text = _IGNORABLE.sub("", text)
    return "".join(ch for ch in text if not _drop(ch))


def _ascii_of(ch: str) -> str | None:
    if ch.isascii() and ch.isprintable():
        return ch
    m = _SMALL_CAPITAL.fullmatch(unicodedata.name(ch, "")) if len(ch) == 1 else None
    return m.group(1).lower() if m else None


def _lookup(ch: str) -> str | None:
    """The ASCII look-alike the confusables data gives, one or two steps away, else None."""
    near = [e["c"] for e in _CONFUSABLES.get(ch, ())]
    for step in (near, [e["c"] for c in near for e in _CONFUSABLES.get(c, ())]):
        for cand in step:
            if all(_ascii_of(c) for c in cand):
                return "".join(_ascii_of(c) or "" for c in cand)
    return None


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """The ASCII look-alike of one character (itself if ASCII or none is known).

    The data maps Greek capital iota to "l" (the same shape); a capital whose look-alike is
    a small letter folds as its own small letter does, upper-cased, when that is a letter.
    """
    if ch.isascii():
        return ch
    direct = _lookup(ch)
    if direct is None:
        return ch
    if ch.isupper() and direct.isalpha() and direct.islower():
        low = _lookup(ch.lower()) if len(ch.lower()) == 1 else None
        if low is not None and len(low) == 1 and low.isalpha():
            return low.upper()
    return direct


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me"))


def guard_view(text: str) -> str:
    """`clean`, lower case, combining marks dropped and look-alikes folded to ASCII.

    Characters without an ASCII look-alike are kept as they are (see the module doc).
    """
    text = clean(text)
    if text.isascii():
        return text.lower()
    return "".join(_fold_char(ch) for ch in _strip_marks(text)).lower()


def _fold_word(m: re.Match[str]) -> str:
    word = m.group()
    if word.isascii() or not confusables.is_mixed_script(word, ["COMMON", "INHERITED"]):
        return word
    if not any(ch.isascii() and ch.isalpha() for ch in word):
        return word  # two non-Latin scripts: not a disguised Latin word
    folded = "".join(_fold_char(ch) for ch in _strip_marks(word))
    return folded if folded.isascii() else word


def prompt_text(text: str) -> str:
    """`clean`, with mixed-script look-alike words folded to Latin (see the module doc)."""
    text = clean(text)
    return text if text.isascii() else _WORD.sub(_fold_word, text)
