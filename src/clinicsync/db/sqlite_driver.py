"""aiosqlite with one trip to its thread per statement.

aiosqlite runs every sqlite3 call on a thread of its own and hands the result back through the
event loop. SQLAlchemy's adapter makes a statement four such trips: open a cursor, execute,
fetch the rows, close the cursor. Each trip wakes the thread and then the loop again, and that
waking, not SQLite, was most of a booking's cost on SQLite (a booking is ten statements). Here
the four steps run as one function on the thread: the rows, the description, the row count and
the last row id come back together, and the sqlite3 cursor never leaves the thread.

Everything else (transactions, errors, closing, server-side cursors for streamed reads) stays
SQLAlchemy's aiosqlite dialect; only the cursor that buffers its rows is replaced. It relies on
aiosqlite's ``Connection._execute`` (queue a function for the thread), which the dialect itself
uses the neighbours of, so pyproject pins both libraries to the minor versions this was written
against, and tests/db/test_sqlite_driver.py fails if a statement takes more than one trip.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

# What a statement leaves behind: description, rowcount, lastrowid, rows (None without columns).
_Outcome = tuple[Any, int, int | None, list[Any] | None]


def _execute_on_thread(
    connection: aiosqlite.Connection, operation: str, parameters: Sequence[Any] | None
) -> _Outcome:
    cursor = connection._conn.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _executemany_on_thread(
    connection: aiosqlite.Connection, operation: str, parameters: Sequence[Sequence[Any]]
) -> _Outcome:
    cursor = connection._conn.cursor()
    try:
        cursor.executemany(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


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

    def _keep(self, outcome: _Outcome) -> None:
        self._outcome_description, self._outcome_rowcount, self._outcome_lastrowid, rows = outcome
        self._rows = collections.deque(rows) if rows is not None else collections.deque()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            self._keep(
                await self._connection._execute(_execute_on_thread, self._connection, operation, parameters)
            )

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            self._keep(
                await self._connection._execute(
                    _executemany_on_thread, self._connection, operation, seq_of_parameters
                )
            )

    def nextset(self) -> None:
        raise NotImplementedError("sqlite3 has no next result set")


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module handed to ``create_engine(module=...)`` for SQLite."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def one_trip_dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
