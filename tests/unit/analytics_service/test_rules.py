"""Service rules without a database: streak runs, flag state, backoff, ChildRef checks."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from avatario.analytics.v1 import analytics_pb2 as pb
from services.analytics import validate
from services.analytics.domain.types import Flag, FlagKind, FlagLevel, SkillDomain
from services.analytics.domain.xp import Backoff
from services.analytics.repo.flags import needs_update, with_stable_first_seen
from services.analytics.repo.ingest import run_through
from services.common.errors import InvalidArgument
from services.common.validation import Violations

NOW = datetime(2026, 10, 12, tzinfo=UTC)
D0 = date(2026, 1, 1)


def _days(*offsets: int) -> list[date]:
    return [D0 + timedelta(days=o) for o in offsets]


def test_run_through_a_day():
    days = _days(0, 1, 2, 5, 6, 9)
    assert run_through(days, days[1]) == (3, True, False)
    assert run_through(days, days[4]) == (2, False, False)
    assert run_through(days, days[5]) == (1, False, True)
    assert run_through(_days(3), D0 + timedelta(days=3)) == (1, True, True)


@dataclass
class State:
    flag_id: str
    first_seen_at: datetime
    level: str
    resolved_at: datetime | None = None


def _flag(first: datetime, level=FlagLevel.KEEP_AN_EYE) -> Flag:
    return Flag("f1", "kid", FlagKind.SKILL, level, SkillDomain.ATTENTION, "h", "e", (), (), 3,
                first, NOW)


def test_an_active_flag_keeps_its_first_seen_time():
    early = NOW - timedelta(days=20)
    flags = (_flag(NOW - timedelta(days=5)),)
    active = {"f1": State("f1", early, "KEEP_AN_EYE")}
    assert with_stable_first_seen(flags, active, NOW)[0].first_seen_at == early
    assert not needs_update(flags, active)
    resolved = {"f1": State("f1", early, "KEEP_AN_EYE", resolved_at=NOW - timedelta(days=9))}
    assert with_stable_first_seen(flags, resolved, NOW)[0].first_seen_at == flags[0].first_seen_at
    assert needs_update(flags, resolved)
    assert needs_update((_flag(early, FlagLevel.DISCUSS_WITH_PROFESSIONAL),), active)
    assert needs_update((), active) and not needs_update((), resolved)
    assert needs_update(flags, {})


def test_backoff_grows_to_its_cap_with_jitter():
    b = Backoff(1.0, 60.0)
    rng = random.Random(1)
    delays = [b.delay(n, rng).total_seconds() for n in range(1, 12)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4
    assert all(d <= 72.0 for d in delays) and delays[-1] >= 48.0
    assert b.delay(10_000, rng).total_seconds() <= 72.0


def _ref(**kw) -> pb.ChildRef:
    values = dict(family_id="3f0e2a8e-8a43-4d1c-9a53-0a4f7f0e2a11",
                  child_id="b7c3c0d6-1f1e-4c44-8f5a-2d4e6f8a9b01", birth_year=2018, birth_month=4)
    values.update(kw)
    return pb.ChildRef(**values)


@pytest.mark.parametrize("kw,field", [
    (dict(family_id="nope"), "child.family_id"),
    (dict(child_id=""), "child.child_id"),
    (dict(birth_year=2000), "child.birth_year"),
    (dict(birth_year=2027), "child.birth_year"),
    (dict(birth_month=0), "child.birth_month"),
    (dict(birth_year=2026, birth_month=11), "child.birth_month"),
])
def test_child_refs(kw, field):
    with pytest.raises(InvalidArgument) as info:
        validate.child_ref(_ref(**kw), NOW)
    assert field in info.value.fields
    assert validate.child_ref(_ref(), NOW).birth_month == 4


def test_many_violations_are_capped():
    v = Violations()
    more = InvalidArgument([(f"session.trials[{i}].index", "bad") for i in range(500)])
    with pytest.raises(InvalidArgument) as info:
        validate.merged(v, more, "session")
    assert len(info.value.violations) == validate.MAX_VIOLATIONS
    assert info.value.violations[-1] == ("session", "and 476 more problems")
