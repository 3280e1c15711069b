"""External-only clinics: the PMS is the source of truth and is written synchronously.

A PMS refusal or outage is the caller's error (502 refused, 503 unavailable, 504 timeout,
with the PMS's message); the request's transaction then rolls back, so nothing is half-written
here. Appointments keep no local row: only an external reference (with the PMS's record as its
snapshot) under an id of our own. Patients keep their local row (it is who books), written only
after the PMS has accepted them.
"""

from __future__ import annotations

import hashlib
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking import appointments, service
from clinicsync.booking.appointments import REFERENCE_ALPHABET, BookingResult, new_booking_reference
from clinicsync.booking.models import Appointment, AppointmentStatus, BookingSource, Patient
from clinicsync.booking.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentRead,
    AppointmentUpdate,
    PatientProof,
)
from clinicsync.db.base import utcnow
from clinicsync.errors import ClinicSyncError, NotFound
from clinicsync.integrations import canonical
from clinicsync.integrations.canonical import SyncOperation
from clinicsync.integrations.errors import IntegrationError
from clinicsync.sync import payloads, refs
from clinicsync.sync.delivery import SyncContext, booking_note, classify, supported
from clinicsync.sync.models import ExternalReference, IntegrationSyncConfig, RecordType, SyncState
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal


class PmsFailed(ClinicSyncError):
    """The PMS refused the write or could not be reached; the caller's booking did not happen."""

    def __init__(self, error: Exception, *, provider: str) -> None:
        kind = classify(error)
        provider_message = (
            getattr(error, "provider_message", None) or getattr(error, "message", None) or str(error)
        )
        if kind == "refused":
            status, code = 502, "pms_refused"
        elif isinstance(error, IntegrationError) and error.code == "timeout":
            status, code = 504, "pms_timeout"
        else:
            status, code = 503, "pms_unavailable"
        super().__init__(
            f"{provider} did not take the write: {provider_message}",
            code=code,
            details={"provider": provider, "provider_message": provider_message, "outcome": kind},
        )
        self.status_code = status


async def _call(
    ctx: SyncContext,
    config: IntegrationSyncConfig,
    operation: SyncOperation,
    payload: dict[str, Any],
    provider: str,
) -> list[dict[str, Any]]:
    try:
        result = await canonical.perform(
            ctx.executor, config.organization_id, config.integration_id, operation, payload
        )
    except (IntegrationError, canonical.UnsupportedOperation) as exc:
        raise PmsFailed(exc, provider=provider) from None
    return result.records


async def _supported(ctx: SyncContext, config: IntegrationSyncConfig) -> frozenset[SyncOperation]:
    try:
        return await supported(ctx, config.organization_id, config.integration_id)
    except ClinicSyncError as exc:
        raise PmsFailed(exc, provider="the PMS") from None


async def provider_name(session: AsyncSession, config: IntegrationSyncConfig) -> str:
    from clinicsync.integrations.models import ExternalIntegration

    row = await session.get(ExternalIntegration, config.integration_id)
    return row.display_name if row else "the PMS"


async def _ref(
    session: AsyncSession, config: IntegrationSyncConfig, record_type: RecordType, record_id: uuid.UUID
) -> ExternalReference:
    ref = await refs.get_ref(session, config.integration_id, record_type, record_id)
    if ref is None:
        ref = await refs.mark_pending(
            session, config.organization_id, config.integration_id, record_type, record_id
        )
    return ref


async def _patient_external_id(
    ctx: SyncContext, session: AsyncSession, config: IntegrationSyncConfig, patient: Patient, provider: str
) -> str:
    ref = await refs.get_ref(session, config.integration_id, RecordType.PATIENT, patient.id)
    if ref is not None and ref.external_id:
        return ref.external_id
    pushed = await push_patient(ctx, config, payloads.patient_payload(patient), provider)
    if pushed is None:
        return str(patient.id)  # a provider without patients carries our id on the appointment
    await accept(session, config, RecordType.PATIENT, patient.id, *pushed)
    return pushed[0]


async def push_patient(
    ctx: SyncContext, config: IntegrationSyncConfig, payload: dict[str, Any], provider: str
) -> tuple[str, dict[str, Any]] | None:
    """Finds the patient in the PMS (email, or phone + date of birth) or creates them there.

    None when the provider keeps no patients."""
    if SyncOperation.PATIENT_CREATE not in await _supported(ctx, config):
        return None
    clean = {key: value for key, value in payload.items() if value is not None}
    if clean.get("email") or (clean.get("phone") and clean.get("date_of_birth")):
        found = await _call(ctx, config, SyncOperation.PATIENT_FIND, clean, provider)
        if found:
            return str(found[0]["id"]), clean | {"id": str(found[0]["id"])}
    created = await _call(ctx, config, SyncOperation.PATIENT_CREATE, clean, provider)
    return str(created[0]["id"]), clean | {"id": str(created[0]["id"])}


async def accept(
    session: AsyncSession,
    config: IntegrationSyncConfig,
    record_type: RecordType,
    record_id: uuid.UUID,
    external_id: str,
    snapshot: dict[str, Any],
) -> ExternalReference:
    ref = await _ref(session, config, record_type, record_id)
    ref.external_id = external_id
    ref.sync_state = SyncState.ACCEPTED
    ref.snapshot = refs.json_safe(snapshot)
    ref.last_synced_at = utcnow()
    ref.last_error = None
    config.last_sync_at, config.last_sync_status, config.last_sync_error = utcnow(), "ok", None
    await session.flush()
    return ref


async def _practitioner_external_id(
    ctx: SyncContext,
    session: AsyncSession,
    config: IntegrationSyncConfig,
    practitioner_id: uuid.UUID,
    provider: str,
) -> str:
    ref = await refs.get_ref(session, config.integration_id, RecordType.PRACTITIONER, practitioner_id)
    if ref is not None and ref.external_id:
        return ref.external_id
    if SyncOperation.PRACTITIONER_LIST not in await _supported(ctx, config):
        return str(practitioner_id)
    from clinicsync.booking.models import Practitioner
    from clinicsync.sync.delivery import match_practitioner

    practitioner = await session.get(Practitioner, practitioner_id)
    listed = await _call(ctx, config, SyncOperation.PRACTITIONER_LIST, {}, provider)
    try:
        match = match_practitioner(listed, practitioner.name if practitioner else "")
    except ClinicSyncError as exc:
        raise PmsFailed(exc, provider=provider) from None
    ref = await accept(
        session, config, RecordType.PRACTITIONER, practitioner_id, str(match["id"]), {"id": match["id"]}
    )
    ref.sync_state = SyncState.CONFIRMED
    return str(match["id"])


def _view(ref: ExternalReference) -> Appointment:
    """The PMS's appointment as our Appointment shape (never added to a session)."""
    snap = ref.snapshot or {}
    local = snap.get("local", {})
    starts = datetime.fromisoformat(snap["starts_at"]).astimezone(UTC)
    ends = datetime.fromisoformat(snap["ends_at"]).astimezone(UTC) if snap.get("ends_at") else starts
    status = snap.get("status") or "pending"
    return Appointment(
        id=ref.record_id,
        organization_id=ref.organization_id,
        patient_id=uuid.UUID(local["patient_id"]),
        practitioner_id=uuid.UUID(local["practitioner_id"]),
        starts_at=starts,
        ends_at=ends,
        status=AppointmentStatus(status),
        booking_source=BookingSource(local.get("booking_source", "api")),
        booking_reference=local["booking_reference"],
        notes=local.get("notes") or "",
        practitioner_name=local.get("practitioner_name", ""),
        practitioner_email=local.get("practitioner_email"),
        cancelled_at=None,
        cancellation_reason=local.get("cancellation_reason"),
        booked_by_user_id=uuid.UUID(local["booked_by_user_id"]) if local.get("booked_by_user_id") else None,
        version=int(local.get("version", 1)),
        created_at=ref.created_at or utcnow(),
        updated_at=ref.updated_at or utcnow(),
    )


async def create_appointment(
    ctx: SyncContext,
    session: AsyncSession,
    principal: Principal,
    config: IntegrationSyncConfig,
    data: AppointmentCreate,
    *,
    idempotency_key: str | None = None,
) -> BookingResult:
    appointments.check_idempotency_key(idempotency_key)
    if idempotency_key is not None:
        await _hold_key(session, principal.organization_id, idempotency_key)
        replay = await appointments.replay_for_key(session, principal, idempotency_key, data)
        if replay is not None:
            return replay
    provider = await provider_name(session, config)
    organization, _zone = await service.organization_zone(session, principal.organization_id)
    patient = await service.patient_in_organization(session, principal, data.patient_id)
    practitioner = await service.get_practitioner(session, principal, data.practitioner_id)
    start = data.start.astimezone(UTC)
    end = (
        data.end.astimezone(UTC)
        if data.end
        else start + timedelta(minutes=organization.default_appointment_minutes)
    )
    patient_external = await _patient_external_id(ctx, session, config, patient, provider)
    practitioner_external = await _practitioner_external_id(ctx, session, config, practitioner.id, provider)
    reference = (
        reference_for_key(principal.organization_id, idempotency_key)
        if idempotency_key is not None
        else new_booking_reference()
    )
    sent = {
        "patient_id": patient_external,
        "practitioner_id": practitioner_external,
        "starts_at": start,
        "ends_at": end,
        "status": data.status.value,
        "note": booking_note({"booking_reference": reference, "notes": data.notes}),
    }
    lookup = {
        "reference": reference,
        "patient_id": patient_external,
        "practitioner_id": practitioner_external,
        "starts_at": start,
    }
    created: list[dict[str, Any]] = []
    if idempotency_key is not None and SyncOperation.APPOINTMENT_FIND in await _supported(ctx, config):
        # An earlier attempt under this key may have reached the PMS and failed after (its answer
        # lost and the look-up too, or our commit): it carries the same reference, so it is adopted.
        created = await _call(ctx, config, SyncOperation.APPOINTMENT_FIND, lookup, provider)
    if not created:
        try:
            created = (
                await canonical.perform(
                    ctx.executor,
                    config.organization_id,
                    config.integration_id,
                    SyncOperation.APPOINTMENT_CREATE,
                    sent,
                )
            ).records
        except IntegrationError as exc:
            if classify(exc) != "unknown":
                raise PmsFailed(exc, provider=provider) from None
            # Sent but unanswered: the PMS may hold it. Adopt it if it does; otherwise it did not happen.
            created = await _call(ctx, config, SyncOperation.APPOINTMENT_FIND, lookup, provider)
            if not created:
                raise PmsFailed(exc, provider=provider) from None
    record = created[0]
    record_id = uuid.uuid4()
    snapshot = refs.json_safe({**sent, **{k: v for k, v in record.items() if v is not None}})
    snapshot["local"] = {
        "patient_id": str(patient.id),
        "practitioner_id": str(practitioner.id),
        "booking_reference": reference,
        "booking_source": data.booking_source.value,
        "notes": data.notes,
        "practitioner_name": practitioner.name,
        "practitioner_email": practitioner.email,
        # Who booked it: a service account may change what it booked (docs/security.md).
        "booked_by_user_id": str(principal.user_id) if principal.user_id else None,
    }
    ref = await accept(session, config, RecordType.APPOINTMENT, record_id, str(record["id"]), snapshot)
    result = AppointmentRead.model_validate(_view(ref))
    if idempotency_key is not None:
        appointments.remember_for_key(session, principal, idempotency_key, data, result)
        await session.flush()
    return BookingResult(result, replayed=False)


def reference_for_key(organization_id: uuid.UUID, key: str) -> str:
    """The booking reference every attempt under one Idempotency-Key sends to the PMS."""
    digest = hashlib.sha256(f"{organization_id}:{key}".encode()).digest()
    return "CS-" + "".join(REFERENCE_ALPHABET[byte % len(REFERENCE_ALPHABET)] for byte in digest[:8])


async def _hold_key(session: AsyncSession, organization_id: uuid.UUID, key: str) -> None:
    """Retries under one key wait for each other, so the PMS is written once (SQLite: the write lock)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"idempotency:{organization_id}:{key}"},
        )


async def owns(session: AsyncSession, config: IntegrationSyncConfig, appointment_id: uuid.UUID) -> bool:
    """Whether this id names an appointment that lives only in the PMS."""
    if await session.get(Appointment, appointment_id) is not None:
        return False
    return (
        await refs.get_ref(session, config.integration_id, RecordType.APPOINTMENT, appointment_id) is not None
    )


async def get_view(
    session: AsyncSession, principal: Principal, appointment_id: uuid.UUID
) -> Appointment | None:
    from sqlalchemy import select

    ref = await session.scalar(
        select(ExternalReference).where(
            ExternalReference.organization_id == principal.organization_id,
            ExternalReference.record_type == RecordType.APPOINTMENT,
            ExternalReference.record_id == appointment_id,
        )
    )
    if ref is None or not (ref.snapshot or {}).get("local"):
        return None
    return _view(ref)


async def _change(
    ctx: SyncContext,
    session: AsyncSession,
    principal: Principal,
    config: IntegrationSyncConfig,
    appointment_id: uuid.UUID,
    operation: SyncOperation,
    payload: dict[str, Any],
    local_changes: dict[str, Any],
    proof: PatientProof | None,
) -> Appointment:
    ref = await refs.get_ref(session, config.integration_id, RecordType.APPOINTMENT, appointment_id)
    if ref is None or ref.organization_id != principal.organization_id or ref.external_id is None:
        raise NotFound(f"appointment {appointment_id} not found")
    # The same reach as a local appointment: a practitioner their own diary, a service account
    # what it booked (or with the patient's proof); anyone else is told it does not exist.
    if not (ref.snapshot or {}).get("local") or not await appointments.may_act_on(
        session, principal, _view(ref), Capability.APPOINTMENTS_CHANGE, proof
    ):
        raise NotFound(f"appointment {appointment_id} not found")
    provider = await provider_name(session, config)
    external_id = ref.external_id
    if await _rebooks(ctx, config, operation, payload):
        records = await _move_by_rebooking(ctx, config, ref, payload, provider)
        external_id = str(records[0]["id"])
    else:
        records = await _call(ctx, config, operation, payload | {"id": ref.external_id}, provider)
    snapshot = dict(ref.snapshot or {})
    if records:
        snapshot.update(refs.json_safe({k: v for k, v in records[0].items() if v is not None and k != "id"}))
    local = dict(snapshot.get("local", {}))
    local.update(local_changes)
    local["version"] = int(local.get("version", 1)) + 1
    snapshot["local"] = local
    await accept(session, config, RecordType.APPOINTMENT, appointment_id, external_id, snapshot)
    return _view(ref)


async def _rebooks(
    ctx: SyncContext, config: IntegrationSyncConfig, operation: SyncOperation, payload: dict[str, Any]
) -> bool:
    """A move on a PMS that cannot change a visit's time (the vet PIMS) but can book and cancel."""
    if operation is not SyncOperation.APPOINTMENT_UPDATE or not ({"starts_at", "ends_at"} & set(payload)):
        return False
    supported = await _supported(ctx, config)
    return (
        SyncOperation.APPOINTMENT_UPDATE not in supported
        and {
            SyncOperation.APPOINTMENT_CREATE,
            SyncOperation.APPOINTMENT_CANCEL,
        }
        <= supported
    )


async def _move_by_rebooking(
    ctx: SyncContext,
    config: IntegrationSyncConfig,
    ref: ExternalReference,
    payload: dict[str, Any],
    provider: str,
) -> list[dict[str, Any]]:
    """Books the new time first, then cancels the old visit: a refused time (a full slot) leaves
    the booking as it was; an old visit that cannot be cancelled has the new one cancelled again,
    and the caller hears why. The booking keeps its reference (carried in the note)."""
    snap = ref.snapshot or {}
    was_start = datetime.fromisoformat(snap["starts_at"]).astimezone(UTC)
    was_end = datetime.fromisoformat(snap["ends_at"]).astimezone(UTC) if snap.get("ends_at") else was_start
    starts = payload.get("starts_at", was_start)
    sent = {
        "patient_id": snap.get("patient_id"),
        "practitioner_id": snap.get("practitioner_id"),
        "starts_at": starts,
        "ends_at": payload.get("ends_at", starts + (was_end - was_start)),
        "status": snap.get("status") or AppointmentStatus.PENDING.value,
        "note": snap.get("note"),
    }
    created = await _call(ctx, config, SyncOperation.APPOINTMENT_CREATE, sent, provider)
    try:
        await _call(ctx, config, SyncOperation.APPOINTMENT_CANCEL, {"id": ref.external_id}, provider)
    except PmsFailed:
        with suppress(PmsFailed):
            await _call(ctx, config, SyncOperation.APPOINTMENT_CANCEL, {"id": created[0]["id"]}, provider)
        raise
    return [{**sent, **{key: value for key, value in created[0].items() if value is not None}}]


async def update_appointment(
    ctx: SyncContext,
    session: AsyncSession,
    principal: Principal,
    config: IntegrationSyncConfig,
    appointment_id: uuid.UUID,
    data: AppointmentUpdate,
) -> Appointment:
    payload: dict[str, Any] = {}
    if data.start is not None:
        payload["starts_at"] = data.start.astimezone(UTC)
    if data.end is not None:
        payload["ends_at"] = data.end.astimezone(UTC)
    if data.status is not None:
        payload["status"] = data.status.value
    local: dict[str, Any] = {}
    if data.notes is not None:
        local["notes"] = data.notes
    operation = SyncOperation.APPOINTMENT_UPDATE
    if data.status == AppointmentStatus.CANCELLED:
        operation, payload = SyncOperation.APPOINTMENT_CANCEL, {}
    return await _change(
        ctx, session, principal, config, appointment_id, operation, payload, local, data.proof
    )


async def cancel_appointment(
    ctx: SyncContext,
    session: AsyncSession,
    principal: Principal,
    config: IntegrationSyncConfig,
    appointment_id: uuid.UUID,
    data: AppointmentCancel,
) -> Appointment:
    return await _change(
        ctx,
        session,
        principal,
        config,
        appointment_id,
        SyncOperation.APPOINTMENT_CANCEL,
        {"reason": data.reason or "cancelled"},
        {"cancellation_reason": data.reason or "cancelled"},
        data.proof,
    )


async def busy_times(
    ctx: SyncContext,
    session: AsyncSession,
    config: IntegrationSyncConfig,
    starts_from: datetime,
    starts_to: datetime,
) -> dict[uuid.UUID, list[tuple[datetime, datetime]]]:
    """The PMS's live appointments in a window, by our practitioner id: its diary is the truth here."""
    from sqlalchemy import select

    provider = await provider_name(session, config)
    records = await _call(
        ctx,
        config,
        SyncOperation.APPOINTMENT_LIST_CHANGED,
        {"starts_from": starts_from, "starts_to": starts_to},
        provider,
    )
    links = {
        ref.external_id: ref.record_id
        for ref in await session.scalars(
            select(ExternalReference).where(
                ExternalReference.integration_id == config.integration_id,
                ExternalReference.record_type == RecordType.PRACTITIONER,
            )
        )
    }
    busy: dict[uuid.UUID, list[tuple[datetime, datetime]]] = {}
    for record in records:
        if record.get("status") not in ("pending", "confirmed") or record.get("starts_at") is None:
            continue
        local = links.get(str(record.get("practitioner_id")))
        if local is None:
            try:  # a calendar carries our own practitioner id
                local = uuid.UUID(str(record.get("practitioner_id")))
            except ValueError:
                continue
        starts = record["starts_at"]
        ends = record.get("ends_at") or starts
        busy.setdefault(local, []).append((starts, ends))
    return busy
