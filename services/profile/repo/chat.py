"""Chat conversations and their messages.

Privacy between parents: a conversation belongs to the parent who started it
(owner_parent_id) and is visible to other parents of the family only when
shared; conversations without an owner (from before several parents) are
visible to all. Reads that name a viewer see only what that parent may see, and
anything else answers NOT_FOUND exactly like an id that does not exist. Only the
owner adds turns or changes sharing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    turn_limit_reached,
)
from services.common.pagination import Page, PageRequest, cursor_value, cut_page, time_page
from services.profile.domain import rules
from services.profile.domain.enums import Role
from services.profile.models import ChatMessage, Conversation, new_id
from services.profile.repo.base import (
    get_child,
    get_parent,
    require_consent,
    require_family,
)


def visible_to(stmt: Select, viewer: str) -> Select:
    """Only the conversations `viewer` (a parent id) may read; no filter without one."""
    if not viewer:
        return stmt
    return stmt.where(or_(Conversation.owner_parent_id.is_(None),
                          Conversation.owner_parent_id == viewer,
                          Conversation.shared.is_(True)))


async def create_conversation(
    session: AsyncSession, *, family_id: str, child_id: str, title: str, now: datetime,
    parent_id: str = "", shared: bool = False,
) -> Conversation:
    if parent_id:
        await get_parent(session, family_id, parent_id)
    await get_child(session, family_id, child_id)
    await require_consent(session, family_id, rules.CHAT_SCOPE)
    conv = Conversation(
        id=new_id(), family_id=family_id, child_id=child_id, title=title, turn_count=0,
        created_at=now, updated_at=now, owner_parent_id=parent_id or None, shared=shared,
    )
    session.add(conv)
    await session.flush()
    return conv


async def get_conversation(session: AsyncSession, family_id: str, conv_id: str,
                           viewer: str = "", *, for_update: bool = False) -> Conversation:
    stmt = visible_to(select(Conversation).where(
        Conversation.id == conv_id, Conversation.family_id == family_id), viewer)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("conversation")
    return row


def check_owner(conv: Conversation, parent_id: str) -> None:
    """Only the parent who started a conversation continues it or changes its sharing
    (conversations without an owner: any parent)."""
    if parent_id and conv.owner_parent_id not in (None, parent_id):
        raise PermissionDenied("only the parent who started this conversation may change it")


async def update_conversation(
    session: AsyncSession, *, family_id: str, conversation_id: str, parent_id: str,
    shared: bool, now: datetime,
) -> Conversation:
    await get_parent(session, family_id, parent_id)
    conv = await get_conversation(session, family_id, conversation_id, parent_id,
                                  for_update=True)
    check_owner(conv, parent_id)
    if conv.owner_parent_id is None:
        # A family-wide conversation from before owners: the parent who shares or
        # unshares it takes it on.
        conv.owner_parent_id = parent_id
    if conv.shared != shared:
        conv.shared = shared
        conv.updated_at = now
    await session.flush()
    return conv


async def list_conversations(
    session: AsyncSession, family_id: str, child_id: str, page: PageRequest, viewer: str = "",
) -> Page:
    """Newest first; optionally one child's; only what `viewer` may read."""
    await require_family(session, family_id)
    stmt = visible_to(select(Conversation).where(Conversation.family_id == family_id), viewer)
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
    parent_id: str = "", turn_limit: int = 0,
) -> Turn:
    """Store one turn (the parent's message and the assistant's reply), once per turn_id.

    The conversation row is locked first, so appends to one conversation are
    serialized and a repeated turn_id sees the first append's messages: same
    content returns them, different content is ALREADY_EXISTS. A new turn past
    `turn_limit` (0: none) is FAILED_PRECONDITION (CONVERSATION_TURN_LIMIT).
    """
    conv = await get_conversation(session, family_id, conversation_id, parent_id,
                                  for_update=True)
    check_owner(conv, parent_id)
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
    if turn_limit and conv.turn_count >= turn_limit:
        raise turn_limit_reached(turn_limit)
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
    session: AsyncSession, family_id: str, conversation_id: str, page: PageRequest, *,
    viewer: str = "", newest_first: bool = False, turn_id: str = "",
) -> Page:
    """By position in the conversation: oldest first, or newest first (the first page
    is the last page.size messages); optionally one turn's messages only."""
    await get_conversation(session, family_id, conversation_id, viewer)
    key = "before" if newest_first else "seq"
    position = cursor_value(page, key, int)
    stmt = select(ChatMessage).where(ChatMessage.conversation_id == conversation_id)
    if turn_id:
        stmt = stmt.where(ChatMessage.turn_id == turn_id)
    if newest_first:
        if position is not None:
            stmt = stmt.where(ChatMessage.seq < position)
        stmt = stmt.order_by(ChatMessage.seq.desc())
    else:
        if position is not None:
            stmt = stmt.where(ChatMessage.seq > position)
        stmt = stmt.order_by(ChatMessage.seq)
    rows = list((await session.execute(stmt.limit(page.size + 1))).scalars().all())
    return cut_page(rows, page.size, lambda m: {key: m.seq})
