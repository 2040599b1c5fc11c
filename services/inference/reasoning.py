"""Reasoning blocks in a streamed reply: `<think> ... </think>` never reaches the parent.

RWKV-7 G1 models are trained with an optional reasoning block at the start of the assistant's
turn (their published usage: "Assistant: <think" asks for one, "Assistant: <think>\\n</think"
skips it). The node prompts without one ("User: ...\\n\\nAssistant:"), but a model may still
open a block. `ReasoningFilter` sits between the decoder and the stop checker of a request
(engine, `EngineConfig.reasoning_block`): text inside a block is dropped, a stray closing tag
is dropped, the whitespace after a block is dropped, and a block left open when the reply
ends is dropped whole. Text that could be the start of a tag is held back until it is known
not to be one, so no fragment of a tag is ever streamed.

The visible text is what the reply's history turn holds; the state cache closes the turn
with it (a reply whose visible tokens differ from the sampled ones is closed from the
post-prompt state: the next prompt carries no reasoning, as in the published chat usage).
"""

from __future__ import annotations

__all__ = ["CLOSE_TAG", "OPEN_TAG", "ReasoningFilter"]

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


def _partial_tail(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag` (0: none)."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


class ReasoningFilter:
    """Streaming filter: `push(text)` returns the text that may be shown now, `flush()` the
    rest at the end of the reply. `hidden_chars` counts what was dropped."""

    __slots__ = ("_buf", "_inside", "_strip", "hidden_chars")

    def __init__(self) -> None:
        self._buf = ""
        self._inside = False  # within a block
        self._strip = False  # just after a block: drop the whitespace that follows
        self.hidden_chars = 0

    @property
    def inside(self) -> bool:
        return self._inside

    def push(self, text: str) -> str:
        self._buf += text
        out: list[str] = []
        while self._buf:
            if self._inside:
                i = self._buf.find(CLOSE_TAG)
                if i < 0:
                    keep = _partial_tail(self._buf, CLOSE_TAG)
                    self.hidden_chars += len(self._buf) - keep
                    self._buf = self._buf[len(self._buf) - keep :]
                    break
                self.hidden_chars += i + len(CLOSE_TAG)
                self._buf = self._buf[i + len(CLOSE_TAG) :]
                self._inside, self._strip = False, True
                continue
            if self._strip:
                stripped = self._buf.lstrip()
                self.hidden_chars += len(self._buf) - len(stripped)
                self._buf = stripped
                if not stripped:
                    break
                self._strip = False
            i, j = self._buf.find(OPEN_TAG), self._buf.find(CLOSE_TAG)
            if i >= 0 and (j < 0 or i < j):  # a block opens
                out.append(self._buf[:i])
                self.hidden_chars += len(OPEN_TAG)
                self._buf = self._buf[i + len(OPEN_TAG) :]
                self._inside = True
                continue
            if j >= 0:  # a closing tag without its block (the "skip reasoning" style)
                out.append(self._buf[:j])
                self.hidden_chars += len(CLOSE_TAG)
                self._buf = self._buf[j + len(CLOSE_TAG) :]
                self._strip = True
                continue
            keep = max(_partial_tail(self._buf, OPEN_TAG), _partial_tail(self._buf, CLOSE_TAG))
            out.append(self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            break
        return "".join(out)

    def flush(self) -> str:
        """The held-back text at the end of the reply: shown unless inside an open block."""
        rest, self._buf = self._buf, ""
        if self._inside:
            self.hidden_chars += len(rest)
            return ""
        return rest.lstrip() if self._strip else rest
