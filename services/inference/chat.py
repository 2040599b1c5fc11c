"""Chat requests: protobuf <-> domain for the servicer (validation, sampling parameters, and
the request's message, history and child for the one prompt builder, services.inference.prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2
from services.common.limits import CHAT_MESSAGE_MAX_CHARS
from services.common.validation import Violations
from services.inference.prompt import NICKNAME_MAX_CHARS, ChildContext, PromptBuilder, Role
from services.inference.sampling import SamplingParams

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
    v.text("message", req.message, max_len=CHAT_MESSAGE_MAX_CHARS, multiline=True)
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
        if len(c.nickname) > NICKNAME_MAX_CHARS:
            v.add("child.nickname", f"must be at most {NICKNAME_MAX_CHARS} characters")
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


_ROLES: dict[int, Role] = {chat_pb2.ROLE_PARENT: "parent", chat_pb2.ROLE_ASSISTANT: "assistant"}


def child_from_pb(req: inference_pb2.ChatRequest) -> ChildContext | None:
    if not req.HasField("child"):
        return None
    c = req.child
    return ChildContext(nickname=c.nickname, age_months=c.age_months, summary=c.summary)


def history_from_pb(req: inference_pb2.ChatRequest) -> list[tuple[Role, str]]:
    """(role, text) per turn; roles were checked by `validate_chat`."""
    return [(_ROLES[t.role], t.text) for t in req.history]


def prompt_tokens(builder: PromptBuilder, req: inference_pb2.ChatRequest,
                  max_tokens: int) -> list[int]:
    """The prompt the engine prefills for a validated request."""
    return builder.tokens(req.message, history_from_pb(req), child_from_pb(req),
                          max_tokens=max_tokens)
