"""Limits that are part of a public contract and checked by more than one service.

A limit that the gateway enforces at the edge and a backend enforces again must be the same
number, or a request the gateway accepts fails deeper in (or, worse, is silently cut). Each
such limit is defined here once; the proto comments name it, and both sides import it (the
chassis is the one module every service may import, see docs/architecture.md).
"""

from __future__ import annotations

__all__ = ["CHAT_MESSAGE_MAX_CHARS"]

# One chat message from a parent, in characters (Python `len`, i.e. code points) as received.
# The gateway refuses longer messages (INVALID_ARGUMENT, field `message`) before anything is
# stored; its setting `chat_message_max_chars` may lower this, never raise it. The inference
# node refuses them too, and its prompt keeps every character of an accepted message.
CHAT_MESSAGE_MAX_CHARS = 4000
