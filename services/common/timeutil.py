"""datetime <-> google.protobuf.Timestamp/Duration, always timezone-aware UTC; ages."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidArgument


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes (SQLite returns them) are taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def age_months(birth_year: int, birth_month: int, at: datetime | date) -> int:
    """Completed months of age at `at`, from the birth year-month only (negative
    before the birth month)."""
    return (at.year - birth_year) * 12 + (at.month - birth_month)


def to_ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(as_utc(value))
    return ts


def from_ts(ts: Timestamp | None, field: str = "timestamp") -> datetime | None:
    """None for an unset Timestamp (seconds and nanos both 0). A Timestamp outside
    its valid range (years 1..9999, nanos 0..999999999) is INVALID_ARGUMENT naming `field`."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.field(field, "is not a valid timestamp") from None


def to_duration(seconds: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d
