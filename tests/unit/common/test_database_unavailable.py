"""Which database failures are an outage (UNAVAILABLE, retry later) and which are
bugs (INTERNAL): the chassis classification, on exceptions the drivers really
raise where that is cheap, and on their documented shapes otherwise."""

from __future__ import annotations

import errno

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.common import errors
from services.common.db import Database, database_unavailable
from services.common.interceptors import _database_unavailable_status, _map_code
from services.common.status import retry_delay_s


class _DriverError(Exception):
    """A driver exception carrying a SQLSTATE, as asyncpg's and psycopg's do."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _wrapped(cls, orig: BaseException, **kw) -> DBAPIError:
    err = cls("SELECT 1", {}, orig, **kw)
    err.__cause__ = orig
    return err


async def _sqlite_unopenable(tmp_path) -> BaseException:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    try:
        async with db.session() as s:
            await s.execute(text("SELECT 1"))
    except BaseException as exc:  # noqa: BLE001 - the exception is the result
        return exc
    finally:
        await db.dispose()
    raise AssertionError("opening a file in a missing folder worked")


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 5432)"),
    ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    TimeoutError(),  # asyncpg's connect timeout
    OSError(errno.EHOSTUNREACH, "No route to host"),
    PoolTimeout("QueuePool limit of size 10 overflow 10 reached"),
    _wrapped(DBAPIError, Exception("connection was closed in the middle of operation"),
             connection_invalidated=True),
    _wrapped(InterfaceError, _DriverError("connection does not exist", "08003")),
    _wrapped(OperationalError, _DriverError("terminating connection: admin command", "57P01")),
    _wrapped(OperationalError, _DriverError("the database system is starting up", "57P03")),
    _wrapped(OperationalError, _DriverError("too many clients already", "53300")),
    _DriverError("the database system is shutting down", "57P03"),  # raw, from connect
], ids=repr)
def test_outages_are_unavailable(exc):
    assert database_unavailable(exc)
    assert _map_code(exc) is grpc.StatusCode.UNAVAILABLE


def test_an_outage_wrapped_in_another_error_is_found_through_the_cause():
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("while loading the child") from inner
    except RuntimeError as outer:
        assert database_unavailable(outer)


async def test_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path):
    exc = await _sqlite_unopenable(tmp_path)
    assert isinstance(exc, OperationalError) and "unable to open" in str(exc)
    assert _map_code(exc) is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("exc", [
    ValueError("a bug"),
    KeyError("x"),
    FileNotFoundError(errno.ENOENT, "no such file"),  # an OSError, but not a connection
    _wrapped(IntegrityError, _DriverError("null value in column", "23502")),
    _wrapped(IntegrityError, _DriverError("duplicate key", "23505")),
    _wrapped(DBAPIError, _DriverError("syntax error", "42601")),
    _wrapped(OperationalError, Exception("no such table: parents")),
], ids=repr)
def test_bugs_stay_internal(exc):
    assert not database_unavailable(exc)
    assert _map_code(exc) is grpc.StatusCode.INTERNAL


def test_domain_errors_keep_their_code_even_when_caused_by_an_outage():
    exc = errors.Aborted("concurrent update")
    exc.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert _map_code(exc) is grpc.StatusCode.ABORTED


def test_the_outage_status_is_unavailable_with_retry_info():
    status = _database_unavailable_status()
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert retry_delay_s(status) and retry_delay_s(status) > 0
