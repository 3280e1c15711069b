"""Finding and registering patients from what a caller says: a phone number, a name and a birth date."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.agents import gateway, spoken
from clinicsync.agents.context import (
    AgentContext,
    Clinic,
    ToolProblem,
    clinic_of,
    name_words,
)
from clinicsync.agents.schemas import (
    FindPatientArgs,
    RegisterPatientArgs,
    ToolAnswer,
)
from clinicsync.booking import service as booking
from clinicsync.booking.models import Patient
from clinicsync.booking.schemas import PatientCreate
from clinicsync.errors import Conflict

DOB_FORMATS = ("%Y-%m-%d", "%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y", "%B %d, %Y")


def birth_date(text: str | None) -> date | None:
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


def phone_of(text: str | None, clinic: Clinic) -> str | None:
    if text is None or not text.strip():
        return None
    number = spoken.phone_e164(text, clinic.region)
    if number is None:
        raise ToolProblem("That phone number doesn't look complete; could you repeat it?")
    return number


def full_name(patient: Patient) -> str:
    return f"{patient.first_name} {patient.last_name}"


def patient_facts(patient: Patient) -> dict[str, Any]:
    return {"patient_id": str(patient.id), "first_name": patient.first_name, "last_name": patient.last_name}


async def _by_phone(session: AsyncSession, ctx: AgentContext, phone: str) -> list[Patient]:
    found = await booking.identification_candidates(session, ctx.principal, search=phone, limit=20)
    return [p for p in found if p.phone == phone]


async def _by_name(session: AsyncSession, ctx: AgentContext, name: str) -> list[Patient]:
    words = name_words(name)
    if not words:
        return []
    found = await booking.identification_candidates(session, ctx.principal, search=words[-1], limit=50)
    return [p for p in found if set(words) <= set(name_words(f"{p.first_name} {p.last_name}"))]


async def find_patient(session: AsyncSession, ctx: AgentContext, args: FindPatientArgs) -> ToolAnswer:
    clinic = await clinic_of(session, ctx)
    phone = phone_of(args.phone, clinic)
    born = birth_date(args.date_of_birth)
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
        data={"found": True, **patient_facts(patient)},
    )


async def register_patient(session: AsyncSession, ctx: AgentContext, args: RegisterPatientArgs) -> ToolAnswer:
    clinic = await clinic_of(session, ctx)
    phone = phone_of(args.phone, clinic)
    assert phone is not None
    born = birth_date(args.date_of_birth)
    given = f"{args.first_name} {args.last_name}"
    for patient in await _by_phone(session, ctx, phone):
        # The same person calling again is found, never registered twice.
        if set(name_words(given)) <= set(name_words(f"{patient.first_name} {patient.last_name}")):
            return ToolAnswer(
                ok=True,
                text=f"{full_name(patient)} is already registered (patient_id {patient.id}).",
                data={"created": False, **patient_facts(patient)},
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
    try:
        patient = await gateway.register(ctx.sync, session, ctx.principal, data)
    except Conflict as error:
        existing = (error.details or {}).get("existing_id") if isinstance(error.details, dict) else None
        if error.code != "duplicate_patient" or existing is None:
            raise
        # The register knows this person already (same name and date of birth): use that record.
        patient = await booking.patient_in_organization(session, ctx.principal, uuid.UUID(str(existing)))
        return ToolAnswer(
            ok=True,
            text=f"{full_name(patient)} is already registered (patient_id {patient.id}).",
            data={"created": False, **patient_facts(patient)},
        )
    return ToolAnswer(
        ok=True,
        text=f"Registered {patient.first_name} {patient.last_name} (patient_id {patient.id}).",
        data={"created": True, **patient_facts(patient)},
    )
