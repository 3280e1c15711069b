"""Booking rules for practitioners, availability, patients and slot search. No HTTP here."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import CompoundSelect, Select, and_, bindparam, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking import slots as slot_math
from clinicsync.booking.models import (
    ACTIVE_STATUSES,
    Appointment,
    AppointmentStatus,
    AvailabilityOverride,
    AvailabilityRule,
    Patient,
    Practitioner,
)
from clinicsync.booking.paging import decode_cursor, encode_cursor
from clinicsync.booking.schemas import (
    OverrideCreate,
    PatientCreate,
    PatientLookup,
    PatientUpdate,
    PractitionerCreate,
    PractitionerRemoved,
    PractitionerUpdate,
    WeeklyAvailability,
    normalize_phone,
)
from clinicsync.db.base import utcnow
from clinicsync.db.engine import begin_writes
from clinicsync.errors import Conflict, Forbidden, NotFound, ValidationFailed, partial_update
from clinicsync.tenancy import permissions, security
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Organization, Role, User
from clinicsync.tenancy.permissions import Capability, Scope
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import UserCreate

PRACTITIONER_REMOVED_REASON = "practitioner removed from the clinic"
MAX_LOOKUP_MATCHES = 5


# --- the clinic's own calendar and country -------------------------------------------------------


def clinic_today(organization: Organization, now: datetime | None = None) -> date:
    """Today's date where the clinic is, whatever zone the server runs in."""
    return (now or utcnow()).astimezone(ZoneInfo(organization.time_zone)).date()


def phone_region(organization: Organization) -> str:
    """The country for numbers typed without +: the clinic's setting, else its time zone's country."""
    return organization.dialling_region


def clinic_phone(organization: Organization, value: str | None, field: str = "phone") -> str | None:
    try:
        return normalize_phone(value, phone_region(organization))
    except ValueError as error:
        raise ValidationFailed(field, f"{error} (read as a {phone_region(organization)} number)") from None


# --- practitioners -----------------------------------------------------------------------------


async def list_practitioners(
    session: AsyncSession, principal: Principal, *, limit: int | None = None, offset: int = 0
) -> list[Practitioner]:
    query = select(Practitioner).where(
        Practitioner.organization_id == principal.organization_id, Practitioner.deleted_at.is_(None)
    )
    query = query.order_by(Practitioner.name, Practitioner.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(await session.scalars(query))


async def get_practitioner(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID, *, for_update: bool = False
) -> Practitioner:
    query = select(Practitioner).where(
        Practitioner.id == practitioner_id,
        Practitioner.organization_id == principal.organization_id,
        Practitioner.deleted_at.is_(None),
    )
    practitioner = await session.scalar(query.with_for_update() if for_update else query)
    if practitioner is None:
        raise NotFound(f"practitioner {practitioner_id} not found")
    return practitioner


async def _ensure_email_free(session: AsyncSession, principal: Principal, email: str) -> None:
    taken = await session.scalar(
        select(Practitioner.id).where(
            Practitioner.organization_id == principal.organization_id,
            Practitioner.deleted_at.is_(None),
            func.lower(Practitioner.email) == email.lower(),
        )
    )
    if taken:
        raise Conflict(f"email: a practitioner with email {email} already exists")


async def create_practitioner(
    session: AsyncSession, principal: Principal, data: PractitionerCreate
) -> Practitioner:
    """Creating a practitioner with an email gives them a login straight away.

    A practitioner removed earlier and added again with the same email gets their old login
    back (reactivated, with the new password if one is given) rather than a conflict.
    """
    organization = await tenancy_service.get_organization(session, principal.organization_id)
    practitioner = Practitioner(
        organization_id=principal.organization_id,
        name=data.name,
        email=data.email.lower() if data.email else None,
        phone=clinic_phone(organization, data.phone),
        title=data.title,
        specialty=data.specialty,
    )
    if data.email:
        await _ensure_email_free(session, principal, data.email)
        practitioner.user_id = (await _practitioner_login(session, principal, data)).id
    session.add(practitioner)
    await session.flush()
    return practitioner


async def _practitioner_login(session: AsyncSession, principal: Principal, data: PractitionerCreate) -> User:
    assert data.email is not None
    email = data.email.lower()
    former = await session.scalar(
        select(User).where(User.organization_id == principal.organization_id, User.email == email)
    )
    if former is None:
        return await tenancy_service.create_user(
            session,
            principal.organization_id,
            UserCreate(email=email, full_name=data.name, role=Role.PRACTITIONER, password=data.password),
        )
    removed = await session.scalar(
        select(Practitioner.id).where(
            Practitioner.organization_id == principal.organization_id,
            Practitioner.user_id == former.id,
            Practitioner.deleted_at.is_not(None),
        )
    )
    if former.is_active or removed is None:
        raise Conflict(f"email: a user with email {email} already exists in this organization")
    former.is_active = True
    former.full_name = data.name
    former.role = Role.PRACTITIONER
    if data.password:
        former.password_hash = security.hash_password(data.password)
    return former


async def update_practitioner(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID, data: PractitionerUpdate
) -> Practitioner:
    practitioner = await get_practitioner(session, principal, practitioner_id)
    changes = partial_update(data, required=("name", "title", "specialty", "is_active"))
    if changes.get("phone") is not None:
        organization = await tenancy_service.get_organization(session, principal.organization_id)
        changes["phone"] = clinic_phone(organization, changes["phone"])
    if "email" in changes and changes["email"] is not None:
        changes["email"] = changes["email"].lower()
        if changes["email"] != practitioner.email:
            await _ensure_email_free(session, principal, changes["email"])
    for field, value in changes.items():
        setattr(practitioner, field, value)
    if "email" in changes or "name" in changes:
        await _update_login(session, principal, practitioner)
        # Appointments carry the practitioner's name and email for portals and reminders; keep the
        # ones still to come current (finished ones keep the name they were seen under).
        upcoming = await session.scalars(
            select(Appointment).where(
                Appointment.organization_id == principal.organization_id,
                Appointment.practitioner_id == practitioner.id,
                Appointment.ends_at > utcnow(),
            )
        )
        for appointment in upcoming:
            appointment.practitioner_name = practitioner.name
            appointment.practitioner_email = practitioner.email
    await session.flush()
    return practitioner


async def _update_login(session: AsyncSession, principal: Principal, practitioner: Practitioner) -> None:
    if practitioner.user_id is None:
        if practitioner.email:
            user = await tenancy_service.create_user(
                session,
                principal.organization_id,
                UserCreate(email=practitioner.email, full_name=practitioner.name, role=Role.PRACTITIONER),
            )
            practitioner.user_id = user.id
        return
    user = await tenancy_service.get_user(session, principal, practitioner.user_id)
    user.full_name = practitioner.name
    if practitioner.email is None:
        await tenancy_service.deactivate_user(session, user)
    elif user.email != practitioner.email:
        # The login follows the practitioner's email, so that email must be free among logins too.
        taken = await session.scalar(
            select(User.id).where(
                User.organization_id == principal.organization_id,
                User.email == practitioner.email,
                User.id != user.id,
            )
        )
        if taken:
            raise Conflict(
                f"email: a user with email {practitioner.email} already exists in this organization"
            )
        user.email = practitioner.email


async def remove_practitioner(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID
) -> PractitionerRemoved:
    """Removes the practitioner and their login; their future appointments are cancelled, saying why."""
    practitioner = await get_practitioner(session, principal, practitioner_id, for_update=True)
    now = utcnow()
    practitioner.deleted_at = now
    practitioner.is_active = False
    if practitioner.user_id is not None:
        user = await tenancy_service.get_user(session, principal, practitioner.user_id)
        await tenancy_service.deactivate_user(session, user)
    future = list(
        await session.scalars(
            select(Appointment).where(
                Appointment.organization_id == principal.organization_id,
                Appointment.practitioner_id == practitioner.id,
                Appointment.status.in_(ACTIVE_STATUSES),
                Appointment.starts_at >= now,
            )
        )
    )
    for appointment in future:
        appointment.status = AppointmentStatus.CANCELLED
        appointment.cancelled_at = now
        appointment.cancellation_reason = PRACTITIONER_REMOVED_REASON
    await session.flush()
    return PractitionerRemoved(id=practitioner.id, cancelled_appointments=len(future))


def practitioner_of(principal: Principal, practitioner: Practitioner) -> None:
    """Practitioners manage their own schedule; admins and staff manage everyone's."""
    scope = permissions.scope_of(principal, Capability.AVAILABILITY_MANAGE)
    if scope == Scope.OWN and practitioner.user_id != principal.user_id:
        raise Forbidden("practitioners may only change their own schedule")


# --- availability --------------------------------------------------------------------------------


async def get_weekly(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID
) -> list[AvailabilityRule]:
    await get_practitioner(session, principal, practitioner_id)
    query = select(AvailabilityRule).where(
        AvailabilityRule.organization_id == principal.organization_id,
        AvailabilityRule.practitioner_id == practitioner_id,
    )
    return list(
        await session.scalars(query.order_by(AvailabilityRule.day_of_week, AvailabilityRule.start_time))
    )


async def replace_weekly(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID, data: WeeklyAvailability
) -> list[AvailabilityRule]:
    practitioner = await get_practitioner(session, principal, practitioner_id)
    practitioner_of(principal, practitioner)
    for old in await session.scalars(
        select(AvailabilityRule).where(
            AvailabilityRule.organization_id == principal.organization_id,
            AvailabilityRule.practitioner_id == practitioner_id,
        )
    ):
        await session.delete(old)
    await session.flush()
    rules = [
        AvailabilityRule(
            organization_id=principal.organization_id,
            practitioner_id=practitioner_id,
            day_of_week=interval.day_of_week,
            start_time=interval.start_time,
            end_time=interval.end_time,
            is_available=interval.is_available,
        )
        for interval in data.intervals
    ]
    session.add_all(rules)
    await session.flush()
    return sorted(rules, key=lambda rule: (rule.day_of_week, rule.start_time))


async def list_overrides(
    session: AsyncSession,
    principal: Principal,
    practitioner_id: uuid.UUID,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[AvailabilityOverride]:
    await get_practitioner(session, principal, practitioner_id)
    query = select(AvailabilityOverride).where(
        AvailabilityOverride.organization_id == principal.organization_id,
        AvailabilityOverride.practitioner_id == practitioner_id,
    )
    query = query.order_by(AvailabilityOverride.date, AvailabilityOverride.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(await session.scalars(query))


async def add_override(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID, data: OverrideCreate
) -> AvailabilityOverride:
    practitioner = await get_practitioner(session, principal, practitioner_id)
    practitioner_of(principal, practitioner)
    override = AvailabilityOverride(
        organization_id=principal.organization_id, practitioner_id=practitioner_id, **data.model_dump()
    )
    session.add(override)
    await session.flush()
    return override


async def delete_override(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID, override_id: uuid.UUID
) -> None:
    practitioner = await get_practitioner(session, principal, practitioner_id)
    practitioner_of(principal, practitioner)
    override = await session.scalar(
        select(AvailabilityOverride).where(
            AvailabilityOverride.id == override_id,
            AvailabilityOverride.practitioner_id == practitioner_id,
            AvailabilityOverride.organization_id == principal.organization_id,
        )
    )
    if override is None:
        raise NotFound(f"override {override_id} not found")
    await session.delete(override)


async def schedule_of(
    session: AsyncSession,
    organization_id: uuid.UUID,
    practitioner_ids: list[uuid.UUID],
    first: date,
    last: date,
) -> tuple[dict[uuid.UUID, list[slot_math.WeeklyInterval]], dict[uuid.UUID, list[slot_math.DateOverride]]]:
    """Weekly rules and the overrides in [first, last] for several practitioners, in two queries."""
    weekly: dict[uuid.UUID, list[slot_math.WeeklyInterval]] = {pid: [] for pid in practitioner_ids}
    overrides: dict[uuid.UUID, list[slot_math.DateOverride]] = {pid: [] for pid in practitioner_ids}
    for rule in await session.scalars(
        select(AvailabilityRule).where(
            AvailabilityRule.organization_id == organization_id,
            AvailabilityRule.practitioner_id.in_(practitioner_ids),
        )
    ):
        weekly[rule.practitioner_id].append(
            slot_math.WeeklyInterval(rule.day_of_week, rule.start_time, rule.end_time, rule.is_available)
        )
    for override in await session.scalars(
        select(AvailabilityOverride).where(
            AvailabilityOverride.organization_id == organization_id,
            AvailabilityOverride.practitioner_id.in_(practitioner_ids),
            AvailabilityOverride.date >= first,
            AvailabilityOverride.date <= last,
        )
    ):
        overrides[override.practitioner_id].append(
            slot_math.DateOverride(
                override.date, override.start_time, override.end_time, override.is_available
            )
        )
    return weekly, overrides


# --- patients --------------------------------------------------------------------------------------


def patients_visible(query: Select[Any], principal: Principal, capability: Capability) -> Select[Any]:
    """Narrows a patient query to what ``principal`` may see under ``capability``.

    Practitioners see their own patients (those with an appointment with them); a service
    account sees the patients it registered or booked for.
    """
    query = query.where(Patient.organization_id == principal.organization_id)
    if permissions.scope_of(principal, capability) == Scope.ALL:
        return query
    if principal.role == Role.PRACTITIONER:
        theirs = (
            select(Appointment.patient_id)
            .join(Practitioner, Practitioner.id == Appointment.practitioner_id)
            .where(
                Appointment.organization_id == principal.organization_id,
                Practitioner.user_id == principal.user_id,
            )
        )
        return query.where(Patient.id.in_(theirs))
    booked = select(Appointment.patient_id).where(
        Appointment.organization_id == principal.organization_id,
        Appointment.booked_by_user_id == principal.user_id,
    )
    return query.where(or_(Patient.registered_by_user_id == principal.user_id, Patient.id.in_(booked)))


def _matching(query: Select[Any], search: str | None) -> Select[Any]:
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(
            func.lower(Patient.first_name).like(pattern)
            | func.lower(Patient.last_name).like(pattern)
            | func.lower(Patient.email).like(pattern)
            | Patient.phone.like(pattern)
        )
    return query.order_by(Patient.last_name, Patient.first_name, Patient.id)


async def list_patients(
    session: AsyncSession,
    principal: Principal,
    *,
    search: str | None,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
) -> tuple[list[Patient], str | None]:
    """A page of patients by name, and the cursor of the next page (None on the last one)."""
    query = _matching(patients_visible(select(Patient), principal, Capability.PATIENTS_LIST), search)
    if cursor is not None:
        last_name, first_name, raw_id = decode_cursor(cursor, 3)
        after_id = _cursor_uuid(raw_id)
        query = query.where(
            or_(
                Patient.last_name > last_name,
                and_(Patient.last_name == last_name, Patient.first_name > first_name),
                and_(Patient.last_name == last_name, Patient.first_name == first_name, Patient.id > after_id),
            )
        )
    rows = list(await session.scalars(query.limit(limit + 1).offset(offset)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.last_name, last.first_name, last.id)


def _cursor_uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationFailed("cursor", "is not a cursor this list returned") from None


async def identification_candidates(
    session: AsyncSession, principal: Principal, *, search: str, limit: int
) -> list[Patient]:
    """Patients of the whole organization matching ``search``, for a caller that identifies a
    patient and must still check the proof (date of birth, phone) before showing or using one.
    The agents' tool layer does; nothing may return these to a service account unchecked."""
    permissions.check(principal, Capability.PATIENTS_FIND)
    query = _matching(select(Patient).where(Patient.organization_id == principal.organization_id), search)
    return list(await session.scalars(query.limit(limit)))


async def find_patients(session: AsyncSession, principal: Principal, data: PatientLookup) -> list[Patient]:
    """Exact matches only: a phone or a full name, always together with the date of birth.

    This is how a chatbot or voice agent finds the caller without being able to browse the
    register: knowing someone's date of birth and phone (or name) is the proof it asks for.
    """
    query = select(Patient).where(
        Patient.organization_id == principal.organization_id, Patient.date_of_birth == data.date_of_birth
    )
    permissions.check(principal, Capability.PATIENTS_FIND)
    if data.phone is not None:
        # Typed the local way, the number is read in the clinic's country, as it was stored.
        organization = await tenancy_service.get_organization(session, principal.organization_id)
        query = query.where(Patient.phone == clinic_phone(organization, data.phone))
    if data.last_name is not None:
        query = query.where(func.lower(Patient.last_name) == data.last_name.strip().lower())
    if data.first_name is not None:
        query = query.where(func.lower(Patient.first_name) == data.first_name.strip().lower())
    return list(
        await session.scalars(query.order_by(Patient.created_at, Patient.id).limit(MAX_LOOKUP_MATCHES))
    )


async def get_patient(
    session: AsyncSession,
    principal: Principal,
    patient_id: uuid.UUID,
    capability: Capability = Capability.PATIENTS_READ,
) -> Patient:
    patient = await session.scalar(
        patients_visible(select(Patient), principal, capability).where(Patient.id == patient_id)
    )
    if patient is None:
        raise NotFound(f"patient {patient_id} not found")
    return patient


async def patient_in_organization(
    session: AsyncSession, principal: Principal, patient_id: uuid.UUID
) -> Patient:
    """Any patient of the organization, for booking: a service account books for patients it found."""
    patient = await session.scalar(
        select(Patient).where(Patient.id == patient_id, Patient.organization_id == principal.organization_id)
    )
    if patient is None:
        raise NotFound(f"patient {patient_id} not found")
    return patient


def _check_birth_date(organization: Organization, value: date | None) -> None:
    if value is not None and value > clinic_today(organization):
        raise ValidationFailed("date_of_birth", "cannot be after today in the clinic's time zone")


async def find_duplicate(
    session: AsyncSession,
    principal: Principal,
    *,
    first_name: str,
    last_name: str,
    email: str | None,
    phone: str | None,
    date_of_birth: date | None,
) -> tuple[Patient, str] | None:
    """An existing patient who is probably the same person, and what matched: the same date of
    birth plus the same name, email or phone. Without a date of birth nothing is matched."""
    if date_of_birth is None:
        return None
    same_name = and_(
        func.lower(Patient.first_name) == first_name.lower(),
        func.lower(Patient.last_name) == last_name.lower(),
    )
    matches = [same_name]
    if email:
        matches.append(Patient.email == email.lower())
    if phone:
        matches.append(Patient.phone == phone)
    candidate = await session.scalar(
        select(Patient)
        .where(
            Patient.organization_id == principal.organization_id,
            Patient.date_of_birth == date_of_birth,
            or_(*matches),
        )
        .order_by(Patient.created_at, Patient.id)
        .limit(1)
    )
    if candidate is None:
        return None
    matched_on = duplicate_match(
        candidate, first_name=first_name, last_name=last_name, email=email, phone=phone
    )
    return candidate, matched_on or "phone and date_of_birth"


def duplicate_match(
    candidate: Patient, *, first_name: str, last_name: str, email: str | None, phone: str | None
) -> str | None:
    """The duplicate rule for a candidate born on the same day: what makes it probably the same
    person (the same name, else email, else phone), or None. Patient imports match by it too."""
    if (
        candidate.first_name.lower() == first_name.lower()
        and candidate.last_name.lower() == last_name.lower()
    ):
        return "name and date_of_birth"
    if email and candidate.email == email.lower():
        return "email and date_of_birth"
    if phone and candidate.phone == phone:
        return "phone and date_of_birth"
    return None


async def create_patient(session: AsyncSession, principal: Principal, data: PatientCreate) -> Patient:
    """Registers a patient. A likely duplicate answers 409 with the existing patient's id unless
    the caller says ``allow_duplicate`` (twins, or two people sharing a family phone)."""
    permissions.check(principal, Capability.PATIENTS_REGISTER)
    organization = await tenancy_service.get_organization(session, principal.organization_id)
    _check_birth_date(organization, data.date_of_birth)
    phone = clinic_phone(organization, data.phone)
    email = data.email.lower() if data.email else None
    if not data.allow_duplicate:
        duplicate = await find_duplicate(
            session,
            principal,
            first_name=data.first_name,
            last_name=data.last_name,
            email=email,
            phone=phone,
            date_of_birth=data.date_of_birth,
        )
        if duplicate is not None:
            existing, matched_on = duplicate
            raise Conflict(
                f"a patient with the same {matched_on} already exists ({existing.id}); "
                "use that patient, or send allow_duplicate=true to register another",
                code="duplicate_patient",
                details={"existing_id": str(existing.id), "matched_on": matched_on},
            )
    await begin_writes(session)
    patient = Patient(
        organization_id=principal.organization_id,
        first_name=data.first_name,
        last_name=data.last_name,
        email=email,
        phone=phone,
        date_of_birth=data.date_of_birth,
        registered_by_user_id=principal.user_id,
    )
    session.add(patient)
    await session.flush()
    return patient


async def update_patient(
    session: AsyncSession, principal: Principal, patient_id: uuid.UUID, data: PatientUpdate
) -> Patient:
    patient = await get_patient(session, principal, patient_id, Capability.PATIENTS_UPDATE)
    changes = partial_update(data, required=("first_name", "last_name"))
    organization = await tenancy_service.get_organization(session, principal.organization_id)
    _check_birth_date(organization, changes.get("date_of_birth"))
    if changes.get("phone") is not None:
        changes["phone"] = clinic_phone(organization, changes["phone"])
    await begin_writes(session)
    for field, value in changes.items():
        setattr(patient, field, value.lower() if field == "email" and value else value)
    await session.flush()
    return patient


async def organization_zone(
    session: AsyncSession, organization_id: uuid.UUID
) -> tuple[Organization, ZoneInfo]:
    organization = await tenancy_service.get_organization(session, organization_id)
    return organization, ZoneInfo(organization.time_zone)


# Built once (booking reads it on every request): a prebuilt statement's cache key is computed once.
# Its parameters: organization_id, practitioner_id, weekday and day.
DAY_SCHEDULE: CompoundSelect[Any] = union_all(
    select(
        literal(True).label("weekly"),
        AvailabilityRule.start_time,
        AvailabilityRule.end_time,
        AvailabilityRule.is_available,
    ).where(
        AvailabilityRule.organization_id == bindparam("organization_id"),
        AvailabilityRule.practitioner_id == bindparam("practitioner_id"),
        AvailabilityRule.day_of_week == bindparam("weekday"),
    ),
    select(
        literal(False).label("weekly"),
        AvailabilityOverride.start_time,
        AvailabilityOverride.end_time,
        AvailabilityOverride.is_available,
    ).where(
        AvailabilityOverride.organization_id == bindparam("organization_id"),
        AvailabilityOverride.practitioner_id == bindparam("practitioner_id"),
        AvailabilityOverride.date == bindparam("day"),
    ),
)


async def day_schedule(
    session: AsyncSession, organization_id: uuid.UUID, practitioner_id: uuid.UUID, day: date
) -> tuple[list[slot_math.WeeklyInterval], list[slot_math.DateOverride]]:
    """One practitioner's weekly hours for ``day``'s weekday and that date's overrides, in one
    round trip (booking reads this on every request)."""
    parameters = {
        "organization_id": organization_id,
        "practitioner_id": practitioner_id,
        "weekday": day.weekday(),
        "day": day,
    }
    rows: list[Any] = list((await session.execute(DAY_SCHEDULE, parameters)).all())
    return schedule_from_rows(day, rows)


def schedule_from_rows(
    day: date, rows: Iterable[tuple[Any, Any, Any, Any]]
) -> tuple[list[slot_math.WeeklyInterval], list[slot_math.DateOverride]]:
    """``DAY_SCHEDULE``'s rows (weekly, start, end, available) as the day's hours and overrides;
    a row of NULLs (an outer join that found no hours) is skipped."""
    weekly: list[slot_math.WeeklyInterval] = []
    overrides: list[slot_math.DateOverride] = []
    for is_weekly, start, end, is_available in rows:
        if is_weekly is None:
            continue
        if is_weekly:
            weekly.append(slot_math.WeeklyInterval(day.weekday(), start, end, is_available))
        else:
            overrides.append(slot_math.DateOverride(day, start, end, is_available))
    return weekly, overrides


async def practitioner_id_for_user(session: AsyncSession, principal: Principal) -> uuid.UUID | None:
    """The practitioner whose login the caller is, if any."""
    return await session.scalar(
        select(Practitioner.id).where(
            Practitioner.organization_id == principal.organization_id,
            Practitioner.user_id == principal.user_id,
            Practitioner.deleted_at.is_(None),
        )
    )
