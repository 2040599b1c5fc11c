"""The generator reaches the edge values it promises (no servers: plain draws)."""

from __future__ import annotations

from avatario.analytics.v1 import analytics_pb2
from avatario.common.v1 import play_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.inference.v1 import inference_pb2
from tests.fuzz.driver import all_targets, draw_cases
from tests.fuzz.protofuzz import PUBLIC_RECEIVE_LIMIT, UNICODE_EDGES, Fuzzer, texts


def test_scalars_enums_timestamps_and_sizes_reach_their_edges():
    fz = Fuzzer({"child_id": ["real-child"]})
    sessions = draw_cases(fz.message(analytics_pb2.SubmitGameSessionRequest), 400, 1)
    checkins = draw_cases(fz.message(gw.SubmitMoodCheckInRequest), 300, 2)
    known_moods = {v.number for v in play_pb2.Mood.DESCRIPTOR.values}
    moods = {c.checkin.mood for c in checkins}
    assert moods & known_moods and moods - known_moods  # unknown enum numbers too
    intensities = {c.checkin.intensity for c in checkins}
    assert {0, 2**31 - 1, -(2**31)} <= intensities
    stamps = [(c.checkin.recorded_at.seconds, c.checkin.recorded_at.nanos) for c in checkins]
    assert any(s > 253_402_300_799 for s, _ in stamps) and any(s < -62_135_596_800 for s, _ in stamps)
    assert any(n < 0 or n >= 10**9 for _, n in stamps)
    child_ids = {s.child.child_id for s in sessions} | {s.session.child_id for s in sessions}
    assert "real-child" in child_ids and "" in child_ids
    trials = [len(s.session.trials) for s in sessions]
    assert 0 in trials and max(trials) >= 5
    assert any(t.stimulus.fields for s in sessions for t in s.session.trials)


def test_strings_include_unicode_edges_and_oversized_values():
    fz = Fuzzer()
    titles = [r.title for r in draw_cases(fz.message(gw.CreateConversationRequest), 400, 3)]
    assert set(titles) & set(UNICODE_EDGES) - {""}
    assert "" in titles and any("\x00" in t for t in titles)
    assert any(len(t.encode()) > PUBLIC_RECEIVE_LIMIT for t in draw_cases(texts(), 1000, 3))


def test_optional_presence_oneofs_and_floats():
    fz = Fuzzer()
    updates = draw_cases(fz.message(gw.UpdateChildRequest), 200, 4)
    assert any(u.HasField("nickname") for u in updates)
    assert any(not u.HasField("nickname") for u in updates)
    chats = draw_cases(fz.message(inference_pb2.ChatRequest), 300, 5)
    temps = [c.params.temperature for c in chats if c.params.HasField("temperature")]
    assert any(t != t for t in temps) and any(abs(t) == float("inf") for t in temps)
    events = {r.WhichOneof("event") for r in draw_cases(fz.message(inference_pb2.ChatResponse), 100, 6)}
    assert events == {None, "chunk", "final"}


def test_every_rpc_of_every_service_is_a_target():
    names = {t.name for t in all_targets()}
    for svc in (*gw.DESCRIPTOR.services_by_name.values(),
                analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
                inference_pb2.DESCRIPTOR.services_by_name["InferenceService"]):
        assert {f"{svc.name}.{m.name}" for m in svc.methods} <= names
    assert "ProfileService.AwardXp" in names
    destructive_last = [t.method.name for t in all_targets()][-1]
    assert destructive_last == "EraseFamily"
