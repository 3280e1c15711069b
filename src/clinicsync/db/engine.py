"""Engine and session factories for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


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


def _configure_sqlite(engine: AsyncEngine) -> None:
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
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("sqlite_write", True) else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine whose errors never quote the statement's parameters (patients' details)."""
    kwargs.setdefault("hide_parameters", True)
    async_url = async_database_url(url)
    parsed = make_url(async_url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_database_file(Path(parsed.database))
        engine = create_async_engine(
            async_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(async_url, **kwargs)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession], *, write: bool = True
) -> AsyncIterator[AsyncSession]:
    """A session in one transaction: committed on success, rolled back on error.

    ``write=False`` lets SQLite readers run beside a writer (a deferred transaction).
    """
    async with sessionmaker() as session:
        if not write:
            await session.connection(execution_options={"sqlite_write": False})
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
