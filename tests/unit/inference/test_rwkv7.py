"""RWKV-7 checkpoints, generation detection, the planner for RWKV-7 shapes, state sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.common.errors import ConfigError
from services.inference.checkpoint import (
    CheckpointError,
    Lora7,
    build_random_checkpoint,
    build_random_checkpoint7,
    detect_generation,
    inspect_checkpoint,
    lora_dims7,
)
from services.inference.model_family import family_of, slots_from_strategy
from services.inference.planner import GiB, GpuInfo, ModelShape, explicit_plan, plan_strategy

# Published RWKV-7 G1 shapes: (n_layer, n_embd); head size 64, World vocabulary.
G1_SHAPES = {"0.1B": (12, 768), "1.5B": (24, 2048), "7.2B": (32, 4096), "13.3B": (61, 4096)}


def _shape7(n_layer: int, n_embd: int) -> ModelShape:
    return ModelShape(n_layer, n_embd, 65536, dtype_bytes=2, generation=7, head_size=64,
                      lora_params=lora_dims7(n_embd).params(n_embd))


def test_random_rwkv7_checkpoint_has_the_published_keys_and_shapes(tmp_path: Path) -> None:
    c, h, n, layers = 128, 2, 64, 2
    p = build_random_checkpoint7(tmp_path / "g1", n_layer=layers, n_embd=c, head_size=n,
                                 dtype=torch.bfloat16)
    sd = torch.load(p, map_location="cpu", weights_only=True)
    d = lora_dims7(c)
    expect = {"emb.weight": (65536, c), "blocks.0.ln0.weight": (c,), "blocks.0.ln0.bias": (c,),
              "ln_out.weight": (c,), "ln_out.bias": (c,), "head.weight": (65536, c)}
    for i in range(layers):
        b, a = f"blocks.{i}.", f"blocks.{i}.att."
        for ln in ("ln1", "ln2"):
            expect[b + ln + ".weight"] = expect[b + ln + ".bias"] = (c,)
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a"):
            expect[a + name] = (1, 1, c)
        for pair, width in (("w", d.decay), ("a", d.aaa), ("v", d.mv), ("g", d.gate)):
            expect[a + pair + "1"] = (c, width)
            expect[a + pair + "2"] = (width, c)
        expect[a + "r_k"] = (h, n)
        for name in ("receptance", "key", "value", "output"):
            expect[a + name + ".weight"] = (c, c)
        expect[a + "ln_x.weight"] = expect[a + "ln_x.bias"] = (c,)
        expect[b + "ffn.x_k"] = (1, 1, c)
        expect[b + "ffn.key.weight"] = (4 * c, c)
        expect[b + "ffn.value.weight"] = (c, 4 * c)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expect
    assert all(v.dtype == torch.bfloat16 for v in sd.values())
    info = inspect_checkpoint(p)
    assert info.version == 7 and info.generation == 7
    assert (info.n_layer, info.n_embd, info.vocab_size, info.n_ffn) == (2, c, 65536, 4 * c)
    assert (info.n_head, info.head_size, info.lora) == (h, n, d)
    assert family_of(info).chat_format == "g1"


def test_lora_widths_follow_the_published_models() -> None:
    assert lora_dims7(768) == Lora7(64, 64, 32, 128)  # rwkv7-g1 0.1B
    assert lora_dims7(4096) == Lora7(128, 128, 96, 480)  # 7.2B / 13.3B


def test_an_rwkv7_file_is_not_read_as_rwkv5(tmp_path: Path) -> None:
    """The outside check: a G1 file was read as RWKV-5.0 (its ln_x keys)."""
    p = build_random_checkpoint7(tmp_path / "g1", n_layer=1, n_embd=64, vocab_size=256,
                                 head_size=32)
    assert inspect_checkpoint(p).version == 7.0
    v4 = build_random_checkpoint(tmp_path / "r4", n_layer=1, n_embd=16, vocab_size=64)
    assert inspect_checkpoint(v4).version == 4.0


def test_mixed_generations_are_refused_naming_both(tmp_path: Path) -> None:
    p7 = build_random_checkpoint7(tmp_path / "g1", n_layer=2, n_embd=64, vocab_size=256,
                                  head_size=32)
    p4 = build_random_checkpoint(tmp_path / "r4", n_layer=2, n_embd=64, vocab_size=256)
    sd = torch.load(p7, weights_only=True)
    sd.update({k: v for k, v in torch.load(p4, weights_only=True).items() if "blocks.1." in k})
    torch.save(sd, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"mixes RWKV generations: RWKV-7 keys "
                       r"\(blocks\.0\.att\.x_r.*older generation \(blocks\.1\.att\.time_decay"):
        inspect_checkpoint(tmp_path / "mixed.pth")
    assert issubclass(CheckpointError, ConfigError)  # the node stops with the message


def test_an_incomplete_rwkv7_file_names_the_missing_keys(tmp_path: Path) -> None:
    p7 = build_random_checkpoint7(tmp_path / "g1", n_layer=2, n_embd=64, vocab_size=256,
                                  head_size=32)
    sd = torch.load(p7, weights_only=True)
    del sd["blocks.1.att.k_a"], sd["head.weight"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"head\.weight, blocks\.1\.att\.k_a missing"):
        inspect_checkpoint(tmp_path / "cut.pth")


def test_block_zero_may_lack_its_unused_value_residual(tmp_path: Path) -> None:
    keys = [k for k in torch.load(build_random_checkpoint7(
        tmp_path / "g1", n_layer=2, n_embd=64, vocab_size=256, head_size=32),
        weights_only=True) if k not in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")]
    assert detect_generation(keys) == 7.0


def test_rwkv5_and_6_are_refused_by_name() -> None:
    info = type("I", (), {"version": 5.2})()
    with pytest.raises(ConfigError, match=r"RWKV-5\.2 checkpoint; this node serves RWKV-4 .* RWKV-7"):
        family_of(info)
    assert detect_generation(["blocks.0.att.time_maa_x", "blocks.0.att.ln_x.weight"]) == 6.0


def test_state_bytes_per_conversation_for_the_g1_sizes() -> None:
    # per layer: two C vectors (fp16) + the [H, 64, 64] float32 matrix state (C = 64 H)
    got = {name: _shape7(*lc).state_bytes("fp16") for name, lc in G1_SHAPES.items()}
    assert got == {"0.1B": 12 * (2 * 768 * 2 + 768 * 64 * 4),
                   "1.5B": 24 * (2 * 2048 * 2 + 2048 * 64 * 4),
                   "7.2B": 32 * (2 * 4096 * 2 + 4096 * 64 * 4),
                   "13.3B": 61 * (2 * 4096 * 2 + 4096 * 64 * 4)}
    assert got["13.3B"] > 60 * 2**20  # ~62 MiB: ~20x an RWKV-4 14B state
    rwkv4_14b = ModelShape(40, 5120, 65536).state_bytes("fp16")
    assert got["13.3B"] > 19 * rwkv4_14b


def test_params_of_the_g1_shapes_match_their_names() -> None:
    for name, (layers, embd) in G1_SHAPES.items():
        billions = _shape7(layers, embd).params() / 1e9
        assert abs(billions - float(name[:-1])) / float(name[:-1]) < 0.1 or name == "0.1B", name
    assert 0.15 < _shape7(12, 768).params() / 1e9 < 0.2  # "0.1B" is 0.19B with its vocabulary


def _gpu(i: int, gib: float) -> GpuInfo:
    return GpuInfo(i, f"gpu{i}", int(gib * GiB), int(gib * GiB))


def test_planner_splits_13b_over_two_24gb_cards_and_keeps_7b_on_one() -> None:
    big = _shape7(*G1_SHAPES["13.3B"])
    plan = plan_strategy(big, [_gpu(0, 24), _gpu(1, 24)])
    assert [s.device for s in plan.segments] == ["cuda:0", "cuda:1"]
    assert all(s.dtype == "fp16" for s in plan.segments)
    k = plan.segments[0].layer_count
    assert 20 < k < 45 and plan.strategy == f"cuda:0 fp16 *{k} -> cuda:1 fp16"
    assert all(b < 24 * GiB for b in plan.device_bytes().values())
    # the embedding goes with slot 0 on cuda:0 (the RWKV-7 path keeps it on its device)
    assert plan.host_bytes == 0
    assert plan.segments[0].bytes > big.emb_bytes("fp16")
    slots = slots_from_strategy(plan.strategy, big.n_layer)
    assert [str(s.device) for s in slots] == ["cuda:0"] * k + ["cuda:1"] * (62 - k)
    one = plan_strategy(_shape7(*G1_SHAPES["7.2B"]), [_gpu(0, 24)])
    assert one.strategy == "cuda:0 fp16"
    # one 24 GB card cannot hold 13.3B and RWKV-7 has no int8 or streaming: the CPU
    cpu = plan_strategy(big, [_gpu(0, 24)])
    assert cpu.strategy == "cpu fp32" and "int8" not in cpu.reason


def test_rwkv7_strategies_without_int8_or_streaming() -> None:
    shape = _shape7(12, 768)
    with pytest.raises(ConfigError, match="RWKV-7 path has no int8"):
        explicit_plan("cuda:0 fp16i8", shape, [_gpu(0, 24)])
    with pytest.raises(ConfigError, match="streamed layers"):
        explicit_plan("cuda:0 fp16 *4+", shape, [_gpu(0, 24)])
    with pytest.raises(ConfigError, match="int8"):
        slots_from_strategy("cpu fp32 *3 -> cpu fp16i8", 12)
    slots = slots_from_strategy("cpu fp32 *3 -> cpu bf16", 12)
    assert [s.dtype for s in slots] == [torch.float32] * 3 + [torch.bfloat16] * 10


def test_convert_says_an_rwkv7_file_needs_no_conversion(tmp_path: Path) -> None:
    from services.inference.convert import convert_checkpoint

    src = build_random_checkpoint7(tmp_path / "g1", n_layer=1, n_embd=64, vocab_size=256,
                                   head_size=32)
    with pytest.raises(ConfigError, match="RWKV-7 checkpoint: it needs no conversion"):
        convert_checkpoint(src, tmp_path / "out.pth", "cpu fp32")
    assert not (tmp_path / "out.pth").exists()


def test_devstack_builds_a_random_rwkv7_demo_model(tmp_path: Path) -> None:
    import typer
    from rich.console import Console

    from avatario_tools.devstack.__main__ import _model

    path, tok = _model(tmp_path, Console(quiet=True), None, "", False, 7)
    info = inspect_checkpoint(path)
    assert tok == "world" and info.version == 7 and info.vocab_size == 65536
    assert _model(tmp_path, Console(quiet=True), None, "", False, 7)[0] == path  # cached
    with pytest.raises(typer.BadParameter, match="--model names one"):
        _model(tmp_path, Console(quiet=True), path, "", False, 7)
