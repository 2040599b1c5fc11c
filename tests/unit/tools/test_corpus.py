"""The demo corpus: material, de-duplication, the deterministic split, the node's chat format,
and the BPE tokenizer trained on it."""

from __future__ import annotations

import json
import random
import re

import pytest

from avatario_tools.corpus.bpe import END_OF_TEXT, encode_samples, save_tokenizer, train_tokenizer
from avatario_tools.corpus.builder import (
    BuildConfig,
    build_corpus,
    dedupe,
    first_sentence,
    opening_samples,
    split_of,
)
from avatario_tools.corpus.demo import turn_pieces, weighted_stream
from avatario_tools.corpus.material import (
    DEFAULT_WORDINGS_DIR,
    CorpusError,
    QaItem,
    load_material,
    load_qa,
)
from services.inference.prompt import TURN_END, prompt_header, speakers
from services.inference.safety.output import rewrite_claims
from services.inference.tokenizer import HfTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def material() -> list[QaItem]:
    return load_material()


@pytest.fixture(scope="module")
def corpus(material):
    return build_corpus(material)


def _item(group: str, *questions: str, answer: str = "An answer long enough to count here.") -> QaItem:
    return QaItem(group, "t", tuple(questions), answer, "qa")


# -- material -------------------------------------------------------------------------------

def test_the_material_has_hundreds_of_questions_on_every_topic(material):
    qa = [it for it in material if it.source == "qa"]
    assert len(qa) >= 200 and sum(len(it.questions) for it in qa) >= 500
    topics = {it.topic for it in qa}
    assert {"development", "learning", "attention", "emotions", "sleep", "screen_time",
            "picky_eating", "tantrums", "friendships", "school", "siblings",
            "professional_help"} <= topics
    # several phrasings per intent: at least two each, more on average
    assert min(len(it.questions) for it in qa) >= 2
    assert sum(len(it.questions) for it in qa) / len(qa) >= 2.5
    tips = [it for it in material if it.source == "tips"]
    assert len(tips) == len(json.loads((load_material.__globals__["DEFAULT_TIPS_PATH"])
                                       .read_text())["tips"])


def test_no_answer_diagnoses_or_gives_a_dose(material):
    """The node's own output guard finds no diagnostic claim, and no answer names a dose."""
    dose = re.compile(r"\b\d+(?:[.,]\d+)?\s*(?:mg|ml|milligrams?|millilit(?:re|er)s?|drops?|"
                      r"tablets?|teaspoons?)\b", re.IGNORECASE)
    for it in material:
        assert rewrite_claims(it.answer)[1] is None, it.group
        assert not dose.search(it.answer), it.group
    # the stance is there: most answers say who to ask when a worry lasts; all on that topic
    who = re.compile(r"pediatrician|psychologist|teacher|doctor|pharmacist|school|check-up|"
                     r"therapist|specialist|professional|emergency")
    named = [it for it in material if who.search(it.answer)]
    assert len(named) / len(material) > 0.75
    assert all(who.search(it.answer) for it in material if it.topic == "professional_help")


@pytest.mark.parametrize("line, message", [
    ("{not json", r"bad\.jsonl:2: not JSON"),
    ('{"id": "x1", "topic": "sleep", "questions": [], "answer": "' + "a" * 50 + '"}',
     r"bad\.jsonl:2: questions must be a non-empty list"),
    ('{"id": "x1", "topic": "sleep", "questions": ["A question that is fine?"]}',
     r"bad\.jsonl:2: answer must be a text"),
    ('{"id": "ok-1", "topic": "sleep", "questions": ["Another fine question?"], "answer": "'
     + "b" * 50 + '"}', r"bad\.jsonl:2: id 'ok-1' is already used in bad\.jsonl:1"),
])
def test_bad_material_names_the_file_line_and_field(tmp_path, line, message):
    good = {"id": "ok-1", "topic": "sleep", "questions": ["A question that is fine?"],
            "answer": "a" * 50}
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n" + line + "\n")
    with pytest.raises(CorpusError, match=message):
        load_qa(tmp_path)


# -- de-duplication and split ---------------------------------------------------------------

def test_dedupe_folds_case_spacing_and_punctuation_and_drops_empty_intents():
    items = [_item("a", "How much sleep does a child need?", "Is it okay to nap?"),
             _item("b", "how much  sleep does a child NEED", "A new question here?"),
             _item("c", "Is it OKAY to nap!")]
    kept, dropped = dedupe(items)
    assert [(it.group, it.questions) for it in kept] == [
        ("a", ("How much sleep does a child need?", "Is it okay to nap?")),
        ("b", ("A new question here?",))]
    assert dropped == 2


def test_the_real_corpus_has_no_repeated_question(corpus):
    keys = [re.sub(r"[^\w\s]", " ", q.casefold()).split()
            for side in ("train", "validation") for _, q, _ in corpus.pairs[side]]
    assert len({" ".join(k) for k in keys}) == len(keys)


def test_split_is_by_intent_stable_and_independent_of_order(material):
    cfg = BuildConfig()
    a = build_corpus(material, cfg)
    shuffled = list(material)
    random.Random(3).shuffle(shuffled)
    b = build_corpus(shuffled, cfg)
    assert a.texts("train") == b.texts("train")
    assert a.texts("validation") == b.texts("validation")
    train_groups = {g for g, _, _ in a.pairs["train"]}
    val_groups = {g for g, _, _ in a.pairs["validation"]}
    assert train_groups and val_groups and not train_groups & val_groups
    # one intent's split does not depend on the others
    assert all(split_of(g, cfg.validation_fraction) == "validation" for g in val_groups)
    smaller = build_corpus(material[: len(material) // 2], cfg)
    assert {g for g, _, _ in smaller.pairs["validation"]} <= val_groups
    assert 0.05 < len(val_groups) / (len(val_groups) + len(train_groups)) < 0.25


def test_no_held_out_question_or_answer_reaches_the_training_split(corpus):
    """No leakage: a validation intent's phrasings and answer occur nowhere in the training
    conversations, and the held-out turns stream holds exactly the validation pairs."""
    train_text = "\n".join(corpus.texts("train"))
    train_answers = {a for _, _, a in corpus.pairs["train"]}
    for _, q, a in corpus.pairs["validation"]:
        assert q not in train_text and a not in train_text and a not in train_answers
    pieces = turn_pieces(corpus)
    assert len(pieces) == len(corpus.pairs["validation"])
    assert all(q in p[0] and p[1] == " " + a for p, (_, q, a)
               in zip(pieces, corpus.pairs["validation"], strict=True))


def test_a_different_seed_changes_the_conversations_not_the_split(material):
    a = build_corpus(material, BuildConfig(seed=1))
    b = build_corpus(material, BuildConfig(seed=2))
    assert a.pairs == b.pairs
    assert a.texts("train") != b.texts("train")


# -- chat format ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raven", "world"])
def test_samples_are_conversations_in_the_node_layout(material, fmt):
    corpus = build_corpus(material, BuildConfig(chat_format=fmt))
    user, bot = speakers(fmt)
    plain_header = prompt_header(fmt, None)
    for sample in corpus.train + corpus.validation:
        header, *turns = sample.segments
        assert header.endswith(TURN_END) and header.startswith(plain_header.split(TURN_END)[0])
        assert len(turns) % 3 == 0 and 1 <= len(turns) // 3 <= 6  # the last may be short
        for ask, answer, end in zip(turns[::3], turns[1::3], turns[2::3], strict=True):
            assert re.fullmatch(rf"{user}: [^\n]+\n\n{bot}:", ask)
            assert answer.startswith(" ") and TURN_END not in answer
            assert end == TURN_END
    # some headers carry an invented child context, some none
    headers = {s.segments[0] for s in corpus.train}
    assert plain_header in headers and any(f"About {user}'s child" in h for h in headers)


def test_the_node_reads_the_demo_tokenizer_in_the_corpus_chat_format(corpus, tmp_path):
    """The node gives a tokenizers-JSON tokenizer the Raven speakers; the corpus uses them."""
    path = save_tokenizer(train_tokenizer(corpus.texts("train"), 512), tmp_path / "tok.json")
    assert load_tokenizer(str(path)).chat_format == BuildConfig().chat_format == "raven"


# -- tokenizer ------------------------------------------------------------------------------

def test_tokenizer_training_is_deterministic_with_end_of_text_at_id_0(corpus, tmp_path):
    a = train_tokenizer(corpus.texts("train"), 1024)
    b = train_tokenizer(corpus.texts("train"), 1024)
    pa, pb = save_tokenizer(a, tmp_path / "a.json"), save_tokenizer(b, tmp_path / "b.json")
    assert pa.read_bytes() == pb.read_bytes()
    assert a.get_vocab_size() == 1024 and a.token_to_id(END_OF_TEXT) == 0
    c = train_tokenizer(corpus.texts("train")[:50], 1024)
    assert c.to_str() != a.to_str()  # the text decides the merges (the check can fail)


def test_the_node_loads_the_tokenizer_and_round_trips_text(corpus, tmp_path):
    path = save_tokenizer(train_tokenizer(corpus.texts("train"), 1024), tmp_path / "t.json")
    tok = HfTokenizer(path)
    assert tok.vocab_size == 1024
    text = "Bob: My son — 7 ans — can't sleep 😴\n\nAlice: Try a calm routine."
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert 0 not in tok.encode("<|endoftext|>")  # typed text never becomes end of text
    assert len(tok.encode(corpus.train[0].segments[0])) < len(corpus.train[0].segments[0]) / 3


def test_encode_samples_puts_end_of_text_after_each_sample(corpus):
    tok = train_tokenizer(corpus.texts("train"), 512)
    stream = encode_samples(tok, [s.segments for s in corpus.validation])
    assert stream.dtype.name == "int32" and stream[-1] == 0
    assert int((stream == 0).sum()) == len(corpus.validation)
    first = [i for p in corpus.validation[0].segments for i in tok.encode(p).ids]
    assert stream[: len(first)].tolist() == first


# -- opening turns and reply-head weights (the demo model's training stream) -----------------

@pytest.fixture(scope="module")
def wordings() -> list[QaItem]:
    return load_material(DEFAULT_WORDINGS_DIR, None)


def test_openings_pair_more_wordings_of_training_intents_with_their_answer_start(corpus,
                                                                                 wordings):
    answers = {g: a for g, _, a in corpus.pairs["train"]}
    held = {re.sub(r"\W+", " ", q.lower()).strip() for _, q, _ in corpus.pairs["validation"]}
    samples = opening_samples(wordings, corpus, passes=2)
    one = opening_samples(wordings, corpus, passes=1)
    assert len(samples) == 2 * len(one) > 1500  # several wordings per training intent
    assert samples == opening_samples(wordings, corpus, passes=2)  # deterministic
    assert samples[: len(one)] != samples[len(one):]  # each pass shuffled anew
    user, bot = speakers(corpus.config.chat_format)
    for s in one:
        (group,) = s.groups
        turn, reply, end = s.segments
        assert group in answers and end == ""  # training intents only; the answer goes on
        assert turn.startswith(f"{user}: ") and turn.endswith(f"\n\n{bot}:")
        question = turn[len(user) + 2: -len(bot) - 3]
        assert re.sub(r"\W+", " ", question.lower()).strip() not in held
        assert reply == " " + first_sentence(answers[group])
        assert " ".join(answers[group].split()).startswith(reply.strip())
    assert opening_samples(wordings, corpus, passes=0) == []
    with pytest.raises(ValueError, match="passes"):
        opening_samples(wordings, corpus, passes=-1)


def test_first_sentence_stops_at_a_full_stop_before_a_capital():
    assert first_sentence("Try a routine, e.g. bath then books. Keep it short.") == (
        "Try a routine, e.g. bath then books.")
    assert first_sentence("Yes! Most do.") == "Yes!"
    assert first_sentence("No full stop at all") == "No full stop at all"


def test_the_first_tokens_of_each_reply_weigh_the_head_weight(corpus):
    tok = train_tokenizer(corpus.texts("train"), 512)
    sample = corpus.train[0].segments
    ids, w = weighted_stream(tok, [sample], 0.5, (3, 4.0))
    lengths = [len(tok.encode(p, add_special_tokens=False).ids) for p in sample]
    expected: list[float] = [0.5] * lengths[0]  # the header
    for turn, reply, end in zip(lengths[1::3], lengths[2::3], lengths[3::3], strict=True):
        expected += [0.5] * turn + [4.0] * min(3, reply) + [1.0] * max(0, reply - 3)
        expected += [1.0] * end
    assert w.tolist() == expected + [0.0] and len(ids) == len(w)  # end of text weighs 0
    plain_ids, plain = weighted_stream(tok, [sample], 0.5)
    assert plain_ids.tolist() == ids.tolist() and set(plain.tolist()) == {0.5, 1.0, 0.0}
