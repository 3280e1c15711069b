"""What every agent tool shares: who is calling, the clinic as a caller hears it, one-sentence problems.

Every tool takes the caller's context and validated arguments and returns a ToolAnswer whose
text is one short line an agent can say aloud. Anything that goes wrong is a ToolProblem with a
one-sentence message; no exception text or stack ever reaches a caller. No HTTP here.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.agents import policy, spoken
from clinicsync.booking import appointment_types
from clinicsync.booking import service as booking
from clinicsync.booking.models import AppointmentType, BookingSource, Practitioner
from clinicsync.db.base import utcnow
from clinicsync.errors import ClinicSyncError, Conflict, NotFound, ValidationFailed
from clinicsync.sync.manager import SyncManager
from clinicsync.sync.slots import service as slots
from clinicsync.tenancy.principal import Principal

LOOK_AHEAD_DAYS = 14
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
    # Set when the clinic's schedule is its PMS's slots: the integration whose slots are offered.
    slot_integration: uuid.UUID | None = None


async def clinic_of(session: AsyncSession, ctx: AgentContext) -> Clinic:
    organization, zone = await booking.organization_zone(session, ctx.principal.organization_id)
    rules = await policy.load(session, ctx.principal.organization_id)
    region = rules.phone_region or spoken.region_of_zone(organization.time_zone, policy.default_region())
    today = utcnow().astimezone(zone).date()
    slot_config = await slots.slot_config(session, ctx.principal.organization_id)
    return Clinic(
        zone,
        region,
        today,
        organization.default_appointment_minutes,
        rules,
        slot_config.integration_id if slot_config else None,
    )


def name_words(text: str) -> list[str]:
    return [word for word in re.findall(r"[a-z]+", text.lower()) if word not in TITLES]


async def practitioners(session: AsyncSession, ctx: AgentContext, clinic: Clinic) -> list[Practitioner]:
    every = await booking.list_practitioners(session, ctx.principal)
    return [p for p in every if p.is_active and clinic.rules.offers(p.id)]


async def resolve_practitioner(
    session: AsyncSession, ctx: AgentContext, clinic: Clinic, wanted: str | None
) -> Practitioner | None:
    """None for "any"; otherwise the one practitioner the words name, or a question back."""
    if wanted is None or wanted.strip().lower() in ("", "any", "anyone", "anybody", "first available"):
        return None
    candidates = await practitioners(session, ctx, clinic)
    try:
        wanted_id = uuid.UUID(wanted.strip())
        matches = [p for p in candidates if p.id == wanted_id]
    except ValueError:
        words = name_words(wanted)
        matches = [p for p in candidates if words and set(words) <= set(name_words(p.name))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ToolProblem(f"There is no practitioner called {wanted.strip()} taking bookings here.")
    names = " or ".join(p.name for p in matches[:3])
    raise ToolProblem(f"Did you mean {names}?")


def _say_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


async def resolve_type(
    session: AsyncSession, ctx: AgentContext, clinic: Clinic, wanted: str | None
) -> AppointmentType | None:
    """The appointment type the words name, among those agents may book here, or a question back.

    Without words: None (the clinic's default length), unless the clinic lets agents book only
    some types; then the one type, or a question naming them.
    """
    online = await appointment_types.list_types(session, ctx.principal, limit=200)
    allowed = [kind for kind in online if clinic.rules.books_type(kind.id)]
    if wanted is None or not wanted.strip():
        if clinic.rules.appointment_types is None:
            return None
        if len(allowed) == 1:
            return allowed[0]
        if not allowed:
            raise ToolProblem("Bookings here are made by the front desk; please call them.")
        raise ToolProblem(f"What kind of visit is it: {_say_list([kind.name for kind in allowed])}?")
    try:
        wanted_id = uuid.UUID(wanted.strip())
        matches = [kind for kind in online if kind.id == wanted_id]
    except ValueError:
        words = set(name_words(wanted))
        matches = [kind for kind in online if words and words <= set(name_words(kind.name))]
        exact = [kind for kind in matches if kind.name.strip().lower() == wanted.strip().lower()]
        matches = exact or matches
    if not matches:
        offered = _say_list([kind.name for kind in allowed]) if allowed else None
        tail = f"; I can book {offered}" if offered else ""
        raise ToolProblem(f"I can't book {wanted.strip()} here{tail}.")
    booked_by_agents = [kind for kind in matches if clinic.rules.books_type(kind.id)]
    if not booked_by_agents:
        raise ToolProblem(f"The front desk books {matches[0].name} visits here; please call them.")
    if len(booked_by_agents) > 1:
        raise ToolProblem(f"Did you mean {_say_list([kind.name for kind in booked_by_agents[:3]])}?")
    return booked_by_agents[0]


def say_error(error: ClinicSyncError) -> str:
    """A domain error as one sentence for a caller on the phone."""
    if isinstance(error, NotFound):
        return "I couldn't find that."
    if isinstance(error, ValidationFailed):
        return f"That didn't work: {error.reason}."
    if isinstance(error, Conflict):
        return "Someone else changed that booking just now; please try again."
    return "That couldn't be done; please call the front desk."
