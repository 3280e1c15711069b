"""Test data built through the public API: tenants, and a clinic open for booking."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.booking.appointments import new_booking_reference
from clinicsync.booking.models import Appointment, AppointmentStatus
from clinicsync.db.engine import session_scope


@dataclass(frozen=True)
class Tenant:
    """An organization with an owner and a token, as a caller of the API sees it."""

    organization_id: uuid.UUID
    user_id: uuid.UUID
    token: str
    time_zone: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


TenantFactory = Callable[..., Awaitable[Tenant]]


@dataclass(frozen=True)
class Clinic:
    tenant: Tenant
    practitioner_id: uuid.UUID
    patient_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return self.tenant.headers

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tenant.time_zone)

    def local(self, day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), tzinfo=self.zone)


def future_day(days: int = 10) -> date:
    return date.today() + timedelta(days=days)


async def open_clinic(
    client: httpx.AsyncClient,
    tenant: Tenant,
    *,
    start: str = "09:00",
    end: str = "17:00",
    name: str = "Dr. Ada Byron",
) -> Clinic:
    response = await client.post("/api/v1/practitioners", json={"name": name}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    practitioner_id = response.json()["id"]
    week = [{"day_of_week": day, "start_time": start, "end_time": end} for day in range(7)]
    response = await client.put(
        f"/api/v1/practitioners/{practitioner_id}/availability",
        json={"intervals": week},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    response = await client.post(
        "/api/v1/patients",
        json={
            "first_name": "Grace",
            "last_name": "Hopper",
            "phone": "+1 202 555 0143",
            "email": "g@example.com",
        },
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    return Clinic(tenant, uuid.UUID(practitioner_id), uuid.UUID(response.json()["id"]))


async def started_appointment(
    maker: async_sessionmaker[AsyncSession], clinic: Clinic, *, minutes_ago: int = 10
) -> uuid.UUID:
    """A confirmed appointment that began a few minutes ago. The API books only future times,
    so the past is written straight to the database, as a PMS import would."""
    start = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    async with session_scope(maker) as session:
        appointment = Appointment(
            organization_id=clinic.tenant.organization_id,
            patient_id=clinic.patient_id,
            practitioner_id=clinic.practitioner_id,
            starts_at=start,
            ends_at=start + timedelta(minutes=30),
            status=AppointmentStatus.CONFIRMED,
            booking_reference=new_booking_reference(),
            practitioner_name="Dr. Ada Byron",
        )
        session.add(appointment)
        await session.flush()
        return appointment.id


def booking(clinic: Clinic, start: datetime, minutes: int = 30, **extra: object) -> dict[str, object]:
    return {
        "patient_id": str(clinic.patient_id),
        "practitioner_id": str(clinic.practitioner_id),
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
        **extra,
    }
