"""Export batches: within the byte budget, in order, nothing lost, an oversized
record alone in its batch."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from services.common.chunking import batches


async def _records(sizes):
    for i, n in enumerate(sizes):
        yield struct_pb2.Value(string_value=f"{i:05d}" + "x" * n)


async def _collect(sizes, budget):
    return [b async for b in batches(_records(sizes), budget)]


@pytest.mark.asyncio
async def test_batches_stay_within_the_budget_and_keep_every_record_in_order():
    sizes = [100, 3000, 10, 900, 4000, 1, 2500, 700] * 20
    out = await _collect(sizes, 5000)
    flat = [r.string_value[:5] for b in out for r in b]
    assert flat == [f"{i:05d}" for i in range(len(sizes))]
    assert all(sum(r.ByteSize() + 6 for r in b) <= 5000 for b in out)
    assert len(out) < len(sizes)


@pytest.mark.asyncio
async def test_an_oversized_record_goes_alone_and_nothing_is_empty():
    out = await _collect([10, 9000, 10], 1000)
    assert [len(b) for b in out] == [1, 1, 1]
    assert await _collect([], 1000) == []
