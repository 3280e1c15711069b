"""50 patients grab overlapping times with one practitioner at once: exactly one wins, on both databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.booking.models import Appointment
from tests.conftest import RunningServer
from tests.factories import Clinic, booking, future_day

CONTENDERS = 50


async def test_fifty_concurrent_overlapping_bookings_yield_one_201_and_the_rest_409(
    server: RunningServer, clinic: Clinic, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    base = clinic.local(future_day(12), 13)
    # Every request overlaps every other: starts stagger along the 15-minute grid inside one hour.
    starts = [base + timedelta(minutes=15 * (i % 4)) for i in range(CONTENDERS)]
    payloads = [booking(clinic, start, minutes=60) for start in starts]
    limits = httpx.Limits(max_connections=CONTENDERS, max_keepalive_connections=CONTENDERS)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as http:
        responses = await asyncio.gather(
            *(http.post("/api/v1/appointments", json=payload, headers=clinic.headers) for payload in payloads)
        )

    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(201) == 1, [r.text for r in responses if r.status_code not in (201, 409)]
    assert statuses.count(409) == CONTENDERS - 1
    assert all(r.json()["error"]["code"] == "slot_taken" for r in responses if r.status_code == 409)
    async with sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(Appointment))
    assert stored == 1
