"""Chat requests -> prompt tokens for the engine, and protobuf <-> domain translation.

Token layout (segment by segment, so a cached conversation state is a token prefix
of the next turn's prompt; see services.inference.engine's cache contract):

    enc(header) + per prior turn [enc("{user}: msg\\n\\n{bot}:"), enc(reply), enc("\\n\\n")]
                + enc("{user}: new\\n\\n{bot}:")

The engine closes a finished turn with exactly enc(reply) + enc("\\n\\n"), so when the
caller sends the reply back verbatim as history, the next turn prefills only its new
message. Any difference (an edited or replaced reply, a changed child summary) is a
clean cache miss and a full prefill, never a wrong resume.
"""

from __future__ import annotations

from dataclasses import dataclass

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2
from services.common.errors import InvalidArgument
from services.common.validation import Violations
from services.inference.prompt import (
    TURN_END,
    ChildContext,
    build_turn_suffix,
    normalize_message,
    prompt_header,
    speakers,
)
from services.inference.sampling import SamplingParams

MAX_MESSAGE_CHARS = 4000
MAX_REPLY_CHARS = 16000
MAX_SUMMARY_CHARS = 4000


@dataclass(frozen=True)
class ChatLimits:
    max_history_turns: int
    max_tokens_limit: int
    default_max_tokens: int
    max_prompt_tokens: int


def validate_chat(req: inference_pb2.ChatRequest, limits: ChatLimits) -> None:
    v = Violations()
    v.uuid("conversation_id", req.conversation_id)
    v.text("message", req.message, max_len=MAX_MESSAGE_CHARS, multiline=True)
    if len(req.history) > limits.max_history_turns:
        v.add("history", f"at most {limits.max_history_turns} turns")
    for i, turn in enumerate(req.history):
        if turn.role not in (chat_pb2.ROLE_PARENT, chat_pb2.ROLE_ASSISTANT):
            v.add(f"history[{i}].role", "must be ROLE_PARENT or ROLE_ASSISTANT")
        if len(turn.text) > MAX_REPLY_CHARS:
            v.add(f"history[{i}].text", f"must be at most {MAX_REPLY_CHARS} characters")
    if req.HasField("child"):
        c = req.child
        if not 0 <= c.age_months <= 18 * 12:
            v.add("child.age_months", "must be between 0 and 216")
        if len(c.nickname) > 40:
            v.add("child.nickname", "must be at most 40 characters")
        if len(c.summary) > MAX_SUMMARY_CHARS:
            v.add("child.summary", f"must be at most {MAX_SUMMARY_CHARS} characters")
    v.raise_if_any()


def sampling_from_pb(p: chat_pb2.GenerationParams, limits: ChatLimits,
                     stops: list[str]) -> SamplingParams:
    """Unset fields take the defaults; SamplingParams.validate names bad fields."""
    d = SamplingParams()
    params = SamplingParams(
        temperature=p.temperature if p.HasField("temperature") else d.temperature,
        top_p=p.top_p if p.HasField("top_p") else d.top_p,
        top_k=p.top_k,
        presence_penalty=p.presence_penalty if p.HasField("presence_penalty") else d.presence_penalty,
        frequency_penalty=(p.frequency_penalty if p.HasField("frequency_penalty")
                           else d.frequency_penalty),
        penalty_decay=p.penalty_decay if p.HasField("penalty_decay") else d.penalty_decay,
        max_tokens=p.max_tokens or limits.default_max_tokens,
        seed=p.seed if p.HasField("seed") else None,
        stop=tuple(dict.fromkeys([*stops, *p.stop])),
    )
    params.validate(limits.max_tokens_limit)  # names fields as params.<name>
    return params


class PromptBuilder:
    def __init__(self, tokenizer, chat_format: str) -> None:
        self.tok = tokenizer
        self.fmt = chat_format
        self.user, self.bot = speakers(chat_format)
        self._terminator = list(tokenizer.encode(TURN_END))

    def child(self, req: inference_pb2.ChatRequest) -> ChildContext | None:
        if not req.HasField("child"):
            return None
        c = req.child
        return ChildContext(nickname=c.nickname, age_months=c.age_months, summary=c.summary)

    def tokens(self, req: inference_pb2.ChatRequest, max_tokens: int) -> list[int]:
        """The full prompt. The oldest turns are dropped only when it would not fit."""
        header = list(self.tok.encode(prompt_header(self.fmt, self.child(req))))
        suffix = list(self.tok.encode(build_turn_suffix(self.fmt, req.message)))
        blocks = self._history_blocks(req.history)
        budget = max_tokens - len(header) - len(suffix)
        if budget < 0:
            raise InvalidArgument.field("message", "is too long for the model's prompt budget")
        total = sum(len(b) for b in blocks)
        while blocks and total > budget:
            total -= len(blocks.pop(0))
        return [*header, *(t for b in blocks for t in b), *suffix]

    def _history_blocks(self, history) -> list[list[int]]:
        """One token block per completed turn: parent message, reply, terminator."""
        blocks: list[list[int]] = []
        pending: list[int] | None = None
        for turn in history:
            if turn.role == chat_pb2.ROLE_PARENT:
                msg = normalize_message(turn.text)
                if not msg:
                    continue
                pending = list(self.tok.encode(f"{self.user}: {msg}{TURN_END}{self.bot}:"))
            elif pending is not None:
                reply = _reply_text(turn.text)
                blocks.append([*pending, *(self.tok.encode(reply) if reply else []), *self._terminator])
                pending = None
        return blocks


def _reply_text(text: str) -> str:
    """A reply as the engine streamed it: kept verbatim unless it could forge a turn."""
    if TURN_END in text or "\r" in text:
        normalized = normalize_message(text)
        return f" {normalized}" if normalized else ""
    return text
