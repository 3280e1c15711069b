"""The SyncManager: every appointment and patient write, kept in step with the clinic's PMS.

Each write function has the shape of the booking service function it wraps (same arguments,
same result), so routes, agents and pages call it in its place. Per pushing integration:

* dual-write (to_external or bidirectional, keep a local copy): the booking service writes
  locally and an outbox item is written in the same transaction; a worker delivers it.
* external-only (to_external, no local copy): the PMS is written first, synchronously; its
  refusal or outage is the caller's error and nothing is written locally but the reference.
* local_only / from_external / sync off / toggle off: nothing is pushed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from clinicsync.booking import appointments, service
from clinicsync.booking.appointments import BookingResult
from clinicsync.booking.models import Appointment, AppointmentStatus, Patient
from clinicsync.booking.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentUpdate,
    PatientCreate,
    PatientUpdate,
    SlotSearchResult,
)
from clinicsync.logging import get_logger
from clinicsync.sync import configs, delivery, external_only, outbox
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import IntegrationSyncConfig, OutboxOperation, RecordType
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

log = get_logger(__name__)
RUNNER_KEY = "clinicsync.sync.runner"


def appointment_payload(appointment: Appointment) -> dict[str, Any]:
    return {
        "booking_reference": appointment.booking_reference,
        "patient_id": str(appointment.patient_id),
        "practitioner_id": str(appointment.practitioner_id),
        "starts_at": appointment.starts_at.isoformat(),
        "ends_at": appointment.ends_at.isoformat(),
        "status": appointment.status.value,
        "notes": appointment.notes or None,
    }


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    """Owed pushes become jobs once their transaction is committed (the sweep covers a lost wake-up)."""
    written = session.info.pop(outbox.SESSION_KEY, None)
    runner = session.info.get(RUNNER_KEY)
    if not written or runner is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    runner.wake([str(item_id) for item_id in written])


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(outbox.SESSION_KEY, None)


class SyncManager:
    def __init__(self, ctx: SyncContext, runner: Any | None = None) -> None:
        self.ctx = ctx
        self.runner = runner

    def _bind(self, session: AsyncSession) -> None:
        if self.runner is not None:
            session.sync_session.info[RUNNER_KEY] = self.runner

    async def _pushing(self, session: AsyncSession, principal: Principal) -> list[IntegrationSyncConfig]:
        self._bind(session)
        return await configs.configs_for(session, principal.organization_id)

    async def _owe(
        self,
        session: AsyncSession,
        config: IntegrationSyncConfig,
        record_type: RecordType,
        record_id: uuid.UUID,
        chain_key: uuid.UUID,
        operation: OutboxOperation,
        payload: dict[str, Any],
    ) -> None:
        await outbox.enqueue(
            session,
            organization_id=config.organization_id,
            integration_id=config.integration_id,
            record_type=record_type,
            record_id=record_id,
            chain_key=chain_key,
            operation=operation,
            payload=payload,
        )

    # ---- appointments ---------------------------------------------------------------------

    async def create_appointment(
        self,
        session: AsyncSession,
        principal: Principal,
        data: AppointmentCreate,
        *,
        idempotency_key: str | None = None,
    ) -> BookingResult:
        pushing = await self._pushing(session, principal)
        sole = next((config for config in pushing if config.external_only), None)
        if sole is not None:
            return await external_only.create_appointment(
                self.ctx, session, principal, sole, data, idempotency_key=idempotency_key
            )
        result = await appointments.create_appointment(
            session, principal, data, idempotency_key=idempotency_key
        )
        if result.replayed:
            return result
        appointment = await appointments.get_appointment(session, principal, result.appointment.id)
        for config in pushing:
            if config.sync_on_create:
                await self._owe(
                    session,
                    config,
                    RecordType.APPOINTMENT,
                    appointment.id,
                    appointment.patient_id,
                    OutboxOperation.CREATE,
                    appointment_payload(appointment),
                )
        return result

    async def _after_appointment_change(
        self,
        session: AsyncSession,
        principal: Principal,
        pushing: list[IntegrationSyncConfig],
        appointment: Appointment,
    ) -> None:
        cancelled = appointment.status == AppointmentStatus.CANCELLED
        for config in pushing:
            if cancelled and not config.sync_on_delete:
                continue
            if not cancelled and not config.sync_on_update:
                continue
            known = await delivery.refs_for_record(
                session, config.integration_id, RecordType.APPOINTMENT, appointment.id
            )
            if known is None:
                # The PMS never heard of it (made before sync was on): owe its creation instead.
                if cancelled or not config.sync_on_create:
                    continue
                operation = OutboxOperation.CREATE
            else:
                operation = OutboxOperation.CANCEL if cancelled else OutboxOperation.UPDATE
            payload = appointment_payload(appointment)
            if cancelled:
                payload["reason"] = appointment.cancellation_reason
            await self._owe(
                session,
                config,
                RecordType.APPOINTMENT,
                appointment.id,
                appointment.patient_id,
                operation,
                payload,
            )

    async def update_appointment(
        self,
        session: AsyncSession,
        principal: Principal,
        appointment_id: uuid.UUID,
        data: AppointmentUpdate,
        *,
        if_match: int | None = None,
    ) -> Appointment:
        pushing = await self._pushing(session, principal)
        sole = next((config for config in pushing if config.external_only), None)
        if sole is not None and await external_only.owns(session, sole, appointment_id):
            return await external_only.update_appointment(
                self.ctx, session, principal, sole, appointment_id, data
            )
        before = (
            await appointments.get_appointment(
                session, principal, appointment_id, Capability.APPOINTMENTS_CHANGE, data.proof
            )
        ).version
        appointment = await appointments.update_appointment(
            session, principal, appointment_id, data, if_match=if_match
        )
        if appointment.version != before:
            await self._after_appointment_change(session, principal, pushing, appointment)
        return appointment

    async def cancel_appointment(
        self,
        session: AsyncSession,
        principal: Principal,
        appointment_id: uuid.UUID,
        data: AppointmentCancel,
        *,
        if_match: int | None = None,
    ) -> Appointment:
        pushing = await self._pushing(session, principal)
        sole = next((config for config in pushing if config.external_only), None)
        if sole is not None and await external_only.owns(session, sole, appointment_id):
            return await external_only.cancel_appointment(
                self.ctx, session, principal, sole, appointment_id, data
            )
        before = (
            await appointments.get_appointment(
                session, principal, appointment_id, Capability.APPOINTMENTS_CHANGE, data.proof
            )
        ).version
        appointment = await appointments.cancel_appointment(
            session, principal, appointment_id, data, if_match=if_match
        )
        if appointment.version != before:
            await self._after_appointment_change(session, principal, pushing, appointment)
        return appointment

    # ---- slots ------------------------------------------------------------------------------

    async def search_slots(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        first_day: date,
        last_day: date,
        practitioner_id: uuid.UUID | None = None,
        duration_minutes: int | None = None,
        interval_minutes: int | None = None,
        now: datetime | None = None,
    ) -> SlotSearchResult:
        """Free slots; for an external-only clinic the PMS's diary, not the local table, says what's taken."""
        result = await service.search_slots(
            session,
            principal,
            first_day=first_day,
            last_day=last_day,
            practitioner_id=practitioner_id,
            duration_minutes=duration_minutes,
            interval_minutes=interval_minutes,
            now=now,
        )
        sole = next(
            (config for config in await self._pushing(session, principal) if config.external_only), None
        )
        if sole is None or not result.slots:
            return result
        first = min(slot.start for slot in result.slots)
        last = max(slot.end for slot in result.slots)
        busy = await external_only.busy_times(self.ctx, session, sole, first - timedelta(days=1), last)
        result.slots = [
            slot
            for slot in result.slots
            if not any(
                start < slot.end and end > slot.start for start, end in busy.get(slot.practitioner_id, [])
            )
        ]
        return result

    # ---- patients ---------------------------------------------------------------------------

    async def create_patient(
        self, session: AsyncSession, principal: Principal, data: PatientCreate
    ) -> Patient:
        pushing = await self._pushing(session, principal)
        sole = next((config for config in pushing if config.external_only), None)
        pushed: tuple[str, dict[str, Any]] | None = None  # (external id, what was sent)
        if sole is not None:
            # The PMS first: a refusal there leaves nothing here.
            pushed = await external_only.push_patient(
                self.ctx,
                sole,
                external_only.patient_fields(data),
                await external_only.provider_name(session, sole),
            )
        patient = await service.create_patient(session, principal, data)
        if sole is not None and pushed is not None:
            await external_only.accept(session, sole, RecordType.PATIENT, patient.id, *pushed)
        for config in pushing:
            if config.sync_on_create and config is not sole:
                await self._owe(
                    session,
                    config,
                    RecordType.PATIENT,
                    patient.id,
                    patient.id,
                    OutboxOperation.CREATE,
                    delivery.patient_payload(patient),
                )
        return patient

    async def update_patient(
        self, session: AsyncSession, principal: Principal, patient_id: uuid.UUID, data: PatientUpdate
    ) -> Patient:
        pushing = await self._pushing(session, principal)
        patient = await service.update_patient(session, principal, patient_id, data)
        for config in pushing:
            if not config.sync_on_update:
                continue
            known = await delivery.refs_for_record(
                session, config.integration_id, RecordType.PATIENT, patient.id
            )
            if known is None and not config.sync_on_create:
                continue
            operation = OutboxOperation.UPDATE if known is not None else OutboxOperation.CREATE
            await self._owe(
                session,
                config,
                RecordType.PATIENT,
                patient.id,
                patient.id,
                operation,
                delivery.patient_payload(patient),
            )
        return patient
