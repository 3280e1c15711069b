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
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, bindparam, func, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from clinicsync.booking import appointment_types, search, service
from clinicsync.booking import slots as slot_math
from clinicsync.booking.models import (
    ACTIVE_CONDITION,
    ACTIVE_STATUSES,
    MAX_BLOCK,
    Appointment,
    AppointmentStatus,
    AppointmentType,
    BookingSource,
    IdempotencyRecord,
    Patient,
    Practitioner,
)
from clinicsync.booking.paging import decode_cursor, encode_cursor
from clinicsync.booking.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentRead,
    AppointmentUpdate,
    PatientProof,
)
from clinicsync.db.base import utcnow
from clinicsync.db.engine import begin_writes
from clinicsync.errors import ClinicSyncError, Conflict, NotFound, ValidationFailed
from clinicsync.tenancy import permissions
from clinicsync.tenancy.models import Organization, Role
from clinicsync.tenancy.permissions import Capability, Scope
from clinicsync.tenancy.principal import Principal

REFERENCE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O or 1/I: references are read aloud on calls
OVERLAP_MARKERS = ("appointment_overlap", "appointments_no_overlap", "23P01")
MAX_PAGE = 500

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
    # The row just written, for callers that go on writing in the same transaction (the
    # SyncManager's outbox) without reading it back; None for a replay.
    record: Appointment | None = None


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


async def may_act_on(
    session: AsyncSession,
    principal: Principal,
    appointment: Appointment,
    capability: Capability,
    proof: PatientProof | None = None,
) -> bool:
    """``_visible`` and ``get_appointment``'s proof rule for an appointment held outside the
    appointments table (an external-only clinic's, kept on its PMS reference)."""
    if appointment.organization_id != principal.organization_id:
        return False
    if permissions.scope_of(principal, capability) == Scope.ALL:
        return True
    if principal.role == Role.PRACTITIONER:
        practitioner = await session.get(Practitioner, appointment.practitioner_id)
        if practitioner is not None and practitioner.user_id == principal.user_id:
            return True
    elif appointment.booked_by_user_id is not None and appointment.booked_by_user_id == principal.user_id:
        return True
    if proof is None:
        return False
    patient = await session.get(Patient, appointment.patient_id)
    return patient is not None and _proven(appointment, patient, proof)


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
    cursor: str | None = None,
) -> tuple[list[Appointment], int | None, str | None]:
    """A page in start order, the total (offset paging only) and the next page's cursor.

    A cursor pages by (start, id), so a diary of any length pages at the same cost per page;
    offset paging counts the matches for the total, as before.
    """
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
    total: int | None = None
    if cursor is not None:
        if offset:
            raise ValidationFailed("offset", "page with cursor or with offset, not both")
        raw_start, raw_id = decode_cursor(cursor, 2)
        try:
            after_start, after_id = datetime.fromisoformat(raw_start), uuid.UUID(raw_id)
        except ValueError:
            raise ValidationFailed("cursor", "is not a cursor this list returned") from None
        query = query.where(
            (Appointment.starts_at > after_start)
            | ((Appointment.starts_at == after_start) & (Appointment.id > after_id))
        )
    else:
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = query.order_by(Appointment.starts_at, Appointment.id).limit(limit + 1).offset(offset)
    rows = list(await session.scalars(page))
    if len(rows) <= limit:
        return rows, total, None
    last = rows[limit - 1]
    return rows[:limit], total, encode_cursor(last.starts_at.isoformat(), last.id)


async def _conflicting(
    session: AsyncSession,
    organization_id: uuid.UUID,
    practitioner_id: uuid.UUID,
    blocked_from: datetime,
    blocked_until: datetime,
    exclude: uuid.UUID | None = None,
) -> Appointment | None:
    """The active appointment whose kept-clear time meets this one's, read from a range of the
    active-appointments index bounded on both sides (MAX_BLOCK back, the new end forward)."""
    parameters = {
        "organization_id": organization_id,
        "practitioner_id": practitioner_id,
        "earliest": blocked_from - MAX_BLOCK,
        "blocked_from": blocked_from,
        "blocked_until": blocked_until,
    }
    if exclude is None:
        return await session.scalar(_CLASH, parameters)
    return await session.scalar(_CLASH_EXCEPT, {**parameters, "exclude": exclude})


_CLASH_WHERE = (
    Appointment.organization_id == bindparam("organization_id"),
    Appointment.practitioner_id == bindparam("practitioner_id"),
    ACTIVE_CONDITION,
    Appointment.blocked_from > bindparam("earliest"),
    Appointment.blocked_from < bindparam("blocked_until"),
    Appointment.blocked_until > bindparam("blocked_from"),
)
# Built once (every booking and reschedule runs one): a prebuilt statement's cache key is
# computed once rather than per request.
_CLASH = select(Appointment).where(*_CLASH_WHERE).order_by(Appointment.blocked_from).limit(1)
_CLASH_EXCEPT = (
    select(Appointment)
    .where(*_CLASH_WHERE, Appointment.id != bindparam("exclude"))
    .order_by(Appointment.blocked_from)
    .limit(1)
)


def _conflict_error(zone: ZoneInfo, placed: Placement, clash: Appointment | None) -> Conflict:
    if clash is None:
        return Conflict("the practitioner is already booked at that time", code="slot_taken")
    local_start, local_end = clash.starts_at.astimezone(zone), clash.ends_at.astimezone(zone)
    window = f"{local_start:%Y-%m-%d %H:%M}-{local_end:%H:%M} {local_start.tzname()}"
    details = {"conflicting_start": clash.starts_at.isoformat(), "conflicting_end": clash.ends_at.isoformat()}
    if clash.starts_at < placed.end and placed.start < clash.ends_at:
        return Conflict(f"the practitioner is already booked {window}", code="slot_taken", details=details)
    # Only the buffers meet: say which gap is too short, since the times themselves are free.
    if clash.ends_at <= placed.start:
        gap = clash.buffer_after_minutes + placed.buffer_before_minutes
        needed = f"{gap} minutes clear after the appointment {window}"
    else:
        gap = placed.buffer_after_minutes + clash.buffer_before_minutes
        needed = f"{gap} minutes clear before the appointment {window}"
    return Conflict(
        f"inside the buffers: the practitioner needs {needed}",
        code="slot_taken",
        details={**details, "reason": "buffer"},
    )


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a booking would sit: its times and the buffers it keeps clear around them."""

    start: datetime
    end: datetime
    buffer_before_minutes: int = 0
    buffer_after_minutes: int = 0

    @property
    def blocked_from(self) -> datetime:
        return self.start - timedelta(minutes=self.buffer_before_minutes)

    @property
    def blocked_until(self) -> datetime:
        return self.end + timedelta(minutes=self.buffer_after_minutes)


async def check_bookable(
    session: AsyncSession,
    principal: Principal,
    organization: Organization,
    practitioner: Practitioner,
    placed: Placement,
    *,
    override: bool = False,
    now: datetime | None = None,
    schedule: tuple[list[slot_math.WeeklyInterval], list[slot_math.DateOverride]] | None = None,
) -> None:
    """Refuses, with the reason, a time slot search would not offer this caller: in the past,
    outside hours, off the clinic's grid, inside minimum notice or past the horizon. The last
    three give way to an admin's explicit override. Clashes (buffers included) are left to the
    database constraint, which has the last word anyway."""
    now = now or utcnow()
    zone = ZoneInfo(organization.time_zone)
    start, end = placed.start, placed.end
    if start < now:
        raise ValidationFailed("start", "is in the past")
    if not practitioner.is_active:
        raise ValidationFailed("practitioner_id", "the practitioner is not taking bookings")
    if placed.blocked_until - placed.blocked_from > MAX_BLOCK:
        raise ValidationFailed("end", "an appointment may last at most 24 hours, buffers included")
    local = start.astimezone(zone)
    day = local.date()
    if schedule is None:
        schedule = await service.day_schedule(session, organization.id, practitioner.id, day)
    weekly, overrides = schedule
    if not slot_math.fits_availability(start=start, end=end, zone=zone, weekly=weekly, overrides=overrides):
        raise ValidationFailed(
            "start",
            f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({zone.key}) "
            "is outside the practitioner's available hours",
        )
    if override:
        return
    interval = timedelta(minutes=organization.slot_interval_minutes)
    if not slot_math.on_grid(
        start, day=day, zone=zone, weekly=weekly, overrides=overrides, duration=end - start, interval=interval
    ):
        # Only a refusal builds the whole day's grid, for the nearest time to suggest.
        grid = slot_math.grid_starts(
            day=day, zone=zone, weekly=weekly, overrides=overrides, duration=end - start, interval=interval
        )
        nearest = min(grid, key=lambda candidate: abs(candidate - start), default=None)
        hint = f"; the nearest is {search.label(nearest.astimezone(zone))}" if nearest else ""
        raise ValidationFailed(
            "start",
            f"{local:%H:%M:%S} is not on the clinic's {organization.slot_interval_minutes}-minute slot grid"
            f"{hint} (owners and admins may send override=true)",
        )
    earliest, latest = search.booking_window(organization, now)
    if start < earliest:
        raise ValidationFailed(
            "start",
            f"bookings need at least {organization.min_notice_minutes} minutes' notice "
            "(owners and admins may send override=true)",
        )
    if start > latest:
        raise ValidationFailed(
            "start",
            f"bookings open at most {organization.booking_horizon_days} days ahead in the clinic's calendar "
            "(owners and admins may send override=true)",
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


def check_idempotency_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= 255:
        raise ValidationFailed("Idempotency-Key", "must be 1 to 255 characters")


async def replay_for_key(
    session: AsyncSession, principal: Principal, key: str, data: AppointmentCreate
) -> BookingResult | None:
    """The first result booked under ``key``, for a booking path that writes elsewhere first."""
    return await _replay(session, principal, key, _request_hash(data))


def remember_for_key(
    session: AsyncSession, principal: Principal, key: str, data: AppointmentCreate, result: AppointmentRead
) -> None:
    """Stores ``result`` under ``key`` in the caller's transaction (replayed to later retries)."""
    session.add(
        IdempotencyRecord(
            organization_id=principal.organization_id,
            key=key,
            request_hash=_request_hash(data),
            response_status=201,
            response_body=result.model_dump_json(),
            created_at=utcnow(),
        )
    )


# The reads a booking needs, in one round trip (built once, so its cache key is computed once):
# the practitioner, whether the patient is this clinic's, and the day's hours and overrides (one
# row each, NULLs when there are none). Without an appointment type the placement is known up
# front, and the clash check rides along as the id of the first clash.
_SCHEDULE = service.DAY_SCHEDULE.subquery("schedule")
_PARTIES_COLUMNS = (
    Practitioner,
    select(Patient.id)
    .where(Patient.id == bindparam("patient_id"), Patient.organization_id == bindparam("organization_id"))
    .exists()
    .label("patient_known"),
    _SCHEDULE.c.weekly,
    _SCHEDULE.c.start_time,
    _SCHEDULE.c.end_time,
    _SCHEDULE.c.is_available,
)
_PARTIES_WHERE = (
    Practitioner.id == bindparam("practitioner_id"),
    Practitioner.organization_id == bindparam("organization_id"),
    Practitioner.deleted_at.is_(None),
)
_PARTIES = select(*_PARTIES_COLUMNS).outerjoin(_SCHEDULE, true()).where(*_PARTIES_WHERE)
_PARTIES_AND_CLASH = (
    select(
        *_PARTIES_COLUMNS,
        select(Appointment.id)
        .where(*_CLASH_WHERE)
        .order_by(Appointment.blocked_from)
        .limit(1)
        .scalar_subquery()
        .label("clash_id"),
    )
    .outerjoin(_SCHEDULE, true())
    .where(*_PARTIES_WHERE)
)


@dataclass(frozen=True, slots=True)
class _Parties:
    practitioner: Practitioner
    schedule: tuple[list[slot_math.WeeklyInterval], list[slot_math.DateOverride]]
    clash_id: uuid.UUID | None  # read only when the placement was given


async def _booking_parties(
    session: AsyncSession,
    principal: Principal,
    data: AppointmentCreate,
    zone: ZoneInfo,
    placed: Placement | None,
) -> _Parties:
    """The practitioner, checking in the same round trip that the patient is this clinic's, with
    the booking day's hours and, given the placement, the first clash."""
    day = data.start.astimezone(zone).date()
    parameters: dict[str, Any] = {
        "practitioner_id": data.practitioner_id,
        "patient_id": data.patient_id,
        "organization_id": principal.organization_id,
        "weekday": day.weekday(),
        "day": day,
    }
    if placed is not None:
        parameters["earliest"] = placed.blocked_from - MAX_BLOCK
        parameters["blocked_from"] = placed.blocked_from
        parameters["blocked_until"] = placed.blocked_until
    rows = list((await session.execute(_PARTIES if placed is None else _PARTIES_AND_CLASH, parameters)).all())
    if not rows:
        raise ValidationFailed("practitioner_id", f"practitioner {data.practitioner_id} not found")
    if not rows[0].patient_known:
        raise ValidationFailed("patient_id", f"patient {data.patient_id} not found")
    schedule = service.schedule_from_rows(
        day, ((row.weekly, row.start_time, row.end_time, row.is_available) for row in rows)
    )
    clash_id = rows[0].clash_id if placed is not None else None
    return _Parties(rows[0][0], schedule, clash_id)


async def create_appointment(
    session: AsyncSession,
    principal: Principal,
    data: AppointmentCreate,
    *,
    idempotency_key: str | None = None,
) -> BookingResult:
    """Books an appointment, or replays the first result of a request with the same Idempotency-Key.

    The key is looked up only when the booking cannot go ahead: a retry of a booking that
    succeeded meets its own appointment (or its key's unique index) and replays from there, so
    the common first attempt costs no extra round trip. The key's record is written in the
    same transaction as the appointment, so a failed booking is never remembered.
    """
    check_idempotency_key(idempotency_key)
    # Only a keyed request is remembered, so only a keyed request needs its fingerprint.
    request_hash = _request_hash(data) if idempotency_key is not None else ""
    try:
        return await _book(session, principal, data, request_hash, idempotency_key)
    except ClinicSyncError:
        if idempotency_key is None:
            raise
        replay = await _replay(session, principal, idempotency_key, request_hash)
        if replay is None:
            raise
        return replay


async def _book(
    session: AsyncSession,
    principal: Principal,
    data: AppointmentCreate,
    request_hash: str,
    idempotency_key: str | None,
) -> BookingResult:
    permissions.check(principal, Capability.APPOINTMENTS_BOOK)
    search.check_override(principal, data.override)
    organization, zone = await service.organization_zone(session, principal.organization_id)
    appointment_type: AppointmentType | None = None
    if data.appointment_type_id is None:
        # The placement is known before any read, so the clash check joins the parties' round trip.
        placed = _placement(data.start, data.end, organization, None)
        parties = await _booking_parties(session, principal, data, zone, placed)
        practitioner = parties.practitioner
    else:
        parties = await _booking_parties(session, principal, data, zone, None)
        practitioner = parties.practitioner
        appointment_type = await appointment_types.bookable_type(
            session, principal, data.appointment_type_id, practitioner.id
        )
        placed = _placement(data.start, data.end, organization, appointment_type)
    now = utcnow()
    await check_bookable(
        session,
        principal,
        organization,
        practitioner,
        placed,
        override=data.override,
        now=now,
        schedule=parties.schedule,
    )
    # One bounded index read names the clash precisely, and spares callers that go on using the
    # session after a refusal the rollback a refused insert needs. The database still decides
    # the races that slip past it.
    if appointment_type is not None or parties.clash_id is not None:
        clash = await _conflicting(
            session, organization.id, practitioner.id, placed.blocked_from, placed.blocked_until
        )
        if clash is not None:
            raise _conflict_error(zone, placed, clash)

    await begin_writes(session)
    appointment = Appointment(
        id=uuid.uuid4(),
        organization_id=organization.id,
        patient_id=data.patient_id,
        practitioner_id=practitioner.id,
        starts_at=placed.start,
        ends_at=placed.end,
        appointment_type_id=appointment_type.id if appointment_type else None,
        buffer_before_minutes=placed.buffer_before_minutes,
        buffer_after_minutes=placed.buffer_after_minutes,
        status=data.status,
        booking_source=data.booking_source,
        booking_reference=new_booking_reference(),
        notes=data.notes,
        practitioner_name=practitioner.name,
        practitioner_email=practitioner.email,
        created_at=now,
        updated_at=now,
        booked_by_user_id=principal.user_id,
    )
    session.add(appointment)
    # Plain values survive the rollback below; ORM attributes would be expired by it.
    organization_id, practitioner_id = organization.id, practitioner.id
    try:
        await session.flush()
        # Every column was set above, so the response needs no read-back from the database.
        result = AppointmentRead.model_validate(appointment)
        if idempotency_key is not None:
            session.add(
                IdempotencyRecord(
                    organization_id=organization_id,
                    key=idempotency_key,
                    request_hash=request_hash,
                    response_status=201,
                    response_body=result.model_dump_json(),
                    created_at=now,
                )
            )
            await session.flush()
    except IntegrityError as error:
        await session.rollback()
        if _is_overlap(error):
            clash = await _conflicting(
                session, organization_id, practitioner_id, placed.blocked_from, placed.blocked_until
            )
            raise _conflict_error(zone, placed, clash) from None
        if idempotency_key is not None:
            raise Conflict(
                "Idempotency-Key: a request with this key is still in progress; retry shortly"
            ) from None
        raise
    return BookingResult(result, replayed=False, record=appointment)


def _placement(
    start: datetime,
    end: datetime | None,
    organization: Organization,
    appointment_type: AppointmentType | None,
) -> Placement:
    start = start.astimezone(UTC)
    if appointment_type is not None:
        length = timedelta(minutes=appointment_type.duration_minutes)
        if end is not None and end.astimezone(UTC) - start != length:
            raise ValidationFailed(
                "end",
                f"{appointment_type.name} lasts {appointment_type.duration_minutes} minutes; leave end out",
            )
        return Placement(
            start,
            start + length,
            appointment_type.buffer_before_minutes,
            appointment_type.buffer_after_minutes,
        )
    if end is None:
        return Placement(start, start + timedelta(minutes=organization.default_appointment_minutes))
    return Placement(start, end.astimezone(UTC))


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
    """Reschedules, changes status or notes. Every check reads first; the writes come last, so on
    SQLite the write lock is held only for them."""
    search.check_override(principal, data.override)
    appointment = await get_appointment(
        session, principal, appointment_id, Capability.APPOINTMENTS_CHANGE, data.proof
    )
    _check_version(appointment, data.version if data.version is not None else if_match)
    organization, zone = await service.organization_zone(session, principal.organization_id)
    now = utcnow()

    status = appointment.status
    if data.status is not None and data.status != appointment.status:
        if data.status not in ALLOWED_TRANSITIONS[appointment.status]:
            raise ValidationFailed(
                "status",
                f"cannot change an appointment from {appointment.status.value} to {data.status.value}",
            )
        if (
            data.status in (AppointmentStatus.COMPLETED, AppointmentStatus.NO_SHOW)
            and now < appointment.starts_at
        ):
            local = appointment.starts_at.astimezone(zone)
            raise ValidationFailed(
                "status",
                f"an appointment can be {data.status.value} only once it has started "
                f"({local:%Y-%m-%d %H:%M} {local.tzname()})",
            )
        status = data.status

    moving = data.start is not None or data.end is not None or data.practitioner_id is not None
    placed: Placement | None = None
    practitioner: Practitioner | None = None
    if moving:
        if status not in ACTIVE_STATUSES:
            raise ValidationFailed("start", f"a {status.value} appointment cannot be rescheduled")
        length = appointment.ends_at - appointment.starts_at
        start = data.start.astimezone(UTC) if data.start else appointment.starts_at
        end = data.end.astimezone(UTC) if data.end else start + length
        if end <= start:
            raise ValidationFailed("end", "must be after start")
        practitioner_id = data.practitioner_id or appointment.practitioner_id
        try:
            practitioner = await service.get_practitioner(session, principal, practitioner_id)
        except NotFound:
            raise ValidationFailed("practitioner_id", f"practitioner {practitioner_id} not found") from None
        if appointment.appointment_type_id is not None and practitioner.id != appointment.practitioner_id:
            offered = await appointment_types.get_type(session, principal, appointment.appointment_type_id)
            appointment_types.check_offered(offered, principal, practitioner.id)
        placed = Placement(start, end, appointment.buffer_before_minutes, appointment.buffer_after_minutes)
        await check_bookable(
            session, principal, organization, practitioner, placed, override=data.override, now=now
        )
        clash = await _conflicting(
            session,
            organization.id,
            practitioner.id,
            placed.blocked_from,
            placed.blocked_until,
            exclude=appointment.id,
        )
        if clash is not None:
            raise _conflict_error(zone, placed, clash)

    await begin_writes(session)
    appointment.status = status
    if placed is not None and practitioner is not None:
        appointment.starts_at, appointment.ends_at = placed.start, placed.end
        appointment.practitioner_id = practitioner.id
        appointment.practitioner_name = practitioner.name
        appointment.practitioner_email = practitioner.email
    if data.notes is not None:
        appointment.notes = data.notes
    await _flush_guarded(session, principal, appointment, zone, placed)
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
    _, zone = await service.organization_zone(session, principal.organization_id)
    await begin_writes(session)
    appointment.status = AppointmentStatus.CANCELLED
    appointment.cancelled_at = utcnow()
    appointment.cancellation_reason = data.reason or "cancelled"
    await _flush_guarded(session, principal, appointment, zone, None)
    return appointment


async def _flush_guarded(
    session: AsyncSession,
    principal: Principal,
    appointment: Appointment,
    zone: ZoneInfo,
    placed: Placement | None,
) -> None:
    appointment_id, practitioner_id = appointment.id, appointment.practitioner_id
    try:
        await session.flush()
    except StaleDataError:
        raise Conflict(
            "version: the appointment was changed by someone else at the same time; reload and try again",
            code="stale_version",
        ) from None
    except IntegrityError as error:
        if not _is_overlap(error) or placed is None:
            raise
        await session.rollback()
        clash = await _conflicting(
            session,
            principal.organization_id,
            practitioner_id,
            placed.blocked_from,
            placed.blocked_until,
            exclude=appointment_id,
        )
        raise _conflict_error(zone, placed, clash) from None
