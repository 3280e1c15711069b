"""What the pages show, built from the booking and tenancy services (no tables of their own)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking import appointments, search
from clinicsync.booking import service as booking_service
from clinicsync.booking.models import ACTIVE_STATUSES, Appointment, Practitioner
from clinicsync.booking.slots import Slot as SlotRead
from clinicsync.db.base import utcnow
from clinicsync.errors import ClinicSyncError
from clinicsync.sync import refs
from clinicsync.sync.models import RecordType
from clinicsync.sync.schemas import ExternalRefRead
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.principal import Principal

ALTERNATIVES = 3
ALTERNATIVE_SEARCH_DAYS = 7


def field_errors(error: ValidationError) -> dict[str, str]:
    """A pydantic error as {field: reason}, for showing each reason next to its field."""
    found: dict[str, str] = {}
    for item in error.errors():
        name = ".".join(str(part) for part in item.get("loc", ())) or "form"
        reason = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if item.get("type") == "missing" or (
            item.get("type") == "string_too_short" and (item.get("ctx") or {}).get("min_length") == 1
        ):
            reason = "this field is required"
        found.setdefault(name, reason)
    return found


def domain_error_field(error: ClinicSyncError) -> tuple[str, str]:
    """A domain error as (field, reason); errors that name no field go to the form as a whole."""
    field = getattr(error, "field", None)
    if field:
        return str(field), str(getattr(error, "reason", error.message))
    field, sep, reason = error.message.partition(": ")
    if sep and field.replace("_", "").isalnum() and " " not in field:
        return field, reason
    return "form", error.message


async def clinic_zone(session: AsyncSession, principal: Principal) -> ZoneInfo:
    organization = await tenancy_service.get_organization(session, principal.organization_id)
    return ZoneInfo(organization.time_zone)


def today_in(zone: ZoneInfo) -> date:
    return utcnow().astimezone(zone).date()


async def practitioners(session: AsyncSession, principal: Principal) -> list[Practitioner]:
    return [p for p in await booking_service.list_practitioners(session, principal) if p.is_active]


async def own_practitioner_id(session: AsyncSession, principal: Principal) -> uuid.UUID | None:
    if principal.role != Role.PRACTITIONER:
        return None
    return await booking_service.practitioner_id_for_user(session, principal)


async def free_slots(
    session: AsyncSession,
    principal: Principal,
    practitioner_id: uuid.UUID,
    first: date,
    last: date | None = None,
) -> list[SlotRead]:
    result = await search.search_slots(
        session,
        principal,
        first_day=first,
        last_day=last or first,
        practitioner_id=practitioner_id,
        limit=search.MAX_SLOT_PAGE * 10,
    )
    return result.slots


async def nearest_alternatives(
    session: AsyncSession, principal: Principal, practitioner_id: uuid.UUID, wanted: datetime, zone: ZoneInfo
) -> list[SlotRead]:
    """The free starts closest to the one that was taken, before or after it, over a week around it."""
    day = wanted.astimezone(zone).date()
    first = max(today_in(zone), day - timedelta(days=1))
    slots = await free_slots(
        session, principal, practitioner_id, first, first + timedelta(days=ALTERNATIVE_SEARCH_DAYS)
    )
    slots.sort(key=lambda slot: abs((slot.start - wanted).total_seconds()))
    return sorted(slots[:ALTERNATIVES], key=lambda slot: slot.start)


@dataclass(frozen=True)
class DiaryEntry:
    appointment: Appointment
    local_start: datetime
    local_end: datetime
    patient_name: str
    # Where the appointment stands in each connected PMS (none when nothing syncs).
    sync: list[ExternalRefRead]


async def diary(
    session: AsyncSession,
    principal: Principal,
    practitioner_id: uuid.UUID | None,
    first: date,
    days: int,
    zone: ZoneInfo,
    *,
    active_only: bool = True,
) -> list[DiaryEntry]:
    starts_from = datetime.combine(first, time(0), tzinfo=zone)
    starts_before = datetime.combine(first + timedelta(days=days), time(0), tzinfo=zone)
    items, _total, _next = await appointments.list_appointments(
        session,
        principal,
        practitioner_id=practitioner_id,
        statuses=list(ACTIVE_STATUSES) if active_only else None,
        starts_from=starts_from,
        starts_before=starts_before,
        limit=500,
    )
    names: dict[uuid.UUID, str] = {}
    sync = await refs.refs_by_record(
        session, principal.organization_id, RecordType.APPOINTMENT, [item.id for item in items]
    )
    entries = []
    for item in items:
        if item.patient_id not in names:
            try:
                patient = await booking_service.get_patient(session, principal, item.patient_id)
                names[item.patient_id] = f"{patient.first_name} {patient.last_name}"
            except ClinicSyncError:
                names[item.patient_id] = "Patient"
        entries.append(
            DiaryEntry(
                item,
                item.starts_at.astimezone(zone),
                item.ends_at.astimezone(zone),
                names[item.patient_id],
                sync.get(item.id, []),
            )
        )
    return entries
