"""A booking costs a fixed, small number of SQL statements, whatever the clinic's history.

Counted with SQLAlchemy's cursor event on every engine in the process, keeping only the
statements run on behalf of one request (matched by its X-Request-ID), so background work of
the server cannot blur the count. A change that adds a round trip to the booking path (a
lookup, a refresh, a second clash query, a read-back) fails here first; one that removes a
round trip should lower the pinned numbers.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import httpx
import pytest
import structlog
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.booking.models import Appointment
from clinicsync.db.engine import session_scope
from tests.factories import Clinic, booking, future_day
from tests.statements import Statements

# Per booking: the token (with its user and organization), the organization's sync settings, one
# query for the practitioner, the patient check, the day's hours and overrides and the bounded
# clash check, then the INSERT, the sync audit row and the change event. SQLite's two BEGINs (the
# deferred read transaction, then BEGIN IMMEDIATE for the writes) travel with the first statement
# of each (db/sqlite_driver.py), so they are no statements of their own; PostgreSQL takes the
# organization's change-event lock (the change event's INSERT queues the notification in the same
# statement). An Idempotency-Key adds the INSERT of its record, nothing else.
EXPECTED = {"sqlite": 6, "postgresql": 7}
WITH_KEY = 1


async def _book(
    client: httpx.AsyncClient, clinic: Clinic, start: datetime, statements: Statements, key: str | None = None
) -> list[str]:
    request_id = uuid.uuid4().hex
    headers = {**clinic.headers, "X-Request-ID": request_id}
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await client.post("/api/v1/appointments", json=booking(clinic, start), headers=headers)
    assert response.status_code == 201, response.text
    return statements.seen.get(request_id, [])


async def _past_appointments(maker: async_sessionmaker[AsyncSession], clinic: Clinic, count: int) -> None:
    """A long confirmed past for the practitioner, written as a PMS import would."""
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=count // 10 + 2)
    rows = []
    for index in range(count):
        at = first + timedelta(hours=index % 10, days=index // 10)
        rows.append(
            {
                "id": uuid.uuid4(),
                "organization_id": clinic.tenant.organization_id,
                "patient_id": clinic.patient_id,
                "practitioner_id": clinic.practitioner_id,
                "starts_at": at,
                "ends_at": at + timedelta(minutes=30),
                "blocked_from": at,
                "blocked_until": at + timedelta(minutes=30),
                "status": "confirmed",
                "booking_source": "pms_sync",
                "booking_reference": f"P{index:09d}",
                "practitioner_name": "Dr. Ada Byron",
            }
        )
    async with session_scope(maker) as session:
        await session.execute(insert(Appointment), rows)


async def test_a_booking_costs_the_same_few_statements_with_or_without_a_long_history(
    client: httpx.AsyncClient,
    clinic: Clinic,
    backend: str,
    statements: Statements,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    day = future_day(5)
    await _book(client, clinic, clinic.local(day, 9), statements)  # warms the server's caches
    fresh = await _book(client, clinic, clinic.local(day, 10), statements)
    assert len(fresh) == EXPECTED[backend], "\n".join(fresh)
    assert sum(s.startswith("INSERT INTO appointments") for s in fresh) == 1
    assert not any(s.startswith(("UPDATE", "DELETE")) for s in fresh), fresh

    await _past_appointments(sessionmaker, clinic, 2000)
    later = await _book(client, clinic, clinic.local(day, 11), statements)
    assert len(later) == EXPECTED[backend], "\n".join(later)

    keyed = await _book(client, clinic, clinic.local(day, 12), statements, key=f"k-{uuid.uuid4().hex}")
    assert len(keyed) == EXPECTED[backend] + WITH_KEY, "\n".join(keyed)


async def test_the_clash_check_reads_a_range_of_the_active_index_bounded_on_both_sides(
    client: httpx.AsyncClient,
    clinic: Clinic,
    backend: str,
    statements: Statements,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Cost flat in history: the booking's own clash query, as sent, is planned as a range of the
    partial active-appointments index with both ends bounded, never a scan of the diary."""
    await _past_appointments(sessionmaker, clinic, 2000)
    async with session_scope(sessionmaker) as session:
        await session.execute(text("ANALYZE"))
    await _book(client, clinic, clinic.local(future_day(5), 9), statements)
    statement, parameters = statements.clash_checks[-1]
    async with sessionmaker() as session:
        connection = await session.connection()
        if backend == "sqlite":
            rows = await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = " | ".join(str(row[-1]) for row in rows)
            assert "USING INDEX ix_appointments_active_practitioner_blocked_from" in plan, plan
            assert "blocked_from>? AND blocked_from<?" in plan, plan
            assert "SCAN appointments" not in plan, plan
        else:
            rows = await connection.exec_driver_sql("EXPLAIN " + statement, parameters)
            plan = "\n".join(str(row[0]) for row in rows)
            assert "ix_appointments_active_practitioner_blocked_from" in plan, plan
            conditions = [line for line in plan.splitlines() if "Index Cond" in line]
            assert any("blocked_from >" in line and "blocked_from <" in line for line in conditions), plan
            assert "Seq Scan on appointments" not in plan, plan


async def test_a_sqlite_booking_makes_one_trip_to_the_database_thread_per_statement_and_commit(
    client: httpx.AsyncClient,
    clinic: Clinic,
    backend: str,
    statements: Statements,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiosqlite runs SQLite on a thread of its own; each trip there wakes the thread and then the
    event loop. A booking's six statements and its two commits (the read transaction's, the write
    transaction's) are eight trips: no BEGIN, cursor, fetch or pool reset of its own."""
    if backend != "sqlite":
        pytest.skip("aiosqlite's thread is SQLite's")
    trips: dict[str, list[str]] = {}
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id is not None:
            trips.setdefault(request_id, []).append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    day = future_day(5)
    await _book(client, clinic, clinic.local(day, 9), statements)  # warms the server's caches
    trips.clear()
    await _book(client, clinic, clinic.local(day, 10), statements)
    [made] = trips.values()
    assert sorted(made) == ["_run_on_thread"] * EXPECTED["sqlite"] + ["commit", "commit"], made
