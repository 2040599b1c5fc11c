from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from services.common.db import in_transaction
from services.common.errors import Aborted, NotFound


class FakeDb:
    """Stands in for services.common.db.Database: counts transactions opened."""

    dialect = "fake"

    def __init__(self) -> None:
        self.opened = 0

    @asynccontextmanager
    async def transaction(self):
        self.opened += 1
        yield f"session-{self.opened}"


class SqliteError(Exception):
    pass


def integrity(message: str) -> IntegrityError:
    return IntegrityError("INSERT ...", {}, SqliteError(message))


async def test_a_unique_race_is_retried_in_a_new_transaction():
    db, seen = FakeDb(), []

    async def work(session):
        seen.append(session)
        if len(seen) == 1:
            raise integrity("UNIQUE constraint failed: xp_awards.child_id")
        return "done"

    assert await in_transaction(db, work) == "done"
    assert seen == ["session-1", "session-2"]


async def test_a_lasting_conflict_becomes_aborted():
    db = FakeDb()

    async def work(session):
        raise OperationalError("UPDATE", {}, SqliteError("database is locked"))

    with pytest.raises(Aborted):
        await in_transaction(db, work, attempts=3)
    assert db.opened == 3


async def test_bugs_and_domain_errors_are_not_retried():
    db = FakeDb()

    async def bug(session):
        raise integrity("NOT NULL constraint failed: children.nickname")

    with pytest.raises(IntegrityError):
        await in_transaction(db, bug)

    async def missing(session):
        raise NotFound("child")

    with pytest.raises(NotFound):
        await in_transaction(db, missing)
    assert db.opened == 2
