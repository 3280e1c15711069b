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
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from clinicsync.booking import appointments, search, service
from clinicsync.booking.appointments import BookingResult
from clinicsync.booking.models import Appointment, AppointmentStatus, Patient
from clinicsync.booking.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentUpdate,
    PatientCreate,
    PatientUpdate,
)
from clinicsync.db.engine import begin_writes
from clinicsync.logging import get_logger
from clinicsync.sync import configs, delivery, external_only, outbox, payloads
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import IntegrationSyncConfig, RecordType
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

log = get_logger(__name__)
RUNNER_KEY = "clinicsync.sync.runner"


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
        pushing: list[IntegrationSyncConfig],
        record_type: RecordType,
        record: Any,
        *,
        created: bool,
        skip: IntegrationSyncConfig | None = None,
    ) -> None:
        """What one local write owes each pushing integration, by its toggles (the one place)."""
        for config in pushing:
            if config is skip:
                continue
            if created:
                if not config.sync_on_create:
                    continue
                known = False
            else:
                removing = (
                    record_type == RecordType.APPOINTMENT and record.status == AppointmentStatus.CANCELLED
                )
                if not (config.sync_on_delete if removing else config.sync_on_update):
                    continue
                known = (
                    await delivery.refs_for_record(session, config.integration_id, record_type, record.id)
                    is not None
                )
                # The PMS never heard of it (made before sync was on): owe its creation instead.
                if not known and (removing or not config.sync_on_create):
                    continue
            if record_type == RecordType.APPOINTMENT:
                operation = payloads.appointment_operation(record, known=known)
                payload, chain_key = payloads.appointment_payload(record), record.patient_id
            else:
                operation = payloads.patient_operation(known=known)
                payload, chain_key = payloads.patient_payload(record), record.id
            await outbox.enqueue(
                session,
                organization_id=config.organization_id,
                integration_id=config.integration_id,
                record_type=record_type,
                record_id=record.id,
                chain_key=chain_key,
                operation=operation,
                payload=payload,
                new_record=created,
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
        sole = _external_only(pushing)
        if sole is not None:
            # The PMS call and the local record share one write transaction, as they always did.
            await begin_writes(session)
            return await external_only.create_appointment(
                self.ctx, session, principal, sole, data, idempotency_key=idempotency_key
            )
        result = await appointments.create_appointment(
            session, principal, data, idempotency_key=idempotency_key
        )
        if result.replayed:
            return result
        appointment = result.record or await appointments.get_appointment(
            session, principal, result.appointment.id
        )
        await self._owe(session, pushing, RecordType.APPOINTMENT, appointment, created=True)
        return result

    async def update_appointment(
        self,
        session: AsyncSession,
        principal: Principal,
        appointment_id: uuid.UUID,
        data: AppointmentUpdate,
        *,
        if_match: int | None = None,
    ) -> Appointment:
        return await self._change_appointment(
            session,
            principal,
            appointment_id,
            data,
            local=lambda: appointments.update_appointment(
                session, principal, appointment_id, data, if_match=if_match
            ),
            pms_only=lambda sole: external_only.update_appointment(
                self.ctx, session, principal, sole, appointment_id, data
            ),
        )

    async def cancel_appointment(
        self,
        session: AsyncSession,
        principal: Principal,
        appointment_id: uuid.UUID,
        data: AppointmentCancel,
        *,
        if_match: int | None = None,
    ) -> Appointment:
        return await self._change_appointment(
            session,
            principal,
            appointment_id,
            data,
            local=lambda: appointments.cancel_appointment(
                session, principal, appointment_id, data, if_match=if_match
            ),
            pms_only=lambda sole: external_only.cancel_appointment(
                self.ctx, session, principal, sole, appointment_id, data
            ),
        )

    async def _change_appointment(
        self,
        session: AsyncSession,
        principal: Principal,
        appointment_id: uuid.UUID,
        data: AppointmentUpdate | AppointmentCancel,
        *,
        local: Callable[[], Awaitable[Appointment]],
        pms_only: Callable[[IntegrationSyncConfig], Awaitable[Appointment]],
    ) -> Appointment:
        pushing = await self._pushing(session, principal)
        sole = _external_only(pushing)
        if sole is not None and await external_only.owns(session, sole, appointment_id):
            await begin_writes(session)
            return await pms_only(sole)
        before = (
            await appointments.get_appointment(
                session, principal, appointment_id, Capability.APPOINTMENTS_CHANGE, data.proof
            )
        ).version
        appointment = await local()
        if appointment.version != before:
            await self._owe(session, pushing, RecordType.APPOINTMENT, appointment, created=False)
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
        appointment_type_id: uuid.UUID | None = None,
        duration_minutes: int | None = None,
        interval_minutes: int | None = None,
        override: bool = False,
        limit: int = search.DEFAULT_SLOT_PAGE,
        cursor: str | None = None,
        now: datetime | None = None,
        rendered: bool = False,
    ) -> search.SlotPage:
        """Free slots; for an external-only clinic the PMS's diary, not the local table, says what's taken
        (so its pages come back as slots to filter, never ``rendered``)."""
        sole = _external_only(await self._pushing(session, principal))
        page = await search.search_slots(
            session,
            principal,
            first_day=first_day,
            last_day=last_day,
            practitioner_id=practitioner_id,
            appointment_type_id=appointment_type_id,
            duration_minutes=duration_minutes,
            interval_minutes=interval_minutes,
            override=override,
            limit=limit,
            cursor=cursor,
            now=now,
            rendered=rendered and sole is None,
        )
        if sole is None or not page.slots:
            return page
        first = min(slot.start for slot in page.slots)
        last = max(slot.end for slot in page.slots)
        busy = await external_only.busy_times(self.ctx, session, sole, first - timedelta(days=1), last)
        free = [
            slot
            for slot in page.slots
            if not any(
                start < slot.end and end > slot.start for start, end in busy.get(slot.practitioner_id, [])
            )
        ]
        return dataclasses.replace(page, slots=free)

    # ---- patients ---------------------------------------------------------------------------

    async def create_patient(
        self, session: AsyncSession, principal: Principal, data: PatientCreate
    ) -> Patient:
        pushing = await self._pushing(session, principal)
        sole = _external_only(pushing)
        pushed: tuple[str, dict[str, Any]] | None = None  # (external id, what was sent)
        if sole is not None:
            # The PMS first: a refusal there leaves nothing here.
            pushed = await external_only.push_patient(
                self.ctx,
                sole,
                payloads.patient_payload(data),
                await external_only.provider_name(session, sole),
            )
        patient = await service.create_patient(session, principal, data)
        if sole is not None and pushed is not None:
            await external_only.accept(session, sole, RecordType.PATIENT, patient.id, *pushed)
        await self._owe(session, pushing, RecordType.PATIENT, patient, created=True, skip=sole)
        return patient

    async def update_patient(
        self, session: AsyncSession, principal: Principal, patient_id: uuid.UUID, data: PatientUpdate
    ) -> Patient:
        pushing = await self._pushing(session, principal)
        patient = await service.update_patient(session, principal, patient_id, data)
        await self._owe(session, pushing, RecordType.PATIENT, patient, created=False)
        return patient


def _external_only(pushing: list[IntegrationSyncConfig]) -> IntegrationSyncConfig | None:
    """The integration an external-only clinic writes through first, if this clinic is one."""
    return next((config for config in pushing if config.external_only), None)
