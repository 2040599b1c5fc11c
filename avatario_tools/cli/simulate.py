"""Play simulated weeks for a real child through the public API, as its device.

The sessions come from the simulator (avatario_tools.simulation.simulator:
realistic trial-level sessions for a child of the given age, with an optional
persistent weakness in one domain and an optional low-mood profile), converted
to the public protobuf by analytics' own converter and submitted in time order
with the child's device credential.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from avatario.common.v1 import play_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import ApiError
from avatario_tools.simulation import simulator
from services.analytics.convert import checkin_pb, session_pb
from services.analytics.domain.catalog import load_catalog
from services.analytics.domain.norms import load_norms
from services.analytics.domain.types import SkillDomain

PLAYS_PER_DAY = 1.8  # the simulator plays 1-3 sessions on a play day (mean 1.8)
DOMAINS = ("WORKING_MEMORY", "ATTENTION", "PROBLEM_SOLVING", "NUMBER_SENSE",
           "EMOTION_RECOGNITION", "SOCIAL_INTERACTION")


@dataclass
class Plan:
    sessions: list[play_pb2.GameSession]
    checkins: list[play_pb2.MoodCheckIn]

    def events(self) -> list[tuple[datetime, str, Any]]:
        out = [(s.started_at.ToDatetime(UTC), "session", s) for s in self.sessions]
        out += [(c.recorded_at.ToDatetime(UTC), "checkin", c) for c in self.checkins]
        return sorted(out, key=lambda e: e[0])


def plan(child_id: str, birth_year: int, birth_month: int, *, sessions: int, weeks: int,
         weak_domain: str | None = None, low_mood: bool = False, seed: int | None = None,
         now: datetime | None = None) -> Plan:
    """About `sessions` sessions (and mood check-ins on some days) over the last `weeks`."""
    if weeks < 1 or sessions < 1:
        raise ValueError("sessions and weeks must be at least 1")
    # The child's id is part of the seed: the same seed gives the same play for one child,
    # and other session ids for another (session ids are global: a second demo on the
    # same databases must not resubmit the first one's ids).
    rng = random.Random(None if seed is None else f"{seed}:{child_id}")
    now = now or datetime.now(UTC)
    # Start a day early so the last simulated afternoon is already in the past.
    start = now - timedelta(days=weeks * 7 + 1)
    weakness = SkillDomain(weak_domain.upper()) if weak_domain else None
    drawn = simulator.draw_child(rng, start, weakness=weakness,
                                 mood_profile="low" if low_mood else "typical")
    preference = dict(drawn.preference)
    if weakness is not None:  # make sure the weak domain is played enough to be seen
        preference[weakness] = max(preference.values())
    p_play = min(1.0, max(0.05, sessions / (weeks * 7 * PLAYS_PER_DAY)))
    for _ in range(4):  # raise the play rate until about `sessions` sessions happen
        child = simulator.with_changes(drawn, child_id=child_id, birth_year=birth_year,
                                       birth_month=birth_month, play_day_prob=p_play,
                                       preference=preference)
        sim = simulator.simulate_child(child, load_catalog(), load_norms(), start, weeks, rng)
        played = [s for s in sim.sessions if s.ended_at is not None and s.ended_at <= now]
        if len(played) >= sessions or p_play >= 1.0:
            break
        p_play = min(1.0, p_play * sessions / max(1, len(played)) * 1.1)
    if len(played) > sessions:
        keep = sorted(rng.sample(range(len(played)), sessions))
        played = [played[i] for i in keep]
    checkins = [c for c in sim.checkins if c.recorded_at <= now]
    return Plan([session_pb(s) for s in played], [checkin_pb(c) for c in checkins])


@dataclass
class PlayResult:
    sessions: int = 0
    checkins: int = 0
    duplicates: int = 0
    xp: int = 0
    pending_xp: int = 0


MAX_ATTEMPTS = 6  # per submission, when the gateway says RESOURCE_EXHAUSTED with a retry delay


async def _submit(api, child_id: str, fn: Callable, request):
    """One submission as the device, waiting out the gateway's rate limit as its RetryInfo says
    (a replayed submission is idempotent: same session or check-in id)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await api.as_device(child_id, fn, request)
        except ApiError as err:
            if (err.code != grpc.StatusCode.RESOURCE_EXHAUSTED or not err.retry_after
                    or attempt == MAX_ATTEMPTS):
                raise
            await asyncio.sleep(err.retry_after)
    raise AssertionError("unreachable")


async def play(api, child_id: str, the_plan: Plan,
               progress: Callable[[str], None] | None = None) -> PlayResult:
    """Submit the plan in time order as the child's device."""
    result = PlayResult()
    for _, kind, item in the_plan.events():
        if kind == "session":
            resp = await _submit(api, child_id, api.play.SubmitGameSession,
                                 gw.SubmitGameSessionRequest(session=item))
            result.sessions += 1
            result.xp += resp.result.xp_awarded
            result.pending_xp += int(resp.result.xp_pending)
        else:
            resp = await _submit(api, child_id, api.play.SubmitMoodCheckIn,
                                 gw.SubmitMoodCheckInRequest(checkin=item))
            result.checkins += 1
        result.duplicates += int(resp.duplicate)
        if progress:
            progress(kind)
    return result
