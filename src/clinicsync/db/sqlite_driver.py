"""aiosqlite with one trip to its thread per statement.

aiosqlite runs every sqlite3 call on a thread of its own and hands the result back through the
event loop. SQLAlchemy's adapter makes a statement four such trips: open a cursor, execute,
fetch the rows, close the cursor. Each trip wakes the thread and then the loop, and that waking,
not SQLite, was most of what a SQLite booking cost beyond the work it shares with any request.
Here the four steps run as one function on the thread; the rows, description, row count, last
row id and whether a transaction is open come back together, and the sqlite3 cursor never leaves
the thread. A transaction's BEGIN travels with its first statement, and ending a transaction
that never ran a statement, or one already ended (the pool ends every connection it takes
back), costs no trip at all.

Everything else (errors, closing, the server-side cursor of streamed reads) stays SQLAlchemy's
aiosqlite dialect. This relies on aiosqlite's ``Connection._execute`` (queue a function for the
thread) and on the dialect's adapter classes, so pyproject pins both libraries to the minor
versions it was written against, and tests/db/test_sqlite_driver.py fails if a statement takes
more than one trip or a transaction's BEGIN goes missing.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection, AsyncIODBAPIConnection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    AsyncAdapt_aiosqlite_ss_cursor,
)
from sqlalchemy.util import EMPTY_DICT

# What a statement leaves behind: description, rowcount, lastrowid, rows (None without columns),
# and whether a transaction is open after it.
_Outcome = tuple[Any, int, int | None, list[Any] | None, bool]


def _run_on_thread(
    connection: aiosqlite.Connection,
    begin: str | None,
    operation: str,
    parameters: Any,
    many: bool,
) -> _Outcome:
    sqlite = connection._conn
    cursor = sqlite.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows, sqlite.in_transaction
    finally:
        cursor.close()


def _begin_on_thread(connection: aiosqlite.Connection, begin: str) -> None:
    # The sqlite3 cursor is closed here: one freed on the event loop's thread would finalize its
    # statement there while this thread may be running another on the same connection.
    connection._conn.execute(begin).close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement runs in one call on aiosqlite's thread."""

    __slots__ = ("_outcome_description", "_outcome_lastrowid", "_outcome_rowcount")

    # No sqlite3 cursor is held between calls, so there is nothing to close or soft-close.
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._outcome_description: Any = None
        self._outcome_rowcount = -1
        self._outcome_lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._outcome_description

    @property
    def rowcount(self) -> int:
        return self._outcome_rowcount

    @property
    def lastrowid(self) -> int:
        return self._outcome_lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass  # rows come back all at once

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        async with connection._execute_mutex:
            begin = connection.take_pending_begin()
            connection.in_transaction = True  # until the outcome says otherwise (it may fail)
            outcome = await self._connection._execute(
                _run_on_thread, self._connection, begin, operation, parameters, many
            )
        self._outcome_description, self._outcome_rowcount, self._outcome_lastrowid, rows, open_ = outcome
        self._rows = collections.deque(rows) if rows is not None else collections.deque()
        connection.in_transaction = open_

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run(operation, seq_of_parameters, many=True)

    def nextset(self) -> None:
        raise NotImplementedError("sqlite3 has no next result set")


class StreamingCursor(AsyncAdapt_aiosqlite_ss_cursor):
    """SQLAlchemy's server-side cursor (streamed reads), sending a waiting BEGIN first."""

    __slots__ = ()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        connection: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        begin = connection.take_pending_begin()
        connection.in_transaction = True  # not followed here: commit and rollback make their trip
        if begin is not None:
            await self._connection._execute(_begin_on_thread, self._connection, begin)
        return await super()._execute_async(operation, parameters)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """Knows whether its sqlite3 connection has a transaction open, so that ending one that never
    began (the pool ends every connection it takes back) costs no trip."""

    __slots__ = ("_begin", "in_transaction")
    _cursor_cls = OneTripCursor
    _ss_cursor_cls = StreamingCursor

    def __init__(self, dbapi: Any, connection: AsyncIODBAPIConnection) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None
        # sqlite3 opens a transaction only on an explicit BEGIN here (isolation_level None), and
        # every statement reports whether one is open after it; True whenever that is unknown.
        self.in_transaction = True

    def begin_with_next_statement(self, begin: str) -> None:
        """``BEGIN ...`` is sent with the transaction's first statement, in the same trip."""
        self._begin = begin

    def take_pending_begin(self) -> str | None:
        begin, self._begin = self._begin, None
        return begin

    def _has_work_to_end(self) -> bool:
        # A BEGIN still waiting means no statement ran since: there is nothing to end.
        return self.take_pending_begin() is None and self.in_transaction

    def commit(self) -> None:
        if self._has_work_to_end():
            super().commit()
            self.in_transaction = False

    def rollback(self) -> None:
        if self._has_work_to_end():
            super().rollback()
            self.in_transaction = False


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module handed to ``create_engine(module=...)`` for SQLite."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def one_trip_dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
