"""SQLAlchemy 2.0 async plumbing shared by the data-owning services.

PostgreSQL through asyncpg in production, SQLite through aiosqlite as the
embedded default. Repository functions take an AsyncSession argument; servicers
open sessions with `Database.session()` / `Database.transaction()`.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from weakref import WeakKeyDictionary

from pydantic import AfterValidator
from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator

from services.common.errors import Aborted

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


ASYNC_DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")


def check_database_url(url: str) -> str:
    """A settings check: a URL SQLAlchemy parses, with one of the async drivers we use.
    The message never repeats the URL (it may hold a password)."""
    try:
        driver = make_url(url).drivername
    except ArgumentError:
        driver = None
    if driver not in ASYNC_DRIVERS:
        raise ValueError("must be a database URL postgresql+asyncpg://<role>:<password>@<host>:"
                         "<port>/<db> or sqlite+aiosqlite:///<path>")
    return url


# The type of every service's `database_url` setting.
DatabaseUrl = Annotated[str, AfterValidator(check_database_url)]


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """hide_parameters: a statement's bound values (emails, password hashes, chat
    text) never appear in a DB error's message or in echoed SQL, so a logged
    traceback carries the statement but not the data."""
    if is_sqlite(url):
        engine = create_async_engine(url, echo=echo, hide_parameters=True,
                                     connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_async_engine(
        url, echo=echo, hide_parameters=True, pool_size=pool_size, max_overflow=pool_size,
        pool_pre_ping=True,
    )
    event.listen(engine.sync_engine, "handle_error", _drop_server_detail)
    return engine


def _drop_server_detail(context) -> None:
    """PostgreSQL's DETAIL quotes row values ("Key (email)=(...) already exists",
    "Failing row contains (...)") and asyncpg prints it in the driver exception
    that a logged traceback shows as the cause. Drop it, as hide_parameters drops
    the bound values; the SQLSTATE and message (constraint, column) stay."""
    import asyncpg

    exc, seen = context.original_exception, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, asyncpg.PostgresError):
            exc.detail = None
        exc = exc.__cause__ or exc.__context__


class Database:
    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, echo=echo, pool_size=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (rolled back on exit)."""
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on any error,
        so nothing half-written survives a rejected request."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


# -- inserts that tolerate a unique conflict ---------------------------------------


async def insert_ignore(session: AsyncSession, model: Any, values: dict[str, Any],
                        conflict_cols: list[str]) -> bool:
    """INSERT ... ON CONFLICT (cols) DO NOTHING; True if the row was inserted.

    Unlike catching IntegrityError, this never aborts the surrounding transaction,
    and on PostgreSQL a concurrent insert of the same key waits for the other
    transaction and then does nothing.
    """
    dialect = session.get_bind().dialect.name
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        ins(model).values(**values)
        .on_conflict_do_nothing(index_elements=conflict_cols)
        .returning(model.__table__.primary_key.columns.values()[0])
    )
    return (await session.execute(stmt)).first() is not None


# -- transactions with retries -----------------------------------------------------

# Races a retry resolves: unique and foreign-key violations (another request
# inserted the same key, or erased the parent row), serialization failures and
# deadlocks. Other integrity errors (NOT NULL, CHECK) are bugs and propagate.
_RETRYABLE_SQLSTATES = {"23505", "23503", "40001", "40P01"}
_RETRYABLE_SQLITE = ("UNIQUE constraint failed", "FOREIGN KEY constraint failed",
                     "database is locked")


def _retryable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code is not None:
        return code in _RETRYABLE_SQLSTATES
    return any(marker in str(exc.orig) for marker in _RETRYABLE_SQLITE)


# SQLite allows one writer at a time. Its busy handler makes a waiting writer
# sleep and poll (seconds of latency under contention), and pysqlite's deferred
# BEGIN lets two transactions read, then collide when both try to write. So on
# SQLite, writers of one process queue on an asyncio lock and take the write
# lock up front (BEGIN IMMEDIATE); other processes still wait via busy_timeout.
_sqlite_write_locks: WeakKeyDictionary[Any, asyncio.Lock] = WeakKeyDictionary()


def _sqlite_write_lock(db: Database) -> asyncio.Lock | None:
    if db.dialect != "sqlite":
        return None
    lock = _sqlite_write_locks.get(db)
    if lock is None:
        lock = _sqlite_write_locks[db] = asyncio.Lock()
    return lock


async def in_transaction(db: Database, work: Callable[[AsyncSession], Awaitable[T]], *,
                         attempts: int = 3) -> T:
    """Run `work` in one transaction; commit on success, roll back on any error.

    A unique-key race or a serialization failure means a concurrent request got
    there first: run `work` again from the start (it then sees the other
    request's result). Still failing: ABORTED.
    """
    lock = _sqlite_write_lock(db)
    for attempt in range(1, attempts + 1):
        try:
            async with lock or nullcontext(), db.transaction() as session:
                if lock is not None:
                    await session.execute(text("BEGIN IMMEDIATE"))
                return await work(session)
        except DBAPIError as exc:
            if not _retryable(exc):
                raise
            if attempt == attempts:
                raise Aborted("concurrent update; retry the request") from exc
    raise AssertionError("unreachable")


async def read(db: Database, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with db.session() as session:
        return await work(session)


# -- a database that cannot be reached right now -------------------------------------

# SQLSTATEs that mean the server is not there (or not taking work) right now:
# class 08 (connection exceptions), 57P01-57P03 (shut down by an operator or a
# crash, starting up), 53300 (too many connections).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03", "53300")
_UNAVAILABLE_SQLITE = ("unable to open database file", "database is locked", "disk I/O error")
_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
                             errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT,
                             errno.EPIPE, errno.EADDRNOTAVAIL})


def _causes(exc: BaseException, limit: int = 8):
    """exc, then what it wraps (a DBAPIError's driver error, __cause__, __context__)."""
    todo, seen = [exc], set()
    while todo and len(seen) < limit:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([getattr(e, "orig", None), e.__cause__, e.__context__])


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached right now (a refused or
    broken connection, a server shutting down or starting up, an exhausted pool, a
    SQLite file that cannot be opened or stays locked): the request may succeed if
    retried later, so the chassis answers UNAVAILABLE, never INTERNAL."""
    for e in _causes(exc):
        if isinstance(e, SATimeoutError | ConnectionError | TimeoutError | socket.gaierror):
            return True
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        sqlstate = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
            return True
        if isinstance(e, OSError) and e.errno in _CONNECT_ERRNOS:
            return True
        if isinstance(e, OperationalError) and any(m in str(e.orig) for m in _UNAVAILABLE_SQLITE):
            return True
    return False
