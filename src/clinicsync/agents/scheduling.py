"""Practitioners and free times, said the way a receptionist says them, in the clinic's zone."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.agents import spoken
from clinicsync.agents.context import (
    LOOK_AHEAD_DAYS,
    AgentContext,
    Clinic,
    ToolProblem,
    clinic_of,
    name_words,
    practitioners,
    resolve_practitioner,
    resolve_type,
)
from clinicsync.agents.schemas import (
    FindSlotsArgs,
    ListPractitionersArgs,
    ToolAnswer,
)
from clinicsync.booking import search
from clinicsync.booking import service as booking
from clinicsync.booking.models import AppointmentType, Practitioner
from clinicsync.booking.slots import Slot as SlotRead
from clinicsync.sync.slots import service as pms_slots

# Tools read whole searches in process (the API pages them); the page bound is only a guard.
IN_PROCESS_SLOT_LIMIT = 50_000
HANDFUL = 5
PER_DAY = 2
PARTS_OF_DAY = {
    "morning": (time(0), time(12)),
    "afternoon": (time(12), time(17)),
    "evening": (time(17), time(23, 59)),
}


async def list_practitioners(
    session: AsyncSession, ctx: AgentContext, args: ListPractitionersArgs
) -> ToolAnswer:
    clinic = await clinic_of(session, ctx)
    people = await practitioners(session, ctx, clinic)
    if args.speciality:
        words = set(name_words(args.speciality))
        people = [p for p in people if words & set(name_words(f"{p.title} {p.specialty}"))]
    if not people:
        return ToolAnswer(ok=True, text="No practitioner here matches that.", data={"practitioners": []})
    upcoming = await free(
        session, ctx, clinic, None, clinic.today, clinic.today + timedelta(days=LOOK_AHEAD_DAYS - 1), None
    )
    first_free: dict[uuid.UUID, SlotRead] = {}
    for slot in upcoming:
        first_free.setdefault(slot.practitioner_id, slot)
    items: list[dict[str, Any]] = []
    phrases: list[str] = []
    for person in people:
        role = ", ".join(part for part in (person.title, person.specialty) if part)
        first = first_free.get(person.id)
        next_day = spoken.spoken_day(first.local_start.date(), clinic.today) if first else None
        items.append(
            {
                "id": str(person.id),
                "name": person.name,
                "role": role,
                "next_free_day": str(first.local_start.date()) if first else None,
            }
        )
        phrase = person.name + (f" ({role})" if role else "")
        phrase += f", next free {next_day}" if next_day else ", nothing free in the next two weeks"
        phrases.append(phrase)
    return ToolAnswer(ok=True, text="; ".join(phrases) + ".", data={"practitioners": items})


def offer(slot: SlotRead, names: dict[uuid.UUID, str], clinic: Clinic) -> dict[str, Any]:
    local = slot.start.astimezone(clinic.zone)
    return {
        "start": local.strftime("%Y-%m-%d %H:%M"),
        "spoken": spoken.spoken_when(local, clinic.today),
        "practitioner": names[slot.practitioner_id],
        "practitioner_id": str(slot.practitioner_id),
        "minutes": int((slot.end - slot.start).total_seconds() // 60),
    }


def say_offers(offers: list[dict[str, Any]]) -> str:
    phrases = [f"{o['spoken']} with {o['practitioner']} (start {o['start']})" for o in offers]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


def in_part(slot: SlotRead, part: str, zone: ZoneInfo) -> bool:
    if part == "any":
        return True
    begin, end = PARTS_OF_DAY[part]
    return begin <= slot.start.astimezone(zone).time() < end


def handful(slots: list[SlotRead], zone: ZoneInfo) -> list[SlotRead]:
    """A few options spread over days: at most two a day, one per start time."""
    chosen: list[SlotRead] = []
    per_day: Counter[date] = Counter()
    seen: set[datetime] = set()
    for slot in slots:
        day = slot.start.astimezone(zone).date()
        if slot.start in seen or per_day[day] >= PER_DAY:
            continue
        chosen.append(slot)
        seen.add(slot.start)
        per_day[day] += 1
        if len(chosen) == HANDFUL:
            break
    return chosen


async def free(
    session: AsyncSession,
    ctx: AgentContext,
    clinic: Clinic,
    who: Practitioner | None,
    first: date,
    last: date,
    minutes: int | None,
    kind: AppointmentType | None = None,
) -> list[SlotRead]:
    """Free times the agent may offer: the clinic's own search, or its PMS's slots with a place left."""
    if clinic.slot_integration is not None:
        return await free_pms_slots(session, ctx, clinic, who, first, last, minutes, kind)
    result = await search.search_slots(
        session,
        ctx.principal,
        first_day=first,
        last_day=last,
        practitioner_id=who.id if who else None,
        appointment_type_id=kind.id if kind else None,
        duration_minutes=None if kind else minutes,
        limit=IN_PROCESS_SLOT_LIMIT,
    )
    return [slot for slot in result.slots if clinic.rules.offers(slot.practitioner_id)]


async def free_pms_slots(
    session: AsyncSession,
    ctx: AgentContext,
    clinic: Clinic,
    who: Practitioner | None,
    first: date,
    last: date,
    minutes: int | None,
    kind: AppointmentType | None = None,
) -> list[SlotRead]:
    """The PMS's slots with a place left, as offers; a clinic-wide slot is offered with each
    practitioner the agent may book (the PMS counts places, not whose diary they are in)."""
    assert clinic.slot_integration is not None
    length = kind.duration_minutes if kind else minutes
    found = await pms_slots.find_free(
        session,
        ctx.principal.organization_id,
        clinic.slot_integration,
        datetime.combine(first, time(), tzinfo=clinic.zone),
        datetime.combine(last + timedelta(days=1), time(), tzinfo=clinic.zone),
        practitioner_id=who.id if who else None,
        minutes=length,
        limit=IN_PROCESS_SLOT_LIMIT,
    )
    people = [who] if who else await practitioners(session, ctx, clinic)
    if kind is not None and not kind.all_practitioners:
        people = [person for person in people if person.id in kind.practitioner_ids]
    offered: list[SlotRead] = []
    for place in found:
        owners = [p.id for p in people if place.practitioner_id in (None, p.id)]
        offered.extend(
            SlotRead(owner, place.start, place.end, place.start.astimezone(clinic.zone)) for owner in owners
        )
    return offered


async def find_slots(session: AsyncSession, ctx: AgentContext, args: FindSlotsArgs) -> ToolAnswer:
    clinic = await clinic_of(session, ctx)
    who = await resolve_practitioner(session, ctx, clinic, args.practitioner)
    first = read_day(args.date, clinic) if args.date else clinic.today
    last = (
        read_day(args.date_to, clinic)
        if args.date_to
        else (first if args.date else first + timedelta(days=6))
    )
    if last < first:
        raise ToolProblem("The end of the range is before its start.")
    if first < clinic.today:
        raise ToolProblem("That date has already passed.")
    if (last - first).days > 31:
        raise ToolProblem("Please pick a range of a month or less.")
    kind = await resolve_type(session, ctx, clinic, args.appointment_type)
    names = {p.id: p.name for p in await practitioners(session, ctx, clinic)}
    minutes = args.duration_minutes
    slots = [
        s
        for s in await free(session, ctx, clinic, who, first, last, minutes, kind)
        if in_part(s, args.part_of_day, clinic.zone)
    ]
    lead = "I can offer"
    if not slots:
        later_first, later_last = last + timedelta(days=1), last + timedelta(days=LOOK_AHEAD_DAYS)
        slots = [
            s
            for s in await free(session, ctx, clinic, who, later_first, later_last, minutes, kind)
            if in_part(s, args.part_of_day, clinic.zone)
        ]
        lead = "Nothing is free then; the next free times are"
        if not slots:
            return ToolAnswer(
                ok=True,
                text="Nothing is free in the next two weeks; please call the front desk.",
                data={"slots": []},
            )
    offers = [offer(slot, names, clinic) for slot in handful(slots, clinic.zone)]
    return ToolAnswer(
        ok=True, text=f"{lead} {say_offers(offers)}.", data={"slots": offers, "time_zone": clinic.zone.key}
    )


def read_day(text: str, clinic: Clinic) -> date:
    day = spoken.read_day(text, clinic.today)
    if day is None:
        raise ToolProblem(f"I could not read the date {text}; please give it like 2026-03-03.")
    return day


def local_start(text: str, clinic: Clinic) -> datetime:
    parsed = spoken.read_local_start(text)
    if parsed is None:
        raise ToolProblem(f"I could not read the time {text}; please give it like 2026-03-03 14:30.")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=clinic.zone)
    return parsed.astimezone(clinic.zone)


async def nearest(
    session: AsyncSession,
    ctx: AgentContext,
    clinic: Clinic,
    who: Practitioner | None,
    wanted: datetime,
    minutes: int | None,
    kind: AppointmentType | None = None,
    excluding: datetime | None = None,
) -> list[dict[str, Any]]:
    """Free times closest to the one asked for, that day and the next few (never ``excluding``,
    a time the PMS has just refused although our count had a place)."""
    first = max(wanted.date() - timedelta(days=1), clinic.today)
    slots = await free(session, ctx, clinic, who, first, first + timedelta(days=4), minutes, kind)
    slots.sort(key=lambda slot: abs((slot.start - wanted).total_seconds()))
    names = {p.id: p.name for p in await practitioners(session, ctx, clinic)}
    offers: list[dict[str, Any]] = []
    seen: set[datetime] = set()
    for slot in slots:
        if slot.start not in seen and slot.start != excluding:
            seen.add(slot.start)
            offers.append(offer(slot, names, clinic))
        if len(offers) == 3:
            break
    return sorted(offers, key=lambda offer: str(offer["start"]))


async def unavailable(
    session: AsyncSession,
    ctx: AgentContext,
    clinic: Clinic,
    who: Practitioner | None,
    wanted: datetime,
    minutes: int | None,
    kind: AppointmentType | None = None,
    excluding: datetime | None = None,
) -> ToolProblem:
    offers = await nearest(session, ctx, clinic, who, wanted, minutes, kind, excluding)
    if not offers:
        return ToolProblem("That time is not available and nothing is free close to it.", alternatives=[])
    return ToolProblem(
        f"That time is not available; the nearest free times are {say_offers(offers)}.", alternatives=offers
    )


async def who_is_free(
    session: AsyncSession,
    ctx: AgentContext,
    clinic: Clinic,
    wanted: datetime,
    minutes: int | None,
    kind: AppointmentType | None = None,
    *,
    only: Practitioner | None = None,
) -> Practitioner | None:
    """Who (``only``, when named) is free at ``wanted`` for the whole visit; None when nobody is."""
    slots = await free(session, ctx, clinic, only, wanted.date(), wanted.date(), minutes, kind)
    for slot in slots:
        if slot.start == wanted and (only is None or slot.practitioner_id == only.id):
            return only or await booking.get_practitioner(session, ctx.principal, slot.practitioner_id)
    return None
