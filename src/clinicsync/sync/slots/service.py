"""Schedule slots: store a PMS's slots a page at a time, keep their booked counts, find free ones.

A clinic whose PMS keeps its diary as fixed slots with a capacity (a vet PIMS: 15-minute slots,
two visits each) has its schedule set to ``pms_slots`` on one integration's sync config. The
sync's forward read fills the slots; agents offer and book them (``agents/``); the REST API lists
them (``GET /api/v1/schedule-slots``).

How a sync run calls this, one page of the PMS's data at a time, in the run's transaction::

    from clinicsync.sync.slots import service as slots

    records = slots.slots_from_schedule(schedule, first_day, last_day, visits=visit_records)
    await slots.upsert_page(session, organization_id, integration_id, records, seen_at=run_started)
    ...                                  # more pages
    await slots.retire_unseen(session, integration_id, window_from, window_to, seen_before=run_started)
    await slots.recompute_booked(session, organization_id, integration_id, window_from, window_to)

A slot record is a mapping (the canonical style: instants aware, ids strings):

=================  ==========================================================================
``starts_at``      aware datetime or ISO 8601 string with an offset (required)
``ends_at``        likewise (required, after ``starts_at``)
``capacity``       visits the slot holds (default 1)
``booked``         visits the PMS holds in it now, when it says (None: unknown)
``practitioner_id`` the PMS's practitioner id when the slot is one practitioner's (None: anyone)
``resource``       a room or table the slot belongs to (optional)
``status``         ``open`` (default) or ``blocked``
``id``             the PMS's slot id; when it has none, one is made from the owner and the start
=================  ==========================================================================

``slots_from_schedule`` makes such records from a schedule configuration (slot length, capacity
per slot, business hours per weekday, the office's zone) and the visits listed for the window,
for PMSs that describe their grid rather than list slots.

``booked_count`` is what capacity checks read: the PMS's count at the last read plus our own
bookings into the slot made since (local appointments, and external-only bookings kept as
external references), or, when the PMS gives no count, all our active bookings in it. A booking
counts in every slot its span touches, as the PMS counts it.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking.models import ACTIVE_STATUSES, Appointment
from clinicsync.db.base import utcnow
from clinicsync.errors import ValidationFailed
from clinicsync.sync.models import (
    ExternalReference,
    IntegrationSyncConfig,
    RecordType,
    ScheduleSource,
    SyncState,
)
from clinicsync.sync.slots.models import ScheduleSlot, SlotStatus

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Canonical statuses that hold a place in a slot (a no-show or a cancellation frees it).
HOLDING = frozenset({"pending", "confirmed", "completed"})
# External-only bookings are counted from their references; older ones than this cannot hold a
# future slot's place any more, so they are not read.
REFERENCE_LOOKBACK = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    created: int
    updated: int


@dataclass(frozen=True, slots=True)
class FreeSlot:
    """A bookable start: one slot, or a run of back-to-back slots when the visit is longer."""

    start: datetime
    end: datetime
    remaining: int
    practitioner_id: uuid.UUID | None
    slots: tuple[ScheduleSlot, ...] = field(repr=False)


# ---- configuration ---------------------------------------------------------------------------


async def slot_config(session: AsyncSession, organization_id: uuid.UUID) -> IntegrationSyncConfig | None:
    """The sync config whose PMS supplies this clinic's slots, if its schedule is PMS slots."""
    config: IntegrationSyncConfig | None = await session.scalar(
        select(IntegrationSyncConfig)
        .where(
            IntegrationSyncConfig.organization_id == organization_id,
            IntegrationSyncConfig.schedule_source == ScheduleSource.PMS_SLOTS,
        )
        .limit(1)
    )
    return config


# ---- records from the PMS ----------------------------------------------------------------------


def _instant(record: Mapping[str, Any], name: str, index: int) -> datetime:
    value = record.get(name)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationFailed(f"records[{index}].{name}", "is not an ISO 8601 instant") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationFailed(f"records[{index}].{name}", "must be an aware datetime (with its offset)")
    return value.astimezone(UTC)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def slots_from_schedule(
    schedule: Mapping[str, Any],
    first_day: date,
    last_day: date,
    *,
    visits: Iterable[Mapping[str, Any]] = (),
    timezone: str | None = None,
) -> list[dict[str, Any]]:
    """Slot records for ``first_day``..``last_day`` (office-local days) from a schedule config.

    ``schedule`` has ``slot_length_minutes``, ``capacity_per_slot``, ``timezone`` (or pass
    ``timezone``) and ``business_hours``: a list of ``{"day": "monday", "open": "08:00",
    "close": "18:00", "closed": false}`` or a mapping ``{"monday": ["08:00", "18:00"] | None}``.
    ``visits`` are canonical appointment records; those that hold a place are counted into
    ``booked`` of every slot they touch.
    """
    zone = ZoneInfo(timezone or str(schedule["timezone"]))
    length = timedelta(minutes=int(schedule["slot_length_minutes"]))
    capacity = int(schedule.get("capacity_per_slot") or 1)
    hours: dict[str, tuple[time, time] | None] = {}
    raw_hours = schedule.get("business_hours") or {}
    entries = (
        raw_hours.items()
        if isinstance(raw_hours, Mapping)
        else (
            (entry["day"], None if entry.get("closed") else (entry.get("open"), entry.get("close")))
            for entry in raw_hours
        )
    )
    for day_name, window in entries:
        if window and window[0] and window[1]:
            hours[str(day_name).lower()] = (time.fromisoformat(window[0]), time.fromisoformat(window[1]))
        else:
            hours[str(day_name).lower()] = None
    records: list[dict[str, Any]] = []
    day = first_day
    while day <= last_day:
        window = hours.get(WEEKDAYS[day.weekday()])
        if window is not None:
            cursor = datetime.combine(day, window[0])
            closing = datetime.combine(day, window[1])
            while cursor + length <= closing:
                # Wall-clock steps, each converted on its own: a DST change moves instants, not slots.
                starts = cursor.replace(tzinfo=zone).astimezone(UTC)
                ends = (cursor + length).replace(tzinfo=zone).astimezone(UTC)
                records.append({"starts_at": starts, "ends_at": ends, "capacity": capacity, "booked": 0})
                cursor += length
        day += timedelta(days=1)
    starts_sorted = [record["starts_at"] for record in records]
    for visit in visits:
        if str(visit.get("status") or "pending") not in HOLDING:
            continue
        begin, end = visit.get("starts_at"), visit.get("ends_at") or visit.get("starts_at")
        if not isinstance(begin, datetime) or not isinstance(end, datetime):
            continue
        position = max(0, bisect.bisect_right(starts_sorted, begin) - 1)
        while position < len(records) and records[position]["starts_at"] < max(
            end, begin + timedelta(seconds=1)
        ):
            record = records[position]
            if record["ends_at"] > begin:
                record["booked"] += 1
            position += 1
    return records


async def upsert_page(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    records: Sequence[Mapping[str, Any]],
    *,
    seen_at: datetime | None = None,
) -> UpsertResult:
    """Creates or refreshes one page of slot records, in two queries whatever the page's size.

    A refreshed slot takes the PMS's capacity, status and count; its ``booked_count`` becomes the
    PMS's count (which now includes our earlier bookings) when the PMS gave one.
    """
    seen = seen_at or utcnow()
    parsed: dict[str, dict[str, Any]] = {}
    for index, record in enumerate(records):
        starts, ends = _instant(record, "starts_at", index), _instant(record, "ends_at", index)
        if ends <= starts:
            raise ValidationFailed(f"records[{index}].ends_at", "must be after starts_at")
        raw_capacity = record.get("capacity")
        capacity = 1 if raw_capacity is None else int(raw_capacity)
        if capacity < 0:
            raise ValidationFailed(f"records[{index}].capacity", "must not be negative")
        status = str(record.get("status") or SlotStatus.OPEN.value)
        if status not in (SlotStatus.OPEN.value, SlotStatus.BLOCKED.value):
            raise ValidationFailed(f"records[{index}].status", "must be open or blocked")
        owner = _text(record.get("practitioner_id"))
        resource = _text(record.get("resource"))
        external_id = _text(record.get("id")) or f"{owner or resource or 'clinic'}@{starts.isoformat()}"
        booked = record.get("booked")
        parsed[external_id] = {
            "starts_at": starts,
            "ends_at": ends,
            "capacity": capacity,
            "pms_booked": None if booked is None else int(booked),
            "practitioner_external_id": owner,
            "resource": resource,
            "status": SlotStatus(status),
        }
    if not parsed:
        return UpsertResult(0, 0)
    owners = {values["practitioner_external_id"] for values in parsed.values()} - {None}
    local_practitioner: dict[str, uuid.UUID] = {}
    if owners:
        rows = await session.execute(
            select(ExternalReference.external_id, ExternalReference.record_id).where(
                ExternalReference.integration_id == integration_id,
                ExternalReference.record_type == RecordType.PRACTITIONER,
                ExternalReference.external_id.in_(owners),
            )
        )
        local_practitioner = {str(external): record for external, record in rows.all()}
    existing = {
        slot.external_id: slot
        for slot in await session.scalars(
            select(ScheduleSlot).where(
                ScheduleSlot.integration_id == integration_id, ScheduleSlot.external_id.in_(parsed)
            )
        )
    }
    created = updated = 0
    for external_id, values in parsed.items():
        owner = values["practitioner_external_id"]
        values["practitioner_id"] = local_practitioner.get(owner) if owner else None
        slot = existing.get(external_id)
        if slot is None:
            slot = ScheduleSlot(
                id=uuid.uuid4(),
                organization_id=organization_id,
                integration_id=integration_id,
                external_id=external_id,
                booked_count=values["pms_booked"] or 0,
                last_seen_at=seen,
                **values,
            )
            session.add(slot)
            created += 1
            continue
        for name, value in values.items():
            setattr(slot, name, value)
        if values["pms_booked"] is not None:
            slot.booked_count = values["pms_booked"]
        slot.last_seen_at = seen
        updated += 1
    await session.flush()
    return UpsertResult(created, updated)


async def retire_unseen(
    session: AsyncSession,
    integration_id: uuid.UUID,
    starts_from: datetime,
    starts_to: datetime,
    *,
    seen_before: datetime,
) -> int:
    """Marks slots of the window that the latest read did not return as gone; returns how many."""
    result = await session.execute(
        update(ScheduleSlot)
        .where(
            ScheduleSlot.integration_id == integration_id,
            ScheduleSlot.starts_at >= starts_from,
            ScheduleSlot.starts_at < starts_to,
            ScheduleSlot.last_seen_at < seen_before,
            ScheduleSlot.status != SlotStatus.GONE,
        )
        .values(status=SlotStatus.GONE)
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(result, "rowcount", 0) or 0)


# ---- booked counts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Booking:
    starts_at: datetime
    ends_at: datetime
    practitioner_id: uuid.UUID | None
    created_at: datetime


async def _our_bookings(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    starts_from: datetime,
    starts_to: datetime,
) -> list[_Booking]:
    """Our active bookings touching the window: local rows, and external-only ones by reference."""
    local = await session.execute(
        select(
            Appointment.id,
            Appointment.starts_at,
            Appointment.ends_at,
            Appointment.practitioner_id,
            Appointment.created_at,
        ).where(
            Appointment.organization_id == organization_id,
            Appointment.status.in_(ACTIVE_STATUSES),
            Appointment.starts_at < starts_to,
            Appointment.ends_at > starts_from,
        )
    )
    bookings: list[_Booking] = []
    local_ids: set[uuid.UUID] = set()
    for appointment_id, starts, ends, practitioner_id, created in local.all():
        local_ids.add(appointment_id)
        bookings.append(_Booking(starts, ends, practitioner_id, created))
    references = await session.execute(
        select(ExternalReference.record_id, ExternalReference.snapshot, ExternalReference.created_at).where(
            ExternalReference.integration_id == integration_id,
            ExternalReference.record_type == RecordType.APPOINTMENT,
            ExternalReference.sync_state.in_((SyncState.ACCEPTED, SyncState.CONFIRMED)),
            ExternalReference.created_at >= starts_from - REFERENCE_LOOKBACK,
        )
    )
    for record_id, snapshot, created in references.all():
        if record_id in local_ids or not snapshot or not snapshot.get("starts_at"):
            continue
        if str(snapshot.get("status") or "pending") not in HOLDING:
            continue
        starts = datetime.fromisoformat(snapshot["starts_at"]).astimezone(UTC)
        ends = datetime.fromisoformat(snapshot.get("ends_at") or snapshot["starts_at"]).astimezone(UTC)
        if starts >= starts_to or ends <= starts_from:
            continue
        owner = (snapshot.get("local") or {}).get("practitioner_id")
        bookings.append(_Booking(starts, ends, uuid.UUID(owner) if owner else None, created))
    return bookings


async def recompute_booked(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    starts_from: datetime,
    starts_to: datetime,
) -> int:
    """Recounts ``booked_count`` of the window's slots (three queries); returns how many changed."""
    slots = list(
        await session.scalars(
            select(ScheduleSlot)
            .where(
                ScheduleSlot.integration_id == integration_id,
                ScheduleSlot.starts_at >= starts_from,
                ScheduleSlot.starts_at < starts_to,
            )
            .order_by(ScheduleSlot.starts_at)
        )
    )
    if not slots:
        return 0
    longest = max(slot.ends_at - slot.starts_at for slot in slots)
    window_end = max(slot.ends_at for slot in slots)
    bookings = await _our_bookings(session, organization_id, integration_id, slots[0].starts_at, window_end)
    since_seen = [0] * len(slots)
    every = [0] * len(slots)
    starts = [slot.starts_at for slot in slots]
    for booking in bookings:
        position = bisect.bisect_left(starts, booking.starts_at - longest)
        while position < len(slots) and slots[position].starts_at < booking.ends_at:
            slot = slots[position]
            if slot.ends_at > booking.starts_at and (
                slot.practitioner_id is None or slot.practitioner_id == booking.practitioner_id
            ):
                every[position] += 1
                if booking.created_at > slot.last_seen_at:
                    since_seen[position] += 1
            position += 1
    changed = 0
    for position, slot in enumerate(slots):
        count = slot.pms_booked + since_seen[position] if slot.pms_booked is not None else every[position]
        if count != slot.booked_count:
            slot.booked_count = count
            changed += 1
    await session.flush()
    return changed


# ---- free slots -------------------------------------------------------------------------------


async def find_free(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    starts_from: datetime,
    starts_to: datetime,
    *,
    practitioner_id: uuid.UUID | None = None,
    minutes: int | None = None,
    limit: int = 500,
) -> list[FreeSlot]:
    """Bookable starts in ``[starts_from, starts_to)``, earliest first, never in the past.

    A visit longer than one slot needs back-to-back slots of the same owner, each with a place;
    its remaining places are the fewest among them. ``practitioner_id`` keeps that practitioner's
    slots and the clinic-wide ones.
    """
    query = select(ScheduleSlot).where(
        ScheduleSlot.organization_id == organization_id,
        ScheduleSlot.integration_id == integration_id,
        ScheduleSlot.status == SlotStatus.OPEN,
        ScheduleSlot.starts_at >= max(starts_from, utcnow()),
        ScheduleSlot.starts_at < starts_to + timedelta(minutes=minutes or 0),
    )
    if practitioner_id is not None:
        query = query.where(
            (ScheduleSlot.practitioner_id == practitioner_id) | ScheduleSlot.practitioner_id.is_(None)
        )
    rows = list(await session.scalars(query.order_by(ScheduleSlot.starts_at, ScheduleSlot.external_id)))
    by_owner: dict[tuple[uuid.UUID | None, str | None], dict[datetime, ScheduleSlot]] = {}
    for slot in rows:
        by_owner.setdefault((slot.practitioner_id, slot.resource), {})[slot.starts_at] = slot
    free: list[FreeSlot] = []
    for slot in rows:
        if slot.starts_at >= starts_to or slot.remaining <= 0:
            continue
        run = [slot]
        wanted_end = slot.starts_at + timedelta(minutes=minutes) if minutes else slot.ends_at
        chain = by_owner[(slot.practitioner_id, slot.resource)]
        while run[-1].ends_at < wanted_end:
            following = chain.get(run[-1].ends_at)
            if following is None or following.remaining <= 0:
                break
            run.append(following)
        if run[-1].ends_at < wanted_end:
            continue
        free.append(
            FreeSlot(
                start=slot.starts_at,
                end=wanted_end,
                remaining=min(part.remaining for part in run),
                practitioner_id=slot.practitioner_id,
                slots=tuple(run),
            )
        )
        if len(free) >= limit:
            break
    return free
