"""Helpers the inference node's integration tests share."""

from __future__ import annotations

from typing import Any

from avatario.inference.v1 import inference_pb2
from services.inference.settings import InferenceSettings
from tests.helpers import INTERNAL_TOKEN


def node_settings(model_path: Any, **kw: Any) -> InferenceSettings:
    """A node on port 0 without metrics port, serving `model_path` (World vocabulary unless
    `tokenizer` says otherwise), with small token limits for fast tests."""
    base = dict(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None, model_path=model_path,
                tokenizer="world", strategy="", max_tokens_limit=256, default_max_tokens=16)
    return InferenceSettings(**(base | kw))


async def collect_chunks(call) -> tuple[list[str], inference_pb2.ChatFinal]:
    """The streamed chunks of a Chat call and its final message (which must come)."""
    chunks, final = [], None
    async for resp in call:
        if resp.HasField("chunk"):
            chunks.append(resp.chunk.text)
        else:
            final = resp.final
    assert final is not None
    return chunks, final


async def collect_chat(call) -> tuple[str, inference_pb2.ChatFinal]:
    """The streamed text of a Chat call and its final message (which must come)."""
    chunks, final = await collect_chunks(call)
    return "".join(chunks), final
