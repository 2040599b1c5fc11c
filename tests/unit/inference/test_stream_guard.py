"""The streaming output guard sends words early, and never a diagnostic claim.

`OutputStreamGuard` sends the words of an unfinished sentence as soon as no claim pattern can
begin in them; a claim found when its sentence ends is rewritten from its first word, exactly
as `check_output` rewrites the whole reply. The properties: any split of any reply streams to
what `check_output` gives (plus the developmental note where due), no streamed sentence makes
a claim, and replies without claims stream unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inference.safety import (
    OutputStreamGuard,
    SafetyGuard,
    developmental_note,
    needs_developmental_note,
)
from services.inference.safety.output import (
    _claim_patterns,
    _partial_patterns,
    _split_sentences,
    find_claim,
)
from services.inference.safety.text import norm_out

GUARD = SafetyGuard.for_country("US")

# Words that build claims, hedges and their near misses, plus ordinary reply words.
WORDS = (
    "your child son daughter kid little one boy he she they Mia Leo his her their it this that "
    "these those has have got is s are seems sounds looks like sound look points to indicate "
    "suggests consistent with typical of signs symptoms of case form classic textbook clearly "
    "definitely probably likely may might could be a an the most very quite almost certainly "
    "ADHD ADD autism autistic dyslexia dyslexic depressed bipolar anxiety disorder learning "
    "speech delay spectrum on the autism spectrum OCD Tourette's Asperger's what you describe "
    "describing behaviour behaviours traits I we would diagnose diagnosis my is if whether only "
    "professional doctor can tell not a sign rule out assess children with some great idea "
    "try play games together reading tantrums focus sleep routine calm he's she's it's Mia's "
    "there's no doubt honestly based on this I think fairly sure shows all"
).split()
_CORPUS = json.loads(
    (Path(__file__).with_name("safety_corpus") / "diagnostic_claims.json").read_text("utf-8"))
# Whole claims and near misses from the corpus, without their final stop, as phrases.
PHRASES = [c["text"].rstrip(".!") for c in _CORPUS["claims"]] + [
    t.rstrip(".!") for t in _CORPUS["non_claims"]]
SEPS = [" ", " ", " ", " ", ", ", ". ", "! ", "? ", "\n", "  ", "; ", " - ", ".", "'", "\t",
        "\u00a0", "\u200b", "\u3000", " \u2014 ", "\r\n"]  # no-break, zero-width, ideographic
LOOKALIKES = str.maketrans("aeo", "\u0430\u0435\u043e")  # Cyrillic а е о


@st.composite
def replies(draw: st.DrawFn) -> str:
    n = draw(st.integers(1, 30))
    out = []
    for _ in range(n):
        word = draw(st.sampled_from(PHRASES if draw(st.integers(0, 3)) == 0 else WORDS))
        if draw(st.integers(0, 9)) == 0:
            word = word.upper()
        elif draw(st.integers(0, 5)) == 0:
            word = word.capitalize()
        elif draw(st.integers(0, 9)) == 0:
            word = word.translate(LOOKALIKES)
        out.append(word + draw(st.sampled_from(SEPS)))
    return "".join(out)


def stream(text: str, cuts: list[int], nickname: str | None = "Mia",
           early_release: bool = True) -> tuple[list[str], OutputStreamGuard]:
    guard = OutputStreamGuard(GUARD, nickname=nickname, early_release=early_release)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    chunks = [guard.feed(text[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    chunks.append(guard.finish())
    return chunks, guard


def expected(text: str, nickname: str | None = "Mia") -> tuple[str, str | None]:
    whole, category = GUARD.check_output(text, nickname=nickname)
    if needs_developmental_note(whole):
        sep = "" if not whole or whole[-1].isspace() else " "
        whole = f"{whole}{sep}{developmental_note(nickname)}"
    return whole, category


@settings(max_examples=400, deadline=None)
@given(text=replies(), cuts=st.lists(st.integers(0, 400), max_size=30),
       nickname=st.sampled_from(["Mia", None, "Leo"]))
def test_any_split_streams_what_check_output_gives(text: str, cuts: list[int],
                                                   nickname: str | None) -> None:
    chunks, guard = stream(text, cuts, nickname)
    out = "".join(chunks)
    whole, category = expected(text, nickname)
    assert out.strip() == whole.strip()
    assert guard.category == category
    # nothing that was sent makes a claim, sentence by sentence
    assert all(find_claim(s, nickname) is None for s in _split_sentences(out))
    if category is None:  # unchanged, but for the note at the end
        assert out.startswith(text) and out[len(text):].strip() in ("", developmental_note(nickname))


@settings(max_examples=300, deadline=None)
@given(text=replies(), nickname=st.sampled_from(["Mia", None]))
def test_word_by_word_never_sends_a_claim_early(text: str, nickname: str | None) -> None:
    guard = OutputStreamGuard(GUARD, nickname=nickname)
    whole = expected(text, nickname)[0].strip()
    sent = ""
    for token in re.findall(r"\s*\S+|\s+$", text):  # as a tokenizer cuts them: " word"
        sent += guard.feed(token)
        # what was sent cannot be taken back: it must already be final
        assert whole.startswith(sent.strip())
    out = sent + guard.finish()
    assert out.strip() == whole


def test_words_are_sent_before_the_sentence_ends() -> None:
    # Fails on sentence holding: nothing would be sent before the full stop.
    guard = OutputStreamGuard(GUARD, nickname="Mia")
    tokens = ["Here", " are", " some", " ideas", " to", " try", " at", " home", " with"]
    sent = [guard.feed(t) for t in tokens]
    assert "".join(sent) == "".join(tokens)  # all of it before the full stop
    # a chunk per token as it comes, but for a word that could begin a claim: "to" (as in
    # "Tourette's is what she has"), "at" ("attention deficit disorder is what...")
    assert sent == [*tokens[:4], " ", "to try", " ", "at home", " with"]
    assert guard.feed(" puzzles.") == " "  # "puzzles." may go on ("puzzles.com")
    assert guard.finish() == "puzzles."
    # A word under way that is not plain letters waits for the whitespace after it.
    guard = OutputStreamGuard(GUARD, nickname="Mia")
    assert [guard.feed(t) for t in ["Try", " 4", "x", "4", " games"]] == [
        "Try", " ", "", "", "4x4 games"]


def test_sentence_holding_is_kept_behind_a_flag() -> None:
    guard = OutputStreamGuard(GUARD, nickname="Mia", early_release=False)
    assert guard.feed("Here are some ideas to try at home with") == ""
    assert guard.feed(" puzzles. ") == "Here are some ideas to try at home with puzzles. "


@pytest.mark.parametrize(
    ("tokens", "held_from"),
    [
        (["Great", " question,", " your", " child", " is"], "your"),
        (["Great", " question,", " your", " child", " is", " very"], "your"),  # very likely...
        (["Great", " question,", " your", " child", " is", " very", " kind", " and"], None),
        (["I", " think", " Mia", " has"], "Mia"),
        (["It", " sounds", " like", " a"], "It"),
        (["Classic"], "Classic"),
        (["These", " behaviours", " are", " classic", " signs"], "These"),
    ],
)
def test_held_while_a_claim_can_still_form(tokens: list[str], held_from: str | None) -> None:
    guard = OutputStreamGuard(GUARD, nickname="Mia")
    sent = "".join(guard.feed(t) for t in tokens)
    text = "".join(tokens)
    assert sent == (text if held_from is None else text[: text.index(held_from)])


def test_nickname_patterns_hold_only_that_name() -> None:
    for nickname, sent in (("Mia", "Today "), (None, "Today Mia has")):
        guard = OutputStreamGuard(GUARD, nickname=nickname)
        assert "".join(guard.feed(t) for t in ["Today", " Mia", " has"]) == sent


def test_a_hedge_releases_what_follows_it() -> None:
    guard = OutputStreamGuard(GUARD, nickname="Mia")
    tokens = ["Only", " a", " doctor", " can", " tell", " whether", " your", " child", " has", " ADHD"]
    sent = "".join(guard.feed(t) for t in tokens)
    assert sent == "".join(tokens)
    assert guard.finish() == "" and guard.category is None


def test_a_claim_after_sent_words_is_rewritten_from_its_first_word() -> None:
    guard = OutputStreamGuard(GUARD, nickname="Mia")
    text = "Honestly, your boy has selective mutism. Try a quiet game. I think she has OCD. Bye."
    out = [guard.feed(t) for t in re.findall(r"\s*\S+", text)] + [guard.finish()]
    assert out[0] == "" and out[1] == "Honestly, "  # sent before the claim could be seen
    joined = "".join(out)
    assert joined.startswith("Honestly, Only a qualified professional")
    assert "has selective mutism;" in joined and "your boy has" not in joined
    # a later claim after sent words gets the short note; no second long one
    assert "Try a quiet game. I think only a professional can tell. Bye." in joined
    assert joined.count("Only a qualified professional") == 1
    assert guard.category == "diagnostic_claim"
    assert (joined, "diagnostic_claim") == GUARD.check_output(text, nickname="Mia")


def test_junk_without_sentence_ends_streams_per_word() -> None:
    # Random weights emit text like this: sentence holding sent it all at the very end.
    tokens = [" gal", "ore", " mixture", " qu", " 1992", " otherwise", " Lanc", " rebound"] * 30
    for early, min_chunks in ((True, 230), (False, 0)):
        guard = OutputStreamGuard(GUARD, nickname="Mia", early_release=early)
        chunks = [c for c in (guard.feed(t) for t in tokens) if c]
        assert len(chunks) >= min_chunks and (early or not chunks)
        assert "".join(chunks) + guard.finish() == "".join(tokens)


def test_a_very_long_sentence_is_held_to_its_end() -> None:
    guard = OutputStreamGuard(GUARD, nickname="Mia")
    sent = "".join(guard.feed(" word") for _ in range(1000))
    assert 0 < len(sent) < 5000  # released up to half the normaliser's window, then held
    assert sent + guard.finish() == " word" * 1000


@settings(max_examples=300, deadline=None)
@given(a=st.text(max_size=40), sep=st.sampled_from([" ", "\t", "\n", "\r", " \n "]),
       b=st.text(max_size=40))
def test_reply_normalisation_never_joins_across_whitespace(a: str, sep: str, b: str) -> None:
    # The stream normalises word by word; this is what makes that equal to the whole view.
    joined = " ".join(w for w in (norm_out(a + sep), norm_out(b)) if w)
    assert norm_out(a + sep + b) == joined


@settings(max_examples=300, deadline=None)
@given(text=replies(), nickname=st.sampled_from(["Mia", None]))
def test_regex_patterns_match_as_re_does(text: str, nickname: str | None) -> None:
    view = norm_out(text)
    for p, q in zip(_claim_patterns(nickname), _partial_patterns(nickname), strict=True):
        m, n = p.search(view), q.search(view)
        assert (m and m.span()) == (n and n.span())


def test_a_claim_inside_a_raw_word_keeps_what_was_sent_before_it() -> None:
    # "x" goes out as a word under way; ".he has ADHD" then makes "x.he" one raw word
    guard = OutputStreamGuard(GUARD, nickname="Mia")
    out = [guard.feed(t) for t in ["Great", " x", ".he", " has", " ADHD", ". "]]
    assert out[:2] == ["Great", " x"]
    joined = "".join(out) + guard.finish()
    assert joined.startswith("Great x.Only a qualified professional")
    assert joined.strip() == GUARD.check_output("Great x.he has ADHD. ", nickname="Mia")[0]
