"""The chat prompt: the one builder of the tokens the engine prefills for a parent's turn.

Raven checkpoints were tuned on "Bob: ...\\n\\nAlice: ..." dialogues (the parent is Bob, the
assistant Alice); World checkpoints on "User: ...\\n\\nAssistant: ...". A turn ends with a blank
line, so every parent message is normalised to never contain one and never to start a line
with a speaker name: a parent cannot forge an assistant turn. Every piece of user-controlled
text (the message, history turns, the child's nickname and summary) goes through
`services.inference.textnorm.prompt_text` first (NFKC, invisible characters dropped,
look-alike words folded); special-token text such as "<|endoftext|>" stays text and the
tokenizer encodes it as plain text (services.inference.tokenizer).

Token layout, encoded segment by segment (the state cache relies on it)::

    enc(header)                                     system text, the child, a greeting; ends "\\n\\n"
    per prior turn:  enc("{user}: msg\\n\\n{bot}:") + enc(reply) + enc("\\n\\n")
    the new turn:    enc("{user}: new\\n\\n{bot}:")

The engine closes a finished turn with exactly enc(reply) + enc("\\n\\n") on top of the prompt
(`Engine.turn_tokens`), so when the caller sends the reply back verbatim as history, the
cached state is an exact token prefix of the next turn's prompt and only the new message is
prefilled. Any difference (an edited reply, a changed child summary, a dropped old turn) is a
clean cache miss and a full prefill, never a wrong resume (see services.inference.engine).

A message is at most `services.common.limits.CHAT_MESSAGE_MAX_CHARS` characters: the gateway and
the inference node refuse longer ones, and the prompt keeps the whole of an accepted message.
Normalisation caps a message at the same number, which only cuts text that Unicode
normalisation made longer (NFKC expands some compatibility characters, "ﬃ" to "ffi").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from services.common.errors import InvalidArgument
from services.common.limits import CHAT_MESSAGE_MAX_CHARS
from services.inference.textnorm import prompt_text

__all__ = [
    "NICKNAME_MAX_CHARS",
    "SUMMARY_PROMPT_CHARS",
    "TURN_END",
    "ChildContext",
    "PromptBuilder",
    "Role",
    "build_turn_suffix",
    "normalize_message",
    "prompt_header",
    "speakers",
    "stop_sequences",
]

ChatFormat = Literal["raven", "world", "g1"]
Role = Literal["parent", "assistant"]
TURN_END = "\n\n"
NICKNAME_MAX_CHARS = 40
# The header keeps this much of the analytics summary (a longer one is cut at a word).
SUMMARY_PROMPT_CHARS = 1500

_SPEAKERS: dict[str, tuple[str, str]] = {"raven": ("Bob", "Alice"), "world": ("User", "Assistant"),
                                         "g1": ("User", "Assistant")}
# RWKV-7 G1 (published usage: "System: ...\n\nUser: ...\n\nAssistant:", "\n\n" the round
# separator; a reasoning block the model opens is never streamed: services/inference/reasoning.py)
_SYSTEM_TAG = {"g1": "System: "}

SYSTEM_PROMPT = (
    "{bot} is a warm, careful advisor on children's health, development and psychology who "
    "helps parents through the Avatario app. {bot} answers {user}, a parent, in a few short, "
    "plain sentences with practical ideas a family can try at home, based on what is known "
    "to help children. {bot} is encouraging and never judges. {bot} does not diagnose: "
    "{bot} describes what {user} reports, explains that only a professional can assess a "
    "child, and suggests a pediatrician, child psychologist, speech therapist or teacher when "
    "a worry lasts or gets worse. {bot} never gives medicine doses and asks {user} to check "
    "them with a doctor or pharmacist. If a child may be in danger or needs urgent care, "
    "{bot} tells {user} to call emergency services straight away."
)
_GREETING = (
    "{user}: Hi {bot}, can I ask you about my child?",
    "{bot}: Of course. Tell me what is on your mind, and we can think it through together.",
)

_ROLE_PREFIX = re.compile(
    r"^\s*(?:bob|alice|user|assistant|system|human|bot)\s*[:：]\s*", re.IGNORECASE
)
_NEWLINES = re.compile(r"\r\n|[\r\u2028\u2029\x85\x0b\x0c]")


class _Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class ChildContext:
    """What the assistant knows about the child (same fields as the protobuf ChildContext)."""

    nickname: str = ""
    age_months: int = 0
    summary: str = ""


def speakers(chat_format: str) -> tuple[str, str]:
    """(user, bot) names for the format."""
    try:
        return _SPEAKERS[chat_format]
    except KeyError:
        raise ValueError(f"unknown chat format {chat_format!r}; use 'raven', 'world' or 'g1'"
                         ) from None


def stop_sequences(chat_format: str) -> list[str]:
    """Text that ends the bot's turn, including a speaker tag after a single newline."""
    user, bot = speakers(chat_format)
    return [TURN_END, f"\n{user}:", f"\n{bot}:"]


def _cap(text: str, limit: int | None) -> str:
    # "..." rather than "…": NFKC (textnorm) turns the one into the other, and a normalised
    # message must stay as it is when normalised again
    if limit is None or len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "..."


def normalize_message(text: str, *, max_chars: int | None = CHAT_MESSAGE_MAX_CHARS) -> str:
    """One message, safe to place in a turn: no blank lines, no speaker tags, at most
    `max_chars` characters (None: no cut).

    Unicode tricks are undone first (`textnorm.prompt_text`: NFKC, invisible characters
    dropped, mixed-script look-alike words folded), so "Ａｌｉｃｅ:" or "Аlice:" with a
    Cyrillic А is a speaker tag like any other.
    """
    return _message(prompt_text(text), max_chars)


def _message(text: str, max_chars: int | None) -> str:
    text = _NEWLINES.sub("\n", text).replace("\t", " ")
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.strip()
        while True:
            stripped = _ROLE_PREFIX.sub("", line, count=1)
            if stripped == line:
                break
            line = stripped.strip()
        if line:
            lines.append(line)
    out = _cap("\n".join(lines), max_chars)
    # the cap may leave a trailing speaker tag fragment; normalising again is a fixed point
    return out if out == "\n".join(lines) else _message(out, max_chars)


def _one_line(text: str, limit: int) -> str:
    return _cap(" ".join(normalize_message(text, max_chars=10 * limit).split()), limit)


def _age(months: int) -> str:
    if months < 24:
        return f"{months} month{'s' if months != 1 else ''} old"
    years, rest = divmod(months, 12)
    extra = f" and {rest} month{'s' if rest != 1 else ''}" if rest else ""
    return f"{years} years{extra} old"


def _context_text(child: Any | None) -> str:
    if child is None:
        return ""
    nickname = _one_line(str(getattr(child, "nickname", "") or ""), NICKNAME_MAX_CHARS)
    age = int(getattr(child, "age_months", 0) or 0)
    summary = normalize_message(str(getattr(child, "summary", "") or ""),
                                max_chars=SUMMARY_PROMPT_CHARS)  # fmt: skip
    who = nickname or "The child"
    parts: list[str] = []
    if nickname or age > 0:
        parts.append(f"{who} is {_age(age)}." if age > 0 else f"The child's nickname is {who}.")
    if summary:
        parts.append(f"Recent results from the Avatario games, which are screening signals "
                     f"and not a diagnosis:\n{summary}")  # fmt: skip
    return "\n".join(parts)


def prompt_header(chat_format: str, child: Any | None = None) -> str:
    """System text, the child's context and a greeting exchange; ends with a blank line."""
    user, bot = speakers(chat_format)
    blocks = [_SYSTEM_TAG.get(chat_format, "") + SYSTEM_PROMPT.format(user=user, bot=bot)]
    context = _context_text(child)
    if context:
        blocks.append(f"About {user}'s child:\n{context}")
    blocks.extend(line.format(user=user, bot=bot) for line in _GREETING)
    return TURN_END.join(blocks) + TURN_END


def build_turn_suffix(chat_format: str, new_message: str) -> str:
    """A parent's turn up to the bot tag, where generation (or the stored reply) follows."""
    msg = normalize_message(new_message)
    if not msg:
        raise InvalidArgument.field("message", "must contain text")
    return _turn_open(chat_format, msg)


def _turn_open(chat_format: str, normalized: str) -> str:
    user, bot = speakers(chat_format)
    return f"{user}: {normalized}{TURN_END}{bot}:"


def _history_reply(text: str) -> str:
    """A reply as the engine streamed it: kept verbatim (so the cached state matches) unless
    it could close the turn; then it is normalised like a message (a clean cache miss)."""
    if TURN_END in text or "\r" in text:
        normalized = normalize_message(text, max_chars=None)
        return f" {normalized}" if normalized else ""
    return text


class PromptBuilder:
    """Prompt tokens for one chat format and tokenizer (see the module docstring)."""

    def __init__(self, tokenizer: _Encoder, chat_format: str) -> None:
        self.tok = tokenizer
        self.fmt = chat_format
        speakers(chat_format)  # an unknown format fails here, not on the first request
        self._terminator = list(tokenizer.encode(TURN_END))

    def tokens(self, message: str, history: Sequence[tuple[Role, str]] = (),
               child: ChildContext | None = None, *, max_tokens: int) -> list[int]:
        """The full prompt for `message` after `history` (oldest first). The oldest complete
        turns are dropped only when the prompt would not fit `max_tokens`; a message that
        does not fit even without history is INVALID_ARGUMENT on `message`."""
        header = list(self.tok.encode(prompt_header(self.fmt, child)))
        suffix = list(self.tok.encode(build_turn_suffix(self.fmt, message)))
        blocks = self._history_blocks(history)
        budget = max_tokens - len(header) - len(suffix)
        if budget < 0:
            raise InvalidArgument.field("message", "is too long for the model's prompt budget")
        total = sum(len(b) for b in blocks)
        while blocks and total > budget:
            total -= len(blocks.pop(0))
        return [*header, *(t for b in blocks for t in b), *suffix]

    def reply_tokens(self, reply: str) -> list[int]:
        """A reply's tokens as a history block holds them. The node closes a finished turn
        with exactly these (engine: `RequestHandle.close_turn`), so the next turn, whose
        history carries the reply as the node settled it, resumes from the cached state."""
        text = _history_reply(reply)
        return list(self.tok.encode(text)) if text else []

    def _history_blocks(self, history: Sequence[tuple[Role, str]]) -> list[list[int]]:
        """One token block per complete turn: parent message, reply, terminator. A parent
        message without a reply, a reply without its message and a message that normalises
        to nothing (no turn could have been generated from it) are left out."""
        blocks: list[list[int]] = []
        pending: list[int] | None = None
        for role, text in history:
            if role == "parent":
                msg = normalize_message(text)
                pending = list(self.tok.encode(_turn_open(self.fmt, msg))) if msg else None
            elif role == "assistant":
                if pending is not None:
                    blocks.append([*pending, *self.reply_tokens(text), *self._terminator])
                pending = None
            else:
                raise ValueError(f"unknown role {role!r}")
        return blocks
