"""A problem the servicer's preamble and the domain's validation both find is
listed once (issue 17): an empty session id used to be named twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from avatario.analytics.v1 import analytics_pb2 as pb
from services.analytics import convert, validate
from services.analytics.domain.catalog import load_catalog, validate_session
from services.common.errors import InvalidArgument

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def test_an_empty_session_id_is_named_once():
    ref = pb.ChildRef(family_id="5f0e6a1c-8d2b-4f59-9a57-1b2c3d4e5f60",
                      child_id="6a1c8d2b-4f59-4a57-9b2c-3d4e5f601234", birth_year=2017, birth_month=4)
    s = convert.session_pb(convert.session_from_pb(pb.SubmitGameSessionRequest().session, ref.child_id))
    raw = convert.session_from_pb(s, ref.child_id)
    catalog = load_catalog()
    with pytest.raises(InvalidArgument) as exc:
        validate.submitted(ref, s.session_id, s.child_id, item="session", id_field="session_id", now=NOW,
                           domain_check=lambda: validate_session(raw, catalog, NOW))
    fields = [f for f, _ in exc.value.violations]
    assert fields.count("session.session_id") == 1
    assert len(exc.value.violations) == len(set(exc.value.violations))
