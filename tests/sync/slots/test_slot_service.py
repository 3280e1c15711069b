"""Slots read from the vet PIMS sandbox over HTTP: stored a page at a time, counted, found free."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.engine import session_scope
from clinicsync.sync.slots import service as slots
from clinicsync.sync.slots.models import ScheduleSlot, SlotStatus
from tests.factories import TenantFactory
from tests.sync.slots.vet_support import (
    ZONE,
    VetClinic,
    book_in_pims,
    connect_vet,
    read_schedule,
    start_vet_pims,
)


def tomorrow_in_clinic() -> date:
    return datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=1)


def at(day: date, clock: str, clinic: VetClinic) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=clinic.zone).astimezone(UTC)


@contextmanager
def counted_statements(session: AsyncSession) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = session.bind.sync_engine  # type: ignore[union-attr]

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def connected(client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any) -> VetClinic:
    sandbox = await start_vet_pims(sandboxes)
    tenant = await tenant_factory(time_zone=ZONE)
    return await connect_vet(client, tenant, sandbox)


async def store_day(
    sessionmaker: async_sessionmaker[AsyncSession], vet: VetClinic, day: date, **kwargs: Any
) -> slots.UpsertResult:
    schedule, visits = await read_schedule(vet.pims, day, day)
    records = slots.slots_from_schedule(schedule, day, day, visits=visits)
    async with session_scope(sessionmaker) as session:
        return await slots.upsert_page(
            session, vet.clinic.tenant.organization_id, uuid.UUID(vet.integration_id), records, **kwargs
        )


async def slot_at(
    sessionmaker: async_sessionmaker[AsyncSession], vet: VetClinic, start: datetime
) -> ScheduleSlot:
    async with session_scope(sessionmaker) as session:
        found = await session.scalar(
            select(ScheduleSlot).where(
                ScheduleSlot.integration_id == uuid.UUID(vet.integration_id), ScheduleSlot.starts_at == start
            )
        )
        assert found is not None
        return found


async def test_a_day_of_pims_slots_is_stored_in_a_few_queries_and_refreshed_in_place(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    vet = await connected(client, tenant_factory, sandboxes)
    day = tomorrow_in_clinic()
    taken = await book_in_pims(vet.pims, at(day, "10:00", vet))
    assert taken.status_code == 201, taken.text
    schedule, visits = await read_schedule(vet.pims, day, day)
    records = slots.slots_from_schedule(schedule, day, day, visits=visits)
    assert len(records) == 32  # 09:00-17:00 in 15-minute slots
    async with session_scope(sessionmaker) as session:
        with counted_statements(session) as statements:
            first = await slots.upsert_page(
                session, vet.clinic.tenant.organization_id, uuid.UUID(vet.integration_id), records
            )
        # One read of the page's existing slots, then the inserts (batched by the ORM): no query per slot.
        assert sum(1 for s in statements if s.lstrip().upper().startswith("SELECT")) <= 2
        assert len(statements) <= 6, statements
    assert first == slots.UpsertResult(created=32, updated=0)
    ten = await slot_at(sessionmaker, vet, at(day, "10:00", vet))
    assert (ten.capacity, ten.pms_booked, ten.booked_count, ten.remaining) == (2, 1, 1, 1)
    assert ten.status == SlotStatus.OPEN and ten.practitioner_id is None

    # The PIMS's front desk fills the 10:00 slot; the next read refreshes the same rows.
    assert (await book_in_pims(vet.pims, at(day, "10:00", vet))).status_code == 201
    assert await store_day(sessionmaker, vet, day) == slots.UpsertResult(created=0, updated=32)
    ten = await slot_at(sessionmaker, vet, at(day, "10:00", vet))
    assert (ten.pms_booked, ten.booked_count, ten.remaining) == (2, 2, 0)


async def test_booked_count_adds_our_bookings_made_since_the_pims_was_read(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    vet = await connected(client, tenant_factory, sandboxes)
    day = tomorrow_in_clinic()
    assert (await book_in_pims(vet.pims, at(day, "11:00", vet))).status_code == 201
    await store_day(sessionmaker, vet, day, seen_at=datetime.now(UTC) - timedelta(minutes=1))
    # A local booking 11:00-11:30 touches the 11:00 and 11:15 slots.
    booked = await client.post(
        "/api/v1/appointments",
        headers=vet.headers,
        json={
            "patient_id": str(vet.clinic.patient_id),
            "practitioner_id": str(vet.clinic.practitioner_id),
            "start": at(day, "11:00", vet).isoformat(),
            "end": at(day, "11:30", vet).isoformat(),
        },
    )
    assert booked.status_code == 201, booked.text
    async with session_scope(sessionmaker) as session:
        changed = await slots.recompute_booked(
            session,
            vet.clinic.tenant.organization_id,
            uuid.UUID(vet.integration_id),
            at(day, "00:00", vet),
            at(day + timedelta(days=1), "00:00", vet),
        )
    assert changed == 2
    eleven = await slot_at(sessionmaker, vet, at(day, "11:00", vet))
    quarter_past = await slot_at(sessionmaker, vet, at(day, "11:15", vet))
    assert (eleven.pms_booked, eleven.booked_count, eleven.remaining) == (1, 2, 0)
    assert (quarter_past.pms_booked, quarter_past.booked_count, quarter_past.remaining) == (0, 1, 1)

    # Cancelled, it no longer counts.
    cancelled = await client.post(
        f"/api/v1/appointments/{booked.json()['id']}/cancel", headers=vet.headers, json={"reason": "test"}
    )
    assert cancelled.status_code == 200, cancelled.text
    async with session_scope(sessionmaker) as session:
        await slots.recompute_booked(
            session,
            vet.clinic.tenant.organization_id,
            uuid.UUID(vet.integration_id),
            at(day, "00:00", vet),
            at(day + timedelta(days=1), "00:00", vet),
        )
    assert (await slot_at(sessionmaker, vet, at(day, "11:00", vet))).booked_count == 1


async def test_free_slots_skip_full_ones_and_a_long_visit_needs_back_to_back_places(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    vet = await connected(client, tenant_factory, sandboxes)
    day = tomorrow_in_clinic()
    for _ in range(2):
        assert (await book_in_pims(vet.pims, at(day, "09:15", vet))).status_code == 201
    await store_day(sessionmaker, vet, day)
    async with session_scope(sessionmaker) as session:
        window = (at(day, "09:00", vet), at(day, "10:00", vet))
        org, integration = vet.clinic.tenant.organization_id, uuid.UUID(vet.integration_id)
        short = await slots.find_free(session, org, integration, *window)
        assert [(free.start, free.remaining) for free in short] == [
            (at(day, "09:00", vet), 2),
            (at(day, "09:30", vet), 2),
            (at(day, "09:45", vet), 2),
        ]
        # 30 minutes from 09:00 would run into the full 09:15 slot.
        long = await slots.find_free(session, org, integration, *window, minutes=30)
        assert [free.start for free in long] == [at(day, "09:30", vet), at(day, "09:45", vet)]
        assert [len(free.slots) for free in long] == [2, 2]


async def test_slots_missing_from_the_latest_read_are_retired(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    vet = await connected(client, tenant_factory, sandboxes)
    day = tomorrow_in_clinic()
    earlier = datetime.now(UTC) - timedelta(hours=1)
    await store_day(sessionmaker, vet, day, seen_at=earlier)
    async with httpx.AsyncClient(base_url=vet.sandbox.root_url or "") as control:
        shorter = {
            name: ("09:00", "12:00")
            for name in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        }
        assert (await control.put("/_sandbox/settings", json={"business_hours": shorter})).status_code == 200
    read_at = datetime.now(UTC)
    await store_day(sessionmaker, vet, day, seen_at=read_at)
    async with session_scope(sessionmaker) as session:
        gone = await slots.retire_unseen(
            session,
            uuid.UUID(vet.integration_id),
            at(day, "00:00", vet),
            at(day + timedelta(days=1), "00:00", vet),
            seen_before=read_at,
        )
    assert gone == 20  # 12:00-17:00
    afternoon = await slot_at(sessionmaker, vet, at(day, "14:00", vet))
    assert afternoon.status == SlotStatus.GONE and afternoon.remaining == 0
