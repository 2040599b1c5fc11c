"""Chat conversations and their messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import AlreadyExists
from services.common.pagination import Page, PageRequest, cursor_value, cut_page, time_page
from services.profile.domain import rules
from services.profile.domain.enums import Role
from services.profile.models import ChatMessage, Conversation, new_id
from services.profile.repo.base import (
    get_child,
    get_scoped,
    require_consent,
    require_family,
)


async def create_conversation(
    session: AsyncSession, *, family_id: str, child_id: str, title: str, now: datetime,
) -> Conversation:
    await get_child(session, family_id, child_id)
    await require_consent(session, family_id, rules.CHAT_SCOPE)
    conv = Conversation(
        id=new_id(), family_id=family_id, child_id=child_id, title=title, turn_count=0,
        created_at=now, updated_at=now,
    )
    session.add(conv)
    await session.flush()
    return conv


async def get_conversation(session: AsyncSession, family_id: str, conv_id: str) -> Conversation:
    return await get_scoped(session, Conversation, family_id, conv_id, "conversation")


async def list_conversations(
    session: AsyncSession, family_id: str, child_id: str, page: PageRequest,
) -> Page:
    """Newest first; optionally one child's."""
    await require_family(session, family_id)
    stmt = select(Conversation).where(Conversation.family_id == family_id)
    if child_id:
        await get_child(session, family_id, child_id)
        stmt = stmt.where(Conversation.child_id == child_id)
    return await time_page(session, stmt, Conversation.created_at, Conversation.id, page,
                           desc=True)


@dataclass(frozen=True)
class Turn:
    user: ChatMessage
    assistant: ChatMessage
    conversation: Conversation


def _same_turn(existing: list[ChatMessage], conv_id: str, user_text: str, reply: str,
               finish_reason: int) -> bool:
    by_role = {m.role: m for m in existing}
    user = by_role.get(Role.ROLE_PARENT)
    bot = by_role.get(Role.ROLE_ASSISTANT)
    return (
        user is not None and bot is not None and user.conversation_id == conv_id
        and user.text == user_text and bot.text == reply and bot.finish_reason == finish_reason
    )


async def append_turn(
    session: AsyncSession, *, family_id: str, conversation_id: str, turn_id: str,
    user_message: str, assistant_message: str, finish_reason: int, now: datetime,
) -> Turn:
    """Store one turn (the parent's message and the assistant's reply), once per turn_id.

    The conversation row is locked first, so appends to one conversation are
    serialized and a repeated turn_id sees the first append's messages: same
    content returns them, different content is ALREADY_EXISTS.
    """
    conv = await get_scoped(session, Conversation, family_id, conversation_id, "conversation",
                            for_update=True)
    await require_consent(session, family_id, rules.CHAT_SCOPE)
    existing = list((await session.execute(
        select(ChatMessage).where(ChatMessage.turn_id == turn_id).order_by(ChatMessage.seq)
    )).scalars().all())
    if existing:
        if not _same_turn(existing, conversation_id, user_message, assistant_message,
                          finish_reason):
            raise AlreadyExists(f"turn {turn_id} was already stored with different content")
        user, bot = existing[0], existing[-1]
        return Turn(user, bot, conv)
    seq = conv.turn_count * 2
    user = ChatMessage(
        id=new_id(), family_id=family_id, conversation_id=conv.id, turn_id=turn_id, seq=seq,
        role=Role.ROLE_PARENT, text=user_message, finish_reason=0, complete=True,
        created_at=now,
    )
    bot = ChatMessage(
        id=new_id(), family_id=family_id, conversation_id=conv.id, turn_id=turn_id,
        seq=seq + 1, role=Role.ROLE_ASSISTANT, text=assistant_message,
        finish_reason=finish_reason, complete=rules.is_complete(finish_reason), created_at=now,
    )
    session.add_all([user, bot])
    conv.turn_count += 1
    conv.updated_at = now
    await session.flush()
    return Turn(user, bot, conv)


async def list_messages(
    session: AsyncSession, family_id: str, conversation_id: str, page: PageRequest,
) -> Page:
    """Oldest first, by position in the conversation."""
    await get_conversation(session, family_id, conversation_id)
    after = cursor_value(page, "seq", int)
    stmt = select(ChatMessage).where(ChatMessage.conversation_id == conversation_id)
    if after is not None:
        stmt = stmt.where(ChatMessage.seq > after)
    stmt = stmt.order_by(ChatMessage.seq).limit(page.size + 1)
    rows = list((await session.execute(stmt)).scalars().all())
    return cut_page(rows, page.size, lambda m: {"seq": m.seq})
