"""InferenceService: thin translation between protobuf and the engine."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import structlog

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from services.common.errors import DeadlineExceeded, Unavailable
from services.common.timeutil import to_duration
from services.common.validation import Violations, strip_control
from services.inference.chat import ChatLimits, prompt_tokens, sampling_from_pb, validate_chat
from services.inference.engine import (
    DEADLINE_EXCEEDED,
    FinishEvent,
    GenerationRequest,
    TokenEvent,
)
from services.inference.prompt import PromptBuilder, stop_sequences
from services.inference.runtime import EngineMetrics, Runtime
from services.inference.safety import OutputStreamGuard, SafetyGuard
from services.inference.safety.layered import Assessment, LayeredGuard

log = structlog.get_logger("avatario.inference")

FINISH = {
    "stop": chat_pb2.FINISH_REASON_STOP,
    "length": chat_pb2.FINISH_REASON_LENGTH,
    "stop_sequence": chat_pb2.FINISH_REASON_STOP_SEQUENCE,
    "cancelled": chat_pb2.FINISH_REASON_CANCELLED,
    "error": chat_pb2.FINISH_REASON_ERROR,
}
MAX_FORGET = 10_000
CACHE_TIER = {
    "local": chat_pb2.CACHE_TIER_LOCAL,
    "shared": chat_pb2.CACHE_TIER_SHARED,
    "miss": chat_pb2.CACHE_TIER_MISS,
    "": chat_pb2.CACHE_TIER_UNSPECIFIED,
}


def _chunk(text: str) -> inference_pb2.ChatResponse:
    return inference_pb2.ChatResponse(chunk=inference_pb2.ChatChunk(text=text))


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, runtime: Callable[[], Runtime | None], guard: LayeredGuard | SafetyGuard,
                 metrics: EngineMetrics | None = None) -> None:
        self._runtime = runtime
        # Every chat goes through the layered guard (rules alone when given a SafetyGuard).
        self._guard = guard if isinstance(guard, LayeredGuard) else LayeredGuard(guard, None)
        self._metrics = metrics

    async def _assess(self, message: str) -> Assessment:
        t0 = time.perf_counter()
        a = await self._guard.assess(message)
        if self._metrics:
            self._metrics.safety_guard_seconds.observe(time.perf_counter() - t0)
            category = a.verdict.category if a.verdict else a.borderline or "none"
            decision = "answer" if a.verdict else "borderline" if a.borderline else "pass"
            self._metrics.safety_decisions.labels(a.layer, category, decision).inc()
        return a

    def _rt(self) -> Runtime:
        rt = self._runtime()
        if rt is None:
            raise Unavailable("the model is still loading; retry shortly")
        return rt

    async def Chat(self, request: inference_pb2.ChatRequest, context) -> AsyncIterator[
            inference_pb2.ChatResponse]:
        rt = self._rt()
        s = rt.settings
        limits = ChatLimits(s.max_history_turns, s.max_tokens_limit, s.default_max_tokens,
                            s.max_prompt_tokens)
        validate_chat(request, limits)
        rt.states.check_turn(request.conversation_id)  # erased: FAILED_PRECONDITION
        assessment = await self._assess(request.message)
        verdict = assessment.verdict
        if verdict is not None:
            # Crisis, abuse, emergencies, dosing: a fixed answer; the model is not called.
            log.info("inference.safety_answer", category=verdict.category,
                     layer=assessment.layer)
            if self._metrics:
                self._metrics.safety.labels(verdict.category).inc()
            yield _chunk(verdict.answer)
            yield inference_pb2.ChatResponse(final=inference_pb2.ChatFinal(
                finish_reason=chat_pb2.FINISH_REASON_SAFETY, text=verdict.answer,
                safety_category=verdict.category, stats=chat_pb2.GenerationStats()))
            return
        params = sampling_from_pb(request.params, limits, stop_sequences(rt.chat_format)[1:])
        builder = PromptBuilder(rt.tokenizer, rt.chat_format)
        tokens = prompt_tokens(builder, request, s.max_prompt_tokens - params.max_tokens)
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        # A local miss reads the shared tier first; the turn is closed with the reply as
        # settled here (guard, notes, no control characters): the history the caller sends
        # back next time, so the next turn resumes from this one's state.
        resume = await rt.states.resume(request.conversation_id, tokens)
        handle = rt.engine.submit(GenerationRequest(
            conversation_id=request.conversation_id, prompt_tokens=tokens, params=params,
            deadline=deadline, resume=resume, settle_reply=True))
        borderline = assessment.borderline
        if borderline is not None:
            log.info("inference.safety_borderline", category=borderline)
        out = OutputStreamGuard(self._guard.rules, nickname=request.child.nickname or None)
        sent: list[str] = []
        finished = False
        try:
            async for event in handle:
                if isinstance(event, TokenEvent):
                    safe = out.feed(strip_control(event.text))
                    if safe:
                        sent.append(safe)
                        yield _chunk(safe)
                    continue
                assert isinstance(event, FinishEvent)
                finished = True
                if event.detail == DEADLINE_EXCEEDED:
                    # The engine stopped at the call's deadline: the call fails as gRPC's own
                    # timer would make it, not with a short reply that looks complete.
                    raise DeadlineExceeded("the deadline passed before the reply was finished")
                rest = out.finish()
                if rest:
                    sent.append(rest)
                    yield _chunk(rest)
                if borderline is not None:
                    # Borderline: the model's reply, then one line with the help line.
                    line = self._guard.help_line(borderline)
                    line = f"\n\n{line}" if sent else line
                    sent.append(line)
                    yield _chunk(line)
                text = "".join(sent)
                if await handle.close_turn(builder.reply_tokens(text)):
                    rt.states.publish_soon(request.conversation_id)
                yield inference_pb2.ChatResponse(final=self._final(event, text, out, borderline))
        finally:
            if not finished:  # the client went away: free the slot within one step
                handle.cancel()

    def _final(self, ev: FinishEvent, text: str, out: OutputStreamGuard,
               borderline: str | None = None) -> inference_pb2.ChatFinal:
        reason = FINISH[ev.reason]
        category = ""
        if out.category is not None:
            reason = chat_pb2.FINISH_REASON_SAFETY
            category = out.category
            if self._metrics:
                self._metrics.safety.labels(out.category).inc()
        elif borderline is not None:
            # The model's own reply (its finish reason kept) with a help line appended.
            category = f"{borderline}_borderline"
        return inference_pb2.ChatFinal(
            finish_reason=reason, text=text, safety_category=category,
            stats=chat_pb2.GenerationStats(
                prompt_tokens=ev.prompt_tokens, completion_tokens=ev.completion_tokens,
                cached_tokens=ev.cached_tokens, cache_hit=ev.cache_hit,
                cache_tier=CACHE_TIER[ev.cache_tier],
                time_to_first_token=to_duration(ev.ttft_s),
                tokens_per_second=ev.tokens_per_second))

    async def GetModelInfo(self, request, context) -> inference_pb2.GetModelInfoResponse:
        rt = self._rt()
        stats = rt.cache.stats()
        return inference_pb2.GetModelInfoResponse(
            model_name=rt.settings.model_path.name, n_layer=rt.info.n_layer,
            n_embd=rt.info.n_embd, vocab_size=rt.info.vocab_size, strategy=rt.plan.strategy,
            strategy_reason=rt.plan.reason,
            plan=[inference_pb2.PlacementSegment(
                device=seg.device, dtype=seg.dtype, first_layer=seg.first_layer,
                layer_count=seg.layer_count, bytes=seg.bytes, streamed_layers=seg.streamed_layers)
                for seg in rt.plan.segments],
            gpus=[inference_pb2.GpuDevice(index=g.index, name=g.name, total_bytes=g.total_bytes,
                                          free_bytes=g.free_bytes) for g in rt.gpus],
            chat_format=rt.chat_format, tokenizer=rt.tokenizer.name,
            max_batch_size=rt.engine.config.max_running,
            state_cache_budget_bytes=stats.budget_bytes, state_cache_used_bytes=stats.used_bytes)

    async def ForgetConversations(self, request, context):
        v = Violations()
        if len(request.conversation_ids) > MAX_FORGET:
            v.add("conversation_ids", f"at most {MAX_FORGET} ids")
        for i, cid in enumerate(request.conversation_ids):
            v.uuid(f"conversation_ids[{i}]", cid)
        v.raise_if_any()
        rt = self._rt()
        return inference_pb2.ForgetConversationsResponse(forgotten=await rt.states.forget(
            request.conversation_ids, erased=request.erased))
