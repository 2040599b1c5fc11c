"""A seeded plan is reproducible for one child and new for another (session ids are global,
so a second `make run` demo on the same databases must not resubmit the first one's ids)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from avatario_tools.cli.simulate import plan

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)


def _ids(p) -> set[str]:
    return {s.session_id for s in p.sessions} | {c.checkin_id for c in p.checkins}


def test_same_seed_same_child_same_plan_other_child_other_ids():
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    first = plan(a, 2018, 3, sessions=12, weeks=2, seed=7, now=NOW)
    again = plan(a, 2018, 3, sessions=12, weeks=2, seed=7, now=NOW)
    other = plan(b, 2018, 3, sessions=12, weeks=2, seed=7, now=NOW)
    assert [s.SerializeToString() for s in first.sessions] == [
        s.SerializeToString() for s in again.sessions]
    assert _ids(first) and not _ids(first) & _ids(other)
