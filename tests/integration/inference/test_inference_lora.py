"""The node with a LoRA adapter (AVATARIO_INFERENCE_LORA / serve --lora path[:alpha]): it
serves base + adapter, exactly as the merged file, and refuses bad adapters at start."""

from __future__ import annotations

import pytest
import torch

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from services.common.clients import internal_channel
from services.inference import main as inference_main
from services.inference.checkpoint import build_random_checkpoint
from services.inference.lora import save_adapter
from services.inference.main import build_server
from services.inference.planner import ConfigError
from services.inference.settings import InferenceSettings
from tests.helpers import INTERNAL_TOKEN, new_id

N_LAYER, N_EMBD, VOCAB = 2, 32, 65536


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    base = build_random_checkpoint(d / "base.pth", n_layer=N_LAYER, n_embd=N_EMBD,
                                   vocab_size=VOCAB, seed=5)
    gen = torch.Generator().manual_seed(1)
    tensors = {}
    for i in range(N_LAYER):
        for target, (out, inp) in {"att.receptance": (N_EMBD, N_EMBD),
                                   "ffn.key": (4 * N_EMBD, N_EMBD)}.items():
            tensors[f"blocks.{i}.{target}.lora_A"] = torch.randn(4, inp, generator=gen) * 0.5
            tensors[f"blocks.{i}.{target}.lora_B"] = torch.randn(out, 4, generator=gen) * 0.5
    adapter = save_adapter(d / "adapter.pt", tensors, rank=4, alpha=8.0, n_layer=N_LAYER,
                           n_embd=N_EMBD, vocab_size=VOCAB)
    # The merged file, written independently: W + (alpha / rank) * B @ A.
    sd = torch.load(base, weights_only=True)
    for i in range(N_LAYER):
        for target in ("att.receptance", "ffn.key"):
            stem = f"blocks.{i}.{target}"
            sd[stem + ".weight"] = sd[stem + ".weight"] + 2.0 * (
                tensors[stem + ".lora_B"] @ tensors[stem + ".lora_A"])
    merged = d / "merged.pth"
    torch.save(sd, merged)
    return {"base": base, "adapter": adapter, "merged": merged, "dir": d}


def _settings(model_path, **kw) -> InferenceSettings:
    base = dict(internal_token=INTERNAL_TOKEN, port=0, metrics_port=None, model_path=model_path,
                tokenizer="world", strategy="", max_tokens_limit=64, default_max_tokens=12,
                safety_model_opinion="off")
    return InferenceSettings(**(base | kw))


async def _greedy_reply(settings: InferenceSettings) -> str:
    node = await build_server(settings)
    try:
        async with internal_channel(f"127.0.0.1:{node.port}", settings, caller="test") as ch:
            stub = inference_pb2_grpc.InferenceServiceStub(ch)
            req = inference_pb2.ChatRequest(
                conversation_id=new_id(), message="How can I help my son sleep?",
                params=chat_pb2.GenerationParams(temperature=0.0, max_tokens=12),
                child=chat_pb2.ChildContext(child_id=new_id(), nickname="Mia", age_months=84))
            final = None
            async for resp in stub.Chat(req):
                if resp.HasField("final"):
                    final = resp.final
            assert final is not None and final.stats.completion_tokens > 0
            return final.text
    finally:
        await node.server.stop(0)


async def test_the_node_serves_base_plus_adapter_as_the_merged_file(files):
    with_lora = await _greedy_reply(_settings(files["base"], lora=str(files["adapter"])))
    merged = await _greedy_reply(_settings(files["merged"]))
    base = await _greedy_reply(_settings(files["base"]))
    assert with_lora == merged
    assert with_lora != base  # the adapter changes the replies (the test can fail)
    # alpha 0: the adapter adds nothing.
    assert await _greedy_reply(_settings(files["base"], lora=f"{files['adapter']}:0")) == base


@pytest.mark.parametrize("spec, message", [
    ("{dir}/missing.pt", "LoRA adapter not found"),
    ("{adapter}:strong", "alpha 'strong' is not a number"),
    ("{adapter}:-2", "alpha must be a finite number >= 0"),
    ("{base}", "not an avatario-lora file"),
])
async def test_bad_adapters_stop_the_node_at_start(files, spec, message):
    lora = spec.format(dir=files["dir"], adapter=files["adapter"], base=files["base"])
    with pytest.raises(ConfigError, match=message):
        await build_server(_settings(files["base"], lora=lora))


async def test_an_adapter_for_another_shape_is_refused(files, tmp_path):
    other = build_random_checkpoint(tmp_path / "other.pth", n_layer=N_LAYER, n_embd=64,
                                    vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="n_embd 32"):
        await build_server(_settings(other, lora=str(files["adapter"])))


def test_serve_takes_lora_on_the_command_line(files, monkeypatch):
    seen = {}

    async def fake_serve(settings):
        seen["lora"] = settings.lora

    monkeypatch.setenv("AVATARIO_INFERENCE_MODEL_PATH", str(files["base"]))
    monkeypatch.setenv("AVATARIO_INTERNAL_TOKEN", INTERNAL_TOKEN)
    monkeypatch.setenv("AVATARIO_INFERENCE_LORA", "from-env.pt")
    monkeypatch.setattr(inference_main, "_serve", fake_serve)
    monkeypatch.setattr(inference_main, "configure_logging", lambda *a, **kw: None)
    assert inference_main.main(["serve", "--lora", "cli.pt:4"]) == 0
    assert seen["lora"] == "cli.pt:4"
    assert inference_main.main(["serve"]) == 0
    assert seen["lora"] == "from-env.pt"
