from __future__ import annotations

from datetime import UTC, datetime

import pytest

from avatario.common.v1 import chat_pb2
from avatario.profile.v1 import profile_pb2 as pb
from services.common.errors import InvalidArgument
from services.common.validation import Violations
from services.profile import validate
from services.profile.domain import rules

NOW = datetime(2026, 6, 15, tzinfo=UTC)
FAMILY = "3f1c2a9e-8a7b-4c1d-9e2f-0a1b2c3d4e5f"
OTHER = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


@pytest.mark.parametrize(("year", "month", "field"), [
    (2020, 1, None), (2024, 6, None), (2012, 1, None),  # 14y5m: still 14
    (2011, 6, "birth_year"),  # 15
    (2024, 7, "birth_year"),  # 1y11m
    (2027, 1, "birth_year"), (2026, 7, "birth_month"),  # future
    (0, 5, "birth_year"), (2020, 0, "birth_month"), (2020, 13, "birth_month"),
    (1800, 1, "birth_year"),
])
def test_check_birth(year, month, field):
    v = Violations()
    ok = rules.check_birth(v, year, month, NOW)
    assert ok is (field is None)
    assert [f for f, _ in v.items][:1] == ([] if field is None else [field])


def test_completeness_by_finish_reason():
    assert rules.is_complete(chat_pb2.FINISH_REASON_STOP)
    assert rules.is_complete(chat_pb2.FINISH_REASON_SAFETY)
    assert not rules.is_complete(chat_pb2.FINISH_REASON_CANCELLED)
    assert not rules.is_complete(chat_pb2.FINISH_REASON_ERROR)


def fields_of(fn, *args) -> list[str]:
    with pytest.raises(InvalidArgument) as info:
        fn(*args)
    return info.value.fields


def test_every_violation_is_collected():
    req = pb.CreateChildRequest(family_id="x", parent_id="", nickname="", birth_year=0,
                                birth_month=13)
    assert fields_of(validate.create_child, req, NOW) == [
        "family_id", "parent_id", "nickname", "birth_year", "birth_month"]


def test_record_consent_names_list_elements():
    req = pb.RecordConsentRequest(family_id=FAMILY, parent_id=OTHER, scopes=[1, 99, 1, 0],
                                  policy_version="v1")
    assert fields_of(validate.record_consent, req) == ["scopes[1]", "scopes[2]", "scopes[3]"]
    ok = pb.RecordConsentRequest(family_id=FAMILY, parent_id=OTHER, scopes=[1, 3],
                                 policy_version="2024-01.a")
    assert validate.record_consent(ok) == [1, 3]


def test_append_turn_reply_rules():
    base = dict(family_id=FAMILY, conversation_id=OTHER, turn_id=OTHER, user_message="hi")
    cancelled = pb.AppendTurnRequest(**base, finish_reason=chat_pb2.FINISH_REASON_CANCELLED)
    validate.append_turn(cancelled)  # an empty cut-short reply is fine
    stopped = pb.AppendTurnRequest(**base, finish_reason=chat_pb2.FINISH_REASON_STOP)
    assert fields_of(validate.append_turn, stopped) == ["assistant_message"]


def test_redeem_normalizes_the_code():
    req = pb.RedeemPairingCodeRequest(code="abcd-2345", device_name="Tab")
    assert validate.redeem_pairing_code(req) == "ABCD2345"
    bad = pb.RedeemPairingCodeRequest(code="abcd", device_name="")
    assert fields_of(validate.redeem_pairing_code, bad) == ["code", "device_name"]


def test_update_child_checks_only_fields_that_are_set():
    validate.update_child(pb.UpdateChildRequest(family_id=FAMILY, child_id=OTHER))
    req = pb.UpdateChildRequest(family_id=FAMILY, child_id=OTHER, nickname="",
                                birth_month=0)
    assert fields_of(validate.update_child, req) == ["nickname", "birth_month"]


def test_customize_caps_the_list_before_looking_at_items():
    req = pb.CustomizeAvatarRequest(family_id=FAMILY, child_id=OTHER, item_ids=[""] * 50)
    fields = fields_of(validate.customize_avatar, req)
    assert fields[0] == "item_ids" and len(fields) <= 7
