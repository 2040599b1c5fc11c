"""Inference dies mid-stream: the turn is stored as incomplete, the next turn answers
UNAVAILABLE quickly, and once inference is back the conversation goes on."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from avatario.common.v1 import chat_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api, ApiError
from avatario_tools.devstack.stack import service_specs
from tests.e2e.flows import family_with_child
from tests.helpers import new_id

pytestmark = pytest.mark.slow


def _on_stack_loop(stack, coro, timeout=300):
    return asyncio.run_coroutine_threadsafe(coro, stack.loop).result(timeout)


async def test_inference_killed_mid_stream(stack):
    async with Api(stack.gateway) as api:
        _parent, child = await family_with_child(
            api, f"kill-{new_id()[:8]}@example.org", "a long enough password", "Ben", (2016, 1))
        conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
            child_id=child.child_id))).conversation

        call = api.chat.Chat(gw.ChatRequest(
            conversation_id=conv.conversation_id, message="Tell me a long story.",
            turn_id=new_id(), params=chat_pb2.GenerationParams(max_tokens=400, temperature=1.0)),
            metadata=await api.parent_metadata(), timeout=120)
        killed, final, err = False, None, None
        try:
            async for event in call:
                if event.HasField("done"):
                    final = event.done
                    break
                if not killed:  # mid-stream: the first text has arrived
                    stack.sup.procs["inference"].send_signal(signal.SIGKILL)
                    killed = True
        except grpc.aio.AioRpcError as exc:
            err = exc
        assert killed
        # Normally the stream breaks (UNAVAILABLE) or ends with ERROR; in a rare race the
        # reply was already complete when the process died.
        finished_first = final is not None and final.finish_reason != chat_pb2.FINISH_REASON_ERROR
        if err is not None:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err

        for _ in range(100):
            msgs = (await api.call(api.chat.ListMessages, gw.ListMessagesRequest(
                conversation_id=conv.conversation_id))).messages
            if len(msgs) == 2:
                break
            await asyncio.sleep(0.1)
        assert [m.role for m in msgs] == [chat_pb2.ROLE_PARENT, chat_pb2.ROLE_ASSISTANT]
        if finished_first:
            assert msgs[1].complete
        else:
            assert not msgs[1].complete and msgs[1].finish_reason == chat_pb2.FINISH_REASON_ERROR

        # Inference is down: UNAVAILABLE, promptly (the call's own deadline is generous).
        with pytest.raises(ApiError) as ei2:
            await asyncio.wait_for(api.ask(conv.conversation_id, "Are you there?", lambda _: None),
                                   timeout=60)
        assert ei2.value.code == grpc.StatusCode.UNAVAILABLE

        # Back up: the conversation continues.
        _on_stack_loop(stack, stack.sup.start(service_specs(stack.cfg)["inference"]))
        done = await api.ask(conv.conversation_id, "Are you back?", lambda _: None, max_tokens=8)
        assert done.finish_reason != chat_pb2.FINISH_REASON_UNSPECIFIED
