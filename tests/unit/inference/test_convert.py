"""Pre-conversion with the rwkv package's convert-and-save, and the load-time strategy check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from services.inference.checkpoint import build_random_checkpoint
from services.inference.convert import app, check_converted, convert_checkpoint, read_metadata
from services.inference.planner import ConfigError, ModelShape, parse_strategy

STRATEGY = "cpu fp32 *1 -> cpu bf16"
N_LAYER, N_EMBD, VOCAB = 3, 32, 100


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("convert")
    return build_random_checkpoint(d / "raw", n_layer=N_LAYER, n_embd=N_EMBD, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def converted(raw: Path) -> Path:
    out = raw.with_name("converted.pth")
    result = CliRunner().invoke(app, [str(raw), str(out), "--strategy", STRATEGY])
    assert result.exit_code == 0, result.output
    assert "converted.pth" in result.output and "embedding" in result.output
    return out


def test_cli_converts_and_package_loads_it(raw: Path, converted: Path) -> None:
    from rwkv.model import RWKV

    assert read_metadata(converted)["_strategy"] == STRATEGY
    a = RWKV(str(converted), STRATEGY, verbose=False)
    b = RWKV(str(raw), STRATEGY, verbose=False)
    la, _ = a.forward([1, 2, 3], None)
    lb, _ = b.forward([1, 2, 3], None)
    assert torch.equal(la, lb)


def test_check_converted(raw: Path, converted: Path) -> None:
    assert check_converted(converted, STRATEGY) == STRATEGY
    assert check_converted(converted, "cpu  fp32 *1->cpu bf16") == STRATEGY  # spacing is free
    assert check_converted(raw, "cuda:0 fp16") is None  # raw files load with any strategy
    with pytest.raises(
        ConfigError,
        match=r"converted for strategy 'cpu fp32 \*1 -> cpu bf16' "
        r"and cannot be loaded with 'cpu fp32'",
    ):
        check_converted(converted, "cpu fp32")
    with pytest.raises(ConfigError, match="RWKV_RESCALE_LAYER"):
        check_converted(converted, STRATEGY, rescale_layer=6)


def test_package_would_only_assert(converted: Path) -> None:
    """Why check_converted exists: the package's own refusal is a bare assertion."""
    from rwkv.model import RWKV

    with pytest.raises(AssertionError):
        RWKV(str(converted), "cpu fp32", verbose=False)


def test_refuses_to_reconvert_and_overwrite(raw: Path, converted: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already converted"):
        convert_checkpoint(converted, tmp_path / "again.pth", STRATEGY)
    with pytest.raises(ConfigError, match="exists; pass --force"):
        convert_checkpoint(raw, converted, STRATEGY)
    with pytest.raises(ConfigError, match="checkpoint not found"):
        convert_checkpoint(tmp_path / "nope.pth", tmp_path / "o.pth", STRATEGY)


def test_cli_bad_strategy_exits_2(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.pth"
    result = CliRunner().invoke(app, [str(raw), str(out), "--strategy", "gpu fp16"])
    assert result.exit_code == 2
    assert "unknown device 'gpu'" in result.output
    assert not out.exists()
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(
    "strategy",
    ["cpu fp32 *2 -> cpu bf16", "cpu fp32i8 *1 -> cpu bf16i8", "cpu fp32 *3 -> cpu fp16i8"],
)
def test_planner_estimates_match_converted_bytes(raw: Path, tmp_path: Path, strategy: str) -> None:
    """The planner's byte estimates equal what the package actually stores, per segment."""
    report = convert_checkpoint(raw, tmp_path / "c", strategy)
    assert report.output.name == "c.pth" and report.output.exists()
    shape = ModelShape(N_LAYER, N_EMBD, VOCAB)
    estimated = parse_strategy(strategy, N_LAYER, shape=shape)
    assert [s.bytes for s in report.segments] == [s.bytes for s in estimated]
    assert report.embedding_bytes == shape.emb_bytes(estimated[0].dtype)
