"""Strategy planner: choices for real model shapes on fake GPU inventories, strategy parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.inference.checkpoint import build_random_checkpoint
from services.inference.planner import (
    ConfigError,
    GpuInfo,
    ModelShape,
    Plan,
    canonical_strategy,
    explicit_plan,
    layer_devices,
    layer_placements,
    package_placements,
    parse_strategy,
    plan_strategy,
    resolve_plan,
)

GiB = 1024**3
HEADROOM = 0.15
RESERVE = GiB


def gpu(index: int, total_gib: float, free_gib: float | None = None) -> GpuInfo:
    free = total_gib - 0.5 if free_gib is None else free_gib  # the driver keeps a little
    return GpuInfo(index, f"NVIDIA Fake {total_gib:g}GB", int(total_gib * GiB), int(free * GiB))


SHAPES = {
    "3B": ModelShape(n_layer=32, n_embd=2560, vocab_size=50277),
    "7B": ModelShape(n_layer=32, n_embd=4096, vocab_size=50277),
    "14B": ModelShape(n_layer=40, n_embd=5120, vocab_size=50277),
}
INVENTORIES = {
    "none": [],
    "1x24": [gpu(0, 24)],
    "1x16": [gpu(0, 16)],
    "2x16": [gpu(0, 16), gpu(1, 16)],
    "2x80": [gpu(0, 80), gpu(1, 80)],
}
EXPECTED = {
    ("3B", "none"): "cpu fp32",
    ("3B", "1x24"): "cuda:0 fp16",
    ("3B", "1x16"): "cuda:0 fp16",
    ("3B", "2x16"): "cuda:0 fp16",
    ("3B", "2x80"): "cuda:0 fp16",
    ("7B", "none"): "cpu fp32",
    ("7B", "1x24"): "cuda:0 fp16",
    ("7B", "1x16"): "cuda:0 fp16i8",  # 13.4 GiB fp16 > 12.3 GiB usable
    ("7B", "2x16"): "cuda:0 fp16 *16 -> cuda:1 fp16",  # split beats int8 on quality
    ("7B", "2x80"): "cuda:0 fp16",
    ("14B", "none"): "cpu fp32",
    ("14B", "1x24"): "cuda:0 fp16i8",
    ("14B", "1x16"): "cuda:0 fp16i8 *37+",  # even int8 is short: stream the last layers
    ("14B", "2x16"): "cuda:0 fp16i8 *20 -> cuda:1 fp16i8",
    ("14B", "2x80"): "cuda:0 fp16",  # fits on one 80 GB card: no split
}


@pytest.mark.parametrize(("shape", "inv"), sorted(EXPECTED))
def test_plan_for_real_shapes(shape: str, inv: str) -> None:
    gpus = INVENTORIES[inv]
    plan = plan_strategy(SHAPES[shape], gpus)
    assert plan.strategy == EXPECTED[(shape, inv)], plan.describe()
    assert plan.reason
    # segments cover every slot (blocks + head) exactly once, in order
    assert sum(s.layer_count for s in plan.segments) == SHAPES[shape].n_layer + 1
    assert [s.first_layer for s in plan.segments] == [
        sum(s.layer_count for s in plan.segments[:i]) for i in range(len(plan.segments))
    ]
    # what lands on each GPU fits its free memory with the reserve and headroom
    usable = {f"cuda:{g.index}": (g.free_bytes - RESERVE) * (1 - HEADROOM) for g in gpus}
    for device, need in plan.device_bytes().items():
        if device != "cpu":
            assert need <= usable[device], (device, need / GiB, usable[device] / GiB)
    # the chosen strategy parses back to the same segments
    again = parse_strategy(plan.strategy, SHAPES[shape].n_layer, gpus=gpus, shape=SHAPES[shape])
    assert again == plan.segments


def test_split_is_proportional_to_free_memory() -> None:
    shape = SHAPES["7B"]
    plan = plan_strategy(shape, [gpu(0, 16, free_gib=11), gpu(1, 24)])
    assert plan.strategy == "cuda:1 fp16"  # fits the GPU with more free memory: no split
    plan = plan_strategy(shape, [gpu(0, 16, free_gib=13.5), gpu(1, 16, free_gib=6.5)])
    a, b = plan.segments
    assert (a.device, b.device) == ("cuda:0", "cuda:1")
    assert a.layer_count > b.layer_count  # more layers where more memory is free
    assert "split over 2 GPUs" in plan.reason


def test_cpu_first_layers() -> None:
    plan = plan_strategy(SHAPES["7B"], INVENTORIES["1x24"], cpu_first_layers=4)
    assert plan.strategy == "cpu fp32 *4 -> cuda:0 fp16"
    assert layer_devices(plan)[:5] == ["cpu"] * 4 + ["cuda:0"]
    assert "first 4 layers on the CPU" in plan.reason
    assert plan_strategy(SHAPES["3B"], [], cpu_first_layers=3).strategy == "cpu fp32"
    with pytest.raises(ConfigError, match="cpu_first_layers"):
        plan_strategy(SHAPES["3B"], INVENTORIES["1x24"], cpu_first_layers=40)


def test_prefer_dtype_and_int8_switch() -> None:
    assert plan_strategy(SHAPES["3B"], INVENTORIES["1x24"], prefer_dtype="bf16").strategy == (
        "cuda:0 bf16"
    )
    plan = plan_strategy(SHAPES["14B"], INVENTORIES["1x24"], allow_int8=False)
    assert plan.strategy == "cuda:0 fp16 *28+"  # streamed fp16 instead
    with pytest.raises(ConfigError, match="prefer_dtype"):
        plan_strategy(SHAPES["3B"], [], prefer_dtype="int4")


def test_nothing_fits_falls_back_to_cpu() -> None:
    plan = plan_strategy(SHAPES["14B"], [gpu(0, 2)])
    assert plan.strategy == "cpu fp32"
    assert "does not fit" in plan.reason


def test_streaming_placements() -> None:
    plan = plan_strategy(SHAPES["14B"], INVENTORIES["1x16"])
    seg = plan.segments[0]
    assert seg.streamed_layers == 3 and seg.count == 37 and seg.stream
    places = layer_placements(plan)
    assert [p.streamed for p in places] == [False] * 37 + [True] * 3 + [False]  # head resident
    assert plan.host_bytes > SHAPES["14B"].emb_bytes("fp16")  # streamed matrices live on host


def test_estimates() -> None:
    s = SHAPES["7B"]
    c = s.n_embd
    assert s.layer_matrix_params() == 13 * c * c
    assert 7.0e9 < s.params() < 7.6e9
    assert 14.0e9 < SHAPES["14B"].params() < 14.4e9
    assert s.layer_bytes("fp16i8") < s.layer_bytes("fp16") / 1.9
    assert s.layer_bytes("fp16", streamed=True) < s.layer_bytes("fp16") / 1000
    info = type("Info", (), {"n_layer": 2, "n_embd": 8, "vocab_size": 10, "dtype": "bfloat16"})()
    assert ModelShape.from_info(info) == ModelShape(2, 8, 10, 2)


# ----------------------------------------------------------------------------- parsing

VALID = [
    ("cpu fp32", 4, [("cpu", "fp32", 0, 5, 0)]),
    (
        "cuda:0 fp16 *2 -> cuda:1 fp16",
        4,
        [("cuda:0", "fp16", 0, 2, 0), ("cuda:1", "fp16", 2, 3, 0)],
    ),
    ("cuda fp16i8 *2+", 4, [("cuda", "fp16i8", 0, 5, 2)]),
    (
        "cpu fp32 *1 -> cuda:0 fp16 *1 -> cuda:1 bf16i8",
        4,
        [("cpu", "fp32", 0, 1, 0), ("cuda:0", "fp16", 1, 1, 0), ("cuda:1", "bf16i8", 2, 3, 0)],
    ),
    ("cuda:0 fp16 -> cuda:1 fp16", 4, [("cuda:0", "fp16", 0, 2, 0), ("cuda:1", "fp16", 2, 3, 0)]),
    ("  cuda:0   fp16 *3->cpu  fp32  ", 4, [("cuda:0", "fp16", 0, 3, 0), ("cpu", "fp32", 3, 2, 0)]),
    ("mps fp32", 2, [("mps", "fp32", 0, 3, 0)]),
    (
        "cuda:0 fp16 *0+ -> cuda:1 fp16 *3",
        4,
        [("cuda:0", "fp16", 0, 2, 2), ("cuda:1", "fp16", 2, 3, 0)],
    ),
]


@pytest.mark.parametrize(("text", "n_layer", "want"), VALID)
def test_parse_valid(text: str, n_layer: int, want: list[tuple[str, str, int, int, int]]) -> None:
    gpus = [gpu(0, 16), gpu(1, 16)]
    segs = parse_strategy(text, n_layer, gpus=gpus)
    assert [
        (s.device, s.dtype, s.first_layer, s.layer_count, s.streamed_layers) for s in segs
    ] == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty strategy"),
        ("cuda:0", "expected 'DEVICE DTYPE"),
        ("cuda:0 fp16 *2 extra", "expected 'DEVICE DTYPE"),
        ("gpu:0 fp16", "unknown device 'gpu:0'"),
        ("dml fp16", "DirectML"),
        ("cuda:2 fp16", "cuda:2 requested but NVML reports 2 GPU"),
        ("cuda:0 fp8", "unknown dtype 'fp8'"),
        ("cuda:0 fp16i4", "unknown dtype"),
        ("cuda:0 fp16 2", "layer count must look like"),
        ("cuda:0 fp16 *x", "layer count must look like"),
        ("cuda:0 fp16 *0 -> cuda:1 fp16", "places no layers"),
        ("cuda:0 fp16 *40 -> cuda:1 fp16", "add up to 40, but the model has 32 layers"),
        ("cuda:0 fp16 *33 -> cuda:1 fp16", "segment 2 (cuda:1 fp16) gets no layers"),
        ("cuda:0 fp16 *3+ -> cuda:1 fp16 *2+", "only one segment may stream"),
        ("cuda:0 fp16 *3+ -> cuda:1 fp16", "gets no layers"),
        ("cuda:0 fp16 -> ", "segment 2"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_strategy(text, 32, gpus=[gpu(0, 16), gpu(1, 16)])


def test_parse_without_gpus_rejects_cuda_only_when_inventory_given() -> None:
    assert parse_strategy("cuda:3 fp16", 4)[0].device == "cuda:3"  # e.g. converting elsewhere
    with pytest.raises(ConfigError, match="no GPU"):
        parse_strategy("cuda:0 fp16", 4, gpus=[])


def test_canonical_strategy() -> None:
    assert canonical_strategy(" cuda:0  fp16 *10->cuda:1 fp16 ") == "cuda:0 fp16 *10 -> cuda:1 fp16"


@settings(max_examples=200, deadline=None)
@given(
    n_layer=st.integers(1, 48),
    segs=st.lists(
        st.tuples(
            st.sampled_from(["cpu", "cuda:0", "cuda:1", "mps"]),
            st.sampled_from(["fp16", "fp32", "bf16", "fp16i8", "fp32i8", "bf16i8"]),
            st.one_of(st.none(), st.integers(1, 20)),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_parse_invariants(n_layer: int, segs: list[tuple[str, str, int | None]]) -> None:
    text = " -> ".join(f"{d} {t}" + (f" *{n}" if n else "") for d, t, n in segs)
    try:
        out = parse_strategy(text, n_layer, shape=ModelShape(n_layer, 64, 100))
    except ConfigError:
        return
    assert sum(s.layer_count for s in out) == n_layer + 1
    assert all(s.layer_count >= 1 and s.bytes > 0 for s in out)
    assert len(layer_devices(out)) == n_layer + 1
    for s, (_, _, n) in zip(out, segs, strict=True):
        if n is not None and s is not out[-1]:
            assert s.layer_count == n


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("m") / "m", n_layer=4, n_embd=16,
                                   vocab_size=32)


@pytest.mark.parametrize("text", [
    "cpu fp32 *2 -> cpu bf16",
    "cpu fp32 -> cpu fp32 -> cpu bf16",  # free segments share the slots: 1, 2, 2
    "cpu fp32i8 *1 -> cpu fp32",
    "cpu fp32 *5",  # every slot counted, the head included
    "cpu fp32 *3 -> cpu bf16 *2",
    "cpu fp32 *2 -> cpu bf16 *1",  # the remainder goes to the last segment
    "cpu bf16 -> cpu fp32 *1",  # a free segment before a counted one
    "cpu fp32 *1 -> cpu bf16 -> cpu fp32i8",
])
def test_agrees_with_rwkv_package(tiny_checkpoint: Path, text: str) -> None:
    """The package's own placement of a tiny model (4 layers, 5 slots) matches ours slot by
    slot: the package has no parser to call before loading, so ours is checked against it."""
    from rwkv.model import RWKV

    model = RWKV(str(tiny_checkpoint), text, verbose=False)
    assert layer_placements(parse_strategy(text, 4)) == package_placements(model)


def test_explicit_and_resolve() -> None:
    shape, gpus = SHAPES["14B"], INVENTORIES["1x16"]
    plan = explicit_plan("cuda:0 fp16", shape, gpus)
    assert plan.reason == "explicit"
    assert plan.warnings and "cuda:0 needs" in plan.warnings[0]
    assert "warning:" in plan.describe()
    assert resolve_plan(shape, gpus).strategy == "cuda:0 fp16i8 *37+"
    assert resolve_plan(shape, gpus, explicit="cuda:0 fp16i8").reason == "explicit"
    conv = resolve_plan(shape, gpus, converted_strategy="cuda:0 fp16i8 *30+")
    assert conv.strategy == "cuda:0 fp16i8 *30+" and "pre-converted" in conv.reason
    with pytest.raises(ConfigError, match="converted for strategy"):
        resolve_plan(shape, gpus, explicit="cuda:0 fp16", converted_strategy="cuda:0 fp16i8")
    with pytest.raises(ConfigError, match="cuda:1 requested"):
        resolve_plan(shape, gpus, explicit="cuda:1 fp16")


def test_describe_lists_segments() -> None:
    plan: Plan = plan_strategy(SHAPES["7B"], INVENTORIES["2x16"])
    text = plan.describe()
    assert "cuda:0 fp16 *16 -> cuda:1 fp16" in text and "cuda:1" in text and "GiB" in text
