"""The demo model: trained on the corpus (a tiny shape here), cached by a key over material,
config and code, served by the node (a chat streams text), chosen by the devstack."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from rich.console import Console

from avatario.common.v1 import chat_pb2
from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from avatario_tools.corpus import demo as demo_mod
from avatario_tools.corpus.demo import DemoConfig, cache_key, ensure_demo_model, prepare_tokens
from avatario_tools.corpus.evaluate import (
    intent_agreement,
    load_heldout_questions,
    sample_answers,
    topic_agreement,
)
from avatario_tools.corpus.material import DEFAULT_QA_DIR, DEFAULT_TIPS_PATH, DEFAULT_WORDINGS_DIR
from avatario_tools.devstack import __main__ as devstack
from services.common.clients import internal_channel
from services.inference.checkpoint import inspect_checkpoint, is_random_checkpoint
from services.inference.main import build_server
from services.inference.settings import InferenceSettings
from services.inference.tokenizer import HfTokenizer, check_vocab
from tests.helpers import INTERNAL_TOKEN, new_id

TINY = DemoConfig().tiny(steps=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return ensure_demo_model(tmp_path_factory.mktemp("var"), TINY, log=lambda _: None)


def test_the_tiny_demo_model_is_a_real_checkpoint_for_its_tokenizer(trained):
    assert trained.trained_now
    info = inspect_checkpoint(trained.model)
    assert (info.n_layer, info.n_embd) == (TINY.n_layer, TINY.n_embd)
    tok = HfTokenizer(trained.tokenizer)
    assert tok.vocab_size == TINY.vocab_size == info.vocab_size
    check_vocab(tok, info.vocab_size)  # raises when they do not belong together
    assert not is_random_checkpoint(trained.model)  # the node treats it as a real model
    assert not Path(str(trained.model) + ".ckpt").exists()  # resume state cleaned up
    m = trained.manifest
    assert m["key"] == trained.folder.name and m["config"]["steps"] == 2
    assert m["tokens"]["train"] > 10_000 and m["val_perplexity"] > 1


async def test_the_node_serves_the_demo_model_and_a_chat_streams_text(trained):
    settings = InferenceSettings(
        internal_token=INTERNAL_TOKEN, port=0, metrics_port=None, model_path=trained.model,
        tokenizer=str(trained.tokenizer), strategy="", max_tokens_limit=64,
        default_max_tokens=16, safety_model_opinion="off")
    node = await build_server(settings)
    try:
        async with internal_channel(f"127.0.0.1:{node.port}", settings, caller="test") as ch:
            stub = inference_pb2_grpc.InferenceServiceStub(ch)
            req = inference_pb2.ChatRequest(
                conversation_id=new_id(), message="How can I help my son sleep?",
                params=chat_pb2.GenerationParams(temperature=0.0, max_tokens=16),
                child=chat_pb2.ChildContext(child_id=new_id(), nickname="Mia", age_months=84))
            chunks, final = [], None
            async for resp in stub.Chat(req):
                if resp.HasField("final"):
                    final = resp.final
                elif resp.HasField("chunk"):
                    chunks.append(resp.chunk.text)
    finally:
        await node.server.stop(0)
    assert final is not None and final.stats.completion_tokens > 0
    assert chunks and "".join(chunks).strip()


def test_the_trainer_selects_on_the_held_out_turns(trained):
    m = trained.manifest
    assert m["val_stream"] == "turns"
    curve = dict(m["val_curve"])
    assert m["best_step"] in curve and m["val_loss"] == pytest.approx(curve[m["best_step"]],
                                                                      abs=1e-4)


def test_sample_answers_reply_to_held_out_questions_in_the_node_layout(trained):
    data = prepare_tokens(TINY)
    held_out = {(g, q) for g, q, _ in data.corpus.pairs["validation"]}
    samples = sample_answers(trained, TINY, n=3, max_tokens=8)
    assert len(samples) == 3 and len({s.group for s in samples}) == 3
    assert all((s.group, s.question) in held_out and "\n\n" not in s.answer for s in samples)
    # greedy with fixed penalties: the same replies again
    assert sample_answers(trained, TINY, n=3, max_tokens=8) == samples


def test_topic_check_covers_every_held_out_intent_once(trained):
    data = prepare_tokens(TINY)
    groups = {g for g, _, _ in data.corpus.pairs["validation"]}
    train_groups = {g for g, _, _ in data.corpus.pairs["train"]}
    checks = topic_agreement(trained, TINY, max_tokens=6)
    assert sorted(c.group for c in checks) == sorted(groups)
    assert all(c.nearest in train_groups for c in checks)
    assert all(c.on_topic == (c.topic == c.nearest_topic) for c in checks)


def test_intent_check_scores_new_wordings_against_their_own_intent(trained):
    data = prepare_tokens(TINY)
    train_groups = {g for g, _, _ in data.corpus.pairs["train"]}
    checks = intent_agreement(trained, TINY, max_tokens=6, limit=12)
    asked = load_heldout_questions()[:12]
    assert 10 <= len(checks) <= 12  # at most the one wording the material shares is skipped
    assert all((c.group, c.question) in asked for c in checks)
    assert all(c.nearest in train_groups and c.trained == (c.group in train_groups)
               for c in checks)
    assert all(c.right_intent == (c.nearest == c.group) for c in checks)
    assert not any(c.right_intent for c in checks if not c.trained)


def test_a_second_call_uses_the_cache(trained, monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("trained again")

    monkeypatch.setattr("avatario_tools.train.api.train_model", no_training)
    again = ensure_demo_model(trained.folder.parents[2], TINY, log=lambda _: None)
    assert not again.trained_now and again.model == trained.model


def _edited_copy(folder: Path, to: Path, name: str, old: str, new: str) -> Path:
    """A copy of `folder` at `to`, then `old` replaced by `new` in its file `name`."""
    shutil.copytree(folder, to)
    (to / name).write_text((to / name).read_text().replace(old, new))
    return to


def test_the_key_changes_with_config_material_and_code(tmp_path):
    base = cache_key(TINY)
    assert cache_key(TINY) == base
    assert cache_key(replace(TINY, steps=3)) != base
    assert cache_key(replace(TINY, build=replace(TINY.build, seed=99))) != base
    shutil.copytree(DEFAULT_QA_DIR, tmp_path / "qa_same")
    assert cache_key(TINY, qa_dir=tmp_path / "qa_same") == base
    qa = _edited_copy(DEFAULT_QA_DIR, tmp_path / "qa", "sleep.jsonl", "nine to twelve hours",
                      "nine to eleven hours")
    assert cache_key(TINY, qa_dir=qa) != base
    tips = tmp_path / "tips.json"
    tips.write_text(DEFAULT_TIPS_PATH.read_text().replace("What's missing?", "What is gone?"))
    assert cache_key(TINY, tips_path=tips) != base
    shutil.copytree(DEFAULT_WORDINGS_DIR, tmp_path / "wordings_same")
    assert cache_key(TINY, wordings_dir=tmp_path / "wordings_same") == base
    wordings = _edited_copy(DEFAULT_WORDINGS_DIR, tmp_path / "wordings", "sleep.jsonl",
                            "Bedtime is a nightly battle.", "Bedtime is war.")
    assert cache_key(TINY, wordings_dir=wordings) != base
    no_openings = replace(TINY, opening_passes=0)  # then the wordings are not read
    assert (cache_key(no_openings, wordings_dir=wordings) == cache_key(no_openings)
            != base)
    code = tmp_path / "code"
    shutil.copytree(demo_mod.ROOT / "avatario_tools" / "corpus", code,
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    with_copy = cache_key(TINY, code_paths=(code,))
    (code / "bpe.py").write_text((code / "bpe.py").read_text() + "\n# changed\n")
    assert cache_key(TINY, code_paths=(code,)) != with_copy


def test_a_changed_config_retrains_into_a_new_folder(trained):
    var = trained.folder.parents[2]
    other = ensure_demo_model(var, replace(TINY, seed=TINY.seed + 1), log=lambda _: None)
    assert other.trained_now and other.folder != trained.folder
    assert other.model.read_bytes() != trained.model.read_bytes()


# -- the devstack's choice of model ---------------------------------------------------------

def test_devstack_serves_the_trained_demo_model_by_default(tmp_path, monkeypatch, trained):
    calls = []

    def fake_ensure(var, *a, **kw):
        calls.append(var)
        return trained

    monkeypatch.setattr(demo_mod, "ensure_demo_model", fake_ensure)
    model, tok = devstack._model(tmp_path, Console(quiet=True), None, "", False)
    assert calls == [tmp_path]
    assert (model, tok) == (trained.model, str(trained.tokenizer))


def test_devstack_random_model_flag_keeps_the_random_world_model(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_mod, "ensure_demo_model",
                        lambda *a, **kw: pytest.fail("no training with --random-model"))
    model, tok = devstack._model(tmp_path, Console(quiet=True), None, "", True)
    assert tok == "world" and is_random_checkpoint(model)


def test_devstack_explicit_model_and_tokenizer(tmp_path):
    given = tmp_path / "raven.pth"
    assert devstack._model(tmp_path, Console(quiet=True), given, "", False) == (given, "world")
    assert devstack._model(tmp_path, Console(quiet=True), given, "20B.json", True) == (
        given, "20B.json")
    with pytest.raises(typer.BadParameter, match="--tokenizer goes with --model"):
        devstack._model(tmp_path, Console(quiet=True), None, "20B.json", False)
