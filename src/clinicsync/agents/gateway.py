"""The one place agent tools write appointments: every create, move and cancel goes through here.

Agents book through the same rules as every other caller (the booking service). When the
sync layer's write path is in place, these three calls are where it plugs in, so a clinic's
PMS sees agent bookings exactly as it sees the front desk's.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking import appointments
from clinicsync.booking.models import Appointment
from clinicsync.booking.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentRead,
    AppointmentUpdate,
)
from clinicsync.tenancy.principal import Principal


async def create(session: AsyncSession, principal: Principal, data: AppointmentCreate) -> AppointmentRead:
    result = await appointments.create_appointment(session, principal, data)
    return result.appointment


async def move(
    session: AsyncSession, principal: Principal, appointment_id: uuid.UUID, data: AppointmentUpdate
) -> Appointment:
    return await appointments.update_appointment(session, principal, appointment_id, data)


async def cancel(
    session: AsyncSession, principal: Principal, appointment_id: uuid.UUID, reason: str
) -> Appointment:
    return await appointments.cancel_appointment(
        session, principal, appointment_id, AppointmentCancel(reason=reason)
    )
