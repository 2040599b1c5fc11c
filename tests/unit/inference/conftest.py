"""Shared fixtures for the inference engine tests: tiny random RWKV-4 models, a toy tokenizer,
and a scripted stand-in model for text-handling tests."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from services.inference.checkpoint import build_random_checkpoint
from services.inference.rwkv_batched import BatchedRWKV, ListStates, State, load_rwkv

VOCAB = 512


class ToyTokenizer:
    """Byte-level tokenizer with 512 ids: 0 = end of text, 1..256 = single bytes, then
    multi-byte pieces (words, "\\n\\n", and UTF-8 fragments of non-ASCII characters)."""

    def __init__(self, vocab_size: int = VOCAB) -> None:
        pieces: list[bytes] = [b""] + [bytes([b]) for b in range(256)]
        zh = "你好".encode()
        extra = [b"\n\n", b"Bob:", b"Alice:", b" the", b" and", zh[:2], zh[2:4], zh[4:],
                 "é".encode(), "ü".encode(), "😀".encode()[:2], "😀".encode()[2:]]
        pieces += extra
        cons, vows = "bcdfghklmnprstvz", "aeiou"
        for pre, c, v in itertools.product(["", " "], cons, vows):
            if len(pieces) >= vocab_size:
                break
            pieces.append(f"{pre}{c}{v}".encode())
        for c, v, c2 in itertools.product(cons, vows, cons):
            if len(pieces) >= vocab_size:
                break
            pieces.append(f" {c}{v}{c2}".encode())
        assert len(pieces) == vocab_size and len(set(pieces)) == vocab_size
        self.pieces = pieces
        self.ids = {p: i for i, p in enumerate(pieces) if i > 0}
        self.max_len = max(len(p) for p in pieces)

    def encode(self, text: str) -> list[int]:
        data = text.encode()
        out: list[int] = []
        i = 0
        while i < len(data):
            for n in range(min(self.max_len, len(data) - i), 0, -1):
                tid = self.ids.get(data[i : i + n])
                if tid is not None:
                    out.append(tid)
                    i += n
                    break
        return out

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")


class BytesOnlyTokenizer(ToyTokenizer):
    """Same vocabulary, but encodes byte by byte (so re-encoding a reply rarely matches)."""

    def encode(self, text: str) -> list[int]:
        return [b + 1 for b in text.encode()]


class ReversibleTokenizer:
    """id 0 = end of text, id 1 = "\n", id i = "[i]": encode(decode(ids)) == ids always, so
    a reply's sampled tokens are exactly the tokens its text re-encodes to."""

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        i = 0
        while i < len(text):
            if text[i] == "\n":
                out.append(1)
                i += 1
            else:
                j = text.index("]", i)
                out.append(int(text[i + 1 : j]))
                i = j + 1
        return out

    def decode(self, ids: list[int]) -> str:
        return "".join("" if i == 0 else "\n" if i == 1 else f"[{i}]" for i in ids)


class ScriptedBM(BatchedRWKV):
    """Stand-in model: after a prompt it forces the tokens of `script` in order (then eos).

    State is one tensor [consumed, prompt_len]; logits are +10 on the scripted token.
    """

    head_on_cpu = True  # BatchedRWKV reads it from the weights, which this stand-in has not
    batched_prefill = False  # prefill_many goes through the scripted prefill

    def __init__(self, script: Sequence[int], vocab_size: int = VOCAB, fail_step: bool = False):
        self.script = list(script)
        self.vocab_size = vocab_size
        self.fail_step = fail_step
        self.fallback_reason = "scripted"
        self.batched_steps = 0
        self.fallback_steps = 0

    def _logits(self, st: torch.Tensor) -> torch.Tensor:
        pos = int(st[0] - st[1])
        tok = self.script[pos] if pos < len(self.script) else 0
        out = torch.full((self.vocab_size,), -10.0)
        out[tok] = 10.0
        return out

    def prefill(self, tokens: Sequence[int], state: Any, chunk_len: int = 256) -> tuple[torch.Tensor, State]:
        st = state[0].clone() if state is not None else torch.tensor([0.0, float(len(tokens))])
        st[0] += len(tokens)
        return self._logits(st), [st]

    def new_batch(self, states: Sequence[Sequence[torch.Tensor]] = ()) -> ListStates:
        return ListStates(states)

    def to_model(self, state: Sequence[torch.Tensor]) -> State:
        return [t.clone() for t in state]

    def step(self, tokens: Sequence[int], batch: Any) -> torch.Tensor:
        if self.fail_step:
            raise RuntimeError("boom")
        outs = []
        for r in range(len(tokens)):
            st = batch.states[r][0].clone()
            st[0] += 1
            batch.states[r] = [st]
            outs.append(self._logits(st))
        return torch.stack(outs) if outs else torch.empty((0, self.vocab_size))


@pytest.fixture(scope="session")
def tokenizer() -> ToyTokenizer:
    return ToyTokenizer()


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rwkv")


@pytest.fixture(scope="session")
def tiny_ckpt(ckpt_dir: Path) -> Path:
    """4 layers x 32, vocab 512, fp32 on disk."""
    return build_random_checkpoint(ckpt_dir / "tiny", n_layer=4, n_embd=32, vocab_size=VOCAB, seed=1)


@pytest.fixture(scope="session")
def load_model() -> Any:
    """Memoised load_rwkv(path, strategy): each (file, strategy) is loaded (and JIT-warmed)
    once per session. Tests must not modify the returned model's weights."""
    models: dict[tuple[str, str], Any] = {}

    def load(path: Path, strategy: str) -> Any:
        key = (str(path), strategy)
        if key not in models:
            models[key] = load_rwkv(path, strategy)
        return models[key]

    return load


@pytest.fixture(scope="session")
def model_fp32(tiny_ckpt: Path, load_model: Any) -> Any:
    return load_model(tiny_ckpt, "cpu fp32")


def greedy_reference(model: Any, prompt: list[int], n: int, presence: float = 0.0,
                     frequency: float = 0.0, decay: float = 0.996) -> list[int]:
    """A plain greedy loop with the package's own forward and ChatRWKV's penalty dict."""
    out, state = model.forward(list(prompt), None)
    occurrence: dict[int, float] = {}
    tokens: list[int] = []
    for _ in range(n):
        logits = out.float().clone()
        for t, c in occurrence.items():
            logits[t] -= presence + c * frequency
        tok = int(torch.argmax(logits))
        tokens.append(tok)
        for t in occurrence:
            occurrence[t] *= decay
        occurrence[tok] = occurrence.get(tok, 0.0) + 1.0
        out, state = model.forward([tok], state)
    return tokens


def join_leave_run(bm: Any, pool: list[Any], ref: Any, slots: Any, vocab: int,
                   tol: float, steps: int = 12) -> None:
    """Drive `ref` (the model's StackedStates) and `slots` (DecodeSlots) through the same
    decode run with sequences joining and leaving between steps; their logits must agree
    at every step and their states at the end."""
    rng = random.Random(1)
    live = 0
    for step in range(steps):
        if live < 8 and (step % 3 == 0 or live == 0):
            st = pool[step % len(pool)]
            ref.append(st)
            slots.append(st)
            live += 1
        if step % 4 == 3 and live > 1:
            keep = sorted(rng.sample(range(live), live - 1))
            ref.keep(keep)
            slots.keep(keep)
            live -= 1
        tokens = [rng.randrange(1, vocab) for _ in range(live)]
        want = bm.step(tokens, ref).clone()
        got = slots.step(tokens)
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    for i in range(live):
        for a, b in zip(slots.get(i), ref.get(i), strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.fixture(scope="session")
def greedy_ref() -> Any:
    return greedy_reference


@pytest.fixture(scope="session")
def scripted() -> Any:
    """Factory: scripted(script, fail_step=False) -> ScriptedBM."""
    return ScriptedBM


@pytest.fixture(scope="session")
def bytes_tokenizer() -> BytesOnlyTokenizer:
    return BytesOnlyTokenizer()


@pytest.fixture
def make_engine(model_fp32: Any, tokenizer: ToyTokenizer) -> Any:
    """Factory: make_engine(model=None, tok=None, cache=None, callbacks=None, clock=None,
    **EngineConfig fields) -> started Engine; all are stopped at teardown."""
    from services.inference.engine import Engine, EngineConfig

    engines: list[Engine] = []

    def make(model: Any = None, tok: Any = None, *, cache: Any = None, callbacks: Any = None,
             clock: Any = None, **config: Any) -> Engine:
        kw = {"clock": clock} if clock is not None else {}
        e = Engine(model if model is not None else model_fp32, tok or tokenizer, cache=cache,
                   config=EngineConfig(**config), callbacks=callbacks, **kw)
        e.start()
        engines.append(e)
        return e

    yield make
    for e in engines:
        e.stop()


async def collect(handle: Any) -> tuple[list[int], list[str], Any]:
    """(token ids from TokenEvents, their texts, the FinishEvent)."""
    from services.inference.engine import TokenEvent

    ids: list[int] = []
    texts: list[str] = []
    async for ev in handle:
        if isinstance(ev, TokenEvent):
            ids += ev.token_ids
            texts.append(ev.text)
    return ids, texts, handle.final


@pytest.fixture(scope="session")
def drain() -> Any:
    return collect


@pytest.fixture(scope="session")
def reversible_tokenizer() -> ReversibleTokenizer:
    return ReversibleTokenizer()
