"""Chat orchestration: context from profile and analytics, a stream from
inference relayed chunk by chunk, the turn stored in profile.

One turn:
  1. validate; take one of the parent's chat-stream slots (RESOURCE_EXHAUSTED
     with RetryInfo when all are busy);
  2. in parallel from profile: the family's consents (CONSENT_SCOPE_CHAT_ASSISTANT
     must be active, else FAILED_PRECONDITION), the conversation and then its
     child (NOT_FOUND for other families' and for another parent's private one;
     PERMISSION_DENIED for another parent's shared one: only its owner continues
     it), the messages of this turn_id, and the newest messages, a page at a time
     newest first until the last `chat_history_turns` complete turns are in hand
     (at most HISTORY_PAGES pages: the whole conversation is never read); a
     conversation at its turn limit answers FAILED_PRECONDITION
     (CONVERSATION_TURN_LIMIT) before inference is asked; then the child's
     analytics summary (cached per child for `summary_cache_ttl_s`, one fetch at
     a time; if analytics fails the turn goes on without it, logged). Consents
     are read on every turn, so a withdrawal on any replica counts at once: the
     summary is sent only while CONSENT_SCOPE_GAMEPLAY_ANALYTICS is active, the
     nickname and age only while CONSENT_SCOPE_CHILD_PROFILE is;
  3. a turn_id already stored in this conversation is replayed from profile, not
     generated again (the client retried after losing the stream);
  4. inference Chat: chunks are relayed as they come; on its final message the
     turn is stored with AppendTurn(turn_id, finish_reason) *before* the client
     gets ChatDone, so a ChatDone means the turn is persisted.

When the reply ends early it is stored incomplete, never as a finished reply:
  * inference fails (or its stream ends without a final message) after some
    text: stored with FINISH_REASON_ERROR and the partial text, and the stream
    ends normally with ChatDone(FINISH_REASON_ERROR, partial text);
  * the client cancels or disconnects: stored with FINISH_REASON_CANCELLED and
    the text relayed so far (a detached task, so it completes after the handler
    is torn down);
  * inference unreachable, or no first chunk within chat_first_chunk_timeout_s:
    nothing is stored, the call answers UNAVAILABLE, and the same turn_id can
    be retried;
  * a "finished" reply with no text at all is stored as FINISH_REASON_ERROR
    (profile requires a finished reply to have text).
Control characters in the model's output are dropped before relaying and storing.
After an incomplete turn the conversation's inference state is forgotten (best
effort), so the next turn re-prefills from the stored history, in which
incomplete turns are left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import structlog
from prometheus_client import Gauge

from avatario.analytics.v1 import analytics_pb2 as an
from avatario.common.v1 import chat_pb2, family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.inference.v1 import inference_pb2 as inf
from avatario.profile.v1 import profile_pb2 as pf
from services.common.errors import (
    AlreadyExists,
    DomainError,
    PermissionDenied,
    Unavailable,
    consent_required,
    turn_limit_reached,
)
from services.common.interceptors import outside_call
from services.common.timeutil import age_months, utcnow
from services.common.validation import Violations, strip_control
from services.gateway.auth import ParentPrincipal
from services.gateway.clients.backends import BackendFailure
from services.gateway.clients.calls import child_ref, gather_all
from services.gateway.deps import Deps
from services.gateway.ratelimit import StreamLimiter

log = structlog.get_logger("avatario.gateway.chat")

FR = chat_pb2
INCOMPLETE = frozenset({FR.FINISH_REASON_CANCELLED, FR.FINISH_REASON_ERROR})
CHAT_SCOPE = family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT
PLAY_SCOPE = family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS
PROFILE_SCOPE = family_pb2.CONSENT_SCOPE_CHILD_PROFILE
# The history is read newest first, at most this many pages (a conversation whose
# recent turns are mostly incomplete gets a shorter history, not a full scan).
HISTORY_PAGES = 4


@dataclass
class TurnContext:
    conversation_id: str
    child: chat_pb2.ChildContext
    history: list[chat_pb2.ChatTurn]
    replay: tuple[chat_pb2.ChatMessage, chat_pb2.ChatMessage] | None


# Control characters a model may emit (random or misbehaving weights) are never relayed or
# stored (profile refuses them; a terminal would interpret them): the chassis' one rule.
clean = strip_control


def turns_of(messages: list[chat_pb2.ChatMessage]):
    """(user, assistant) pairs in conversation order."""
    by_turn: dict[str, dict[int, chat_pb2.ChatMessage]] = {}
    for m in messages:
        by_turn.setdefault(m.turn_id, {})[m.role] = m
    for parts in by_turn.values():
        user, bot = parts.get(FR.ROLE_PARENT), parts.get(FR.ROLE_ASSISTANT)
        if user is not None and bot is not None:
            yield user, bot


class ChatOrchestrator:
    def __init__(self, deps: Deps, streams: StreamLimiter, active: Gauge) -> None:
        self.d = deps
        self.s = deps.settings
        self.streams = streams
        self.active = active
        self._background: set[asyncio.Task] = set()
        self._fetching: dict[tuple[str, str], asyncio.Future] = {}

    async def drain(self, timeout: float = 5.0) -> None:
        """Let detached turn stores finish (server shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)

    def _params(self, request: gw.ChatRequest) -> chat_pb2.GenerationParams:
        v = Violations()
        v.uuid("conversation_id", request.conversation_id)
        v.text("message", request.message, max_len=self.s.chat_message_max_chars, multiline=True)
        v.uuid("turn_id", request.turn_id)
        if request.params.max_tokens < 0:
            v.add("params.max_tokens", "must not be negative")
        v.raise_if_any()
        params = chat_pb2.GenerationParams()
        params.CopyFrom(request.params)
        if params.max_tokens == 0:
            params.max_tokens = self.s.chat_default_max_tokens
        params.max_tokens = min(params.max_tokens, self.s.chat_max_tokens)
        return params

    async def chat(self, who: ParentPrincipal, request: gw.ChatRequest) -> AsyncIterator:
        params = self._params(request)
        with self.streams.slot(who.parent_id):
            self.active.inc()
            try:
                ctx = await self._context(who, request)
                if ctx.replay is not None:
                    for event in self._replay(request, *ctx.replay):
                        yield event
                    return
                async for event in self._generate(who, request, params, ctx):
                    yield event
            finally:
                self.active.dec()

    # -- context ---------------------------------------------------------------------

    async def _context(self, who: ParentPrincipal, request: gw.ChatRequest) -> TurnContext:
        p = self.d.profile

        async def conversation_and_child():
            conv = (await p.call("GetConversation", pf.GetConversationRequest(
                family_id=who.family_id, conversation_id=request.conversation_id))).conversation
            child = (await p.call("GetChild", pf.GetChildRequest(
                family_id=who.family_id, child_id=conv.child_id))).child
            return conv, child

        consents, (conversation, child), this_turn, messages = await gather_all(
            p.call("ListConsents", pf.ListConsentsRequest(family_id=who.family_id)),
            conversation_and_child(),
            p.call("ListMessages", pf.ListMessagesRequest(
                family_id=who.family_id, conversation_id=request.conversation_id,
                parent_id=who.parent_id, turn_id=request.turn_id, page_size=2)),
            self._recent_messages(who, request),
        )
        active = {c.scope for c in consents.consents if not c.HasField("withdrawn_at")}
        if CHAT_SCOPE not in active:
            raise consent_required(family_pb2.ConsentScope.Name(CHAT_SCOPE))
        if conversation.owner_parent_id not in ("", who.parent_id):
            raise PermissionDenied(
                "only the parent who started this conversation may continue it")
        replay = next(turns_of(list(this_turn.messages)), None)
        if replay is None and conversation.turn_limit and \
                conversation.turn_count >= conversation.turn_limit:
            raise turn_limit_reached(conversation.turn_limit)
        # The assistant hears about the child only with the consents that cover it:
        # nickname and age with CHILD_PROFILE, the play summary with GAMEPLAY_ANALYTICS.
        summary = await self._summary(child) if PLAY_SCOPE in active else ""
        if PROFILE_SCOPE not in active:
            child = family_pb2.Child(child_id=child.child_id, family_id=child.family_id)
        history = [(user, bot) for user, bot in turns_of(messages)
                   if bot.complete and user.turn_id != request.turn_id]
        turns = []
        keep = history[-self.s.chat_history_turns:] if self.s.chat_history_turns else []
        for user, bot in keep:
            turns.append(chat_pb2.ChatTurn(role=FR.ROLE_PARENT, text=user.text))
            turns.append(chat_pb2.ChatTurn(role=FR.ROLE_ASSISTANT, text=bot.text))
        context = chat_pb2.ChildContext(
            child_id=child.child_id, nickname=child.nickname,
            age_months=(max(0, age_months(child.birth_year, child.birth_month, utcnow()))
                        if child.birth_year else 0), summary=summary)
        return TurnContext(conversation.conversation_id, context, turns, replay)

    async def _recent_messages(self, who: ParentPrincipal,
                               request: gw.ChatRequest) -> list[chat_pb2.ChatMessage]:
        """The newest messages, oldest first: enough for `chat_history_turns` complete
        turns (other than this one) when the conversation has them."""
        want = self.s.chat_history_turns
        if not want:
            return []
        newest: list[chat_pb2.ChatMessage] = []
        token = ""
        for _ in range(HISTORY_PAGES):
            resp = await self.d.profile.call("ListMessages", pf.ListMessagesRequest(
                family_id=who.family_id, conversation_id=request.conversation_id,
                parent_id=who.parent_id, newest_first=True, page_size=min(200, 2 * want + 4),
                page_token=token))
            newest.extend(resp.messages)
            token = resp.next_page_token
            complete = sum(1 for user, bot in turns_of(newest)
                           if bot.complete and user.turn_id != request.turn_id)
            if complete >= want or not token:
                break
        return newest[::-1]

    async def _summary(self, child) -> str:
        """The child's analytics summary: cached, one fetch per child at a time."""
        key = (child.family_id, child.child_id)
        cached = self.d.summaries.get(key)
        if cached is not None:
            return cached
        pending = self._fetching.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_summary(child, key))
            self._fetching[key] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(key, None))
        return await asyncio.shield(pending)

    async def _fetch_summary(self, child, key) -> str:
        try:
            resp = await self.d.analytics.call(
                "GetChildSummary", an.GetChildSummaryRequest(child=child_ref(child)),
                timeout=self.s.summary_deadline_s)
        except (DomainError, BackendFailure) as exc:
            log.warning("chat.summary_unavailable", error=type(exc).__name__)
            return ""
        self.d.summaries.put(key, resp.summary.text)
        return resp.summary.text

    # -- generation ------------------------------------------------------------------

    def _replay(self, request: gw.ChatRequest, user, bot):
        if user.text != request.message:
            raise AlreadyExists("turn_id was already used for a different message")
        if bot.text:
            yield gw.ChatResponse(text=bot.text)
        yield gw.ChatResponse(done=gw.ChatDone(
            finish_reason=bot.finish_reason, turn_id=request.turn_id, text=bot.text))

    async def _generate(self, who, request: gw.ChatRequest, params, ctx: TurnContext):
        call = self.d.inference.stream("Chat", inf.ChatRequest(
            conversation_id=ctx.conversation_id, message=request.message, history=ctx.history,
            child=ctx.child, params=params), timeout=self.s.chat_deadline_s)
        parts: list[str] = []
        final = None
        try:
            msg = await asyncio.wait_for(call.read(), self.s.chat_first_chunk_timeout_s)
            while msg is not grpc.aio.EOF:
                kind = msg.WhichOneof("event")
                if kind == "final":
                    final = msg.final
                    break
                text = clean(msg.chunk.text) if kind == "chunk" else ""
                if text:
                    parts.append(text)
                    yield gw.ChatResponse(text=text)
                msg = await call.read()
        except TimeoutError:
            call.cancel()
            raise Unavailable("the assistant did not start answering in time; retry") from None
        except grpc.aio.AioRpcError as err:
            if not parts:
                raise self.d.inference.failed(err) from None
            log.warning("chat.inference_failed_midstream", code=err.code().name,
                        chunks=len(parts))
        except (asyncio.CancelledError, GeneratorExit):
            call.cancel()
            log.info("chat.client_went_away", chunks=len(parts))
            self._store(who, request, "".join(parts), FR.FINISH_REASON_CANCELLED)
            raise
        if final is None:
            text, reason, stats, safety = "".join(parts), FR.FINISH_REASON_ERROR, None, ""
        else:
            text = clean(final.text) or "".join(parts)
            reason = final.finish_reason or FR.FINISH_REASON_STOP
            stats, safety = final.stats, final.safety_category
            if reason not in INCOMPLETE and not text.strip():
                reason = FR.FINISH_REASON_ERROR
        await asyncio.shield(self._store(who, request, text, reason))
        yield gw.ChatResponse(done=gw.ChatDone(
            finish_reason=reason, stats=stats, turn_id=request.turn_id, text=text,
            safety_category=safety))

    def _store(self, who, request: gw.ChatRequest, text: str, reason: int) -> asyncio.Task:
        # not bound by the client's deadline: the turn is stored even after it passed
        task = asyncio.create_task(self._append(who, request, text, reason),
                                   context=outside_call())
        self._background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("chat.store_failed", error=type(task.exception()).__name__)

    async def _append(self, who, request: gw.ChatRequest, text: str, reason: int):
        resp = await self.d.profile.call("AppendTurn", pf.AppendTurnRequest(
            family_id=who.family_id, conversation_id=request.conversation_id,
            turn_id=request.turn_id, user_message=request.message, assistant_message=text,
            finish_reason=reason, parent_id=who.parent_id))
        if reason in INCOMPLETE:
            try:
                await self.d.inference.call("ForgetConversations", inf.ForgetConversationsRequest(
                    conversation_ids=[request.conversation_id]))
            except (DomainError, BackendFailure):
                log.info("chat.forget_after_incomplete_failed")
        return resp
