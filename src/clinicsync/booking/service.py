"""Booking rules for practitioners, availability, patients and slot search. No HTTP here."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, delete, func, or_, select, update
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
from clinicsync.booking.schemas import (
    OverrideCreate,
    PatientCreate,
    PatientLookup,
    PatientUpdate,
    PractitionerCreate,
    PractitionerRemoved,
    PractitionerUpdate,
    SlotRead,
    SlotSearchResult,
    WeeklyAvailability,
)
from clinicsync.db.base import utcnow
from clinicsync.errors import Conflict, Forbidden, NotFound, ValidationFailed, partial_update
from clinicsync.tenancy import permissions
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Organization, Role, User
from clinicsync.tenancy.permissions import Capability, Scope
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import UserCreate

MAX_SLOT_SEARCH_DAYS = 62
MAX_LOOKUP_MATCHES = 5
PRACTITIONER_REMOVED_REASON = "practitioner removed from the clinic"


# --- practitioners -----------------------------------------------------------------------------


async def list_practitioners(session: AsyncSession, principal: Principal) -> list[Practitioner]:
    query = select(Practitioner).where(
        Practitioner.organization_id == principal.organization_id, Practitioner.deleted_at.is_(None)
    )
    return list(await session.scalars(query.order_by(Practitioner.name)))


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
    """Creating a practitioner with an email gives them a login straight away."""
    practitioner = Practitioner(
        organization_id=principal.organization_id,
        name=data.name,
        email=data.email.lower() if data.email else None,
        phone=data.phone,
        title=data.title,
        specialty=data.specialty,
    )
    if data.email:
        await _ensure_email_free(session, principal, data.email)
        user = await tenancy_service.create_user(
            session,
            principal.organization_id,
            UserCreate(email=data.email, full_name=data.name, role=Role.PRACTITIONER, password=data.password),
        )
        practitioner.user_id = user.id
    session.add(practitioner)
    await session.flush()
    return practitioner


async def update_practitioner(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID, data: PractitionerUpdate
) -> Practitioner:
    practitioner = await get_practitioner(session, principal, practitioner_id)
    changes = partial_update(data, required=("name", "title", "specialty", "is_active"))
    if "email" in changes and changes["email"] is not None:
        changes["email"] = changes["email"].lower()
        if changes["email"] != practitioner.email:
            await _ensure_email_free(session, principal, changes["email"])
    for field, value in changes.items():
        setattr(practitioner, field, value)
    if "email" in changes or "name" in changes:
        await _update_login(session, principal, practitioner)
        # Appointments carry the practitioner's name and email for portals and reminders; keep them current.
        await session.execute(
            update(Appointment)
            .where(Appointment.practitioner_id == practitioner.id)
            .values(
                practitioner_name=practitioner.name,
                practitioner_email=practitioner.email,
                version=Appointment.version + 1,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
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
    result = await session.execute(
        update(Appointment)
        .where(
            Appointment.organization_id == principal.organization_id,
            Appointment.practitioner_id == practitioner.id,
            Appointment.status.in_(ACTIVE_STATUSES),
            Appointment.starts_at >= now,
        )
        .values(
            status=AppointmentStatus.CANCELLED,
            cancelled_at=now,
            cancellation_reason=PRACTITIONER_REMOVED_REASON,
            version=Appointment.version + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    return PractitionerRemoved(id=practitioner.id, cancelled_appointments=getattr(result, "rowcount", 0) or 0)


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
    await session.execute(
        delete(AvailabilityRule).where(
            AvailabilityRule.organization_id == principal.organization_id,
            AvailabilityRule.practitioner_id == practitioner_id,
        )
    )
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
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID
) -> list[AvailabilityOverride]:
    await get_practitioner(session, principal, practitioner_id)
    query = select(AvailabilityOverride).where(
        AvailabilityOverride.organization_id == principal.organization_id,
        AvailabilityOverride.practitioner_id == practitioner_id,
    )
    return list(await session.scalars(query.order_by(AvailabilityOverride.date)))


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


# --- slot search ---------------------------------------------------------------------------------


async def search_slots(
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
    if last_day < first_day:
        raise ValidationFailed("to", "must be on or after from")
    if (last_day - first_day).days >= MAX_SLOT_SEARCH_DAYS:
        raise ValidationFailed("to", f"a search covers at most {MAX_SLOT_SEARCH_DAYS} days")
    organization = await tenancy_service.get_organization(session, principal.organization_id)
    zone = ZoneInfo(organization.time_zone)
    duration = timedelta(minutes=duration_minutes or organization.default_appointment_minutes)
    interval = timedelta(minutes=interval_minutes or organization.slot_interval_minutes)
    now = now or utcnow()
    if practitioner_id is not None:
        practitioners = [await get_practitioner(session, principal, practitioner_id)]
    else:
        practitioners = [p for p in await list_practitioners(session, principal) if p.is_active]
    ids = [p.id for p in practitioners]
    weekly, overrides = await schedule_of(session, organization.id, ids, first_day, last_day)
    # Busy times for the whole range in one query, padded a day each side for zones far from UTC.
    range_start = datetime.combine(first_day - timedelta(days=1), datetime.min.time(), tzinfo=zone)
    range_end = datetime.combine(last_day + timedelta(days=2), datetime.min.time(), tzinfo=zone)
    busy: dict[uuid.UUID, list[tuple[datetime, datetime]]] = {pid: [] for pid in ids}
    rows = await session.execute(
        select(Appointment.practitioner_id, Appointment.starts_at, Appointment.ends_at).where(
            Appointment.organization_id == organization.id,
            Appointment.practitioner_id.in_(ids),
            Appointment.status.in_(ACTIVE_STATUSES),
            Appointment.starts_at < range_end,
            Appointment.ends_at > range_start,
        )
    )
    for pid, starts_at, ends_at in rows:
        busy[pid].append((starts_at, ends_at))
    earliest = now + timedelta(minutes=organization.min_notice_minutes)
    found: list[SlotRead] = []
    for practitioner in practitioners:
        for slot in slot_math.free_slots(
            practitioner_id=practitioner.id,
            zone=zone,
            first_day=first_day,
            last_day=last_day,
            weekly=weekly[practitioner.id],
            overrides=overrides[practitioner.id],
            busy=busy[practitioner.id],
            duration=duration,
            interval=interval,
            earliest_start=earliest,
        ):
            found.append(
                SlotRead(
                    practitioner_id=slot.practitioner_id,
                    start=slot.start,
                    end=slot.end,
                    local_start=slot.local_start,
                )
            )
    found.sort(key=lambda slot: (slot.start, str(slot.practitioner_id)))
    return SlotSearchResult(
        time_zone=organization.time_zone, duration_minutes=int(duration.total_seconds() // 60), slots=found
    )


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
    session: AsyncSession, principal: Principal, *, search: str | None, limit: int, offset: int
) -> list[Patient]:
    query = _matching(patients_visible(select(Patient), principal, Capability.PATIENTS_LIST), search)
    return list(await session.scalars(query.limit(limit).offset(offset)))


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
        query = query.where(Patient.phone == data.phone)
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


async def create_patient(session: AsyncSession, principal: Principal, data: PatientCreate) -> Patient:
    patient = Patient(
        organization_id=principal.organization_id,
        first_name=data.first_name,
        last_name=data.last_name,
        email=data.email.lower() if data.email else None,
        phone=data.phone,
        date_of_birth=data.date_of_birth,
        registered_by_user_id=principal.user_id,
    )
    permissions.check(principal, Capability.PATIENTS_REGISTER)
    session.add(patient)
    await session.flush()
    return patient


async def update_patient(
    session: AsyncSession, principal: Principal, patient_id: uuid.UUID, data: PatientUpdate
) -> Patient:
    patient = await get_patient(session, principal, patient_id, Capability.PATIENTS_UPDATE)
    changes = partial_update(data, required=("first_name", "last_name"))
    if changes.get("date_of_birth") and changes["date_of_birth"] > date.today():
        raise ValidationFailed("date_of_birth", "cannot be in the future")
    for field, value in changes.items():
        setattr(patient, field, value.lower() if field == "email" and value else value)
    await session.flush()
    return patient


async def organization_zone(
    session: AsyncSession, organization_id: uuid.UUID
) -> tuple[Organization, ZoneInfo]:
    organization = await tenancy_service.get_organization(session, organization_id)
    return organization, ZoneInfo(organization.time_zone)


async def practitioner_id_for_user(session: AsyncSession, principal: Principal) -> uuid.UUID | None:
    """The practitioner whose login the caller is, if any."""
    return await session.scalar(
        select(Practitioner.id).where(
            Practitioner.organization_id == principal.organization_id,
            Practitioner.user_id == principal.user_id,
            Practitioner.deleted_at.is_(None),
        )
    )
