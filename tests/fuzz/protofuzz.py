"""Hypothesis strategies for any protobuf message, built from its descriptor.

`Fuzzer(pools).message(SomeRequest)` draws instances of SomeRequest: every scalar
type with its edge values (empty and huge strings, Unicode edge cases, integer
bounds, nan/inf/-0), enums with unknown numbers, repeated fields with 0..many
items, nested messages to a bounded depth, proto3 `optional` presence, oneofs,
google.protobuf.Timestamp/Duration far in the past and future (and invalid),
and Struct/Value/ListValue trees. String fields whose name says they hold an id
or a token draw from `pools` too: the real ids and tokens of rows created in
setup, so generated requests reach past the "not found" checks into deep code.

Pools are read when a value is drawn, not when the strategy is built, so a
driver can refill them (new families each round) without rebuilding anything.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# The gateway's public receive limit (services/gateway/settings.py public_max_receive_bytes)
# and the chassis' internal one (services/common/server.py): huge strings go past both.
PUBLIC_RECEIVE_LIMIT = 1024 * 1024
INTERNAL_RECEIVE_LIMIT = 4 * 1024 * 1024
HUGE_SIZES = (256, 257, 4097, 65_537, PUBLIC_RECEIVE_LIMIT + 1)

# Strings that break naive code: control characters and NUL, combining marks,
# bidi controls and RTL scripts, zero-width characters, emoji sequences,
# non-characters, case-mapping oddities, digits that are not ASCII, look-alikes
# of numbers, paths, markup and SQL.
UNICODE_EDGES: tuple[str, ...] = (
    "", " ", "  ", "\x00", "a\x00b", "\x00" * 8, "\t", "\n", "\r\n", "\x1b[31mred\x1b[0m", "\x7f",
    "\x08\x0c\x0b", "\u0085", "\u2028\u2029",
    "e\u0301", "\u0301", "\u0301\u0301\u0301", "Z\u0351\u0361\u0336\u0337\u0338a\u035c\u0362",
    "\u202eevil\u202c", "\u200f", "\u061c", "\u2066x\u2069", "مرحبا بك", "שלום", "abc\u202edef",
    "\u200b", "\u200c\u200d", "\ufeff", "\u2060", "\u00ad", "\u180e", "\u3164",
    "\U0001F600", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
    "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F1FA\U0001F1F8", "\U0001F44D\U0001F3FD",
    "\ufffe", "\uffff", "\ufdd0", "\U0001fffe", "\U0010ffff", "\ufffd",
    "\u0130", "\u0131", "ß", "\ufb03", "\u01c4", "\u2162", "\U0001D4D0", "Ⓐ",
    "１２３", "\u0663", "\u00b9", "\u0e51", "½", "Infinity", "NaN", "-0", "1e309", "0x1F", "-1",
    "9" * 40, "null", "None", "true", "{}", "[]", "%s%n%x", "{0}", "${jndi:x}",
    "../../etc/passwd", "C:\\CON", "<script>alert(1)</script>", "' OR '1'='1", "'; DROP TABLE x; --",
    "\\", '"', "'", "a" * 255, "a" * 256, "é" * 200, "\U0001F600" * 100, " padded ",
)
_ASCII_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from one of `choices`, each picked with probability proportional to its weight."""
    expanded = [s for w, s in choices for _ in range(w)]
    return st.sampled_from(expanded).flatmap(lambda s: s)


def from_pool(pool: Sequence[Any]) -> st.SearchStrategy[Any]:
    """An element of `pool` as it is when drawn (the driver refills pools between rounds)."""
    return st.integers(0, 2**20).map(lambda i: pool[i % len(pool)] if pool else "")


def texts(huge: bool = True) -> st.SearchStrategy[str]:
    no_surrogates = st.characters(exclude_categories=("Cs",))
    edge_chars = st.sampled_from([c for s in UNICODE_EDGES for c in s] or ["a"])
    options: list[tuple[int, st.SearchStrategy[str]]] = [
        (4, st.sampled_from(UNICODE_EDGES)),
        (3, st.text(no_surrogates, max_size=24)),
        (2, st.text(string.ascii_letters + string.digits + " -_.@", min_size=1, max_size=24)),
        (2, st.lists(st.one_of(edge_chars, st.sampled_from(UNICODE_EDGES)), max_size=12)
         .map("".join)),
    ]
    if huge:
        options.append((1, st.builds(lambda piece, n: piece * n,
                                     st.sampled_from(["a", "é", "\U0001F600", "\u0301", "\x00"]),
                                     st.sampled_from(HUGE_SIZES))))
    return weighted(*options)


def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (0, 1, -1, 2, 7, 100, 1000, 10_000, 2**31 - 1, -(2**31), 2**31,
                                2**32 - 1, 2**63 - 1, -(2**63), 2**64 - 1, hi, lo, hi - 1, lo + 1)
                    if lo <= v <= hi})
    return weighted((2, st.sampled_from(edges)), (1, st.integers(-3, 20).filter(lambda v: lo <= v <= hi)),
                    (1, st.integers(lo, hi)))


def floats(width: int) -> st.SearchStrategy[float]:
    edges = [0.0, -0.0, 1.0, -1.0, 0.5, float("nan"), float("inf"), float("-inf"),
             3.4028234663852886e38 if width == 32 else 1.7976931348623157e308,
             1.401298464324817e-45 if width == 32 else 5e-324]
    return weighted((2, st.sampled_from(edges)), (1, st.floats(width=width)),
                    (1, st.floats(-10, 10, width=width)))


def uuid_like() -> st.SearchStrategy[str]:
    """Random UUIDs and near-UUIDs (other spellings of a UUID, the nil UUID, truncated ones)."""
    u = st.uuids().map(str)
    return weighted(
        (4, u), (1, u.map(str.upper)), (1, u.map(lambda s: s.replace("-", ""))),
        (1, u.map(lambda s: "{" + s + "}")), (1, u.map(lambda s: s[:-1])),
        (1, u.map(lambda s: s + "\x00")), (1, u.map(lambda s: " " + s)),
        (1, st.just(str(uuid.UUID(int=0)))), (1, st.just("ffffffff-ffff-ffff-ffff-ffffffffffff")),
    )


def garbage_tokens() -> st.SearchStrategy[str]:
    return weighted((2, st.text(_ASCII_PRINTABLE, max_size=80)),
                    (1, st.sampled_from(["", "null", "a.b.c", "eyJ.eyJ.sig", "Bearer", "=" * 40])),
                    (1, st.binary(min_size=1, max_size=64).map(lambda b: b.hex())))


def _timestamps(now_s: int) -> st.SearchStrategy[tuple[int, int]]:
    min_ts, max_ts = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31
    seconds = weighted(
        (3, st.integers(now_s - 30 * 86400, now_s + 3600)),  # realistic: the last month
        (1, st.integers(now_s - 86400, now_s)),
        (2, st.sampled_from([0, -1, min_ts, min_ts - 1, max_ts, max_ts + 1, INT64[0], INT64[1],
                             now_s + 10 * 365 * 86400, now_s - 100 * 365 * 86400, 2**31, -(2**31)])),
        (1, st.integers(*INT64)),
    )
    nanos = weighted((3, st.just(0)), (2, st.integers(0, 999_999_999)),
                     (1, st.sampled_from([-1, 1_000_000_000, INT32[0], INT32[1], 999_999_999])))
    return st.tuples(seconds, nanos)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), floats(64), st.integers(-(2**53), 2**53),
                        texts(huge=False))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=5),
                                st.dictionaries(texts(huge=False), inner, max_size=5)),
        max_leaves=max_leaves,
    )


def _struct_from(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _value_from(v: Any) -> struct_pb2.Value:
    return _struct_from({"v": v}).fields["v"]


def _list_value_from(items: list[Any]) -> struct_pb2.ListValue:
    lv = struct_pb2.ListValue()
    lv.extend(items)
    return lv


Hint = Callable[[FieldDescriptor], st.SearchStrategy[Any] | None]


class Fuzzer:
    """Strategies for protobuf messages.

    pools: field name -> list of real values (ids, tokens, emails...); a string
    field named in pools draws from it part of the time. hints: field name ->
    strategy of realistic values (mixed with the edge values, never replacing them).
    messages: full message name -> extra strategy of realistic whole messages.
    """

    def __init__(self, pools: dict[str, list[Any]] | None = None, *,
                 hints: dict[str, st.SearchStrategy[Any]] | None = None,
                 messages: dict[str, st.SearchStrategy[Message]] | None = None,
                 max_depth: int = 4, huge: bool = True, now_s: int | None = None) -> None:
        import time

        self.pools = pools if pools is not None else {}
        self.hints = dict(hints or {})
        self.messages = dict(messages or {})
        self.max_depth = max_depth
        self.huge = huge
        self.now_s = int(time.time()) if now_s is None else now_s
        self._texts = texts(huge)
        self._cache: dict[tuple[str, int], st.SearchStrategy[Message]] = {}

    # -- scalars --------------------------------------------------------------------------
    def _pooled(self, name: str) -> st.SearchStrategy[Any] | None:
        if name in self.pools:
            return from_pool(self.pools[name])
        return None

    def string(self, f: FieldDescriptor) -> st.SearchStrategy[str]:
        name = f.name.removesuffix("s") if f.is_repeated else f.name
        choices: list[tuple[int, st.SearchStrategy[str]]] = [(3, self._texts)]
        pooled = self._pooled(f.name)
        if pooled is None:
            pooled = self._pooled(name)
        if pooled is not None:
            choices.append((6, pooled))
        if name.endswith("_id") or name == "id":
            choices.append((3, uuid_like()))
        if name.endswith("token") or name in ("code", "password", "current_password", "new_password"):
            choices.append((2, garbage_tokens()))
        if f.name in self.hints:
            choices.append((4, self.hints[f.name]))
        return weighted(*choices)

    def scalar(self, f: FieldDescriptor) -> st.SearchStrategy[Any]:
        t = f.type
        if t == FieldDescriptor.TYPE_STRING:
            return self.string(f)
        if t == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if t == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if t == FieldDescriptor.TYPE_ENUM:
            numbers = [v.number for v in f.enum_type.values]
            return weighted((4, st.sampled_from(numbers)),
                            (1, st.sampled_from([max(numbers) + 1, -1, INT32[0], INT32[1]])),
                            (1, st.integers(*INT32)))
        if t == FieldDescriptor.TYPE_DOUBLE:
            base = floats(64)
        elif t == FieldDescriptor.TYPE_FLOAT:
            base = floats(32)
        elif t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32,
                   FieldDescriptor.TYPE_SFIXED32):
            base = ints(*INT32)
        elif t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
                   FieldDescriptor.TYPE_SFIXED64):
            base = ints(*INT64)
        elif t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            base = ints(*UINT32)
        elif t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            base = ints(*UINT64)
        else:  # pragma: no cover - groups are proto2 only
            raise TypeError(f"unsupported field type {t} ({f.full_name})")
        hint = self.hints.get(f.name)
        return base if hint is None else weighted((2, base), (3, hint))

    # -- messages ---------------------------------------------------------------------------
    def message(self, cls_or_desc: type[Message] | Descriptor, depth: int = 0
                ) -> st.SearchStrategy[Message]:
        desc = getattr(cls_or_desc, "DESCRIPTOR", cls_or_desc)
        key = (desc.full_name, depth)
        if key not in self._cache:
            strategy = self._well_known(desc)
            if strategy is None:
                strategy = self._generic(desc, depth)
            if desc.full_name in self.messages:
                strategy = weighted((1, strategy), (2, self.messages[desc.full_name]))
            self._cache[key] = strategy
        return self._cache[key]

    def _well_known(self, desc: Descriptor) -> st.SearchStrategy[Message] | None:
        cls = message_factory.GetMessageClass(desc)
        name = desc.full_name
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            if name == "google.protobuf.Timestamp":
                pairs = _timestamps(self.now_s)
            else:
                pairs = st.tuples(weighted((3, st.integers(0, 86400)), (1, st.integers(*INT64)),
                                           (1, st.sampled_from([-1, 315_576_000_001]))),
                                  st.sampled_from([0, 1, -1, 999_999_999, 1_000_000_000]))
            return pairs.map(lambda p: cls(seconds=p[0], nanos=p[1]))
        if name == "google.protobuf.Struct":
            return st.dictionaries(texts(huge=False), json_values(), max_size=6).map(_struct_from)
        if name == "google.protobuf.Value":
            return json_values().map(_value_from)
        if name == "google.protobuf.ListValue":
            return st.lists(json_values(4), max_size=6).map(_list_value_from)
        return None

    def _generic(self, desc: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        cls = message_factory.GetMessageClass(desc)
        oneofs = [o for o in desc.oneofs if not _synthetic(o)]
        in_oneof = {f.name for o in oneofs for f in o.fields}
        plain = [f for f in desc.fields if f.name not in in_oneof]
        values = {f.name: self._field(f, depth) for f in desc.fields}

        @st.composite
        def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Message:
            msg = cls()
            for oneof in oneofs:
                chosen = draw(st.sampled_from([None, *list(oneof.fields)]))
                if chosen is not None:
                    assign(msg, chosen, draw(values[chosen.name]))
            for f in plain:
                # Leave about one field in four unset (proto3: the default; `optional`: absent).
                if draw(st.integers(0, 3)) == 0:
                    continue
                value = draw(values[f.name])
                if value is not None:
                    assign(msg, f, value)
            return msg

        return build()

    def _field(self, f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            return st.dictionaries(self._single(key_f, depth + 1), self._single(value_f, depth + 1),
                                   max_size=4)
        single = self._single(f, depth)
        if not f.is_repeated:
            return single
        many = 300 if f.message_type is None else 40
        return weighted((6, st.lists(single, max_size=4)), (1, st.lists(single, min_size=5, max_size=many)))

    def _single(self, f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if f.message_type is None:
            return self.scalar(f)
        if depth >= self.max_depth:
            return st.none()
        return st.deferred(lambda: self.message(f.message_type, depth + 1))


def _synthetic(oneof: Any) -> bool:
    """The hidden oneof protoc makes for each proto3 `optional` field."""
    flag = getattr(oneof, "is_synthetic", None)
    if flag is not None:
        return flag() if callable(flag) else bool(flag)
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def assign(msg: Message, f: FieldDescriptor, value: Any) -> None:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        target = getattr(msg, f.name)
        for k, v in value.items():
            if v is None:
                continue
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
        return
    if f.is_repeated:
        getattr(msg, f.name).extend(v for v in value if v is not None)
    elif f.message_type is not None:
        getattr(msg, f.name).CopyFrom(value)
    else:
        setattr(msg, f.name, value)


def summarize(msg: Message, limit: int = 300) -> str:
    """A short one-line description of a request for reports (huge strings abbreviated)."""
    parts: list[str] = []
    for f, value in msg.ListFields():
        if isinstance(value, str) and len(value) > 40:
            shown = f"<str len={len(value)} {value[:12]!r}...>"
        elif isinstance(value, bytes):
            shown = f"<bytes len={len(value)}>"
        elif isinstance(value, Message):
            shown = "{" + summarize(value, 120) + "}"
        elif f.is_repeated:
            shown = f"<{len(value)} items>"
        else:
            shown = repr(value)
        parts.append(f"{f.name}={shown}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."
