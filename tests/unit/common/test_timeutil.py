"""services.common.timeutil: Timestamps from clients may be out of range."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidArgument
from services.common.timeutil import from_ts, to_ts


def test_round_trip_and_unset():
    when = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    assert from_ts(to_ts(when)) == when
    assert from_ts(Timestamp()) is None and from_ts(None) is None
    # The range's own ends are valid.
    assert from_ts(Timestamp(seconds=-62_135_596_800)).year == 1
    assert from_ts(Timestamp(seconds=253_402_300_799, nanos=999_999_999)).year == 9999


@pytest.mark.parametrize("seconds, nanos", [
    (2**63 - 1, 0), (-(2**63), 0), (253_402_300_800, 0), (-62_135_596_801, 0),
    (1_700_000_000, -1), (1_700_000_000, 1_000_000_000), (0, -5),
])
def test_out_of_range_is_invalid_argument_naming_the_field(seconds, nanos):
    with pytest.raises(InvalidArgument) as info:
        from_ts(Timestamp(seconds=seconds, nanos=nanos), "session.started_at")
    assert info.value.fields == ["session.started_at"]
