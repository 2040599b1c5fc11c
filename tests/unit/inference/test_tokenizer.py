"""Tokenizer loading: HF JSON (Raven 20B when present, else one built here) and World."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.inference.planner import ConfigError
from services.inference.tokenizer import (
    StreamDecoder,
    WorldTokenizer,
    check_vocab,
    load_tokenizer,
)

CORPUS = [
    "Bob: How can I help my daughter sleep?\n\nAlice: A calm routine helps.",
    "The quick brown fox jumps over the lazy dog. Ünïcødé façade naïve café 😀 你好",
] * 20


@pytest.fixture(scope="module")
def built_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer trained here (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    path = tmp_path_factory.mktemp("tok") / "tiny_tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def world() -> WorldTokenizer:
    tok = load_tokenizer("world")
    assert isinstance(tok, WorldTokenizer)
    return tok


def test_hf_json_roundtrip(built_json: Path) -> None:
    tok = load_tokenizer(str(built_json))
    assert tok.chat_format == "raven" and tok.name == "tiny_tokenizer.json"
    assert 300 < tok.vocab_size <= 400  # the trainer stops when no merges are left
    text = "Bob: hi Alice\n\nAlice: café 😀"
    ids = tok.encode(text)
    assert ids and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([0]) == ""  # end of text is special: no text


def test_world_roundtrip(world: WorldTokenizer) -> None:
    assert world.chat_format == "world" and world.vocab_size == 65536
    text = "User: hello\n\nAssistant: Hi! Ünïcødé 你好 😀"
    ids = world.encode(text)
    assert world.decode(ids) == text
    assert world.decode([0, 65535]) == ""  # end of text and padding ids decode to nothing
    assert load_tokenizer(" World ").vocab_size == 65536


@pytest.mark.parametrize("spec", ["/nonexistent/dir/20B_tokenizer.json", "missing.json"])
def test_missing_file(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer file not found: .*\.json"):
        load_tokenizer(spec)


def test_invalid_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid tokenizers JSON"):
        load_tokenizer(str(bad))


def test_chat_format_override(built_json: Path) -> None:
    assert load_tokenizer(str(built_json), chat_format="world").chat_format == "world"


def test_check_vocab(world: WorldTokenizer, built_json: Path) -> None:
    check_vocab(world, 65536)
    with pytest.raises(ConfigError, match="Raven/Pile model: use 20B_tokenizer.json"):
        check_vocab(world, 50277)
    tok = load_tokenizer(str(built_json))
    n = tok.vocab_size
    check_vocab(tok, n)
    check_vocab(tok, (n // 64 + 1) * 64)  # a checkpoint padded to a multiple of 64
    with pytest.raises(
        ConfigError, match=f"has {n} ids but the checkpoint's embedding has {n - 1}"
    ):
        check_vocab(tok, n - 1)
    with pytest.raises(ConfigError, match="World model: use the tokenizer 'world'"):
        check_vocab(tok, 65536)


def test_stream_decoder_never_splits_characters(built_json: Path, world: WorldTokenizer) -> None:
    for tok in (load_tokenizer(str(built_json)), world):
        text = "naïve 😀 你好 ok"
        ids = tok.encode(text)
        dec = StreamDecoder(tok)
        chunks = [dec.push(i) for i in ids] + [dec.flush()]
        assert "".join(chunks) == text
        assert not any("\ufffd" in c for c in chunks)


def test_stream_decoder_lets_real_replacement_chars_out(world: WorldTokenizer) -> None:
    dec = StreamDecoder(world, max_hold=2)
    bad = world.encode("\ufffd")
    out = "".join(dec.push(i) for i in bad) + dec.flush()
    assert out == "\ufffd"


def test_raven_20b(shared_tokenizer_path: Path | None) -> None:
    if shared_tokenizer_path is None:
        pytest.skip("../shared/tokenizers/20B_tokenizer.json not present")
    tok = load_tokenizer(str(shared_tokenizer_path))
    assert tok.chat_format == "raven" and tok.vocab_size == 50277
    assert tok.encode("\n") == [187] and tok.encode("\n\n") == [535]
    assert tok.decode([187, 535]) == "\n\n\n"
    check_vocab(tok, 50277)
    with pytest.raises(ConfigError, match="World model"):
        check_vocab(tok, 65536)
    text = "Bob: How do I help Mia with reading?\n\nAlice:"
    assert tok.decode(tok.encode(text)) == text
