"""Placement planner: which device and dtype holds each RWKV-4 or RWKV-7 layer.

The `rwkv` package places a model from a *strategy* string such as
``cuda:0 fp16 *20 -> cuda:1 fp16``. A model with ``n_layer`` blocks has ``n_layer + 1``
placement *slots*: one per block plus the output head (``ln_out`` + ``head``), which always
goes with the last slot. The embedding stays in CPU memory whatever the strategy (the package
never moves it), so it is counted as host memory, not in any segment.

`plan_strategy` chooses a strategy from the model's shape and the GPUs NVML reports;
`parse_strategy` validates an explicit one with the same grammar and slot arithmetic as the
package, so a bad configuration fails at start-up with a readable message instead of an
assertion deep inside the loader.

Why the grammar and the arithmetic are restated here: rwkv 0.8.32 has no parser to call. Its
regex and its slot arithmetic are local code in `RWKV.__init__`, which runs them only while
loading the weights onto the devices; the planner needs the answer before that (to choose, to
fail early, to estimate memory per device, on machines without the GPUs named). Where the
package's own answer exists, after loading, `package_placements` reads it (`model.strategy`),
and the tests check slot by slot that both agree.

RWKV-7 (`ModelShape.generation == 7`): the package's x070 class takes one `device dtype`, so
the node places the layers itself (services/inference/rwkv7_batched.py) from the same strategy
grammar and slot arithmetic: ``cuda:0 fp16 *k -> cuda:1 fp16`` puts blocks 0..k-1 on cuda:0
and the rest with the head on cuda:1. There is no int8 and no streaming for RWKV-7 (a strategy
asking for them is refused), every tensor of a block is in the activation dtype, and the
embedding lives with slot 0 (the package keeps it on its device), so slot 0 counts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from services.common.errors import ConfigError  # re-exported: the node's start-up errors

__all__ = [
    "ConfigError",
    "GpuInfo",
    "LayerPlacement",
    "ModelShape",
    "Plan",
    "Segment",
    "canonical_strategy",
    "explicit_plan",
    "layer_devices",
    "layer_placements",
    "package_placements",
    "check_strategy7",
    "parse_strategy",
    "plan_strategy",
    "resolve_plan",
]

GiB = 1024**3

ACT_DTYPES = {"fp16": 2, "bf16": 2, "fp32": 4}
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(?::(\d+))?)$")
_DTYPE_RE = re.compile(r"^(fp16|fp32|bf16)(i8)?$")
_COUNT_RE = re.compile(r"^\*(\d+)(\+?)$")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True, slots=True)
class Segment:
    """Slots ``[first_layer, first_layer + layer_count)`` on one device (slot n_layer = head).

    ``bytes`` is the weight memory resident on ``device`` (embedding excluded);
    ``streamed_layers`` counts blocks whose matrices stay in pinned CPU memory and are copied
    to the device for each forward pass (the strategy's ``+``).
    """

    device: str
    dtype: str
    first_layer: int
    layer_count: int
    bytes: int = 0
    streamed_layers: int = 0
    count: int | None = None  # the explicit *N of the strategy text, if any
    stream: bool = False  # the strategy's "+" suffix

    @property
    def atype(self) -> str:
        return self.dtype.removesuffix("i8")

    @property
    def int8(self) -> bool:
        return self.dtype.endswith("i8")

    def spec(self) -> str:
        s = f"{self.device} {self.dtype}"
        if self.count is not None:
            s += f" *{self.count}{'+' if self.stream else ''}"
        return s


@dataclass(frozen=True, slots=True)
class LayerPlacement:
    device: str
    dtype: str
    streamed: bool


@dataclass(frozen=True, slots=True)
class Plan:
    strategy: str
    segments: list[Segment]
    reason: str
    warnings: list[str] = field(default_factory=list)
    # CPU memory for the embedding, CPU segments and streamed matrices.
    host_bytes: int = 0

    def device_bytes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.segments:
            out[s.device] = out.get(s.device, 0) + s.bytes
        return out

    def describe(self) -> str:
        lines = [f"strategy: {self.strategy}", f"reason: {self.reason}"]
        for s in self.segments:
            last = s.first_layer + s.layer_count - 1
            streamed = f", {s.streamed_layers} streamed" if s.streamed_layers else ""
            lines.append(
                f"  {s.device:<8} {s.dtype:<7} slots {s.first_layer}-{last}"
                f" ({s.layer_count}{streamed}) {s.bytes / GiB:.2f} GiB"
            )
        lines.append(f"  host memory {self.host_bytes / GiB:.2f} GiB")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Shape of an RWKV-4 or RWKV-7 checkpoint; `dtype_bytes` is the element size of the
    file's weights. RWKV-7 adds the head size and the low-rank weights of one block."""

    n_layer: int
    n_embd: int
    vocab_size: int
    dtype_bytes: int = 2
    n_ffn: int = 0  # 0 means the default 4 * n_embd
    generation: int = 4
    head_size: int = 0  # RWKV-7: N of the per-head N x N state
    lora_params: int = 0  # RWKV-7: weights of a block's four low-rank pairs

    @classmethod
    def from_info(cls, info: Any) -> ModelShape:
        """From `checkpoint.CheckpointInfo` (or anything with the same attributes)."""
        sizes = {"float32": 4, "float16": 2, "bfloat16": 2, "uint8": 1}
        lora = getattr(info, "lora", None)
        return cls(
            n_layer=int(info.n_layer),
            n_embd=int(info.n_embd),
            vocab_size=int(info.vocab_size),
            dtype_bytes=sizes.get(str(info.dtype), 2),
            n_ffn=int(getattr(info, "n_ffn", 0) or 0),
            generation=int(getattr(info, "version", 4)),
            head_size=int(getattr(info, "head_size", 0) or 0),
            lora_params=int(lora.params(int(info.n_embd))) if lora is not None else 0,
        )

    def state_bytes(self, dtype: str = "fp16") -> int:
        """One conversation's RNN state with activations in `dtype`: RWKV-4 five vectors
        per layer (three float32), RWKV-7 two vectors and the [H, N, N] float32 matrix."""
        a, c = _act_bytes(dtype), self.n_embd
        if self.generation == 7:
            return self.n_layer * (2 * c * a + c * self.head_size * 4)
        return self.n_layer * (2 * c * a + 3 * c * 4)

    @property
    def ffn(self) -> int:
        return self.n_ffn or 4 * self.n_embd

    @property
    def slots(self) -> int:
        return self.n_layer + 1

    def layer_matrix_params(self) -> int:
        c, f = self.n_embd, self.ffn
        if self.generation == 7:  # att r/k/v/o + ffn key/value + the low-rank pairs
            return 4 * c * c + 2 * c * f + self.lora_params
        return 4 * c * c + 2 * c * f + c * c  # att k/v/r/o + ffn key/value + ffn receptance

    def layer_vectors(self) -> int:
        # RWKV-7: ln1/ln2 (4), six mixes, w0/a0/v0, k_k, k_a, r_k, ln_x (2), ffn x_k = 19
        return (19 if self.generation == 7 else 11) * self.n_embd

    def layer_params(self) -> int:
        return self.layer_matrix_params() + self.layer_vectors()

    def params(self) -> int:
        c = self.n_embd
        return self.n_layer * self.layer_params() + 2 * self.vocab_size * c + 4 * c

    def file_bytes(self) -> int:
        return self.params() * self.dtype_bytes

    def layer_bytes(self, dtype: str, *, streamed: bool = False) -> int:
        """Device bytes of one block as the package converts it (`streamed`: matrices on host)."""
        a = _act_bytes(dtype)
        c, f = self.n_embd, self.ffn
        if self.generation == 7:  # the package casts every tensor to the one dtype
            return self.layer_params() * a
        vectors = 9 * c * a + 2 * c * 4  # ln1/ln2, time_mix_*; time_decay/first stay fp32
        if dtype.endswith("i8"):
            # uint8 matrices plus per-row/column offsets and ranges (mx, rx, my, ry)
            extras = (24 * c + 4 * f) * a
            matrices = self.layer_matrix_params()
        else:
            extras = 0
            matrices = self.layer_matrix_params() * a
        return vectors + extras + (0 if streamed else matrices)

    def layer_matrix_bytes(self, dtype: str) -> int:
        w = 1 if dtype.endswith("i8") else _act_bytes(dtype)
        return self.layer_matrix_params() * w

    def head_bytes(self, dtype: str) -> int:
        a = _act_bytes(dtype)
        c, v = self.n_embd, self.vocab_size
        if dtype.endswith("i8"):
            return c * v + 2 * (c + v) * a + 2 * c * a
        return c * v * a + 2 * c * a

    def emb_bytes(self, dtype: str) -> int:
        return self.vocab_size * self.n_embd * _act_bytes(dtype)

    def slot_bytes(self, slot: int, dtype: str, *, streamed: bool = False) -> int:
        if slot == self.n_layer:
            return self.head_bytes(dtype)  # the head is never streamed by the package
        emb = self.emb_bytes(dtype) if self.generation == 7 and slot == 0 else 0
        return emb + self.layer_bytes(dtype, streamed=streamed)


def _act_bytes(dtype: str) -> int:
    try:
        return ACT_DTYPES[dtype.removesuffix("i8")]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}") from None


# --------------------------------------------------------------------------- parsing


def canonical_strategy(strategy: str) -> str:
    """Whitespace-normalised strategy text, as the package stores it in converted files."""
    parts = [" ".join(p.split()) for p in strategy.split("->")]
    return " -> ".join(parts)


def parse_strategy(
    strategy: str,
    n_layer: int,
    *,
    gpus: Sequence[GpuInfo] | None = None,
    shape: ModelShape | None = None,
) -> list[Segment]:
    """Validate `strategy` and return its segments with the package's slot arithmetic.

    `gpus`, when given, is the inventory the strategy must fit (a ``cuda:N`` beyond it fails).
    `shape`, when given, fills in each segment's bytes.
    """
    if n_layer < 1:
        raise ConfigError(f"n_layer must be >= 1, got {n_layer}")
    text = strategy.strip()
    if not text:
        raise ConfigError("empty strategy; expected e.g. 'cuda:0 fp16' or 'cpu fp32'")
    raw: list[tuple[str, str, int | None, bool]] = []
    for i, part in enumerate(text.split("->"), start=1):
        words = part.split()
        where = f"strategy {strategy!r}, segment {i} ({part.strip()!r})"
        if len(words) not in (2, 3):
            raise ConfigError(f"{where}: expected 'DEVICE DTYPE [*N[+]]'")
        device, dtype = words[0], words[1]
        m = _DEVICE_RE.match(device)
        if not m:
            hint = " (DirectML is not supported here)" if device == "dml" else ""
            raise ConfigError(f"{where}: unknown device {device!r}{hint}; use cpu, cuda:N or mps")
        if m.group(1).startswith("cuda") and gpus is not None:
            index = int(m.group(2) or 0)
            if index >= len(gpus):
                have = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
                raise ConfigError(f"{where}: {device} requested but NVML reports {have}")
        if not _DTYPE_RE.match(dtype):
            raise ConfigError(
                f"{where}: unknown dtype {dtype!r}; use fp16, fp32, bf16, fp16i8, fp32i8 or bf16i8"
            )
        count: int | None = None
        stream = False
        if len(words) == 3:
            c = _COUNT_RE.match(words[2])
            if not c:
                raise ConfigError(
                    f"{where}: layer count must look like *N or *N+, got {words[2]!r}"
                )
            count, stream = int(c.group(1)), c.group(2) == "+"
            if count == 0 and not stream:
                raise ConfigError(f"{where}: *0 places no layers; drop the segment")
        raw.append((device, dtype, count, stream))

    if sum(1 for r in raw if r[3]) > 1:
        raise ConfigError(f"strategy {strategy!r}: only one segment may stream (*N+)")
    slots = n_layer + 1
    fixed = sum(r[2] or 0 for r in raw)
    if fixed > slots:
        raise ConfigError(
            f"strategy {strategy!r}: layer counts add up to {fixed}, but the model has "
            f"{n_layer} layers ({slots} slots counting the output head)"
        )
    plan = _allocate(raw, slots)
    segments: list[Segment] = []
    first = 0
    for i, ((device, dtype, count, stream), n) in enumerate(zip(raw, plan, strict=True)):
        if n <= 0:
            raise ConfigError(
                f"strategy {strategy!r}: segment {i + 1} ({device} {dtype}) gets no layers "
                f"(the model has {n_layer} layers + head = {slots} slots)"
            )
        streamed = 0
        if stream:
            # the head slot is never streamed by the package, whatever the flag says
            head = 1 if first + n == slots else 0
            streamed = max(0, n - (count or 0) - head)
        seg = Segment(device, dtype, first, n, 0, streamed, count, stream)
        if shape is not None:
            seg = _with_bytes(seg, shape)
        segments.append(seg)
        first += n
    return segments


def _allocate(raw: list[tuple[str, str, int | None, bool]], slots: int) -> list[int]:
    """The package's own slot arithmetic (rwkv.model.RWKV.__init__), restated."""
    plan = [0] * len(raw)
    stream_i = -1
    allocated = free = 0
    for i, (_, _, count, stream) in enumerate(raw):
        if count is None:
            free += 1
            continue
        plan[i] = count
        if stream:
            stream_i = i
        allocated += count
        if allocated >= slots:
            plan[i] += slots - allocated
            break
    if stream_i < 0:
        if free and slots > allocated:
            for i, (_, _, count, _) in enumerate(raw):
                if count is None and plan[i] == 0 and free:
                    plan[i] = (slots - allocated) // free
                    allocated += plan[i]
                    free -= 1
        if slots > allocated:
            plan[-1] += slots - allocated
    elif slots > allocated:
        plan[stream_i] += slots - allocated
    return plan


def _with_bytes(seg: Segment, shape: ModelShape) -> Segment:
    total = 0
    for k in range(seg.layer_count):
        slot = seg.first_layer + k
        total += shape.slot_bytes(slot, seg.dtype, streamed=_is_streamed(seg, k, shape.slots))
    if seg.streamed_layers:
        total += shape.layer_matrix_bytes(seg.dtype)  # transfer buffer for one layer
    return replace(seg, bytes=total)


def _is_streamed(seg: Segment, k: int, slots: int) -> bool:
    """Whether the k-th slot of `seg` is a streamed block (the head never is)."""
    return seg.stream and k >= (seg.count or 0) and seg.first_layer + k < slots - 1


def _host_bytes(segments: list[Segment], shape: ModelShape) -> int:
    # RWKV-4: the package keeps the embedding on the host; RWKV-7: with slot 0 (its bytes)
    host = 0 if shape.generation == 7 else shape.emb_bytes(segments[0].dtype)
    for s in segments:
        if s.device == "cpu":
            host += s.bytes
        else:
            host += s.streamed_layers * shape.layer_matrix_bytes(s.dtype)
    return host


def check_strategy7(strategy: str, segments: Sequence[Segment]) -> None:
    """Refuse what the RWKV-7 path cannot do: int8 layers and streamed layers."""
    for i, seg in enumerate(segments, start=1):
        if seg.int8:
            raise ConfigError(
                f"strategy {strategy!r}, segment {i}: {seg.dtype} asks for int8 layers; the rwkv "
                "package's RWKV-7 path has no int8: use fp16, bf16 or fp32")
        if seg.stream:
            raise ConfigError(
                f"strategy {strategy!r}, segment {i}: '+' asks for streamed layers; RWKV-7 "
                "layers are placed whole (split them over devices with '*N -> ...' instead)")


def layer_placements(plan: Plan | Sequence[Segment]) -> list[LayerPlacement]:
    """One entry per slot: blocks 0..n_layer-1, then the head."""
    segments = plan.segments if isinstance(plan, Plan) else plan
    slots = sum(s.layer_count for s in segments)
    return [
        LayerPlacement(s.device, s.dtype, _is_streamed(s, k, slots))
        for s in segments
        for k in range(s.layer_count)
    ]


_PACKAGE_ATYPES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def package_placements(model: Any) -> list[LayerPlacement]:
    """The placement the `rwkv` package computed while loading `model` (`rwkv.model.RWKV`): its
    `model.strategy`, one entry per slot, in the terms of `layer_placements`."""
    return [
        LayerPlacement(
            str(s.device),
            _PACKAGE_ATYPES[str(s.atype)] + ("i8" if str(s.wtype) == "torch.uint8" else ""),
            bool(s.stream),
        )
        for s in model.strategy
    ]


def layer_devices(plan: Plan | Sequence[Segment]) -> list[str]:
    """The device of each slot (blocks, then the head)."""
    return [p.device for p in layer_placements(plan)]


# --------------------------------------------------------------------------- planning


def _make_plan(
    specs: list[tuple[str, str, int | None, bool]],
    shape: ModelShape,
    reason: str,
) -> Plan:
    text = " -> ".join(
        f"{d} {t}" + (f" *{n}{'+' if st else ''}" if n is not None else "") for d, t, n, st in specs
    )
    segments = parse_strategy(text, shape.n_layer, shape=shape)
    return Plan(text, segments, reason, [], _host_bytes(segments, shape))


def _usable(gpu: GpuInfo, reserve: int, headroom: float) -> int:
    return max(0, int((gpu.free_bytes - reserve) * (1.0 - headroom)))


def _split(sizes: list[int], caps: list[int]) -> list[int] | None:
    """Contiguous counts per device (each >= 1), proportional to capacity, that fit."""
    n, k = len(sizes), len(caps)
    if n < k or sum(sizes) > sum(caps):
        return None
    total, capsum = sum(sizes), sum(caps)
    counts: list[int] = []
    pos = cum = 0
    for d in range(k - 1):
        target = total * sum(caps[: d + 1]) / capsum
        load = taken = 0
        while pos < n - (k - 1 - d):
            nxt = sizes[pos]
            if load + nxt > caps[d]:
                break
            if taken and abs(cum + nxt - target) >= abs(cum - target):
                break
            load, cum, pos, taken = load + nxt, cum + nxt, pos + 1, taken + 1
        if taken == 0:
            return None
        counts.append(taken)
    counts.append(n - pos)
    if sum(sizes[pos:]) <= caps[-1]:
        return counts
    # proportional did not fit the last device: fill the front devices to capacity instead
    counts, pos = [], 0
    for d in range(k - 1):
        load = taken = 0
        while pos < n - (k - 1 - d) and load + sizes[pos] <= caps[d]:
            load, pos, taken = load + sizes[pos], pos + 1, taken + 1
        if taken == 0:
            return None
        counts.append(taken)
    counts.append(n - pos)
    return counts if sum(sizes[pos:]) <= caps[-1] else None


def plan_strategy(
    shape: ModelShape,
    gpus: Sequence[GpuInfo],
    *,
    prefer_dtype: str = "fp16",
    headroom_fraction: float = 0.15,
    reserve_bytes: int = GiB,
    cpu_first_layers: int = 0,
    allow_int8: bool = True,
    allow_stream: bool = True,
) -> Plan:
    """Choose a strategy: fp16 on one GPU, else split fp16, else int8, else int8 streaming
    (RWKV-7: fp16 on one GPU, else split over the GPUs, else the CPU; no int8, no streaming).

    Each GPU offers ``(free - reserve_bytes) * (1 - headroom_fraction)`` for weights; the
    reserve covers the CUDA context, the headroom covers activations, batched RNN states and
    fragmentation. `cpu_first_layers` keeps the first K blocks on the CPU in fp32.
    """
    if shape.generation == 7:
        allow_int8 = allow_stream = False
    if prefer_dtype not in ACT_DTYPES:
        raise ConfigError(f"prefer_dtype must be one of fp16, bf16, fp32; got {prefer_dtype!r}")
    if not 0.0 <= headroom_fraction < 1.0:
        raise ConfigError(f"headroom_fraction must be in [0, 1), got {headroom_fraction}")
    if not 0 <= cpu_first_layers <= shape.n_layer:
        raise ConfigError(
            f"cpu_first_layers must be in [0, {shape.n_layer}], got {cpu_first_layers}"
        )
    if not gpus:
        return _make_plan(
            [("cpu", "fp32", None, False)], shape, "no GPU reported by NVML: cpu fp32"
        )
    if cpu_first_layers == shape.n_layer:
        return _make_plan([("cpu", "fp32", None, False)], shape, "all layers requested on the CPU")

    k = cpu_first_layers
    prefix: list[tuple[str, str, int | None, bool]] = [("cpu", "fp32", k, False)] if k else []
    on_cpu = f"; first {k} layers on the CPU (fp32)" if k else ""
    gpu_slots = list(range(k, shape.slots))
    ordered = sorted(gpus, key=lambda g: g.index)
    caps = {g.index: _usable(g, reserve_bytes, headroom_fraction) for g in ordered}
    best = max(ordered, key=lambda g: (caps[g.index], -g.index))
    gib = lambda b: f"{b / GiB:.1f} GiB"  # noqa: E731
    dtypes = [prefer_dtype] + ([prefer_dtype + "i8"] if allow_int8 else [])
    usable = [g for g in ordered if caps[g.index] > 0]

    short = ""  # why the preferred dtype was given up
    for dt in dtypes:
        need = sum(shape.slot_bytes(s, dt) for s in gpu_slots)
        if need <= caps[best.index]:
            return _make_plan(
                prefix + [(f"cuda:{best.index}", dt, None, False)],
                shape,
                f"{short}{dt} fits on one GPU ({gib(need)} of {gib(caps[best.index])} usable on "
                f"cuda:{best.index} {best.name}){on_cpu}",
            )
        if len(usable) >= 2:
            sizes = [shape.slot_bytes(s, dt) for s in gpu_slots]
            counts = _split(sizes, [caps[g.index] for g in usable])
            if counts is not None:
                specs = prefix + [
                    (f"cuda:{g.index}", dt, c if i < len(usable) - 1 else None, False)
                    for i, (g, c) in enumerate(zip(usable, counts, strict=True))
                ]
                total_cap = sum(caps[g.index] for g in usable)
                return _make_plan(
                    specs,
                    shape,
                    f"{short}{dt} needs {gib(need)}, more than one GPU offers "
                    f"({gib(caps[best.index])} usable): split over {len(usable)} GPUs in "
                    f"proportion to free memory ({gib(total_cap)} usable){on_cpu}",
                )
        short = (
            f"{dt} needs {gib(need)}, more than the GPUs offer "
            f"({gib(sum(caps.values()))} usable in all); "
        )

    if allow_stream:
        dt = dtypes[-1]
        cap = caps[best.index]
        blocks = [s for s in gpu_slots if s < shape.n_layer]
        fixed = shape.head_bytes(dt) + shape.layer_matrix_bytes(dt)  # head + transfer buffer
        streamed_all = sum(shape.layer_bytes(dt, streamed=True) for _ in blocks)
        if fixed + streamed_all <= cap:
            stored = 0
            load = fixed + streamed_all
            for _ in blocks:
                extra = shape.layer_bytes(dt) - shape.layer_bytes(dt, streamed=True)
                if load + extra > cap:
                    break
                load += extra
                stored += 1
            return _make_plan(
                prefix + [(f"cuda:{best.index}", dt, stored, True)],
                shape,
                f"{short}{dt}: {stored} layers stored on "
                f"cuda:{best.index}, {len(blocks) - stored} streamed from pinned CPU memory "
                f"(slow){on_cpu}",
            )
    return _make_plan(
        [("cpu", "fp32", None, False)],
        shape,
        f"the model does not fit the GPUs ({', '.join(gib(caps[g.index]) for g in ordered)} "
        f"usable) {'even with int8 layers' if allow_int8 else 'in ' + prefer_dtype}; running "
        "on the CPU in fp32",
    )


def explicit_plan(
    strategy: str,
    shape: ModelShape,
    gpus: Sequence[GpuInfo],
    *,
    reason: str = "explicit",
) -> Plan:
    """Plan for an operator-supplied strategy; warns (does not fail) when a GPU looks short."""
    segments = parse_strategy(strategy, shape.n_layer, gpus=gpus, shape=shape)
    if shape.generation == 7:
        check_strategy7(strategy, segments)
    warnings: list[str] = []
    free = {f"cuda:{g.index}": g.free_bytes for g in gpus}
    if gpus:
        free.setdefault("cuda", gpus[0].free_bytes)
    plan = Plan(
        canonical_strategy(strategy), segments, reason, warnings, _host_bytes(segments, shape)
    )
    for device, need in plan.device_bytes().items():
        if device in free and need > free[device]:
            warnings.append(
                f"{device} needs {need / GiB:.1f} GiB of weights but reports "
                f"{free[device] / GiB:.1f} GiB free"
            )
    return plan


def resolve_plan(
    shape: ModelShape,
    gpus: Sequence[GpuInfo],
    *,
    explicit: str | None = None,
    converted_strategy: str | None = None,
    **planner_options: Any,
) -> Plan:
    """The plan to load with: a pre-converted file's strategy, an explicit one, or planned."""
    if converted_strategy is not None:
        if explicit is not None and canonical_strategy(explicit) != canonical_strategy(
            converted_strategy
        ):
            raise ConfigError(
                f"the checkpoint was converted for strategy {converted_strategy!r} but "
                f"{explicit!r} was configured; re-convert it or configure the same strategy"
            )
        return explicit_plan(
            converted_strategy, shape, gpus, reason="pre-converted checkpoint's strategy"
        )
    if explicit is not None:
        return explicit_plan(explicit, shape, gpus)
    return plan_strategy(shape, gpus, **planner_options)
