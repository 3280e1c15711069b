"""Run Alembic migrations on an async engine (the app migrates itself on start).

However many processes start at once (``clinicsync serve --workers N``, several machines, a
demo and a server), the migrations run exactly once: the upgrade holds a lock that only one
process can have (a PostgreSQL advisory lock; on SQLite an exclusive lock on a file beside the
database), and whoever comes second finds the database already at head and does nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed 64-bit number, the same in every process: the key of the advisory lock.
ADVISORY_LOCK_KEY = 0x636C696E6963  # "clinic"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _at_head(connection: Connection) -> bool:
    current = set(MigrationContext.configure(connection).get_current_heads())
    return current == set(ScriptDirectory.from_config(alembic_config()).get_heads())


def _upgrade(connection: Connection, revision: str) -> bool:
    """Upgrades unless already there; returns whether anything ran."""
    if connection.dialect.name == "postgresql":
        # Held to the end of this transaction, which is the whole upgrade.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    if revision == "head" and _at_head(connection):
        return False
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    return True


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_lock_path(engine: AsyncEngine) -> Path | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database).with_name(Path(database).name + ".migrate-lock")


async def upgrade(engine: AsyncEngine, revision: str = "head") -> bool:
    """Brings the database to ``revision``; True if this call applied migrations."""
    lock_path = _sqlite_lock_path(engine)
    if lock_path is None:
        async with engine.begin() as connection:
            return await connection.run_sync(_upgrade, revision)
    lock = _file_lock(lock_path)
    await asyncio.to_thread(lock.__enter__)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(_upgrade, revision)
    finally:
        lock.__exit__(None, None, None)
