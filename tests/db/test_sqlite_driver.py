"""On SQLite a statement is one trip to aiosqlite's thread, and it answers exactly what the stock
cursor answers: rows, description, row counts, the last row id, SQLAlchemy's own errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clinicsync.db.engine import create_engine

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("body", String, nullable=False, unique=True),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'notes.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def _sqlite_transaction_open(connection: AsyncConnection) -> bool:
    """What sqlite3 itself says, not what the adapter believes."""
    raw = await connection.get_raw_connection()
    assert raw.driver_connection is not None
    return bool(raw.driver_connection._conn.in_transaction)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every function aiosqlite queues for its thread, by name."""
    queued: list[str] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        queued.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    yield queued


async def test_a_query_with_rows_is_one_trip_to_the_thread(engine: AsyncEngine, trips: list[str]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(notes), [{"body": "first"}, {"body": "second"}])
        trips.clear()
        rows = (await connection.execute(select(notes.c.id, notes.c.body).order_by(notes.c.id))).all()
        assert trips == ["_run_on_thread"]
    assert [tuple(row) for row in rows] == [(1, "first"), (2, "second")]


async def test_a_statement_without_rows_is_one_trip_and_reports_what_it_changed(
    engine: AsyncEngine, trips: list[str]
) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(insert(notes).values(body="kept"))
        assert inserted.inserted_primary_key == (1,)  # read from the cursor's lastrowid
        trips.clear()
        changed = await connection.execute(update(notes).where(notes.c.body == "kept").values(body="edited"))
        assert trips == ["_run_on_thread"]
        assert changed.rowcount == 1
        unchanged = await connection.execute(update(notes).where(notes.c.body == "absent").values(body="x"))
        assert unchanged.rowcount == 0


async def test_many_rows_inserted_at_once_are_one_trip(engine: AsyncEngine, trips: list[str]) -> None:
    async with engine.begin() as connection:
        trips.clear()
        result = await connection.execute(insert(notes), [{"body": f"note {n}"} for n in range(50)])
        assert trips == ["_run_on_thread"]
        assert result.rowcount == 50
        assert (await connection.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 50


async def test_returning_rows_come_back_with_the_statement(engine: AsyncEngine, trips: list[str]) -> None:
    async with engine.begin() as connection:
        trips.clear()
        ids = (
            await connection.execute(insert(notes).values(body="returned").returning(notes.c.id))
        ).scalars()
        assert list(ids) == [1]
        assert trips == ["_run_on_thread"]


async def test_a_constraint_failure_is_sqlalchemys_error_and_the_connection_goes_on(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(notes).values(body="unique"))
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: notes\.body"):
        async with engine.begin() as connection:
            await connection.execute(insert(notes).values(body="unique"))
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 1


async def test_a_streamed_read_still_fetches_page_by_page(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(notes), [{"body": f"note {n}"} for n in range(25)])
    async with engine.connect() as connection:
        stream = await connection.stream(select(notes.c.body).order_by(notes.c.id))
        pages = [page async for page in stream.partitions(10)]
    assert [len(page) for page in pages] == [10, 10, 5]


async def test_a_transactions_begin_travels_with_its_first_statement(
    engine: AsyncEngine, trips: list[str]
) -> None:
    async with engine.connect() as connection:
        await connection.begin()
        trips.clear()
        await connection.execute(insert(notes).values(body="inside"))
        assert trips == ["_run_on_thread"]
        assert await _sqlite_transaction_open(connection)  # the BEGIN ran: the insert is not autocommitted
        await connection.rollback()
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 0


async def test_a_transaction_that_ran_nothing_ends_without_a_trip(
    engine: AsyncEngine, trips: list[str]
) -> None:
    async with engine.connect() as connection:
        await connection.begin()
        trips.clear()
        await connection.commit()
        await connection.begin()
        await connection.rollback()
    assert trips == []


async def test_a_streamed_read_sends_the_waiting_begin_first(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.begin()
        stream = await connection.stream(select(notes.c.body))
        assert [row async for row in stream] == []
        assert await _sqlite_transaction_open(connection)
        await connection.rollback()


async def test_the_pool_takes_back_a_committed_connection_without_a_trip(
    engine: AsyncEngine, trips: list[str]
) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(notes).values(body="committed"))
        trips.clear()
    # The commit, and no rollback from the pool's reset of a connection with nothing open.
    assert trips == ["commit"]
