"""A family history of a chosen size, written straight into the profile and analytics
databases (the way years of use would leave it), for the export test and
bench/bench_export.py.

Half of the target is play (a Glowing Stones session with 12 trials, its metrics,
an XP award and a mood check-in per day, from `days` ago up to yesterday: 5 years
of daily play is about 5 MiB of export), half is chat (turns of a 1,000-character
question and a 3,000-character answer, in conversations of at most 300 turns).
Every row is valid for the services that own it, so the export reads it like
anything the API wrote.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, update

from services.analytics import models as an
from services.common.db import Database
from services.profile import models as pm

# Export bytes per day of play and per chat turn, measured once (bench_export
# prints the real sizes); only used to size the generated history.
PLAY_DAY_BYTES = 3_300
TURN_BYTES = 4_150
TURNS_PER_CONVERSATION = 300
FIVE_YEARS_DAYS = 5 * 365 + 1
TRIALS = 12
QUESTION_CHARS = 1_000
ANSWER_CHARS = 3_000
_BATCH = 500


@dataclass(frozen=True)
class Generated:
    days: int
    sessions: int
    trials: int
    checkins: int
    conversations: int
    messages: int


def _id() -> str:
    return str(uuid.uuid4())


def _text(rng: random.Random, n: int) -> str:
    words = ("sleep", "bedtime", "story", "tired", "school", "friends", "calm", "routine",
             "breakfast", "homework", "play", "outside", "screen", "time", "worry", "hug")
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


async def _insert(db: Database, model, rows: list[dict]) -> None:
    for i in range(0, len(rows), _BATCH):
        async with db.transaction() as s:
            await s.execute(insert(model), rows[i:i + _BATCH])


def plan(target_bytes: int) -> tuple[int, int]:
    """(days of play, chat turns) for about `target_bytes` of export."""
    days = min(FIVE_YEARS_DAYS, max(1, target_bytes // 2 // PLAY_DAY_BYTES))
    turns = max(1, (target_bytes - days * PLAY_DAY_BYTES) // TURN_BYTES)
    return days, turns


async def generate(
    profile: Database, analytics: Database, *, family_id: str, parent_id: str, child_id: str,
    birth_year: int, birth_month: int, days: int, turns: int, now: datetime,
    seed: int = 17,
) -> Generated:
    """Write `days` of daily play and `turns` chat turns for an existing child (created
    through the API, with its consents)."""
    rng = random.Random(seed)
    start = now - timedelta(days=days)
    sessions, trials, metrics, checkins, awards, play_days = [], [], [], [], [], []
    for d in range(days):
        begin = start + timedelta(days=d, hours=16)
        sid = _id()
        age = (begin.year - birth_year) * 12 + begin.month - birth_month
        sessions.append(dict(
            session_id=sid, child_id=child_id, family_id=family_id, game_id="corsi_blocks",
            game_version=1, domain="WORKING_MEMORY", started_at=begin,
            ended_at=begin + timedelta(minutes=2), received_at=begin + timedelta(minutes=2),
            age_months=age, content_hash=f"{d:064x}", trial_count=TRIALS, valid_trials=TRIALS,
            excluded_trials=0, xp_awarded=20, norms_version="generated"))
        for t in range(TRIALS):
            span = 2 + t // 3
            seq = [rng.randrange(9) for _ in range(span)]
            ok = rng.random() < 0.7
            at = begin + timedelta(seconds=8 * t)
            trials.append(dict(
                session_id=sid, trial_index=t, child_id=child_id, family_id=family_id,
                stimulus={"sequence": seq, "span_length": span},
                response={"sequence": seq if ok else seq[::-1]}, correct=ok, responded=True,
                reaction_time_ms=rng.randrange(600, 3000), presented_at=at,
                responded_at=at + timedelta(seconds=3)))
        for name, unit, value in (("accuracy", "proportion", rng.random()),
                                  ("corsi_span", "items", float(rng.randrange(2, 7)))):
            metrics.append(dict(
                session_id=sid, name=name, child_id=child_id, family_id=family_id,
                game_id="corsi_blocks", started_at=begin, value=value, unit=unit, normed=True,
                z_score=rng.gauss(0, 1), percentile=rng.uniform(5, 95), norm_source="expert"))
        checkins.append(dict(
            checkin_id=_id(), child_id=child_id, family_id=family_id,
            mood=rng.choice(("HAPPY", "CALM", "OKAY", "TIRED")), intensity=rng.randrange(1, 6),
            recorded_at=begin - timedelta(minutes=5), received_at=begin,
            content_hash=f"{d:064x}"))
        awards.append(dict(id=_id(), family_id=family_id, child_id=child_id,
                           source_id=f"session:{sid}", amount=20, reason="session",
                           awarded_at=begin + timedelta(minutes=3)))
        play_days.append(dict(child_id=child_id, family_id=family_id, day=begin.date(),
                              seconds=120.0, sessions=1))
    async with analytics.transaction() as s:
        await s.execute(insert(an.Child), [dict(
            child_id=child_id, family_id=family_id, birth_year=birth_year,
            birth_month=birth_month, created_at=start, total_sessions=days,
            total_play_seconds=days * 120.0, first_played_at=start,
            last_played_at=start + timedelta(days=days - 1, hours=16),
            longest_streak_days=days, current_run_days=days)])
    await _insert(analytics, an.GameSession, sessions)
    await _insert(analytics, an.TrialRow, trials)
    await _insert(analytics, an.SessionMetric, metrics)
    await _insert(analytics, an.MoodCheckInRow, checkins)
    await _insert(analytics, an.PlayDay, play_days)
    await _insert(profile, pm.XpAward, awards)
    async with profile.transaction() as s:
        await s.execute(update(pm.Avatar).where(pm.Avatar.child_id == child_id)
                        .values(xp=pm.Avatar.xp + 20 * days))

    conversations, messages = [], []
    left = turns
    while left > 0:
        n = min(TURNS_PER_CONVERSATION, left)
        cid = _id()
        created = start + timedelta(days=len(conversations))
        conversations.append(dict(
            id=cid, family_id=family_id, child_id=child_id, title="Evenings", turn_count=n,
            created_at=created, updated_at=created + timedelta(minutes=n),
            owner_parent_id=parent_id, shared=False))
        for t in range(n):
            tid = _id()
            at = created + timedelta(minutes=t)
            messages.append(dict(id=_id(), family_id=family_id, conversation_id=cid,
                                 turn_id=tid, seq=2 * t, role=1,
                                 text=_text(rng, QUESTION_CHARS), finish_reason=0,
                                 complete=True, created_at=at))
            messages.append(dict(id=_id(), family_id=family_id, conversation_id=cid,
                                 turn_id=tid, seq=2 * t + 1, role=2,
                                 text=_text(rng, ANSWER_CHARS), finish_reason=1,
                                 complete=True, created_at=at))
        left -= n
    await _insert(profile, pm.Conversation, conversations)
    await _insert(profile, pm.ChatMessage, messages)
    return Generated(days, len(sessions), len(trials), len(checkins), len(conversations),
                     len(messages))
