"""The agent tools: what a receptionist would say, booked through the clinic's own rules.

Every tool takes the caller's context and validated arguments and returns a ToolAnswer whose
text is one short line an agent can say aloud. Anything that goes wrong is a ToolProblem with a
one-sentence message; no exception text or stack ever reaches a caller. No HTTP here.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.agents import gateway, policy, spoken
from clinicsync.agents.schemas import (
    BookArgs,
    CancelArgs,
    FindPatientArgs,
    FindSlotsArgs,
    ListPractitionersArgs,
    LookupBookingArgs,
    ProofArgs,
    RegisterPatientArgs,
    RescheduleArgs,
    ToolAnswer,
)
from clinicsync.booking import appointments
from clinicsync.booking import service as booking
from clinicsync.booking.models import ACTIVE_STATUSES, Appointment, BookingSource, Patient, Practitioner
from clinicsync.booking.schemas import (
    AppointmentCreate,
    AppointmentUpdate,
    PatientCreate,
    PatientProof,
    SlotRead,
)
from clinicsync.db.base import utcnow
from clinicsync.errors import ClinicSyncError, Conflict, NotFound, ValidationFailed
from clinicsync.sync import external_only
from clinicsync.sync.manager import SyncManager
from clinicsync.tenancy.principal import Principal

HANDFUL = 5
PER_DAY = 2
LOOK_AHEAD_DAYS = 14
PARTS_OF_DAY = {
    "morning": (time(0), time(12)),
    "afternoon": (time(12), time(17)),
    "evening": (time(17), time(23, 59)),
}
TITLES = {"dr", "doctor", "mr", "mrs", "ms", "miss", "prof", "professor"}


class ToolProblem(Exception):
    """One sentence to say to the caller; the tool made no change."""

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class AgentContext:
    principal: Principal
    booking_source: BookingSource
    surface: str  # mcp, vapi, retell, functions
    sync: SyncManager
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Clinic:
    zone: ZoneInfo
    region: str
    today: date
    default_minutes: int
    rules: policy.AgentPolicy


async def _clinic(session: AsyncSession, ctx: AgentContext) -> Clinic:
    organization, zone = await booking.organization_zone(session, ctx.principal.organization_id)
    rules = await policy.load(session, ctx.principal.organization_id)
    region = rules.phone_region or spoken.region_of_zone(organization.time_zone, policy.default_region())
    today = utcnow().astimezone(zone).date()
    return Clinic(zone, region, today, organization.default_appointment_minutes, rules)


# --- practitioners ---------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [word for word in re.findall(r"[a-z]+", text.lower()) if word not in TITLES]


async def _practitioners(session: AsyncSession, ctx: AgentContext, clinic: Clinic) -> list[Practitioner]:
    every = await booking.list_practitioners(session, ctx.principal)
    return [p for p in every if p.is_active and clinic.rules.offers(p.id)]


async def _resolve_practitioner(
    session: AsyncSession, ctx: AgentContext, clinic: Clinic, wanted: str | None
) -> Practitioner | None:
    """None for "any"; otherwise the one practitioner the words name, or a question back."""
    if wanted is None or wanted.strip().lower() in ("", "any", "anyone", "anybody", "first available"):
        return None
    candidates = await _practitioners(session, ctx, clinic)
    try:
        wanted_id = uuid.UUID(wanted.strip())
        matches = [p for p in candidates if p.id == wanted_id]
    except ValueError:
        words = _words(wanted)
        matches = [p for p in candidates if words and set(words) <= set(_words(p.name))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ToolProblem(f"There is no practitioner called {wanted.strip()} taking bookings here.")
    names = " or ".join(p.name for p in matches[:3])
    raise ToolProblem(f"Did you mean {names}?")


async def list_practitioners(
    session: AsyncSession, ctx: AgentContext, args: ListPractitionersArgs
) -> ToolAnswer:
    clinic = await _clinic(session, ctx)
    people = await _practitioners(session, ctx, clinic)
    if args.speciality:
        words = set(_words(args.speciality))
        people = [p for p in people if words & set(_words(f"{p.title} {p.specialty}"))]
    if not people:
        return ToolAnswer(ok=True, text="No practitioner here matches that.", data={"practitioners": []})
    result = await booking.search_slots(
        session,
        ctx.principal,
        first_day=clinic.today,
        last_day=clinic.today + timedelta(days=LOOK_AHEAD_DAYS - 1),
    )
    first_free: dict[uuid.UUID, SlotRead] = {}
    for slot in result.slots:
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


# --- slots -----------------------------------------------------------------------------------------


def _offer(slot: SlotRead, names: dict[uuid.UUID, str], clinic: Clinic) -> dict[str, Any]:
    local = slot.start.astimezone(clinic.zone)
    return {
        "start": local.strftime("%Y-%m-%d %H:%M"),
        "spoken": spoken.spoken_when(local, clinic.today),
        "practitioner": names[slot.practitioner_id],
        "practitioner_id": str(slot.practitioner_id),
        "minutes": int((slot.end - slot.start).total_seconds() // 60),
    }


def _say_offers(offers: list[dict[str, Any]]) -> str:
    phrases = [f"{o['spoken']} with {o['practitioner']} (start {o['start']})" for o in offers]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _in_part(slot: SlotRead, part: str, zone: ZoneInfo) -> bool:
    if part == "any":
        return True
    begin, end = PARTS_OF_DAY[part]
    return begin <= slot.start.astimezone(zone).time() < end


def _handful(slots: list[SlotRead], zone: ZoneInfo) -> list[SlotRead]:
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


async def _free(
    session: AsyncSession,
    ctx: AgentContext,
    clinic: Clinic,
    who: Practitioner | None,
    first: date,
    last: date,
    minutes: int | None,
) -> list[SlotRead]:
    result = await booking.search_slots(
        session,
        ctx.principal,
        first_day=first,
        last_day=last,
        practitioner_id=who.id if who else None,
        duration_minutes=minutes,
    )
    return [slot for slot in result.slots if clinic.rules.offers(slot.practitioner_id)]


async def find_slots(session: AsyncSession, ctx: AgentContext, args: FindSlotsArgs) -> ToolAnswer:
    clinic = await _clinic(session, ctx)
    who = await _resolve_practitioner(session, ctx, clinic, args.practitioner)
    first = _day(args.date, clinic) if args.date else clinic.today
    last = _day(args.date_to, clinic) if args.date_to else (first if args.date else first + timedelta(days=6))
    if last < first:
        raise ToolProblem("The end of the range is before its start.")
    if first < clinic.today:
        raise ToolProblem("That date has already passed.")
    if (last - first).days > 31:
        raise ToolProblem("Please pick a range of a month or less.")
    names = {p.id: p.name for p in await _practitioners(session, ctx, clinic)}
    minutes = args.duration_minutes
    slots = [
        s
        for s in await _free(session, ctx, clinic, who, first, last, minutes)
        if _in_part(s, args.part_of_day, clinic.zone)
    ]
    lead = "I can offer"
    if not slots:
        later_first, later_last = last + timedelta(days=1), last + timedelta(days=LOOK_AHEAD_DAYS)
        slots = [
            s
            for s in await _free(session, ctx, clinic, who, later_first, later_last, minutes)
            if _in_part(s, args.part_of_day, clinic.zone)
        ]
        lead = "Nothing is free then; the next free times are"
        if not slots:
            return ToolAnswer(
                ok=True,
                text="Nothing is free in the next two weeks; please call the front desk.",
                data={"slots": []},
            )
    offers = [_offer(slot, names, clinic) for slot in _handful(slots, clinic.zone)]
    return ToolAnswer(
        ok=True, text=f"{lead} {_say_offers(offers)}.", data={"slots": offers, "time_zone": clinic.zone.key}
    )


def _day(text: str, clinic: Clinic) -> date:
    day = spoken.read_day(text, clinic.today)
    if day is None:
        raise ToolProblem(f"I could not read the date {text}; please give it like 2026-03-03.")
    return day


# --- patients --------------------------------------------------------------------------------------

DOB_FORMATS = ("%Y-%m-%d", "%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y", "%B %d, %Y", "%d/%m/%Y")


def _birth_date(text: str | None) -> date | None:
    if text is None or not text.strip():
        return None
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text.strip())
    for fmt in DOB_FORMATS:
        try:
            found = datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
        if found > date.today():
            raise ToolProblem("That date of birth is in the future.")
        return found
    raise ToolProblem(f"I could not read the date of birth {text}; please give it like 1984-07-21.")


def _phone(text: str | None, clinic: Clinic) -> str | None:
    if text is None or not text.strip():
        return None
    number = spoken.phone_e164(text, clinic.region)
    if number is None:
        raise ToolProblem("That phone number doesn't look complete; could you repeat it?")
    return number


def _full(patient: Patient) -> str:
    return f"{patient.first_name} {patient.last_name}"


def _status(appointment: Appointment) -> str:
    return appointment.status.value.replace("_", " ")


def _patient_facts(patient: Patient) -> dict[str, Any]:
    return {"patient_id": str(patient.id), "first_name": patient.first_name, "last_name": patient.last_name}


async def _by_phone(session: AsyncSession, ctx: AgentContext, phone: str) -> list[Patient]:
    found = await booking.identification_candidates(session, ctx.principal, search=phone, limit=20)
    return [p for p in found if p.phone == phone]


async def _by_name(session: AsyncSession, ctx: AgentContext, name: str) -> list[Patient]:
    words = _words(name)
    if not words:
        return []
    found = await booking.identification_candidates(session, ctx.principal, search=words[-1], limit=50)
    return [p for p in found if set(words) <= set(_words(f"{p.first_name} {p.last_name}"))]


async def find_patient(session: AsyncSession, ctx: AgentContext, args: FindPatientArgs) -> ToolAnswer:
    clinic = await _clinic(session, ctx)
    phone = _phone(args.phone, clinic)
    born = _birth_date(args.date_of_birth)
    if phone is None and not args.name:
        raise ToolProblem("I need the patient's phone number, or their name and date of birth.")
    if phone is not None:
        matches = await _by_phone(session, ctx, phone)
        if args.name and len(matches) > 1:
            matches = [p for p in matches if p in await _by_name(session, ctx, args.name)]
        if born is not None and len(matches) > 1:
            matches = [p for p in matches if p.date_of_birth == born]
    else:
        assert args.name is not None
        matches = await _by_name(session, ctx, args.name)
        if matches and born is None:
            # A name alone is not proof of identity, and two patients may share it.
            question = (
                f"There is more than one patient named {args.name.strip()}; what is their date of birth?"
                if len(matches) > 1
                else "What is the patient's date of birth, to be sure it's the right record?"
            )
            return ToolAnswer(
                ok=True, text=question, data={"needs": "date_of_birth", "matches": len(matches)}
            )
        matches = [p for p in matches if p.date_of_birth == born]
    if not matches:
        return ToolAnswer(
            ok=True, text="I couldn't find that patient; shall I register them as new?", data={"found": False}
        )
    if len(matches) > 1:
        return ToolAnswer(
            ok=True,
            text="More than one patient matches; what is the patient's full name and date of birth?",
            data={"needs": "date_of_birth", "matches": len(matches)},
        )
    patient = matches[0]
    return ToolAnswer(
        ok=True,
        text=f"Found {patient.first_name} {patient.last_name} (patient_id {patient.id}).",
        data={"found": True, **_patient_facts(patient)},
    )


async def register_patient(session: AsyncSession, ctx: AgentContext, args: RegisterPatientArgs) -> ToolAnswer:
    clinic = await _clinic(session, ctx)
    phone = _phone(args.phone, clinic)
    assert phone is not None
    born = _birth_date(args.date_of_birth)
    full_name = f"{args.first_name} {args.last_name}"
    for patient in await _by_phone(session, ctx, phone):
        # The same person calling again is found, never registered twice.
        if set(_words(full_name)) <= set(_words(f"{patient.first_name} {patient.last_name}")):
            return ToolAnswer(
                ok=True,
                text=f"{_full(patient)} is already registered (patient_id {patient.id}).",
                data={"created": False, **_patient_facts(patient)},
            )
    try:
        data = PatientCreate(
            first_name=args.first_name.strip(),
            last_name=args.last_name.strip(),
            phone=phone,
            email=args.email or None,
            date_of_birth=born,
        )
    except ValueError:
        raise ToolProblem("That email address doesn't look right; could you spell it again?") from None
    patient = await gateway.register(ctx.sync, session, ctx.principal, data)
    return ToolAnswer(
        ok=True,
        text=f"Registered {patient.first_name} {patient.last_name} (patient_id {patient.id}).",
        data={"created": True, **_patient_facts(patient)},
    )


# --- booking ---------------------------------------------------------------------------------------


def _local_start(text: str, clinic: Clinic) -> datetime:
    parsed = spoken.read_local_start(text)
    if parsed is None:
        raise ToolProblem(f"I could not read the time {text}; please give it like 2026-03-03 14:30.")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=clinic.zone)
    return parsed.astimezone(clinic.zone)


async def _nearest(
    session: AsyncSession,
    ctx: AgentContext,
    clinic: Clinic,
    who: Practitioner | None,
    wanted: datetime,
    minutes: int | None,
) -> list[dict[str, Any]]:
    """Free times closest to the one asked for, that day and the next few."""
    first = max(wanted.date() - timedelta(days=1), clinic.today)
    slots = await _free(session, ctx, clinic, who, first, first + timedelta(days=4), minutes)
    slots.sort(key=lambda slot: abs((slot.start - wanted).total_seconds()))
    names = {p.id: p.name for p in await _practitioners(session, ctx, clinic)}
    offers: list[dict[str, Any]] = []
    seen: set[datetime] = set()
    for slot in slots:
        if slot.start not in seen:
            seen.add(slot.start)
            offers.append(_offer(slot, names, clinic))
        if len(offers) == 3:
            break
    return sorted(offers, key=lambda offer: str(offer["start"]))


async def _unavailable(
    session: AsyncSession,
    ctx: AgentContext,
    clinic: Clinic,
    who: Practitioner | None,
    wanted: datetime,
    minutes: int | None,
) -> ToolProblem:
    offers = await _nearest(session, ctx, clinic, who, wanted, minutes)
    if not offers:
        return ToolProblem("That time is not available and nothing is free close to it.", alternatives=[])
    return ToolProblem(
        f"That time is not available; the nearest free times are {_say_offers(offers)}.", alternatives=offers
    )


async def _who_is_free(
    session: AsyncSession, ctx: AgentContext, clinic: Clinic, wanted: datetime, minutes: int | None
) -> Practitioner | None:
    slots = await _free(session, ctx, clinic, None, wanted.date(), wanted.date(), minutes)
    for slot in slots:
        if slot.start == wanted:
            return await booking.get_practitioner(session, ctx.principal, slot.practitioner_id)
    return None


def _note(ctx: AgentContext, reason: str) -> str:
    via = f"booked by {ctx.booking_source.value} via {ctx.surface}"
    if ctx.call_id:
        via += f", call {ctx.call_id}"
    return f"{reason.strip()} ({via})" if reason.strip() else via


async def book(session: AsyncSession, ctx: AgentContext, args: BookArgs) -> ToolAnswer:
    clinic = await _clinic(session, ctx)
    if not clinic.rules.booking_enabled:
        raise ToolProblem("This clinic doesn't take bookings by assistant; please call the front desk.")
    patient = await _patient(session, ctx, args.patient_id)
    wanted = _local_start(args.start, clinic)
    if wanted.date() < clinic.today or wanted < utcnow():
        raise ToolProblem("That time has already passed.")
    who = await _resolve_practitioner(session, ctx, clinic, args.practitioner)
    minutes = args.duration_minutes or clinic.default_minutes
    if who is None:
        who = await _who_is_free(session, ctx, clinic, wanted, minutes)
        if who is None:
            raise await _unavailable(session, ctx, clinic, None, wanted, minutes)
    start = wanted.astimezone(ZoneInfo("UTC"))
    request = AppointmentCreate(
        patient_id=patient.id,
        practitioner_id=who.id,
        start=start,
        end=start + timedelta(minutes=minutes),
        booking_source=ctx.booking_source,
        notes=_note(ctx, args.reason),
    )
    practitioner_name = who.name
    try:
        created = await gateway.create(ctx.sync, session, ctx.principal, request)
    except (Conflict, ValidationFailed) as error:
        if isinstance(error, ValidationFailed) and error.field not in ("start", "end"):
            raise
        raise await _unavailable(session, ctx, clinic, who, wanted, minutes) from None
    await policy.record_booking(session, ctx, created.id, created.booking_reference, "booked")
    when = spoken.spoken_when(created.start.astimezone(clinic.zone), clinic.today)
    return ToolAnswer(
        ok=True,
        text=(
            f"Booked {patient.first_name} {patient.last_name} for {when} with {practitioner_name}; "
            f"the booking reference is {created.booking_reference}."
        ),
        data={
            "booking_reference": created.booking_reference,
            "appointment_id": str(created.id),
            "start": created.start.astimezone(clinic.zone).strftime("%Y-%m-%d %H:%M"),
            "practitioner": practitioner_name,
            "status": created.status.value,
        },
    )


async def _patient(session: AsyncSession, ctx: AgentContext, patient_id: str) -> Patient:
    try:
        return await booking.patient_in_organization(session, ctx.principal, uuid.UUID(patient_id.strip()))
    except (ValueError, NotFound):
        raise ToolProblem("I couldn't find that patient; please look them up again.") from None


NO_SUCH_BOOKING = "I can't find a booking with that reference and those details."


async def _proven(session: AsyncSession, ctx: AgentContext, clinic: Clinic, args: ProofArgs) -> Appointment:
    """The booking the reference names, only when the phone or date of birth matches its patient."""
    phone = _phone(args.phone, clinic)
    born = _birth_date(args.date_of_birth)
    if phone is None and born is None:
        raise ToolProblem("To find the booking I also need the patient's phone number or date of birth.")
    appointment = await _by_reference(session, ctx, args.booking_reference.strip().upper())
    if appointment is None:
        raise ToolProblem(NO_SUCH_BOOKING)
    patient = await booking.patient_in_organization(session, ctx.principal, appointment.patient_id)
    if (phone is not None and patient.phone == phone) or (born is not None and patient.date_of_birth == born):
        return appointment
    raise ToolProblem(NO_SUCH_BOOKING)


async def _by_reference(session: AsyncSession, ctx: AgentContext, reference: str) -> Appointment | None:
    """The booking a reference names, before its proof is checked (``_proven`` checks it)."""
    try:
        return await appointments.by_reference_for_proof(session, ctx.principal, reference)
    except NotFound:
        pass
    # An external-only clinic's booking lives in the PMS; an agent's own booking is found by its trail.
    record_id = await policy.booked_by_agent(session, ctx.principal.organization_id, reference)
    if record_id is None:
        return None
    return await external_only.get_view(session, ctx.principal, record_id)


def _proof(args: ProofArgs, clinic: Clinic) -> PatientProof:
    """The proof the caller gave, carried into the change so the booking core checks it too."""
    return PatientProof(
        reference=args.booking_reference.strip().upper()[:16] or "-",
        phone=_phone(args.phone, clinic),
        date_of_birth=_birth_date(args.date_of_birth),
    )


def _describe(appointment: Appointment, clinic: Clinic) -> dict[str, Any]:
    local = appointment.starts_at.astimezone(clinic.zone)
    return {
        "booking_reference": appointment.booking_reference,
        "start": local.strftime("%Y-%m-%d %H:%M"),
        "spoken": spoken.spoken_when(local, clinic.today),
        "practitioner": appointment.practitioner_name,
        "status": appointment.status.value,
    }


async def lookup_booking(session: AsyncSession, ctx: AgentContext, args: LookupBookingArgs) -> ToolAnswer:
    clinic = await _clinic(session, ctx)
    appointment = await _proven(session, ctx, clinic, args)
    facts = _describe(appointment, clinic)
    if appointment.status not in ACTIVE_STATUSES:
        text = f"Booking {facts['booking_reference']} for {facts['spoken']} is {_status(appointment)}."
    else:
        text = f"Booking {facts['booking_reference']} is {facts['spoken']} with {facts['practitioner']}."
    return ToolAnswer(ok=True, text=text, data=facts)


async def reschedule(session: AsyncSession, ctx: AgentContext, args: RescheduleArgs) -> ToolAnswer:
    clinic = await _clinic(session, ctx)
    if not clinic.rules.booking_enabled:
        raise ToolProblem("This clinic doesn't take bookings by assistant; please call the front desk.")
    appointment = await _proven(session, ctx, clinic, args)
    if appointment.status not in ACTIVE_STATUSES:
        raise ToolProblem(f"That booking is {_status(appointment)} and can't be moved.")
    wanted = _local_start(args.new_start, clinic)
    if wanted < utcnow():
        raise ToolProblem("That time has already passed.")
    who = await _resolve_practitioner(session, ctx, clinic, args.practitioner) if args.practitioner else None
    if who is None and not clinic.rules.offers(appointment.practitioner_id):
        raise ToolProblem("That booking can only be changed by the front desk.")
    minutes = int((appointment.ends_at - appointment.starts_at).total_seconds() // 60)
    appointment_id, version = appointment.id, appointment.version
    staying_with = who or await booking.get_practitioner(session, ctx.principal, appointment.practitioner_id)
    try:
        moved = await gateway.move(
            ctx.sync,
            session,
            ctx.principal,
            appointment_id,
            AppointmentUpdate(
                start=wanted,
                practitioner_id=who.id if who else None,
                version=version,
                proof=_proof(args, clinic),
            ),
        )
    except (Conflict, ValidationFailed) as error:
        if isinstance(error, ValidationFailed) and error.field not in ("start", "end"):
            raise
        raise await _unavailable(session, ctx, clinic, staying_with, wanted, minutes) from None
    await policy.record_booking(session, ctx, moved.id, moved.booking_reference, "rescheduled")
    facts = _describe(moved, clinic)
    return ToolAnswer(
        ok=True,
        text=f"Moved booking {facts['booking_reference']} to {facts['spoken']} with {facts['practitioner']}.",
        data=facts,
    )


async def cancel(session: AsyncSession, ctx: AgentContext, args: CancelArgs) -> ToolAnswer:
    clinic = await _clinic(session, ctx)
    appointment = await _proven(session, ctx, clinic, args)
    if appointment.status not in ACTIVE_STATUSES:
        facts = _describe(appointment, clinic)
        return ToolAnswer(
            ok=True,
            text=f"Booking {facts['booking_reference']} is already {_status(appointment)}.",
            data=facts,
        )
    reason = (
        args.reason.strip() or f"cancelled by the patient through the {ctx.booking_source.value} assistant"
    )
    cancelled = await gateway.cancel(
        ctx.sync, session, ctx.principal, appointment.id, reason, proof=_proof(args, clinic)
    )
    await policy.record_booking(session, ctx, cancelled.id, cancelled.booking_reference, "cancelled")
    facts = _describe(cancelled, clinic)
    return ToolAnswer(
        ok=True, text=f"Cancelled booking {facts['booking_reference']} for {facts['spoken']}.", data=facts
    )


def say_error(error: ClinicSyncError) -> str:
    """A domain error as one sentence for a caller on the phone."""
    if isinstance(error, NotFound):
        return "I couldn't find that."
    if isinstance(error, ValidationFailed):
        return f"That didn't work: {error.reason}."
    if isinstance(error, Conflict):
        return "Someone else changed that booking just now; please try again."
    return "That couldn't be done; please call the front desk."
