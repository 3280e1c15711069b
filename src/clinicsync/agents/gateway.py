"""The one place agent tools write: every booking, move, cancel and registration goes through here.

Agents book through the same rules and the same SyncManager as every other caller, so a
clinic's PMS sees an agent's booking exactly as it sees the front desk's: pushed through the
outbox on dual-write, written into the PMS first on external-only.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking.models import Appointment, Patient
from clinicsync.booking.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentRead,
    AppointmentUpdate,
    PatientCreate,
    PatientProof,
)
from clinicsync.sync.manager import SyncManager
from clinicsync.tenancy.principal import Principal


async def create(
    sync: SyncManager, session: AsyncSession, principal: Principal, data: AppointmentCreate
) -> AppointmentRead:
    result = await sync.create_appointment(session, principal, data)
    return result.appointment


async def move(
    sync: SyncManager,
    session: AsyncSession,
    principal: Principal,
    appointment_id: uuid.UUID,
    data: AppointmentUpdate,
) -> Appointment:
    return await sync.update_appointment(session, principal, appointment_id, data)


async def cancel(
    sync: SyncManager,
    session: AsyncSession,
    principal: Principal,
    appointment_id: uuid.UUID,
    reason: str,
    *,
    proof: PatientProof | None = None,
) -> Appointment:
    return await sync.cancel_appointment(
        session, principal, appointment_id, AppointmentCancel(reason=reason, proof=proof)
    )


async def register(
    sync: SyncManager, session: AsyncSession, principal: Principal, data: PatientCreate
) -> Patient:
    return await sync.create_patient(session, principal, data)
