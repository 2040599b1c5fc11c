"""Tokenizers for RWKV-4 checkpoints: a Hugging Face `tokenizers` JSON or the World vocab.

Raven/Pile checkpoints use the GPT-NeoX 20B BPE (`20B_tokenizer.json`, 50277 ids) and the
"Bob:/Alice:" chat format; World checkpoints use the trie vocabulary shipped in the `rwkv`
package (65536 ids) and the "User:/Assistant:" chat format.

`encode` never produces a special-token id from text: the HF tokenizer is switched to encode
special tokens as plain text (`encode_special_tokens`), and the World vocabulary has no
entry for id 0 (end of text), so "<|endoftext|>" typed by a parent is ordinary bytes there.
"""

from __future__ import annotations

import functools
import importlib.resources
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from services.inference.planner import ConfigError

__all__ = [
    "ChatFormat",
    "HfTokenizer",
    "StreamDecoder",
    "Tokenizer",
    "WorldTokenizer",
    "check_vocab",
    "load_tokenizer",
]

ChatFormat = Literal["raven", "world", "g1"]  # g1: RWKV-7 G1 (World vocabulary)
END_OF_TEXT = 0
WORLD_VOCAB_SIZE = 65536
RAVEN_VOCAB_SIZE = 50277


class Tokenizer(ABC):
    name: str
    chat_format: ChatFormat
    vocab_size: int
    end_of_text: int = END_OF_TEXT

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; an incomplete UTF-8 sequence decodes as U+FFFD."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} vocab={self.vocab_size} {self.chat_format}>"


class HfTokenizer(Tokenizer):
    def __init__(self, path: Path, chat_format: ChatFormat = "raven") -> None:
        from tokenizers import Tokenizer as _HF

        try:
            self._tok = _HF.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception on bad JSON
            raise ConfigError(f"tokenizer {path} is not a valid tokenizers JSON: {exc}") from exc
        # Text such as "<|endoftext|>" in a parent's message is text: the library's own switch
        # makes encode() split special tokens like any other text (ids come only from the
        # engine, e.g. end of text = 0); decode() still skips special ids.
        self._tok.encode_special_tokens = True
        self.name = path.name
        self.chat_format = chat_format
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size]))


@functools.cache
def _world_trie() -> object:
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    vocab = importlib.resources.files("rwkv") / "rwkv_vocab_v20230424.txt"
    with importlib.resources.as_file(vocab) as p:
        return TRIE_TOKENIZER(str(p))


class WorldTokenizer(Tokenizer):
    """The `rwkv` package's TRIE_TOKENIZER over its bundled `rwkv_vocab_v20230424.txt`."""

    def __init__(self) -> None:
        self._trie = _world_trie()
        self.name = "rwkv_vocab_v20230424"
        self.chat_format = "world"
        self.vocab_size = WORLD_VOCAB_SIZE  # ids above the vocab file's last id are padding

    def encode(self, text: str) -> list[int]:
        return list(self._trie.encode(text))  # type: ignore[attr-defined]

    def decode(self, ids: Sequence[int]) -> str:
        table = self._trie.idx2token  # type: ignore[attr-defined]
        raw = b"".join(table.get(int(i), b"") for i in ids)  # 0 (end of text), padding: nothing
        return raw.decode("utf-8", errors="replace")


def load_tokenizer(spec: str, *, chat_format: ChatFormat | None = None) -> Tokenizer:
    """``"world"`` for the World vocab, else a path to a `tokenizers` JSON (Raven: 20B)."""
    spec = spec.strip()
    if spec.lower() == "world":
        tok: Tokenizer = WorldTokenizer()
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"tokenizer file not found: {path} (give the path to a tokenizers JSON such as "
                "20B_tokenizer.json for Raven checkpoints, or 'world' for World checkpoints)"
            )
        tok = HfTokenizer(path)
    if chat_format is not None:
        tok.chat_format = chat_format
    return tok


def check_vocab(tokenizer: Tokenizer, checkpoint_vocab_size: int) -> None:
    """Refuse a tokenizer whose ids do not match the checkpoint's embedding.

    The checkpoint may pad its vocabulary (to a multiple of 64/128) beyond the tokenizer's.
    """
    tv, cv = tokenizer.vocab_size, checkpoint_vocab_size
    padded = cv >= tv and cv - tv < 128 and cv % 64 == 0
    if tv == cv or padded:
        return
    hint = ""
    if cv == WORLD_VOCAB_SIZE:
        hint = " The checkpoint looks like an RWKV World model: use the tokenizer 'world'."
    elif cv == RAVEN_VOCAB_SIZE:
        hint = " The checkpoint looks like a Raven/Pile model: use 20B_tokenizer.json."
    raise ConfigError(
        f"tokenizer {tokenizer.name} has {tv} ids but the checkpoint's embedding has {cv} "
        f"rows; they do not belong together.{hint}"
    )


class StreamDecoder:
    """Turns generated ids into text chunks that never split a UTF-8 character.

    Ids are held back while their text ends in an incomplete character (decoded as U+FFFD),
    at most `max_hold` ids, so a genuine U+FFFD still comes out.
    """

    def __init__(self, tokenizer: Tokenizer, *, max_hold: int = 4) -> None:
        self._tok = tokenizer
        self._pending: list[int] = []
        self._max_hold = max_hold

    def push(self, token_id: int) -> str:
        self._pending.append(int(token_id))
        text = self._tok.decode(self._pending)
        if text.endswith("\ufffd") and len(self._pending) < self._max_hold:
            return ""
        self._pending.clear()
        return text

    def flush(self) -> str:
        text = self._tok.decode(self._pending) if self._pending else ""
        self._pending.clear()
        return text
