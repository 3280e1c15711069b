"""GET /api/v1/schedule-slots: the PMS's slots as last read, with their places left (read-only)."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from clinicsync.booking import service as booking
from clinicsync.booking.paging import decode_cursor, encode_cursor
from clinicsync.booking.schemas import CalendarDate
from clinicsync.deps import Requires, SessionDep
from clinicsync.errors import ValidationFailed
from clinicsync.sync.slots.models import ScheduleSlot, SlotStatus
from clinicsync.sync.slots.schemas import ScheduleSlotPage, ScheduleSlotRead
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

router = APIRouter(prefix="/api/v1", tags=["booking"])

# Slots carry times and counts only, no patient data: whoever may search free times may read them.
SlotReader = Annotated[Principal, Requires(Capability.SLOTS_SEARCH)]
MAX_RANGE_DAYS = 92


@router.get("/schedule-slots", response_model=ScheduleSlotPage)
async def list_schedule_slots(
    principal: SlotReader,
    session: SessionDep,
    from_: Annotated[CalendarDate, Query(alias="from", description="First local date (clinic's zone)")],
    to: Annotated[CalendarDate, Query(description="Last local date, inclusive; at most 92 days after from")],
    practitioner_id: Annotated[
        uuid.UUID | None, Query(description="That practitioner's slots and the clinic-wide ones")
    ] = None,
    integration_id: uuid.UUID | None = None,
    status: SlotStatus | None = None,
    available: Annotated[bool, Query(description="Only open slots with a place left")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ScheduleSlotPage:
    if to < from_:
        raise ValidationFailed("to", "must not be before from")
    if (to - from_).days > MAX_RANGE_DAYS:
        raise ValidationFailed("to", f"must be at most {MAX_RANGE_DAYS} days after from")
    _organization, zone = await booking.organization_zone(session, principal.organization_id)
    first = datetime.combine(from_, time(), tzinfo=zone)
    last = datetime.combine(to + timedelta(days=1), time(), tzinfo=zone)
    query = select(ScheduleSlot).where(
        ScheduleSlot.organization_id == principal.organization_id,
        ScheduleSlot.starts_at >= first,
        ScheduleSlot.starts_at < last,
    )
    if practitioner_id is not None:
        query = query.where(
            (ScheduleSlot.practitioner_id == practitioner_id) | ScheduleSlot.practitioner_id.is_(None)
        )
    if integration_id is not None:
        query = query.where(ScheduleSlot.integration_id == integration_id)
    if status is not None:
        query = query.where(ScheduleSlot.status == status)
    if available:
        query = query.where(
            ScheduleSlot.status == SlotStatus.OPEN, ScheduleSlot.booked_count < ScheduleSlot.capacity
        )
    if cursor:
        after_start, after_id = decode_cursor(cursor, 2)
        try:
            key = (datetime.fromisoformat(after_start), uuid.UUID(after_id))
        except ValueError:
            raise ValidationFailed("cursor", "is not a cursor this list returned") from None
        query = query.where(
            (ScheduleSlot.starts_at > key[0])
            | ((ScheduleSlot.starts_at == key[0]) & (ScheduleSlot.id > key[1]))
        )
    rows = list(
        await session.scalars(query.order_by(ScheduleSlot.starts_at, ScheduleSlot.id).limit(limit + 1))
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].starts_at.isoformat(), rows[-1].id)
    return ScheduleSlotPage(
        time_zone=zone.key,
        slots=[ScheduleSlotRead.model_validate(row) for row in rows],
        next_cursor=next_cursor,
    )
