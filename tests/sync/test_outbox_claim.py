"""A worker's claim on an owed push never queues behind the organization's bookings, nor they
behind it: the claim writes no change event, so it takes no organization change-event lock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.db.engine import session_scope
from clinicsync.realtime.hooks import hold_organization
from clinicsync.serving import serving
from clinicsync.sync import outbox
from clinicsync.sync.models import OutboxItem, OutboxStatus
from tests.conftest import RunningServer
from tests.factories import booking, future_day
from tests.sync.conftest import DUAL_WRITE, Connected, configure, sync_settings


@pytest.fixture
async def server(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Any
) -> AsyncIterator[RunningServer]:
    """A server that runs no jobs: the test claims the push itself."""
    settings = sync_settings(database_url, tmp_path / "var", sync_jobs="off")
    async with serving(create_app(settings)) as base_url:
        yield RunningServer(base_url, settings)


async def test_a_claim_goes_ahead_while_a_booking_of_the_organization_holds_its_change_event_lock(
    client: httpx.AsyncClient,
    opendental: Connected,
    sessionmaker: async_sessionmaker[AsyncSession],
    backend: str,
) -> None:
    if backend != "postgresql":
        pytest.skip("the organization change-event lock is PostgreSQL's; SQLite serializes every writer")
    od = opendental
    await configure(client, od, **DUAL_WRITE)
    owed = await client.post(
        "/api/v1/appointments", json=booking(od.clinic, od.clinic.local(future_day(), 9)), headers=od.headers
    )
    assert owed.status_code == 201, owed.text
    async with session_scope(sessionmaker, write=False) as session:
        item_id = await session.scalar(
            select(OutboxItem.id).where(OutboxItem.record_id == uuid.UUID(owed.json()["id"]))
        )
    assert item_id is not None

    async with sessionmaker() as holder:
        # What a booking's transaction holds from its first write to its commit.
        await hold_organization(holder, od.clinic.tenant.organization_id)
        next_booking = asyncio.create_task(
            client.post(
                "/api/v1/appointments",
                json=booking(od.clinic, od.clinic.local(future_day(), 10)),
                headers=od.headers,
            )
        )
        claim = await asyncio.wait_for(
            outbox.claim(sessionmaker, item_id, worker="test", lease_seconds=30), timeout=10
        )
        await asyncio.sleep(0.3)
        assert not next_booking.done(), "the lock held here is the one bookings take"
        await holder.rollback()
    assert (await next_booking).status_code == 201

    assert claim is not None and claim.attempt == 1 and not claim.looked_up_first
    async with session_scope(sessionmaker, write=False) as session:
        item = await session.get(OutboxItem, item_id)
        assert item is not None
        assert item.status == OutboxStatus.IN_FLIGHT and item.maybe_sent and item.claimed_by == claim.token
