"""Appointment rules: booking, rescheduling, status changes and cancellation.

The database has the last word on double booking (an exclusion constraint on PostgreSQL,
a trigger inside an immediate transaction on SQLite). The checks here run first only to
give the caller a precise message in the common case; a race that slips past them is
still stopped by the database and reported the same way.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from clinicsync.booking import service
from clinicsync.booking import slots as slot_math
from clinicsync.booking.models import (
    ACTIVE_STATUSES,
    Appointment,
    AppointmentStatus,
    BookingSource,
    IdempotencyRecord,
    Patient,
    Practitioner,
)
from clinicsync.booking.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentRead,
    AppointmentUpdate,
    PatientProof,
)
from clinicsync.db.base import utcnow
from clinicsync.errors import Conflict, NotFound, ValidationFailed
from clinicsync.tenancy import permissions
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.permissions import Capability, Scope
from clinicsync.tenancy.principal import Principal

REFERENCE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O or 1/I: references are read aloud on calls
OVERLAP_MARKERS = ("appointment_overlap", "appointments_no_overlap", "23P01")

ALLOWED_TRANSITIONS: dict[AppointmentStatus, frozenset[AppointmentStatus]] = {
    AppointmentStatus.PENDING: frozenset({AppointmentStatus.CONFIRMED, AppointmentStatus.CANCELLED}),
    AppointmentStatus.CONFIRMED: frozenset(
        {AppointmentStatus.COMPLETED, AppointmentStatus.NO_SHOW, AppointmentStatus.CANCELLED}
    ),
    AppointmentStatus.CANCELLED: frozenset(),
    AppointmentStatus.COMPLETED: frozenset(),
    AppointmentStatus.NO_SHOW: frozenset(),
}


@dataclass(frozen=True, slots=True)
class BookingResult:
    appointment: AppointmentRead
    replayed: bool


def new_booking_reference() -> str:
    return "CS-" + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))


def _is_overlap(error: IntegrityError) -> bool:
    text = f"{error.orig!r} {getattr(error.orig, 'sqlstate', '')}"
    return any(marker in text for marker in OVERLAP_MARKERS)


def _visible(
    query: Select[Any], principal: Principal, capability: Capability = Capability.APPOINTMENTS_READ
) -> Select[Any]:
    """Narrows an appointment query to what ``principal`` may see or change under ``capability``."""
    query = query.where(Appointment.organization_id == principal.organization_id)
    if permissions.scope_of(principal, capability) == Scope.ALL:
        return query
    if principal.role == Role.PRACTITIONER:
        # A practitioner's portal shows their own diary only.
        return query.join(Practitioner, Practitioner.id == Appointment.practitioner_id).where(
            Practitioner.user_id == principal.user_id
        )
    return query.where(Appointment.booked_by_user_id == principal.user_id)


def _proven(appointment: Appointment, patient: Patient, proof: PatientProof) -> bool:
    if appointment.booking_reference != proof.reference.strip().upper():
        return False
    phone_matches = proof.phone is not None and patient.phone == proof.phone
    birth_matches = proof.date_of_birth is not None and patient.date_of_birth == proof.date_of_birth
    return phone_matches or birth_matches


async def get_appointment(
    session: AsyncSession,
    principal: Principal,
    appointment_id: uuid.UUID,
    capability: Capability = Capability.APPOINTMENTS_READ,
    proof: PatientProof | None = None,
) -> Appointment:
    """The appointment if the caller may see it; a service account that did not book it may act
    on it when the patient proves it is theirs (booking reference plus phone or date of birth)."""
    appointment = await session.scalar(
        _visible(select(Appointment), principal, capability).where(Appointment.id == appointment_id)
    )
    if appointment is None and proof is not None:
        appointment = await session.scalar(
            select(Appointment).where(
                Appointment.id == appointment_id, Appointment.organization_id == principal.organization_id
            )
        )
        if appointment is not None:
            patient = await session.get(Patient, appointment.patient_id)
            if patient is None or not _proven(appointment, patient, proof):
                appointment = None
    if appointment is None:
        raise NotFound(f"appointment {appointment_id} not found")
    return appointment


async def get_by_reference(session: AsyncSession, principal: Principal, reference: str) -> Appointment:
    appointment: Appointment | None = await session.scalar(
        _visible(select(Appointment), principal).where(Appointment.booking_reference == reference.upper())
    )
    if appointment is None:
        raise NotFound(f"no appointment with booking reference {reference}")
    return appointment


async def by_reference_for_proof(session: AsyncSession, principal: Principal, reference: str) -> Appointment:
    """Any appointment of the organization by reference, for a caller that checks the patient's
    proof before using it (``find_by_proof`` does; so does the agents' tool layer)."""
    permissions.check(principal, Capability.APPOINTMENTS_FIND)
    appointment: Appointment | None = await session.scalar(
        select(Appointment).where(
            Appointment.organization_id == principal.organization_id,
            Appointment.booking_reference == reference.strip().upper(),
        )
    )
    if appointment is None:
        raise NotFound(f"no appointment with booking reference {reference}")
    return appointment


async def find_by_proof(session: AsyncSession, principal: Principal, proof: PatientProof) -> Appointment:
    """The appointment a patient proves is theirs: its reference plus their phone or date of birth."""
    permissions.check(principal, Capability.APPOINTMENTS_FIND)
    row = (
        await session.execute(
            select(Appointment, Patient)
            .join(Patient, Patient.id == Appointment.patient_id)
            .where(
                Appointment.organization_id == principal.organization_id,
                Appointment.booking_reference == proof.reference.strip().upper(),
            )
        )
    ).first()
    if row is None or not _proven(row[0], row[1], proof):
        # One answer for a wrong reference and a wrong proof, so neither can be probed alone.
        raise NotFound("no appointment matches that booking reference and proof")
    appointment: Appointment = row[0]
    return appointment


async def list_appointments(
    session: AsyncSession,
    principal: Principal,
    *,
    practitioner_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    statuses: list[AppointmentStatus] | None = None,
    booking_source: BookingSource | None = None,
    starts_from: datetime | None = None,
    starts_before: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Appointment], int]:
    if starts_from and starts_before and starts_before <= starts_from:
        raise ValidationFailed("to", "must be after from")
    query = _visible(select(Appointment), principal, Capability.APPOINTMENTS_LIST)
    if practitioner_id:
        query = query.where(Appointment.practitioner_id == practitioner_id)
    if patient_id:
        query = query.where(Appointment.patient_id == patient_id)
    if statuses:
        query = query.where(Appointment.status.in_(statuses))
    if booking_source:
        query = query.where(Appointment.booking_source == booking_source)
    if starts_from:
        query = query.where(Appointment.starts_at >= starts_from)
    if starts_before:
        query = query.where(Appointment.starts_at < starts_before)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = query.order_by(Appointment.starts_at, Appointment.id).limit(limit).offset(offset)
    return list(await session.scalars(page)), total


async def _conflicting(
    session: AsyncSession,
    organization_id: uuid.UUID,
    practitioner_id: uuid.UUID,
    start: datetime,
    end: datetime,
    exclude: uuid.UUID | None = None,
) -> Appointment | None:
    query = select(Appointment).where(
        Appointment.organization_id == organization_id,
        Appointment.practitioner_id == practitioner_id,
        Appointment.status.in_(ACTIVE_STATUSES),
        Appointment.starts_at < end,
        Appointment.ends_at > start,
    )
    if exclude is not None:
        query = query.where(Appointment.id != exclude)
    return await session.scalar(query.limit(1))


def _conflict_error(zone: ZoneInfo, start: datetime | None, end: datetime | None) -> Conflict:
    if start is None or end is None:
        return Conflict("the practitioner is already booked at that time", code="slot_taken")
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    window = f"{local_start:%Y-%m-%d %H:%M}-{local_end:%H:%M} {local_start.tzname()}"
    return Conflict(
        f"the practitioner is already booked {window}",
        code="slot_taken",
        details={"conflicting_start": start.isoformat(), "conflicting_end": end.isoformat()},
    )


async def _check_bookable(
    session: AsyncSession,
    principal: Principal,
    practitioner: Practitioner,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    min_notice_minutes: int,
) -> None:
    now = utcnow()
    if start < now:
        raise ValidationFailed("start", "is in the past")
    if not principal.is_admin and start < now + timedelta(minutes=min_notice_minutes):
        raise ValidationFailed("start", f"bookings need at least {min_notice_minutes} minutes' notice")
    if not practitioner.is_active:
        raise ValidationFailed("practitioner_id", "the practitioner is not taking bookings")
    day = start.astimezone(zone).date()
    weekly, overrides = await service.schedule_of(
        session, principal.organization_id, [practitioner.id], day, day
    )
    if not slot_math.fits_availability(
        start=start, end=end, zone=zone, weekly=weekly[practitioner.id], overrides=overrides[practitioner.id]
    ):
        local = start.astimezone(zone)
        raise ValidationFailed(
            "start", f"{local:%Y-%m-%d %H:%M} ({zone.key}) is outside the practitioner's available hours"
        )


def _request_hash(data: AppointmentCreate) -> str:
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _replay(
    session: AsyncSession, principal: Principal, key: str, request_hash: str
) -> BookingResult | None:
    record = await session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.organization_id == principal.organization_id, IdempotencyRecord.key == key
        )
    )
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise ValidationFailed("Idempotency-Key", "was already used with different request parameters")
    return BookingResult(AppointmentRead.model_validate_json(record.response_body), replayed=True)


async def _claim_idempotency_key(
    session: AsyncSession, principal: Principal, key: str, request_hash: str
) -> IdempotencyRecord | BookingResult:
    """Writes the key before anything else, or returns the stored result of its first use.

    Claiming first means a concurrent retry with the same key waits on the key's unique
    index (PostgreSQL) or on the write lock (SQLite) and then replays, instead of racing
    the first request for the slot and losing with a misleading 409. A request that fails
    rolls its claim back with it, so failures are not remembered.
    """
    if not 1 <= len(key) <= 255:
        raise ValidationFailed("Idempotency-Key", "must be 1 to 255 characters")
    replay = await _replay(session, principal, key, request_hash)
    if replay is not None:
        return replay
    record = IdempotencyRecord(
        organization_id=principal.organization_id,
        key=key,
        request_hash=request_hash,
        response_status=201,
        response_body="{}",
        created_at=utcnow(),
    )
    session.add(record)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        replay = await _replay(session, principal, key, request_hash)
        if replay is None:
            raise Conflict(
                "Idempotency-Key: a request with this key is still in progress; retry shortly"
            ) from None
        return replay
    return record


async def create_appointment(
    session: AsyncSession,
    principal: Principal,
    data: AppointmentCreate,
    *,
    idempotency_key: str | None = None,
) -> BookingResult:
    request_hash = _request_hash(data)
    record: IdempotencyRecord | None = None
    if idempotency_key is not None:
        claim = await _claim_idempotency_key(session, principal, idempotency_key, request_hash)
        if isinstance(claim, BookingResult):
            return claim
        record = claim
    permissions.check(principal, Capability.APPOINTMENTS_BOOK)
    organization, zone = await service.organization_zone(session, principal.organization_id)
    await service.patient_in_organization(session, principal, data.patient_id)
    try:
        practitioner = await service.get_practitioner(session, principal, data.practitioner_id)
    except NotFound:
        raise ValidationFailed("practitioner_id", f"practitioner {data.practitioner_id} not found") from None
    start = data.start.astimezone(ZoneInfo("UTC"))
    end = (
        data.end.astimezone(ZoneInfo("UTC"))
        if data.end
        else start + timedelta(minutes=organization.default_appointment_minutes)
    )
    await _check_bookable(session, principal, practitioner, start, end, zone, organization.min_notice_minutes)
    existing = await _conflicting(session, organization.id, practitioner.id, start, end)
    if existing is not None:
        raise _conflict_error(zone, existing.starts_at, existing.ends_at)

    appointment = Appointment(
        organization_id=organization.id,
        patient_id=data.patient_id,
        practitioner_id=practitioner.id,
        starts_at=start,
        ends_at=end,
        status=data.status,
        booking_source=data.booking_source,
        booking_reference=new_booking_reference(),
        notes=data.notes,
        practitioner_name=practitioner.name,
        practitioner_email=practitioner.email,
        booked_by_user_id=principal.user_id,
    )
    session.add(appointment)
    # Plain ids survive the rollback below; ORM attributes would be expired by it.
    organization_id, practitioner_id = organization.id, practitioner.id
    try:
        await session.flush()
    except IntegrityError as error:
        await session.rollback()
        if _is_overlap(error):
            winner = await _conflicting(session, organization_id, practitioner_id, start, end)
            raise _conflict_error(
                zone, winner.starts_at if winner else None, winner.ends_at if winner else None
            ) from None
        raise
    await session.refresh(appointment)
    result = AppointmentRead.model_validate(appointment)
    if record is not None:
        record.response_body = result.model_dump_json()
        await session.flush()
    return BookingResult(result, replayed=False)


def _check_version(appointment: Appointment, expected: int | None) -> None:
    if expected is not None and expected != appointment.version:
        raise Conflict(
            f"version: the appointment changed since you read it (you sent version {expected}, "
            f"it is now {appointment.version}); reload and try again",
            code="stale_version",
            details={"current_version": appointment.version},
        )


async def update_appointment(
    session: AsyncSession,
    principal: Principal,
    appointment_id: uuid.UUID,
    data: AppointmentUpdate,
    *,
    if_match: int | None = None,
) -> Appointment:
    appointment = await get_appointment(
        session, principal, appointment_id, Capability.APPOINTMENTS_CHANGE, data.proof
    )
    _check_version(appointment, data.version if data.version is not None else if_match)
    organization, zone = await service.organization_zone(session, principal.organization_id)

    if data.status is not None and data.status != appointment.status:
        if data.status not in ALLOWED_TRANSITIONS[appointment.status]:
            raise ValidationFailed(
                "status",
                f"cannot change an appointment from {appointment.status.value} to {data.status.value}",
            )
        appointment.status = data.status

    moving = data.start is not None or data.end is not None or data.practitioner_id is not None
    if moving:
        if appointment.status not in ACTIVE_STATUSES:
            raise ValidationFailed("start", f"a {appointment.status.value} appointment cannot be rescheduled")
        length = appointment.ends_at - appointment.starts_at
        start = data.start.astimezone(ZoneInfo("UTC")) if data.start else appointment.starts_at
        end = data.end.astimezone(ZoneInfo("UTC")) if data.end else start + length
        if end <= start:
            raise ValidationFailed("end", "must be after start")
        practitioner_id = data.practitioner_id or appointment.practitioner_id
        try:
            practitioner = await service.get_practitioner(session, principal, practitioner_id)
        except NotFound:
            raise ValidationFailed("practitioner_id", f"practitioner {practitioner_id} not found") from None
        await _check_bookable(
            session, principal, practitioner, start, end, zone, organization.min_notice_minutes
        )
        clash = await _conflicting(
            session, organization.id, practitioner.id, start, end, exclude=appointment.id
        )
        if clash is not None:
            raise _conflict_error(zone, clash.starts_at, clash.ends_at)
        appointment.starts_at, appointment.ends_at = start, end
        appointment.practitioner_id = practitioner.id
        appointment.practitioner_name = practitioner.name
        appointment.practitioner_email = practitioner.email
    if data.notes is not None:
        appointment.notes = data.notes
    await _flush_guarded(session, appointment, zone)
    return appointment


async def cancel_appointment(
    session: AsyncSession,
    principal: Principal,
    appointment_id: uuid.UUID,
    data: AppointmentCancel,
    *,
    if_match: int | None = None,
) -> Appointment:
    appointment = await get_appointment(
        session, principal, appointment_id, Capability.APPOINTMENTS_CHANGE, data.proof
    )
    _check_version(appointment, data.version if data.version is not None else if_match)
    if appointment.status == AppointmentStatus.CANCELLED:
        return appointment  # cancelling twice is a no-op, so a retried cancel is safe
    if AppointmentStatus.CANCELLED not in ALLOWED_TRANSITIONS[appointment.status]:
        raise ValidationFailed("status", f"a {appointment.status.value} appointment cannot be cancelled")
    appointment.status = AppointmentStatus.CANCELLED
    appointment.cancelled_at = utcnow()
    appointment.cancellation_reason = data.reason or "cancelled"
    _, zone = await service.organization_zone(session, principal.organization_id)
    await _flush_guarded(session, appointment, zone)
    return appointment


async def _flush_guarded(session: AsyncSession, appointment: Appointment, zone: ZoneInfo) -> None:
    try:
        await session.flush()
    except StaleDataError:
        raise Conflict(
            "version: the appointment was changed by someone else at the same time; reload and try again",
            code="stale_version",
        ) from None
    except IntegrityError as error:
        if _is_overlap(error):
            raise _conflict_error(zone, None, None) from None
        raise
    await session.refresh(appointment)
