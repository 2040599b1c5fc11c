"""The whole stack as real processes, driven through the gateway's public API only."""

from __future__ import annotations

import asyncio
import io
import urllib.request

import grpc
import pytest
from rich.console import Console

from avatario.common.v1 import chat_pb2, family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api, ApiError
from avatario_tools.devstack.demo import run_demo
from tests.e2e.flows import CHAT_SCOPES, family_with_child
from tests.helpers import new_id, promtool_check

pytestmark = pytest.mark.slow


async def _messages(api: Api, conversation_id: str) -> list[chat_pb2.ChatMessage]:
    resp = await api.call(api.chat.ListMessages, gw.ListMessagesRequest(
        conversation_id=conversation_id, page_size=100))
    return list(resp.messages)


async def _wait_messages(api: Api, conversation_id: str, n: int) -> list[chat_pb2.ChatMessage]:
    for _ in range(100):
        msgs = await _messages(api, conversation_id)
        if len(msgs) >= n:
            return msgs
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {n} messages, have {len(msgs)}")


async def test_demo_then_chat_history_export_and_erasure(stack):
    out = io.StringIO()
    result = await run_demo(stack.gateway, Console(file=out, width=120), sessions=16, weeks=4,
                            question="How can we practise following instructions?")
    text = out.getvalue()
    assert result.sessions == 16 and "demo complete" in text
    assert result.finish_reason != chat_pb2.FINISH_REASON_UNSPECIFIED

    async with Api(stack.gateway) as api:
        # A fresh family for the rest (the demo keeps its parent's tokens to itself).
        password = "correct horse battery staple"
        parent, child = await family_with_child(
            api, f"e2e-{new_id()[:8]}@example.org", password, "Leo", (2018, 3),
            (*CHAT_SCOPES, family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS))
        conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
            child_id=child.child_id, title="Sleep"))).conversation

        first = await api.ask(conv.conversation_id, "How much sleep does a 7 year old need?",
                              lambda _: None, max_tokens=12)
        second = await api.ask(conv.conversation_id, "And what about naps?", lambda _: None,
                               max_tokens=12)
        msgs = await _wait_messages(api, conv.conversation_id, 4)
        assert [m.role for m in msgs] == [chat_pb2.ROLE_PARENT, chat_pb2.ROLE_ASSISTANT] * 2
        assert msgs[1].text == first.text and msgs[3].text == second.text
        if first.finish_reason in (chat_pb2.FINISH_REASON_STOP, chat_pb2.FINISH_REASON_LENGTH):
            assert second.stats.cache_hit, "the second turn resumes the cached state"

        # A safety answer goes through the same path without the model.
        safe = await api.ask(conv.conversation_id, "my son is not breathing and turning blue",
                             lambda _: None)
        assert safe.finish_reason == chat_pb2.FINISH_REASON_SAFETY
        assert safe.safety_category == "medical_emergency"

        export = await api.call(api.privacy.ExportFamilyData, gw.ExportFamilyDataRequest())
        assert export.profile.family_id == parent.family_id
        assert {c.child_id for c in export.profile.children} == {child.child_id}
        assert len(export.profile.messages) == 6

        erased = await api.call(api.privacy.EraseFamily, gw.EraseFamilyRequest(password=password))
        assert sum(erased.deleted_rows.values()) > 0
        with pytest.raises(ApiError) as ei:
            await api.sign_in(parent.email, password)
        assert ei.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_client_cancelling_mid_stream_keeps_the_conversation_consistent(stack):
    async with Api(stack.gateway) as api:
        _parent, child = await family_with_child(
            api, f"cancel-{new_id()[:8]}@example.org", "a long enough password", "Ada",
            (2017, 9))
        # The reply may end on its own between the first chunk and the cancel reaching
        # the server; such a turn is complete and consistent too. Try a few
        # conversations until one is really cut short.
        cancelled = None
        for _ in range(4):
            conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
                child_id=child.child_id))).conversation
            call = api.chat.Chat(gw.ChatRequest(
                conversation_id=conv.conversation_id, message="Tell me everything about reading.",
                turn_id=new_id(), params=chat_pb2.GenerationParams(max_tokens=400, temperature=1.0)),
                metadata=await api.parent_metadata(), timeout=120)
            async for event in call:
                if event.HasField("text"):
                    break
            call.cancel()
            msgs = await _wait_messages(api, conv.conversation_id, 2)
            reply = msgs[1]
            assert reply.role == chat_pb2.ROLE_ASSISTANT
            if reply.complete:
                assert reply.finish_reason in (chat_pb2.FINISH_REASON_STOP,
                                               chat_pb2.FINISH_REASON_STOP_SEQUENCE,
                                               chat_pb2.FINISH_REASON_LENGTH)
                continue
            assert reply.finish_reason == chat_pb2.FINISH_REASON_CANCELLED
            cancelled = conv
            break
        assert cancelled is not None, "no reply was cut short by the cancel"
        conv = cancelled
        # The next turn works.
        done = await api.ask(conv.conversation_id, "Thanks, one more question.", lambda _: None,
                             max_tokens=8)
        assert done.finish_reason != chat_pb2.FINISH_REASON_UNSPECIFIED
        assert len(await _wait_messages(api, conv.conversation_id, 4)) == 4


async def test_every_service_serves_metrics(stack):
    for name, port in stack.cfg.metrics_ports.items():
        url = f"http://127.0.0.1:{port}/metrics"
        body = await asyncio.to_thread(lambda u=url: urllib.request.urlopen(u, timeout=10).read())
        text = body.decode()
        assert "grpc_server_handled_total" in text, name
        promtool_check(text)
