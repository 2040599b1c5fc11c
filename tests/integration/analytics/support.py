"""Helpers for the analytics integration tests: children, simulated sessions, calls."""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.common.v1 import play_pb2
from avatario_tools.simulation.simulator import (
    SimChild,
    SimulatedChild,
    draw_child,
    simulate_child,
    simulate_session,
    with_changes,
)
from services.analytics import convert
from services.analytics.domain.catalog import load_catalog
from services.analytics.domain.norms import load_norms
from services.analytics.domain.types import MoodCheckIn, Session, SkillDomain
from services.analytics.models import metadata
from tests.helpers import assert_rpc_error

CATALOG = load_catalog()
NORMS = load_norms()
# Simulations run for 10 weeks from a Monday; the analytics clock is then set to their end.
SIM_START = datetime(2026, 8, 3, tzinfo=UTC)
SIM_WEEKS = 10
SIM_END = SIM_START + timedelta(weeks=SIM_WEEKS)


def new_id() -> str:
    return str(uuid.uuid4())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Kid:
    """A child as analytics sees it (the ChildRef) and the simulator's model of it."""

    ref: pb.ChildRef
    sim: SimChild


def new_kid(seed: int = 0, *, family_id: str | None = None, child_id: str | None = None,
            age_years: tuple[int, int] = (8, 8), at: datetime = SIM_START, **draw: Any) -> Kid:
    sim = draw_child(random.Random(seed), at, age_years=age_years, **draw)
    sim = with_changes(sim, child_id=child_id or new_id())
    ref = pb.ChildRef(family_id=family_id or new_id(), child_id=sim.child_id,
                      birth_year=sim.birth_year, birth_month=sim.birth_month)
    return Kid(ref, sim)


def session_of(kid: Kid, game_id: str, started_at: datetime, *, level: float = 0.0,
               seed: int = 1) -> play_pb2.GameSession:
    game = CATALOG.latest(game_id)
    assert game is not None
    s = simulate_session(game, kid.sim, level, started_at, NORMS, random.Random(seed))
    return convert.session_pb(s)


def simulate(kid: Kid, seed: int = 0, weeks: int = SIM_WEEKS) -> SimulatedChild:
    return simulate_child(kid.sim, CATALOG, NORMS, SIM_START, weeks, random.Random(seed))


def session_request(kid: Kid, session: play_pb2.GameSession | Session) -> pb.SubmitGameSessionRequest:
    if isinstance(session, Session):
        session = convert.session_pb(session)
    return pb.SubmitGameSessionRequest(child=kid.ref, session=session)


def checkin_request(kid: Kid, c: MoodCheckIn | None = None, **kw: Any) -> pb.SubmitMoodCheckInRequest:
    if c is not None:
        msg = convert.checkin_pb(c)
    else:
        fields = dict(checkin_id=new_id(), mood=play_pb2.MOOD_HAPPY, intensity=3)
        fields.update(kw)
        recorded = fields.pop("recorded_at", SIM_START + timedelta(days=1))
        msg = play_pb2.MoodCheckIn(**fields)
        msg.recorded_at.FromDatetime(recorded)
    return pb.SubmitMoodCheckInRequest(child=kid.ref, checkin=msg)


async def submit_all(stub, kid: Kid, sim: SimulatedChild, concurrency: int = 8) -> None:
    """Submit a simulated child's sessions and check-ins, a few at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def one(call):
        async with limit:
            await call

    await asyncio.gather(
        *(one(stub.SubmitGameSession(session_request(kid, s))) for s in sim.sessions),
        *(one(stub.SubmitMoodCheckIn(checkin_request(kid, c))) for c in sim.checkins))


async def fails(call, code: grpc.StatusCode, field: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        await call
    assert_rpc_error(info.value, code, field)
    return info.value


async def rows_mentioning(db, needles: set[str]) -> dict[str, set[str]]:
    """Every table whose rows mention any needle (any column, as text)."""
    found: dict[str, set[str]] = {}
    async with db.session() as session:
        for table in metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                for value in row:
                    text = str(value)
                    hits = {n for n in needles if n in text}
                    if hits:
                        found.setdefault(table.name, set()).update(hits)
    return found


def domain_enum(d: SkillDomain) -> int:
    return convert.domain_pb(d)
