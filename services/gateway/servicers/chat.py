"""ChatService: conversations in profile; Chat is orchestrated in services.gateway.chat.

Every call names the caller as the viewer: another parent's private conversation
answers NOT_FOUND like one that does not exist."""

from __future__ import annotations

from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.profile.v1 import profile_pb2 as pf
from services.gateway.chat import ChatOrchestrator
from services.gateway.deps import Deps


class ChatServicer:
    def __init__(self, deps: Deps, orchestrator: ChatOrchestrator) -> None:
        self.d = deps
        self.orchestrator = orchestrator

    async def CreateConversation(self, request: gw.CreateConversationRequest, context, who):
        resp = await self.d.profile.call("CreateConversation", pf.CreateConversationRequest(
            family_id=who.family_id, child_id=request.child_id, title=request.title,
            parent_id=who.parent_id, shared=request.shared))
        return gw.CreateConversationResponse(conversation=resp.conversation)

    async def GetConversation(self, request: gw.GetConversationRequest, context, who):
        resp = await self.d.profile.call("GetConversation", pf.GetConversationRequest(
            family_id=who.family_id, conversation_id=request.conversation_id,
            parent_id=who.parent_id))
        return gw.GetConversationResponse(conversation=resp.conversation)

    async def ListConversations(self, request: gw.ListConversationsRequest, context, who):
        resp = await self.d.profile.call("ListConversations", pf.ListConversationsRequest(
            family_id=who.family_id, child_id=request.child_id, page_size=request.page_size,
            page_token=request.page_token, parent_id=who.parent_id))
        return gw.ListConversationsResponse(conversations=resp.conversations,
                                            next_page_token=resp.next_page_token)

    async def ListMessages(self, request: gw.ListMessagesRequest, context, who):
        resp = await self.d.profile.call("ListMessages", pf.ListMessagesRequest(
            family_id=who.family_id, conversation_id=request.conversation_id,
            page_size=request.page_size, page_token=request.page_token,
            parent_id=who.parent_id, newest_first=request.newest_first))
        return gw.ListMessagesResponse(messages=resp.messages,
                                       next_page_token=resp.next_page_token)

    async def UpdateConversation(self, request: gw.UpdateConversationRequest, context, who):
        resp = await self.d.profile.call("UpdateConversation", pf.UpdateConversationRequest(
            family_id=who.family_id, conversation_id=request.conversation_id,
            parent_id=who.parent_id, shared=request.shared))
        return gw.UpdateConversationResponse(conversation=resp.conversation)

    async def Chat(self, request: gw.ChatRequest, context, who):
        async for event in self.orchestrator.chat(who, request):
            yield event
