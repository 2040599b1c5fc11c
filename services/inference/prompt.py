"""Chat prompts for the parent-advisor assistant, in the model's own chat format.

Raven checkpoints were tuned on "Bob: ...\\n\\nAlice: ..." dialogues (the parent is Bob, the
assistant Alice); World checkpoints on "User: ...\\n\\nAssistant: ...". A turn ends with a blank
line, so every message is normalised to never contain one and never to start a line with a
speaker name: a parent cannot forge an assistant turn. Every piece of user-controlled text
(the message, history turns, the child's nickname and summary) goes through
`services.inference.textnorm.prompt_text` first (NFKC, invisible characters dropped,
look-alike words folded); special-token text such as "<|endoftext|>" stays text and the
tokenizer encodes it as plain text (services.inference.tokenizer).

Prompt layout (the state cache relies on it)::

    header                      system text + what we know about the child, ends "\\n\\n"
    {user}: message\\n\\n{bot}: reply\\n\\n     one block per prior turn
    {user}: new message\\n\\n{bot}:             `build_turn_suffix`

so ``build_history_prefix(history) + build_turn_suffix(new) == build_prompt(history, new)``.
A cached state that has consumed the prefix only needs the suffix prefilled.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from services.common.errors import InvalidArgument
from services.inference.textnorm import prompt_text

__all__ = [
    "TURN_END",
    "ChildContext",
    "build_history_prefix",
    "build_prompt",
    "build_turn_suffix",
    "header_fingerprint",
    "normalize_message",
    "prompt_header",
    "render_reply",
    "speakers",
    "stop_sequences",
]

ChatFormat = Literal["raven", "world"]
TURN_END = "\n\n"
MAX_MESSAGE_CHARS = 2000
MAX_SUMMARY_CHARS = 1500
MAX_NICKNAME_CHARS = 40
MAX_HISTORY_CHARS = 8000

_SPEAKERS: dict[str, tuple[str, str]] = {"raven": ("Bob", "Alice"), "world": ("User", "Assistant")}

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
        raise ValueError(f"unknown chat format {chat_format!r}; use 'raven' or 'world'") from None


def stop_sequences(chat_format: str) -> list[str]:
    """Text that ends the bot's turn, including a speaker tag after a single newline."""
    user, bot = speakers(chat_format)
    return [TURN_END, f"\n{user}:", f"\n{bot}:"]


def _cap(text: str, limit: int) -> str:
    # "..." rather than "…": NFKC (textnorm) turns the one into the other, and a normalised
    # message must stay as it is when normalised again
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "..."


def normalize_message(text: str, *, max_chars: int = MAX_MESSAGE_CHARS) -> str:
    """One message, safe to place in a turn: no blank lines, no speaker tags, capped length.

    Unicode tricks are undone first (`textnorm.prompt_text`: NFKC, invisible characters
    dropped, mixed-script look-alike words folded), so "Ａｌｉｃｅ:" or "Аlice:" with a
    Cyrillic А is a speaker tag like any other.
    """
    return _message(prompt_text(text), max_chars)


def _message(text: str, max_chars: int) -> str:
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
    nickname = _one_line(str(getattr(child, "nickname", "") or ""), MAX_NICKNAME_CHARS)
    age = int(getattr(child, "age_months", 0) or 0)
    summary = normalize_message(str(getattr(child, "summary", "") or ""),
                                max_chars=MAX_SUMMARY_CHARS)  # fmt: skip
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
    blocks = [SYSTEM_PROMPT.format(user=user, bot=bot)]
    context = _context_text(child)
    if context:
        blocks.append(f"About {user}'s child:\n{context}")
    blocks.extend(line.format(user=user, bot=bot) for line in _GREETING)
    return TURN_END.join(blocks) + TURN_END


def header_fingerprint(chat_format: str, child: Any | None = None) -> str:
    """Changes whenever the header changes (e.g. a new summary): cached states go stale."""
    return hashlib.sha256(prompt_header(chat_format, child).encode()).hexdigest()[:16]


def _role(role: Any, index: int) -> str:
    value = role.lower() if isinstance(role, str) else role
    if value in ("parent", "user", "role_parent", 1):
        return "user"
    if value in ("assistant", "bot", "role_assistant", 2):
        return "bot"
    raise InvalidArgument.field(f"history[{index}].role", "must be parent or assistant")


def _turns(chat_format: str, history: Iterable[tuple[Any, str]]) -> list[str]:
    user, bot = speakers(chat_format)
    blocks: list[str] = []
    for i, (role, text) in enumerate(history):
        who = user if _role(role, i) == "user" else bot
        msg = normalize_message(text)
        if msg:
            blocks.append(f"{who}: {msg}{TURN_END}")
        elif who == bot:  # an empty (cancelled) reply, exactly as `render_reply` closes it
            blocks.append(f"{who}:{TURN_END}")
    return blocks


def _fit_history(chat_format: str, blocks: list[str], budget: int) -> list[str]:
    """Drop the oldest messages until the history fits `budget` characters."""
    bot_tag = speakers(chat_format)[1] + ":"
    total = sum(len(b) for b in blocks)
    start = 0
    while start < len(blocks) and total > budget:
        total -= len(blocks[start])
        start += 1
    while start < len(blocks) and blocks[start].startswith(bot_tag):
        start += 1  # never open the remembered history on a reply to a dropped question
    return blocks[start:]


def build_history_prefix(
    chat_format: str,
    child: Any | None,
    history: Sequence[tuple[Any, str]],
    *,
    max_history_chars: int = MAX_HISTORY_CHARS,
) -> str:
    """Header plus prior turns: what a cached state has consumed after the last reply."""
    blocks = _fit_history(chat_format, _turns(chat_format, history), max_history_chars)
    return prompt_header(chat_format, child) + "".join(blocks)


def build_turn_suffix(chat_format: str, new_message: str) -> str:
    """The text to prefill for a new turn on top of a cached state; ends with the bot tag."""
    user, bot = speakers(chat_format)
    msg = normalize_message(new_message)
    if not msg:
        raise InvalidArgument.field("message", "must contain text")
    return f"{user}: {msg}{TURN_END}{bot}:"


def build_prompt(
    chat_format: str,
    child: Any | None,
    history: Sequence[tuple[Any, str]],
    new_message: str,
    *,
    max_history_chars: int = MAX_HISTORY_CHARS,
) -> str:
    """The whole prompt for a cache miss; generation continues as the bot."""
    return build_history_prefix(
        chat_format, child, history, max_history_chars=max_history_chars
    ) + build_turn_suffix(chat_format, new_message)


def render_reply(reply: str) -> str:
    """What follows the bot tag once the reply is settled, so the state matches the prefix."""
    msg = normalize_message(reply)
    return f" {msg}{TURN_END}" if msg else TURN_END
