"""Records as the API shows them: with their external references (`external_refs`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking.appointments import BookingResult
from clinicsync.booking.schemas import AppointmentRead, PatientRead
from clinicsync.sync import configs, refs
from clinicsync.sync.manager import SyncManager
from clinicsync.sync.models import RecordType
from clinicsync.sync.schemas import AppointmentWithSync, PatientWithSync
from clinicsync.tenancy.principal import Principal


async def sync_manager(request: Request) -> SyncManager:
    manager: SyncManager = request.app.state.sync_manager
    return manager


SyncManagerDep = Annotated[SyncManager, Depends(sync_manager)]


async def appointments_with_refs(
    session: AsyncSession, principal: Principal, items: Sequence[Any]
) -> list[AppointmentWithSync]:
    reads = [
        item if isinstance(item, AppointmentRead) else AppointmentRead.model_validate(item) for item in items
    ]
    found = await refs.refs_by_record(
        session, principal.organization_id, RecordType.APPOINTMENT, [r.id for r in reads]
    )
    return [AppointmentWithSync(**read.model_dump(), external_refs=found.get(read.id, [])) for read in reads]


async def new_appointment_with_refs(
    session: AsyncSession, principal: Principal, result: BookingResult
) -> AppointmentWithSync:
    """A booking just answered. One this transaction inserted has only the references it made
    (none when owed to no PMS; a pending one per pushing integration), so they are shown without
    reading them back; a replayed booking reads its references as they stand."""
    if result.record is None:
        return await appointment_with_refs(session, principal, result.appointment)
    shown = [
        refs.ref_read(ref, configs.provider_key_of(session, ref.integration_id))
        for ref in refs.new_refs(session, result.record.id)
    ]
    return AppointmentWithSync(**result.appointment.model_dump(), external_refs=shown)


async def appointment_with_refs(
    session: AsyncSession, principal: Principal, item: Any
) -> AppointmentWithSync:
    return (await appointments_with_refs(session, principal, [item]))[0]


async def patients_with_refs(
    session: AsyncSession, principal: Principal, items: Sequence[Any]
) -> list[PatientWithSync]:
    reads = [PatientRead.model_validate(item) for item in items]
    found = await refs.refs_by_record(
        session, principal.organization_id, RecordType.PATIENT, [r.id for r in reads]
    )
    return [PatientWithSync(**read.model_dump(), external_refs=found.get(read.id, [])) for read in reads]


async def patient_with_refs(session: AsyncSession, principal: Principal, item: Any) -> PatientWithSync:
    return (await patients_with_refs(session, principal, [item]))[0]
