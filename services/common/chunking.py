"""Batches of protobuf records for streaming responses of any total size.

A streamed export sends its records in messages of at most about `max_bytes`
each (gRPC refuses messages past the receiver's limit; the default limit is
4 MiB), so an export of any size streams completely. A single record larger
than the budget still goes out, alone in its batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

BATCH_BYTES = 1024 * 1024
# Per repeated element: its tag and length prefix (at most 1 + 5 bytes here).
_FRAMING = 6


async def batches(records: AsyncIterable[M], max_bytes: int = BATCH_BYTES,
                  ) -> AsyncIterator[list[M]]:
    """Consecutive records grouped into lists whose encoded size stays within
    `max_bytes` (but for a single oversized record); the last may be short."""
    batch: list[M] = []
    size = 0
    async for record in records:
        n = record.ByteSize() + _FRAMING
        if batch and size + n > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += n
    if batch:
        yield batch
