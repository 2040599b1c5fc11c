"""Every Chat goes through the layered guard: classifier answers, borderline replies with a
help line, decision metrics. A real node on port 0 with a tiny random RWKV-4 model."""

from __future__ import annotations

import pytest
import pytest_asyncio

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2
from services.inference.checkpoint import build_random_checkpoint
from services.inference.main import build_server
from services.inference.safety.classifier import Thresholds
from services.inference.settings import InferenceSettings
from tests.helpers import INTERNAL_TOKEN, new_id
from tests.integration.inference.support import collect_chunks

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The rules let this through; the classifier gives it the fixed crisis answer.
CLASSIFIER_CRISIS = ("my daughter has been handing her favourite things to her friends and "
                     "wrote a letter telling us she's sorry for everything")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    build_random_checkpoint(path, n_layer=2, n_embd=32, vocab_size=65536, seed=11)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(model_path):
    settings = InferenceSettings(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None,
                                 model_path=model_path, tokenizer="world", max_tokens_limit=64,
                                 default_max_tokens=8)
    node = await build_server(settings)
    yield node
    await node.server.stop(0)



def _req(message: str) -> inference_pb2.ChatRequest:
    return inference_pb2.ChatRequest(
        conversation_id=new_id(), message=message,
        params=chat_pb2.GenerationParams(temperature=0.0, max_tokens=8),
        child=chat_pb2.ChildContext(child_id=new_id(), nickname="Mia", age_months=84))


def _count(node, layer: str, category: str, decision: str) -> float:
    for metric in node.metrics.safety_decisions.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.labels == {
                    "layer": layer, "category": category, "decision": decision}:
                return s.value
    return 0.0


async def test_the_classifier_answers_what_the_rules_miss(node, stub):
    assert node.guard.rules.check_input(CLASSIFIER_CRISIS) is None
    before = _count(node, "classifier", "crisis", "answer")
    chunks, final = await collect_chunks(stub.Chat(_req(CLASSIFIER_CRISIS)))
    assert final.finish_reason == chat_pb2.FINISH_REASON_SAFETY
    assert final.safety_category == "crisis"
    assert "".join(chunks) == final.text == node.guard.rules.answer("crisis")
    assert final.stats.prompt_tokens == 0  # the model was not called
    assert _count(node, "classifier", "crisis", "answer") == before + 1


async def test_rules_and_plain_messages_are_counted(node, stub):
    rules_before = _count(node, "rules", "crisis", "answer")
    pass_before = _count(node, "none", "none", "pass")
    _, final = await collect_chunks(stub.Chat(_req("my son told me he wants to kill himself")))
    assert final.safety_category == "crisis"
    _, final = await collect_chunks(stub.Chat(_req("Any ideas for a rainy afternoon with Mia?")))
    assert final.safety_category == "" and final.finish_reason != chat_pb2.FINISH_REASON_SAFETY
    assert _count(node, "rules", "crisis", "answer") == rules_before + 1
    assert _count(node, "none", "none", "pass") == pass_before + 1
    assert sum(s.value for m in node.metrics.safety_guard_seconds.collect()
               for s in m.samples if s.name.endswith("_count")) >= 2


async def test_a_borderline_message_gets_the_reply_then_the_help_line(node, stub):
    # Put every message in the borderline band for this test.
    saved = dict(node.guard.thresholds)
    node.guard.thresholds = {c: Thresholds(1.01, 0.0) for c in saved}
    try:
        message = "Any ideas for a rainy afternoon with Mia?"
        category = max(node.guard.classifier.scores(message).items(), key=lambda kv: kv[1])[0]
        before = _count(node, "classifier", category, "borderline")
        chunks, final = await collect_chunks(stub.Chat(_req(message)))
    finally:
        node.guard.thresholds = saved
    line = node.guard.help_line(category)
    assert chunks[-1].endswith(line) and chunks[-1] in (line, f"\n\n{line}")
    assert len(chunks) >= 2  # the model's reply came first
    assert final.text == "".join(chunks)
    assert final.safety_category == f"{category}_borderline"
    assert final.finish_reason != chat_pb2.FINISH_REASON_SAFETY  # the model's own reply
    assert final.stats.completion_tokens > 0
    assert _count(node, "classifier", category, "borderline") == before + 1
