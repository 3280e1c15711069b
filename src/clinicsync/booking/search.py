"""Slot search: the clinic's rules applied to every practitioner over a range of local days.

The rules are the ones booking applies (booking.appointments checks a requested time with the
same grid, notice, horizon and buffers), so a time is bookable exactly when search offers it.
The arithmetic runs in a worker thread and stops at the page's limit, so a 90-day search over
a large clinic neither holds the event loop nor builds a response nobody reads.

That thread is one per process, shared by every search: Python runs one thread at a time (the
GIL), so several searches computing at once finish no sooner, and each extra thread is one more
the event loop queues behind whenever it needs the GIL back (to answer /health, say). Searches
wait their turn for it in its queue, not on the event loop; it steps aside between a
practitioner's days and between slices of a page it renders.

A page answered over HTTP goes further: it is computed and rendered to JSON in a process of its
own (one per server process, started at the first such search), so the server's event loop does
not share a GIL with it at all; only the day's inputs and the finished bytes cross over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import multiprocessing
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking import appointment_types, service
from clinicsync.booking import slots as slot_math
from clinicsync.booking.models import ACTIVE_CONDITION, MAX_BLOCK, Appointment, AppointmentType
from clinicsync.booking.paging import decode_cursor, encode_cursor
from clinicsync.db.base import utcnow
from clinicsync.errors import Forbidden, ValidationFailed
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Organization
from clinicsync.tenancy.principal import Principal

MAX_SLOT_SEARCH_DAYS = 92
DEFAULT_SLOT_PAGE = 500
MAX_SLOT_PAGE = 2000


_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slot-search")
_T = TypeVar("_T")
# Slots rendered between two steps aside (a few milliseconds of work).
RENDER_SLICE = 250


async def in_search_thread(function: Callable[..., _T], *args: Any) -> _T:
    """Runs ``function`` in the process's one search thread, queued behind the searches before it."""
    return await asyncio.get_running_loop().run_in_executor(_worker, functools.partial(function, *args))


_processes: list[ProcessPoolExecutor] = []


def _search_process() -> ProcessPoolExecutor:
    if not _processes:
        # forkserver: a fresh interpreter forks the worker, so no lock another thread of this
        # process holds (a connection's, the logger's) is copied into it held.
        context = multiprocessing.get_context("forkserver")
        _processes.append(ProcessPoolExecutor(max_workers=1, mp_context=context))
    return _processes[0]


async def in_search_process(function: Callable[..., _T], *args: Any) -> _T:
    """Runs ``function`` in the process's search process; in the search thread if that process
    died (it is started afresh for the next search)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_search_process(), functools.partial(function, *args))
    except BrokenProcessPool:
        _processes.clear()
        return await in_search_thread(function, *args)


def _step_aside() -> None:
    """Gives up the GIL for a moment, so an event loop waiting for it runs now rather than after
    the interpreter's switch interval."""
    time.sleep(0)


@dataclass(frozen=True)
class SlotPage:
    time_zone: str
    duration_minutes: int
    appointment_type_id: uuid.UUID | None
    slots: list[slot_math.Slot]
    next_cursor: str | None
    # The page as its JSON answer, when it was asked for rendered (then ``slots`` is left empty).
    rendered: bytes | None = None


def check_override(principal: Principal, override: bool) -> None:
    if override and not principal.is_admin:
        raise Forbidden("override: only owners and admins may override the booking rules")


def booking_window(organization: Organization, now: datetime) -> tuple[datetime, datetime]:
    """The earliest start minimum notice allows and the latest the horizon allows, both instants.
    The horizon counts the clinic's own days: it ends at the clinic's midnight after its last day."""
    zone = ZoneInfo(organization.time_zone)
    earliest = now + timedelta(minutes=organization.min_notice_minutes)
    last_day = service.clinic_today(organization, now) + timedelta(days=organization.booking_horizon_days)
    latest = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return earliest, latest - timedelta(microseconds=1)


async def search_slots(
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
    limit: int = DEFAULT_SLOT_PAGE,
    cursor: str | None = None,
    now: datetime | None = None,
    rendered: bool = False,
) -> SlotPage:
    """One page of free slots. ``rendered``: the page is wanted as its JSON answer only, computed
    and rendered in the search process (``SlotPage.rendered``)."""
    if last_day < first_day:
        raise ValidationFailed("to", "must be on or after from")
    if (last_day - first_day).days >= MAX_SLOT_SEARCH_DAYS:
        raise ValidationFailed("to", f"a search covers at most {MAX_SLOT_SEARCH_DAYS} days; page with cursor")
    check_override(principal, override)
    organization = await tenancy_service.get_organization(session, principal.organization_id)
    zone = ZoneInfo(organization.time_zone)
    now = now or utcnow()
    clinic_interval = timedelta(minutes=organization.slot_interval_minutes)
    interval = timedelta(minutes=interval_minutes) if interval_minutes else clinic_interval
    if interval != clinic_interval and not override:
        raise ValidationFailed(
            "interval_minutes",
            f"slots follow the clinic's {organization.slot_interval_minutes}-minute grid; "
            "owners and admins may add override=true to see other starts",
        )
    appointment_type: AppointmentType | None = None
    if appointment_type_id is not None:
        appointment_type = await appointment_types.bookable_type(
            session, principal, appointment_type_id, practitioner_id
        )
        if duration_minutes is not None and duration_minutes != appointment_type.duration_minutes:
            raise ValidationFailed(
                "duration_minutes",
                f"{appointment_type.name} lasts {appointment_type.duration_minutes} minutes; leave it out",
            )
    duration = timedelta(
        minutes=appointment_type.duration_minutes
        if appointment_type
        else duration_minutes or organization.default_appointment_minutes
    )
    if practitioner_id is not None:
        practitioners = [await service.get_practitioner(session, principal, practitioner_id)]
    else:
        practitioners = [p for p in await service.list_practitioners(session, principal) if p.is_active]
        if appointment_type is not None and not appointment_type.all_practitioners:
            practitioners = [p for p in practitioners if p.id in appointment_type.practitioner_ids]
    after: tuple[datetime, str] | None = None
    if cursor is not None:
        raw_start, raw_practitioner = decode_cursor(cursor, 2)
        try:
            after = (datetime.fromisoformat(raw_start), raw_practitioner)
        except ValueError:
            raise ValidationFailed("cursor", "is not a cursor this list returned") from None
        first_day = max(first_day, after[0].astimezone(zone).date())
    first_day = max(first_day, service.clinic_today(organization, now))
    earliest, latest = booking_window(organization, now)
    rules = slot_math.SearchRules(
        zone=zone,
        duration=duration,
        interval=interval,
        clinic_interval=clinic_interval,
        earliest_start=earliest,
        latest_start=latest,
        buffer_before=timedelta(minutes=appointment_type.buffer_before_minutes if appointment_type else 0),
        buffer_after=timedelta(minutes=appointment_type.buffer_after_minutes if appointment_type else 0),
        override=override,
        not_before=now,
    )
    ids = [p.id for p in practitioners]
    weekly, overrides = await service.schedule_of(session, organization.id, ids, first_day, last_day)
    busy = await busy_times(session, organization.id, ids, first_day, last_day, zone)
    empty = SlotPage(
        time_zone=organization.time_zone,
        duration_minutes=int(duration.total_seconds() // 60),
        appointment_type_id=appointment_type.id if appointment_type else None,
        slots=[],
        next_cursor=None,
    )
    arguments = (ids, first_day, last_day, weekly, overrides, busy, rules, after, limit)
    if rendered:
        body, next_cursor = await in_search_process(_rendered_page, empty, *arguments)
        return dataclasses.replace(empty, next_cursor=next_cursor, rendered=body)
    slots, next_cursor = await in_search_thread(_page, *arguments)
    return dataclasses.replace(empty, slots=slots, next_cursor=next_cursor)


async def busy_times(
    session: AsyncSession,
    organization_id: uuid.UUID,
    practitioner_ids: list[uuid.UUID],
    first_day: date,
    last_day: date,
    zone: ZoneInfo,
) -> dict[uuid.UUID, list[tuple[datetime, datetime]]]:
    """Blocked ranges (buffers included) touching the local days, read from a range of the
    active-appointments index bounded on both sides."""
    # Padded a day each side: a slot's own buffers reach past its day's edges.
    range_start = datetime.combine(first_day - timedelta(days=1), datetime.min.time(), tzinfo=zone)
    range_end = datetime.combine(last_day + timedelta(days=2), datetime.min.time(), tzinfo=zone)
    busy: dict[uuid.UUID, list[tuple[datetime, datetime]]] = {pid: [] for pid in practitioner_ids}
    rows = await session.execute(
        select(Appointment.practitioner_id, Appointment.blocked_from, Appointment.blocked_until).where(
            Appointment.organization_id == organization_id,
            Appointment.practitioner_id.in_(practitioner_ids),
            ACTIVE_CONDITION,
            Appointment.blocked_from > range_start - MAX_BLOCK,
            Appointment.blocked_from < range_end,
            Appointment.blocked_until > range_start,
        )
    )
    for pid, blocked_from, blocked_until in rows:
        busy[pid].append((blocked_from, blocked_until))
    return busy


def _page(
    practitioner_ids: list[uuid.UUID],
    first_day: date,
    last_day: date,
    weekly: dict[uuid.UUID, list[slot_math.WeeklyInterval]],
    overrides: dict[uuid.UUID, list[slot_math.DateOverride]],
    busy: dict[uuid.UUID, list[tuple[datetime, datetime]]],
    rules: slot_math.SearchRules,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[list[slot_math.Slot], str | None]:
    """One page of slots in (start, practitioner) order, computed a day at a time up to ``limit``."""
    diaries = {pid: slot_math.BusyTimes(busy[pid]) for pid in practitioner_ids}
    page: list[slot_math.Slot] = []
    day = first_day
    while day <= last_day:
        todays: list[slot_math.Slot] = []
        for pid in practitioner_ids:
            todays.extend(
                slot_math.day_slots(
                    practitioner_id=pid,
                    day=day,
                    weekly=weekly[pid],
                    overrides=overrides[pid],
                    busy=diaries[pid],
                    rules=rules,
                )
            )
            _step_aside()
        todays.sort(key=lambda slot: (slot.start, str(slot.practitioner_id)))
        for slot in todays:
            if after is not None and (slot.start, str(slot.practitioner_id)) <= after:
                continue
            if len(page) == limit:
                last = page[-1]
                return page, encode_cursor(last.start.isoformat(), last.practitioner_id)
            page.append(slot)
        day += timedelta(days=1)
    return page, None


def _rendered_page(frame: SlotPage, *arguments: Any) -> tuple[bytes, str | None]:
    """``_page`` and ``render`` in one step, for the search process: only bytes come back."""
    slots, next_cursor = _page(*arguments)
    return render(dataclasses.replace(frame, slots=slots, next_cursor=next_cursor)), next_cursor


def label(local: datetime) -> str:
    """ "Sun 7 Nov 2027 01:30 EST (-05:00)": the offset tells the two 01:30s of a fall-back night apart."""
    return f"{local:%a} {local.day} {local:%b %Y %H:%M} {local.tzname()} ({local.isoformat()[-6:]})"


def render(page: SlotPage) -> bytes:
    """The page as JSON: local times with their offsets, one compact object per slot."""
    zone = ZoneInfo(page.time_zone)
    slots: list[dict[str, Any]] = []
    for first in range(0, len(page.slots), RENDER_SLICE):
        slots.extend(
            {
                "practitioner_id": str(slot.practitioner_id),
                "start": slot.local_start.isoformat(),
                "end": slot.end.astimezone(zone).isoformat(),
                "label": label(slot.local_start),
                "override": slot.override,
            }
            for slot in page.slots[first : first + RENDER_SLICE]
        )
        _step_aside()
    body = {
        "time_zone": page.time_zone,
        "duration_minutes": page.duration_minutes,
        "appointment_type_id": str(page.appointment_type_id) if page.appointment_type_id else None,
        "slots": slots,
        "next_cursor": page.next_cursor,
    }
    return json.dumps(body, separators=(",", ":")).encode()
