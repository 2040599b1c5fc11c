"""A failure-injection InferenceService: a real grpc.aio server (with the
chassis and the internal credential) whose Chat streams a scripted reply and
can die mid-stream, stall, or report what it was asked. Only for testing how
the gateway survives a misbehaving inference node; the real one is used where
its behaviour is what is being tested."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2 as inf
from avatario.inference.v1 import inference_pb2_grpc as inf_grpc
from services.common.server import Registration, Server, create_server
from services.common.settings import ServiceSettings
from tests.helpers import INTERNAL_TOKEN

NAME = inf.DESCRIPTOR.services_by_name["InferenceService"].full_name


@dataclass
class Script:
    chunks: list[str] = field(default_factory=lambda: ["Try ", "a calm ", "bedtime ", "routine."])
    delay_s: float = 0.0
    # "ok"; "abort" (UNAVAILABLE after `after` chunks); "hang" (stop sending after
    # `after` chunks; the test kills the server); "stall" (never send anything).
    mode: str = "ok"
    after: int = 2
    finish_reason: int = chat_pb2.FINISH_REASON_STOP


class FakeInference:
    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[inf.ChatRequest] = []
        self.forgotten: list[str] = []
        # The ids of ForgetConversations calls that said `erased` (an erasure).
        self.erased: list[str] = []
        self.reached = asyncio.Event()  # `after` chunks were sent
        self.cancelled = asyncio.Event()

    async def Chat(self, request: inf.ChatRequest, context):
        self.requests.append(request)
        s = self.script
        try:
            if s.mode == "stall":
                await asyncio.sleep(3600)
            for i, text in enumerate(s.chunks):
                if i == s.after and s.mode in ("abort", "hang"):
                    self.reached.set()
                    if s.mode == "abort":
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "the GPU node went away")
                    await asyncio.sleep(3600)
                yield inf.ChatResponse(chunk=inf.ChatChunk(text=text))
                if s.delay_s:
                    await asyncio.sleep(s.delay_s)
            yield inf.ChatResponse(final=inf.ChatFinal(
                finish_reason=s.finish_reason, text="".join(s.chunks),
                stats=chat_pb2.GenerationStats(completion_tokens=len(s.chunks))))
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def GetModelInfo(self, request, context):
        return inf.GetModelInfoResponse(model_name="fake")

    async def ForgetConversations(self, request, context):
        self.forgotten.extend(request.conversation_ids)
        if request.erased:
            self.erased.extend(request.conversation_ids)
        return inf.ForgetConversationsResponse(forgotten=len(request.conversation_ids))


async def start_fake(fake: FakeInference, port: int = 0) -> tuple[Server, int]:
    settings = ServiceSettings(internal_token=INTERNAL_TOKEN, port=port, metrics_port=None,
                               log_json=False)
    server, bound = await create_server(
        name="fake-inference", settings=settings,
        services=[Registration(inf_grpc.add_InferenceServiceServicer_to_server, fake, NAME)])
    await server.start()
    await server.set_serving()
    return server, bound
