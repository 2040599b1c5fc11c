"""Request checks the domain does not make: the ChildRef on every call, ids,
ownership of a submission, list filters. Each violation names its proto field.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from avatario.analytics.v1 import analytics_pb2 as pb
from services.analytics.domain.catalog import CLOCK_SKEW
from services.analytics.domain.tips import AGE_BANDS
from services.analytics.repo.ingest import ChildRefData
from services.common.errors import InvalidArgument
from services.common.timeutil import from_ts
from services.common.validation import Violations

# A ChildRef's birth year-month: not in the future, at most this many years ago.
MAX_CHILD_AGE_YEARS = 25
MAX_VIOLATIONS = 25


def check_child(v: Violations, ref: pb.ChildRef, now: datetime, prefix: str = "child") -> None:
    v.uuid(f"{prefix}.family_id", ref.family_id)
    v.uuid(f"{prefix}.child_id", ref.child_id)
    year, month = ref.birth_year, ref.birth_month
    year_ok = month_ok = False
    if year == 0:
        v.add(f"{prefix}.birth_year", "is required")
    elif not now.year - MAX_CHILD_AGE_YEARS <= year <= now.year:
        v.add(f"{prefix}.birth_year", f"must be between {now.year - MAX_CHILD_AGE_YEARS} "
              f"and {now.year}")
    else:
        year_ok = True
    if month == 0:
        v.add(f"{prefix}.birth_month", "is required")
    elif not 1 <= month <= 12:
        v.add(f"{prefix}.birth_month", "must be between 1 and 12")
    else:
        month_ok = True
    if year_ok and month_ok and (year, month) > (now.year, now.month):
        v.add(f"{prefix}.birth_month", "must not be in the future")


def child_ref(ref: pb.ChildRef, now: datetime) -> ChildRefData:
    """A valid ChildRef as data, or INVALID_ARGUMENT naming child.* fields."""
    v = Violations()
    check_child(v, ref, now)
    v.raise_if_any()
    return as_data(ref)


def as_data(ref: pb.ChildRef) -> ChildRefData:
    return ChildRefData(ref.family_id, ref.child_id, ref.birth_year, ref.birth_month)


def submission(v: Violations, ref: pb.ChildRef, item_id: str, child_id: str, *, item: str,
               id_field: str) -> None:
    """The client id is a UUID; the item's child_id, when set, is the ChildRef's."""
    v.uuid(f"{item}.{id_field}", item_id)
    if child_id and child_id != ref.child_id:
        v.add(f"{item}.child_id", "must be empty or equal to child.child_id")


def merged(v: Violations, more: InvalidArgument | None, item: str) -> None:
    """Raise the violations found so far together with the domain's, at most
    MAX_VIOLATIONS of them (the status details travel in trailing metadata,
    which gRPC limits to 16 KiB)."""
    if more is not None:
        v.items.extend(more.violations)
    v.items = list(dict.fromkeys(v.items))  # a problem both checks found is listed once
    if len(v.items) > MAX_VIOLATIONS:
        extra = len(v.items) - MAX_VIOLATIONS + 1
        v.items[MAX_VIOLATIONS - 1:] = [(item, f"and {extra} more problems")]
    v.raise_if_any()


def submitted(ref: pb.ChildRef, item_id: str, child_id: str, *, item: str, id_field: str,
              now: datetime, domain_check: Callable[[], None]) -> ChildRefData:
    """The checks every play write makes, all violations at once: the ChildRef, the
    item's client id and child, and the domain's own checks (`domain_check` raises
    InvalidArgument). Returns the ChildRef as data."""
    v = Violations()
    check_child(v, ref, now)
    submission(v, ref, item_id, child_id, item=item, id_field=id_field)
    problems = None
    try:
        domain_check()
    except InvalidArgument as exc:
        problems = exc
    merged(v, problems, item)
    return as_data(ref)


def as_of(request: pb.GetChildReportRequest, now: datetime) -> datetime:
    if not request.HasField("as_of"):
        return now
    value = from_ts(request.as_of, "as_of")
    if value is None or value.year < 2000:
        raise InvalidArgument.field("as_of", "is not a plausible time")
    if value > now + CLOCK_SKEW:
        raise InvalidArgument.field("as_of", "must not be in the future")
    return value


def tips_filter(request: pb.ListTipsRequest, domain_known: bool) -> None:
    v = Violations()
    if request.domain != 0 and not domain_known:
        v.add("domain", f"unknown value {request.domain}")
    if request.age_band and request.age_band not in AGE_BANDS:
        v.add("age_band", f"must be one of: {', '.join(AGE_BANDS)}")
    v.raise_if_any()
