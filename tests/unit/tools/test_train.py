"""The RWKV-4 trainer on tiny shapes: the WKV forms agree, the saved file is the package's model,
resume after SIGKILL reproduces the run, LoRA merges exactly, bad input is named."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avatario_tools.train.api import (
    LoraConfig,
    TokenData,
    TrainConfig,
    TrainError,
    train_lora,
    train_model,
)
from avatario_tools.train.cli import parse_shape
from avatario_tools.train.loop import _schedule, batch_loss, evaluate, load_with_lora
from avatario_tools.train.lora import add_lora
from avatario_tools.train.model import (
    Shape,
    decay_groups,
    export,
    forward_tokens,
    load_raw,
    new_model,
)
from avatario_tools.train.wkv import empty_state, wkv_chunked, wkv_step
from services.inference.checkpoint import build_random_checkpoint
from services.inference.lora import LoraError, load_adapter, merge_into, parse_spec
from services.inference.rwkv_batched import load_rwkv
from tests.helpers import ROOT

TOKENS = [3, 17, 5, 60, 0, 41, 41, 7, 2, 63, 12, 9, 33, 1, 8, 50, 19, 4, 27, 6]


def _data(vocab: int = 64, n: int = 3000, seed: int = 0) -> TokenData:
    """A learnable stream: a repeating phrase with a little noise."""
    rng = np.random.default_rng(seed)
    ids = np.tile(np.arange(vocab, dtype=np.int32)[::3], n // (vocab // 3) + 1)[:n].copy()
    noise = rng.random(n) < 0.05
    ids[noise] = rng.integers(0, vocab, noise.sum())
    cut = int(n * 0.8)
    return TokenData(train=ids[:cut], validation=ids[cut:])


def _cfg(**kw) -> TrainConfig:
    base = dict(n_layer=2, n_embd=16, vocab_size=64, ctx_len=16, batch_size=2, steps=6, lr=3e-3,
                warmup=2, checkpoint_every=3, eval_tokens=256, wkv_chunk=4)
    return TrainConfig(**(base | kw))


def _perturbed(shape: Shape, seed: int = 0):
    """A new model with every weight moved off its (partly zero) initial value."""
    model = new_model(shape, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


# --- WKV ------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
def test_chunked_wkv_equals_the_step_form_values_and_gradients(chunk):
    gen = torch.Generator().manual_seed(0)
    b, t, c = 2, 29, 6
    # Keys up to +-30 and decays from e^-5 to e^3 per token: without the max-trick, float32
    # overflows; a wrong chunk boundary or state carry shows at once.
    k = (torch.randn(b, t, c, generator=gen) * 12).clamp(-30, 30).requires_grad_()
    v = torch.randn(b, t, c, generator=gen).requires_grad_()
    time_decay = torch.linspace(-5, 3, c).requires_grad_()
    first = torch.randn(c, generator=gen).requires_grad_()
    state = (torch.randn(b, c, generator=gen), torch.rand(b, c, generator=gen) + 0.5,
             torch.randn(b, c, generator=gen) * 5)
    weights = torch.randn(b, t, c, generator=gen)

    def run(fn, **kw):
        y, (aa, bb, pp) = fn(-torch.exp(time_decay), first, k, v, state, **kw)
        grads = torch.autograd.grad((y * weights).sum(), (k, v, time_decay, first))
        return y.detach(), aa * torch.exp(pp), bb * torch.exp(pp), grads

    y1, a1, b1, g1 = run(wkv_step)
    y2, a2, b2, g2 = run(wkv_chunked, chunk=chunk)
    assert torch.allclose(y1, y2, atol=1e-5, rtol=1e-5)
    assert torch.allclose(a1, a2, rtol=1e-4, atol=1e-6) and torch.allclose(b1, b2, rtol=1e-4)
    for x1, x2 in zip(g1, g2, strict=True):
        assert torch.allclose(x1, x2, rtol=1e-4, atol=1e-4)


def test_chunked_wkv_from_an_empty_state_has_no_nan():
    k = torch.full((1, 40, 3), 80.0)  # e^80 overflows float32 without the max-trick
    v = torch.ones(1, 40, 3)
    y, state = wkv_chunked(-torch.exp(torch.tensor([3.0, 0.0, -5.0])), torch.zeros(3), k, v,
                           empty_state(1, 3), chunk=16)
    assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in state)
    assert torch.allclose(y, torch.ones_like(y))


# --- the saved file is the package's model ----------------------------------------------------

def test_trainer_logits_equal_the_package_forward_on_the_saved_file(tmp_path):
    model = _perturbed(Shape(3, 16, 64))
    path = export(model, tmp_path / "m.pth")
    ours = forward_tokens(model, TOKENS)
    with torch.no_grad():
        step = model(torch.tensor([TOKENS]), step_form=True)[0][0]
    package = load_rwkv(path, "cpu fp32")
    theirs, _ = package.forward(TOKENS, None, full_output=True)
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert (step - theirs).abs().max().item() <= 1e-4
    # Split placement and one-token steps (the node's decode path) agree too.
    split = load_rwkv(path, "cpu fp32 *2 -> cpu fp32")
    state = None
    for i, tok in enumerate(TOKENS):
        out, state = split.forward([tok], state)
        assert (out - theirs[i]).abs().max().item() <= 1e-4


def test_a_published_layout_checkpoint_reads_back_exactly(tmp_path):
    """The trainer reads a raw file (build_random_checkpoint: the real names and shapes) and
    reproduces the package's logits, so fine-tuning starts from the same model."""
    path = build_random_checkpoint(tmp_path / "r.pth", n_layer=2, n_embd=32, vocab_size=64,
                                   seed=3)
    ours = forward_tokens(load_raw(path), TOKENS)
    theirs, _ = load_rwkv(path, "cpu fp32").forward(TOKENS, None, full_output=True)
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_bf16_training_exports_a_file_the_package_loads(tmp_path):
    result = train_model(_cfg(dtype="bf16", steps=2), _data(), tmp_path / "b.pth")
    sd = torch.load(result.path, weights_only=True)
    assert sd["blocks.0.att.key.weight"].dtype == torch.bfloat16
    ours = forward_tokens(load_raw(result.path), TOKENS)
    theirs, _ = load_rwkv(result.path, "cpu fp32").forward(TOKENS, None, full_output=True)
    # Not 1e-4: the package folds ln0 into emb.weight in the file's dtype (bf16) at load.
    assert (ours - theirs).abs().max().item() <= 2e-2 and math.isfinite(result.val_loss)


# --- training ---------------------------------------------------------------------------------

def test_training_lowers_the_validation_loss_and_reports_it(tmp_path):
    cfg = _cfg(steps=30, checkpoint_every=10, lr=1e-2, warmup=3)
    result = train_model(cfg, _data(), tmp_path / "m.pth")
    assert result.path.is_file() and len(result.losses) == 30
    assert [s for s, _ in result.val_losses] == [10, 20, 30]
    assert result.val_losses[-1][1] < result.val_losses[0][1] < math.log(64) + 1
    assert result.val_loss == result.val_losses[-1][1] and result.tokens_per_s > 0
    # The exported model scores what the trainer reported.
    assert evaluate(load_raw(result.path), _data().validation, cfg) == pytest.approx(
        result.val_loss, rel=1e-5)


def test_weight_decay_shrinks_weight_matrices_only():
    """decay_groups: with zero gradients one AdamW step moves only the decayed parameters, each
    by exactly the factor (1 - lr * weight_decay)."""
    model = _perturbed(Shape(2, 16, 64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    opt = torch.optim.AdamW(decay_groups(model, params, 0.5), lr=0.1)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    decayed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    matrices = {f"blocks.{i}.{m}.weight" for i in range(2) for m in (
        "att.key", "att.value", "att.receptance", "att.output", "ffn.key", "ffn.receptance",
        "ffn.value")} | {"head.weight"}
    assert decayed == matrices  # not emb, ln*, time_decay, time_first, time_mix_*
    for k in matrices:
        torch.testing.assert_close(model.state_dict()[k], before[k] * (1 - 0.1 * 0.5))


def test_dropout_acts_in_training_only_and_evaluation_is_deterministic():
    model = _perturbed(Shape(2, 16, 64))
    idx = torch.tensor([TOKENS])
    model.eval()
    plain = model(idx)[0]
    model.dropout = 0.5
    assert torch.equal(model(idx)[0], plain)  # eval mode: no dropout
    model.train()
    assert not torch.allclose(model(idx)[0], plain)
    # the trainer's evaluate switches to eval mode and back
    cfg = _cfg(dropout=0.5)
    a = evaluate(model, _data().validation, cfg)
    assert model.training and evaluate(model, _data().validation, cfg) == a
    model.dropout = 0.0
    assert evaluate(model, _data().validation, cfg) == a


def test_keep_best_exports_the_best_validation_checkpoint(tmp_path):
    """Validation on a different stream than training: its loss rises as the model learns the
    training phrase, so the best evaluation is an early one, not the last."""
    data = _data()
    rng = np.random.default_rng(5)
    other = TokenData(train=data.train, validation=rng.integers(0, 64, 600).astype(np.int32))
    cfg = _cfg(steps=12, checkpoint_every=3, lr=1e-2, warmup=1, keep_best=True)
    best = train_model(cfg, other, tmp_path / "best.pth")
    losses = dict(best.val_losses)
    assert best.best_step == min(losses, key=losses.get) < 12
    assert best.val_loss == min(losses.values()) < losses[12]
    assert evaluate(load_raw(best.path), other.validation, cfg) == pytest.approx(
        best.val_loss, rel=1e-5)
    last = train_model(replace(cfg, keep_best=False), other, tmp_path / "last.pth")
    assert last.best_step == 12 and last.val_loss == pytest.approx(losses[12], rel=1e-6)
    assert evaluate(load_raw(last.path), other.validation, cfg) == pytest.approx(
        losses[12], rel=1e-5)


def test_loss_weights_give_the_weighted_mean_and_zero_weights_no_gradient():
    model = _perturbed(Shape(2, 16, 64))
    cfg = _cfg(ctx_len=12)
    gen = torch.Generator().manual_seed(3)
    batch = torch.randint(0, 64, (2, 13), generator=gen)
    w = (torch.rand(2, 13, generator=gen) > 0.5).float() * 2.0
    with torch.no_grad():
        logits, _ = model(batch[:, :-1])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), batch[:, 1:].reshape(-1),
                                           reduction="none")
    expected = float((ce * w[:, 1:].reshape(-1)).sum() / w[:, 1:].sum())
    got = batch_loss(model, batch, cfg, backward=False, weights=w)
    assert got == pytest.approx(expected, rel=1e-5)
    assert batch_loss(model, batch, cfg, backward=False,
                      weights=torch.ones(2, 13)) == pytest.approx(
        batch_loss(model, batch, cfg, backward=False), rel=1e-6)
    # a prediction that weighs 0 does not reach the gradient: changing its target changes nothing
    zero = torch.ones(2, 13)
    zero[:, -1] = 0.0
    grads = []
    for last in (1, 2):
        model.zero_grad(set_to_none=True)
        b = batch.clone()
        b[:, -1] = last
        batch_loss(model, b, cfg, backward=True, weights=zero)
        grads.append(model.head.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_training_with_loss_weights_trains_and_evaluates_the_weighted_tokens(tmp_path):
    data = _data()
    tw = (np.arange(len(data.train)) % 2).astype(np.float32)
    vw = (np.arange(len(data.validation)) % 2).astype(np.float32)
    weighted = TokenData(train=data.train, validation=data.validation, train_weights=tw,
                         validation_weights=vw)
    assert weighted.digest() != data.digest()
    cfg = _cfg(steps=6)
    result = train_model(cfg, weighted, tmp_path / "w.pth")
    assert evaluate(load_raw(result.path), data.validation, cfg, vw) == pytest.approx(
        result.val_loss, rel=1e-5)
    assert evaluate(load_raw(result.path), data.validation, cfg) != pytest.approx(
        result.val_loss, rel=1e-3)


@pytest.mark.parametrize("kw, message", [
    ({"train_weights": np.ones(5, np.float32)}, "train_weights must be a float32 array"),
    ({"train_weights": np.ones(2400, np.float64)}, "train_weights must be a float32 array"),
    ({"validation_weights": np.zeros(600, np.float32)}, "validation_weights must be finite"),
    ({"validation_weights": -np.ones(600, np.float32)}, "validation_weights must be finite"),
])
def test_bad_loss_weights_are_named(kw, message):
    data = _data()
    with pytest.raises(TrainError, match=message):
        TokenData(train=data.train, validation=data.validation, **kw)


def test_truncated_bptt_scores_the_same_as_the_whole_window():
    model = _perturbed(Shape(2, 16, 64))
    batch = torch.from_numpy(_data().train[:2 * 33].reshape(2, 33).astype(np.int64))
    whole = batch_loss(model, batch, _cfg(ctx_len=32), backward=False)
    for bptt in (1, 5, 16):
        assert batch_loss(model, batch, _cfg(ctx_len=32, bptt_len=bptt), backward=False) == \
            pytest.approx(whole, rel=1e-5)


def test_warmup_then_cosine_to_lr_final():
    cfg = _cfg(steps=20, warmup=4, lr=1.0, lr_final=0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = _schedule(opt, cfg)
    lrs = []
    for _ in range(cfg.steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.25) and lrs[4] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5], strict=True))
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def test_gradients_are_clipped_to_grad_clip(tmp_path, monkeypatch):
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        params = list(params)
        total = clip(params, max_norm, *a, **kw)
        norms.append(float(torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in params if p.grad is not None]))))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train_model(_cfg(steps=3, grad_clip=1e-3), _data(), tmp_path / "a.pth")
    assert len(norms) == 3 and all(n <= 1e-3 * 1.0001 for n in norms)
    train_model(_cfg(steps=2, grad_clip=0.0), _data(), tmp_path / "b.pth")
    assert len(norms) == 3  # 0 = no clipping


# --- checkpoints and resume -------------------------------------------------------------------

_RUNNER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from avatario_tools.train.api import TokenData, TrainConfig, train_model
    out, stop_at = Path(sys.argv[1]), int(sys.argv[2])
    d = np.load(sys.argv[3])
    extra = json.loads(sys.argv[4])
    data = TokenData(train=d["train"], validation=d["validation"])
    cfg = TrainConfig(n_layer=2, n_embd=16, vocab_size=64, ctx_len=16, batch_size=2, steps=8,
                      lr=3e-3, warmup=2, checkpoint_every=2, eval_tokens=128, wkv_chunk=4,
                      **extra)
    def hook(step, path):
        if step == stop_at:
            print("CHECKPOINT", step, flush=True)
            time.sleep(600)   # killed here, between checkpoints
    r = train_model(cfg, data, out, on_checkpoint=hook)
    print("RESULT " + json.dumps({"losses": r.losses, "val": r.val_losses,
                                  "resumed_from": r.resumed_from, "best": r.best_step,
                                  "val_loss": r.val_loss}), flush=True)
""")


def _run(args: list[str], stop_at: int, extra: dict | None = None) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # same kernels in every run
    return subprocess.Popen([sys.executable, "-c", _RUNNER, *args[:1], str(stop_at), args[1],
                             json.dumps(extra or {})],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return json.loads(next(line for line in out.splitlines()
                           if line.startswith("RESULT "))[len("RESULT "):])


# regularised: dropout draws from the torch generator, the best weights ride in the checkpoint
@pytest.mark.parametrize("extra", [{}, {"dropout": 0.2, "weight_decay": 0.1, "keep_best": True}],
                         ids=["plain", "dropout+decay+best"])
def test_resume_after_sigkill_reproduces_the_loss_curve_bit_for_bit(tmp_path, extra):
    data = _data()
    npz = tmp_path / "data.npz"
    np.savez(npz, train=data.train, validation=data.validation)
    whole = _result(_run([str(tmp_path / "a" / "m.pth"), str(npz)], stop_at=-1, extra=extra))

    out = tmp_path / "b" / "m.pth"
    proc = _run([str(out), str(npz)], stop_at=4, extra=extra)
    assert proc.stdout.readline().split() == ["CHECKPOINT", "4"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    # A half-written checkpoint from a kill during a save is ignored.
    (out.parent / "m.pth.ckpt" / ".step-000006.pt.123.tmp").write_bytes(b"partial")
    resumed = _result(_run([str(out), str(npz)], stop_at=-1, extra=extra))

    assert resumed["resumed_from"] == 4 and whole["resumed_from"] == 0
    assert resumed["losses"] == whole["losses"] and len(whole["losses"]) == 8
    assert resumed["val"] == whole["val"]
    assert (resumed["best"], resumed["val_loss"]) == (whole["best"], whole["val_loss"])
    a = torch.load(tmp_path / "a" / "m.pth", weights_only=True)
    b = torch.load(out, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_changed_config_starts_afresh(tmp_path):
    out = tmp_path / "m.pth"
    train_model(_cfg(steps=3), _data(), out)
    again = train_model(_cfg(steps=3), _data(), out)
    assert again.resumed_from == 3  # finished: nothing left to train
    other = train_model(_cfg(steps=3, lr=1e-3), _data(), out)
    assert other.resumed_from == 0


# --- LoRA -------------------------------------------------------------------------------------

def test_lora_merged_logits_equal_base_plus_adapter(tmp_path):
    base = export(_perturbed(Shape(2, 16, 64)), tmp_path / "base.pth")
    lcfg = LoraConfig(rank=4, alpha=8.0)
    result = train_lora(base, lcfg, _cfg(steps=4, lr=2e-2), _data(), tmp_path / "ad.pt")
    adapter = load_adapter(result.path)
    assert adapter.rank == 4 and len(adapter.tensors) == 2 * 7 * 2

    # base + adapter: the trainer's module with the LoRA layers, holding the saved tensors.
    live = load_raw(base)
    wrapped = add_lora(live, lcfg, seed=0)
    with torch.no_grad():
        for stem, lin in wrapped.items():
            lin.lora_A.copy_(adapter.tensors[stem + ".lora_A"])
            lin.lora_B.copy_(adapter.tensors[stem + ".lora_B"])
    with_adapter = forward_tokens(live, TOKENS)
    base_logits = forward_tokens(load_raw(base), TOKENS)
    assert (with_adapter - base_logits).abs().max().item() > 1e-3  # the adapter does something

    merged = merge_into(dict(torch.load(base, weights_only=True)), adapter)
    torch.save(merged, tmp_path / "merged.pth")
    package, _ = load_rwkv(tmp_path / "merged.pth", "cpu fp32").forward(TOKENS, None,
                                                                        full_output=True)
    assert (package - with_adapter).abs().max().item() <= 1e-4
    # alpha override: 0 is the base model; the default is the trained alpha.
    assert torch.equal(forward_tokens(load_with_lora(base, f"{result.path}:0"), TOKENS),
                       base_logits)
    assert (forward_tokens(load_with_lora(base, str(result.path)), TOKENS)
            - with_adapter).abs().max().item() <= 1e-4


def test_lora_trains_only_the_adapters(tmp_path):
    base = export(_perturbed(Shape(2, 16, 64)), tmp_path / "base.pth")
    before = base.read_bytes()
    train_lora(base, LoraConfig(rank=2, alpha=4.0, targets=("att.key", "ffn.value")),
               _cfg(steps=2), _data(), tmp_path / "ad.pt")
    assert base.read_bytes() == before
    assert sorted(load_adapter(tmp_path / "ad.pt").tensors) == [
        f"blocks.{i}.{t}.lora_{m}" for i in range(2) for t in ("att.key", "ffn.value")
        for m in "AB"]


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("a.pt:x", "alpha 'x' is not a number"),
    ("a.pt:-1", "alpha must be a finite number >= 0"),
    ("a.pt:nan", "alpha must be a finite number >= 0"),
    (":3", "no path before ':'"),
    ("", "empty LoRA spec"),
])
def test_bad_lora_specs_are_named(spec, message):
    with pytest.raises(LoraError, match=message):
        parse_spec(spec)


def test_lora_spec_forms():
    assert parse_spec("dir/a.pt") == (Path("dir/a.pt"), None)
    assert parse_spec("dir/a.pt:0.5") == (Path("dir/a.pt"), 0.5)


@pytest.mark.parametrize("spec", ["3y3", "0x64", "4x1", "huge"])
def test_unknown_shapes_are_refused(spec):
    with pytest.raises(TrainError, match="unknown"):
        parse_shape(spec)
    assert parse_shape("12x768") == (12, 768) == parse_shape("169M")


@pytest.mark.parametrize("kw, field", [
    ({"n_layer": 0}, "n_layer"), ({"vocab_size": 1}, "vocab_size"), ({"dtype": "fp16"}, "dtype"),
    ({"lr": float("nan")}, "lr"), ({"n_embd": 15}, "n_embd"), ({"warmup": -1}, "warmup"),
    ({"steps": 2.5}, "steps"), ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(TrainError, match=field):
        _cfg(**kw)


def test_bad_data_and_files_are_named(tmp_path):
    short = TokenData(train=np.arange(5, dtype=np.int32), validation=np.arange(40, dtype=np.int32))
    with pytest.raises(TrainError, match="TokenData.train has 5 tokens"):
        train_model(_cfg(), short, tmp_path / "m.pth")
    big = TokenData(train=np.full(100, 64, dtype=np.int32), validation=np.zeros(40, np.int32))
    with pytest.raises(TrainError, match="outside the vocabulary"):
        train_model(_cfg(), big, tmp_path / "m.pth")
    with pytest.raises(TrainError, match="int32"):
        TokenData(train=np.zeros(40, np.int64), validation=np.zeros(40, np.int32))
    with pytest.raises(TrainError, match="checkpoint not found"):
        train_model(_cfg(init=tmp_path / "nope.pth"), _data(), tmp_path / "m.pth")
    with pytest.raises(TrainError, match="end in .pth"):
        train_model(_cfg(), _data(), tmp_path / "m.bin")
    with pytest.raises(TrainError, match="CUDA is not available|device"):
        train_model(_cfg(device="cuda:7" if not torch.cuda.is_available() else "tpu"), _data(),
                    tmp_path / "m.pth")
    base = build_random_checkpoint(tmp_path / "r.pth", n_layer=2, n_embd=32, vocab_size=64)
    with pytest.raises(TrainError, match="n_embd: .* has 32, the config says 16"):
        train_lora(base, LoraConfig(), _cfg(), _data(), tmp_path / "a.pt")
    converted = tmp_path / "conv.pth"
    torch.save(torch.load(base, weights_only=True) | {"_strategy": "cpu fp32"}, converted)
    with pytest.raises(TrainError, match="pre-converted"):
        load_raw(converted)
    with pytest.raises(LoraError, match="not found"):
        load_adapter(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(LoraError, match="not a readable"):
        load_adapter(tmp_path / "junk.pt")


def test_an_adapter_for_another_shape_is_refused(tmp_path):
    small = export(_perturbed(Shape(2, 16, 64)), tmp_path / "small.pth")
    train_lora(small, LoraConfig(rank=2), _cfg(steps=1), _data(), tmp_path / "ad.pt")
    other = build_random_checkpoint(tmp_path / "other.pth", n_layer=2, n_embd=32, vocab_size=64)
    with pytest.raises(LoraError, match="n_embd 16"):
        merge_into(dict(torch.load(other, weights_only=True)), load_adapter(tmp_path / "ad.pt"))


# --- the command line -------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avatario_tools.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=os.environ | {"COLUMNS": "200"})


def test_cli_train_lora_merge_eval(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = "the child reads plays sleeps learns with a parent every day at home".split()
    rng = np.random.default_rng(0)
    text = "\n\n".join(" ".join(rng.choice(words, 12)) for _ in range(80))
    (tmp_path / "c.txt").write_text(text)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=64,
                                                        special_tokens=["<|endoftext|>", "[UNK]"]))
    tok.save(str(tmp_path / "tok.json"))
    common = ["--data", str(tmp_path / "c.txt"), "--tokenizer", str(tmp_path / "tok.json"),
              "--ctx-len", "16", "--batch-size", "2", "--no-progress"]
    t0 = time.perf_counter()
    r = _cli("train", "--out", str(tmp_path / "m.pth"), "--shape", "1x16", "--steps", "2",
             "--checkpoint-every", "1", *common)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["steps"] == 2 and math.isfinite(out["val_loss"])
    assert torch.load(tmp_path / "m.pth", weights_only=True)["emb.weight"].shape[0] == \
        Tokenizer.from_file(str(tmp_path / "tok.json")).get_vocab_size()
    r = _cli("lora", "--base", str(tmp_path / "m.pth"), "--out", str(tmp_path / "a.pt"),
             "--steps", "1", "--rank", "2", *common)
    assert r.returncode == 0, r.stderr
    r = _cli("merge", str(tmp_path / "m.pth"), f"{tmp_path / 'a.pt'}:2",
             "--out", str(tmp_path / "mm.pth"))
    assert r.returncode == 0, r.stderr
    evals = [_cli("eval", str(tmp_path / "mm.pth"), *common[:4], "--ctx-len", "16"),
             _cli("eval", str(tmp_path / "m.pth"), *common[:4], "--ctx-len", "16",
                  "--lora", f"{tmp_path / 'a.pt'}:2")]
    assert all(e.returncode == 0 for e in evals), [e.stderr for e in evals]
    assert json.loads(evals[0].stdout)["loss"] == pytest.approx(
        json.loads(evals[1].stdout)["loss"], rel=1e-5)
    assert time.perf_counter() - t0 > 0  # (no speed assertion: shared machines)


@pytest.mark.parametrize("args, message", [
    (["train", "--out", "x.pth", "--data", "missing.txt"], "text file not found"),
    (["train", "--out", "x.pth", "--data", "README.md", "--shape", "2by8"], "shape '2by8'"),
    (["merge", "missing.pth", "a.pt", "--out", "m.pth"], "not found"),
    (["merge", "README.md", "a.pt:fast", "--out", "m.pth"], "alpha 'fast' is not a number"),
    (["lora", "--base", "missing.pth", "--out", "a.pt", "--data", "README.md"],
     "checkpoint not found"),
])
def test_cli_bad_input_exits_2_with_the_reason(args, message):
    r = _cli(*args)
    assert r.returncode == 2 and message in " ".join(r.stderr.split()), r.stderr
