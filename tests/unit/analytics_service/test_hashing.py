"""Content hashes decide retry (same) versus conflict (different)."""

from __future__ import annotations

from google.protobuf import struct_pb2

from avatario.common.v1 import play_pb2
from services.analytics.hashing import checkin_hash, session_hash

FAM = "3f0e2a8e-8a43-4d1c-9a53-0a4f7f0e2a11"
KID = "b7c3c0d6-1f1e-4c44-8f5a-2d4e6f8a9b01"


def _session(stimulus: dict, rt: int = 420) -> play_pb2.GameSession:
    s = play_pb2.GameSession(session_id="0f4c5a7e-8a43-4d1c-9a53-0a4f7f0e2a11", game_id="go_nogo",
                             game_version=1)
    s.started_at.FromSeconds(1_780_000_000)
    s.ended_at.FromSeconds(1_780_000_100)
    t = s.trials.add(index=0, correct=True, responded=True, reaction_time_ms=rt)
    t.stimulus.update(stimulus)
    t.response.update({"pressed": True})
    t.presented_at.FromSeconds(1_780_000_001)
    return s


def test_the_hash_ignores_key_order_and_a_filled_in_child_id():
    a = _session({"is_target": True, "stimulus_id": "star"})
    b = _session({"stimulus_id": "star", "is_target": True})
    b.child_id = KID
    assert session_hash(FAM, KID, a) == session_hash(FAM, KID, b)
    assert a.child_id == ""  # the request is not modified


def test_any_content_change_changes_the_hash():
    base = session_hash(FAM, KID, _session({"is_target": True}))
    assert session_hash(FAM, KID, _session({"is_target": False})) != base
    assert session_hash(FAM, KID, _session({"is_target": True}, rt=421)) != base
    assert session_hash(FAM, "c" + KID[1:], _session({"is_target": True})) != base
    assert session_hash("c" + FAM[1:], KID, _session({"is_target": True})) != base


def test_numbers_that_compare_equal_hash_equal():
    one = struct_pb2.Struct()
    one.update({"n": 3})
    other = struct_pb2.Struct()
    other.update({"n": 3.0})
    a, b = _session({}), _session({})
    a.trials[0].stimulus.CopyFrom(one)
    b.trials[0].stimulus.CopyFrom(other)
    assert session_hash(FAM, KID, a) == session_hash(FAM, KID, b)


def test_checkin_hash():
    c = play_pb2.MoodCheckIn(checkin_id="0f4c5a7e-8a43-4d1c-9a53-0a4f7f0e2a11",
                             mood=play_pb2.MOOD_SAD, intensity=3)
    d = play_pb2.MoodCheckIn()
    d.CopyFrom(c)
    d.child_id = KID
    assert checkin_hash(FAM, KID, c) == checkin_hash(FAM, KID, d)
    d.intensity = 4
    assert checkin_hash(FAM, KID, c) != checkin_hash(FAM, KID, d)
