"""Each module defines its own module-scoped `node` (a built inference server); the
stub to it is shared here."""

from __future__ import annotations

import pytest_asyncio

from avatario.inference.v1 import inference_pb2_grpc
from services.common.clients import internal_channel


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stub(node):
    async with internal_channel(f"127.0.0.1:{node.port}", node.settings, caller="test") as ch:
        yield inference_pb2_grpc.InferenceServiceStub(ch)
