"""Engine and session factories for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from clinicsync.db.sqlite_driver import one_trip_dbapi

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_LOCK_KEY = "sqlite_write_lock"
DEFERRED_KEY = "sqlite_deferred_writes"

# One queue per SQLite engine for the database's single write lock. SQLite's own busy handler
# wakes waiting writers by polling, so under load some wait far longer than others; queueing
# them here first serves writers in arrival order (p99 close to p50) and leaves SQLite's lock
# free of contention inside one process.
_write_queues: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def async_database_url(url: str) -> str:
    """Accept plain sqlite:/// and postgresql:// URLs and pick the async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(
            f"CLINICSYNC_DATABASE_URL: unsupported database {backend!r}; use sqlite or postgresql"
        )
    return parsed.render_as_string(hide_password=False)


def _private_database_file(path: Path) -> None:
    """The database file exists with mode 0600 before SQLite opens it: SQLite gives its -wal and
    -shm files the database file's mode, so patients' data is readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(0o600)


class WalCheckpointer:
    """Copies SQLite's write-ahead log back into the database file from a connection of its own.

    Left to itself, SQLite checkpoints inside the commit that grows the log past 1,000 pages:
    that one commit pays for copying and syncing the pages while the write lock, and every
    writer queued for it, waits (the booking at p99). An engine made with
    ``background_checkpoints=True`` turns that off, and this checkpoints every ``interval``
    seconds instead, PASSIVE: it takes no lock a writer waits for, so commits never queue
    behind it.
    """

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        # One connection for every pass, used by one pass at a time (from a worker thread).
        # The lock keeps ``stop`` from closing it under a pass still running in its thread:
        # cancelling the task does not stop the thread, and sqlite3 closing a connection
        # another thread is executing on crashes the whole process.
        self._connection: sqlite3.Connection | None = None
        self._connection_lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # No last pass: the last connection to close checkpoints the log itself.
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._close)  # waits for a pass still under way

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self._checkpoint)
            except sqlite3.Error:
                continue  # the next pass tries again; a busy log only grows a little meanwhile

    def _checkpoint(self) -> None:
        with self._connection_lock:
            if self._stopped:
                return
            if self._connection is None:
                self._connection = sqlite3.connect(self.path, check_same_thread=False)
            # PASSIVE never waits on the busy handler: it copies what no reader still needs.
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _close(self) -> None:
        with self._connection_lock:
            self._stopped = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _database_file(url: URL) -> Path | None:
    """A SQLite URL's database file (None for an in-memory database)."""
    if not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def sqlite_path(engine: AsyncEngine) -> Path | None:
    """The database file of a SQLite engine (None for PostgreSQL or an in-memory database)."""
    return _database_file(engine.url) if is_sqlite(engine) else None


def _configure_sqlite(engine: AsyncEngine, *, background_checkpoints: bool = False) -> None:
    """WAL, foreign keys, a busy timeout and explicit BEGINs.

    pysqlite's own transaction handling issues BEGIN lazily and can't be told to take the
    write lock up front. We take over: a write transaction starts with BEGIN IMMEDIATE, so
    the overlap check and the insert in the booking trigger run as one serialized step and
    a second writer waits (busy_timeout) instead of failing on a stale snapshot.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if background_checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # see WalCheckpointer
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("sqlite_write", True) else "DEFERRED"
        # Sent with the transaction's first statement (see sqlite_driver), not a trip of its own.
        connection.connection.dbapi_connection.begin_with_next_statement(f"BEGIN {mode}")


def create_engine(url: str, *, background_checkpoints: bool = False, **kwargs: Any) -> AsyncEngine:
    """An engine whose errors never quote the statement's parameters (patients' details).

    ``background_checkpoints``: on SQLite, commits never checkpoint the log; the caller runs a
    ``WalCheckpointer`` for as long as the engine lives (the server does)."""
    kwargs.setdefault("hide_parameters", True)
    async_url = async_database_url(url)
    parsed = make_url(async_url)
    if parsed.get_backend_name() == "sqlite":
        database_file = _database_file(parsed)
        if database_file is not None:
            _private_database_file(database_file)
        engine = create_async_engine(
            async_url,
            module=one_trip_dbapi(),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _configure_sqlite(engine, background_checkpoints=background_checkpoints)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_async_engine(async_url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_after_idle(engine)
    return engine


# A pooled PostgreSQL connection idle this long is tested before use. One back in the pool sooner
# was just working: testing it too would cost every request a transaction of its own (asyncpg's
# ping is BEGIN, a query, ROLLBACK) for a window a server restart rarely falls in.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "clinicsync.checked_in_at"  # when the connection went back to the pool


def _ping_after_idle(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling, skipped for connections used within the last second."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool drops this connection and checks out another (a fresh one if need be).
            raise DisconnectionError("the pooled connection no longer answers") from exc


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _write_queue(session: AsyncSession) -> asyncio.Lock | None:
    bind = session.bind
    if bind is None or bind.dialect.name != "sqlite":
        return None
    sync_engine = bind.sync_engine if isinstance(bind, AsyncEngine) else bind
    queue = _write_queues.get(sync_engine)
    if queue is None:
        queue = _write_queues[sync_engine] = asyncio.Lock()
    return queue


async def _take_write_lock(session: AsyncSession) -> None:
    queue = _write_queue(session)
    if queue is None or WRITE_LOCK_KEY in session.info:
        return
    try:
        await asyncio.wait_for(queue.acquire(), timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    except TimeoutError:
        raise TimeoutError("the database stayed locked by other writers for 30 s") from None
    session.info[WRITE_LOCK_KEY] = queue


def _release_write_lock(session: AsyncSession) -> None:
    queue = session.info.pop(WRITE_LOCK_KEY, None)
    if queue is not None:
        queue.release()


async def begin_writes(session: AsyncSession) -> None:
    """Marks the end of a request's reads: from here on it writes.

    On SQLite, a session opened with ``deferred_writes`` has read in a deferred transaction
    without the write lock; this ends that read transaction, waits its turn for the write lock
    and begins an immediate one, so the lock is held for the writes and the commit only.
    Checks made while reading stay guarded by the database: the overlap trigger runs inside
    the write transaction. Elsewhere (PostgreSQL, ordinary sessions) this does nothing.
    """
    if not session.info.get(DEFERRED_KEY):
        return
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("begin_writes must come before the first change to the session")
    session.info[DEFERRED_KEY] = False
    if session.in_transaction():
        await session.commit()
    await _take_write_lock(session)
    await session.connection(execution_options={"sqlite_write": True})


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession], *, write: bool = True, deferred_writes: bool = False
) -> AsyncIterator[AsyncSession]:
    """A session in one transaction: committed on success, rolled back on error.

    ``write=False`` lets SQLite readers run beside a writer (a deferred transaction).
    ``deferred_writes=True`` reads like that until the code calls ``begin_writes``.
    """
    async with sessionmaker() as session:
        sqlite = _write_queue(session) is not None
        try:
            if sqlite and (not write or deferred_writes):
                session.info[DEFERRED_KEY] = write
                await session.connection(execution_options={"sqlite_write": False})
            elif sqlite:
                await _take_write_lock(session)
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            _release_write_lock(session)
