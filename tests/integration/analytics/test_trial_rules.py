"""The server derives a trial's `correct` from the game's stated rule (issue 17):
a session whose flags disagree with the rule is accepted, scored and stored as
the rule says; ListGames states each rule."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.common.v1 import play_pb2
from services.analytics.models import TrialRow
from tests.integration.analytics.support import SIM_START, new_kid, session_of, session_request


def _flipped(session: play_pb2.GameSession) -> play_pb2.GameSession:
    copy = play_pb2.GameSession()
    copy.CopyFrom(session)
    copy.session_id = "0" * 8 + copy.session_id[8:]
    for t in copy.trials:
        t.correct = not t.correct
    return copy


async def test_correct_is_derived_from_stimulus_and_response(analytics):
    kid = new_kid(21)
    right = session_of(kid, "go_nogo", SIM_START + timedelta(hours=15))
    wrong = _flipped(right)  # every flag contradicts the rule
    ok = (await analytics.stub.SubmitGameSession(session_request(kid, right))).result
    derived = (await analytics.stub.SubmitGameSession(session_request(kid, wrong))).result
    metrics = {m.name: m.value for m in ok.metrics}
    assert metrics and {m.name: m.value for m in derived.metrics} == metrics
    async with analytics.db.session() as s:
        stored = (await s.execute(select(TrialRow.trial_index, TrialRow.correct)
                                  .where(TrialRow.session_id == wrong.session_id)
                                  .order_by(TrialRow.trial_index))).all()
    assert [c for _, c in stored] == [t.correct for t in right.trials]


async def test_a_game_without_a_rule_keeps_the_value_sent(analytics):
    kid = new_kid(22)
    s = session_of(kid, "friends_turns", SIM_START + timedelta(hours=15))
    for t in s.trials:
        t.correct = True
    await analytics.stub.SubmitGameSession(session_request(kid, s))
    async with analytics.db.session() as session:
        stored = (await session.execute(select(TrialRow.correct)
                                        .where(TrialRow.session_id == s.session_id))).scalars().all()
    assert stored and all(stored)


async def test_list_games_states_each_rule(analytics):
    games = (await analytics.stub.ListGames(pb.ListGamesRequest(page_size=50))).games
    rules = {g.game_id: g.correct_rule for g in games}
    assert rules["corsi_blocks"].startswith("correct = (response.sequence == stimulus.sequence)")
    assert "missing response.pressed counts as false" in rules["go_nogo"]
    assert '"left" when stimulus.left > stimulus.right' in rules["number_compare"]
    assert rules["tower_planner"].startswith("correct = response.solved")
    assert rules["friends_turns"] == ""
