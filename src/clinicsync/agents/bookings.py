"""Booking, looking up, moving and cancelling: through the SyncManager, changes only with proof."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.agents import gateway, policy, spoken
from clinicsync.agents.context import (
    AgentContext,
    Clinic,
    ToolProblem,
    clinic_of,
    resolve_practitioner,
    resolve_type,
)
from clinicsync.agents.patients import birth_date, phone_of
from clinicsync.agents.scheduling import local_start, unavailable, who_is_free
from clinicsync.agents.schemas import (
    BookArgs,
    CancelArgs,
    LookupBookingArgs,
    ProofArgs,
    RescheduleArgs,
    ToolAnswer,
)
from clinicsync.booking import appointments
from clinicsync.booking import service as booking
from clinicsync.booking.models import ACTIVE_STATUSES, Appointment, Patient
from clinicsync.booking.schemas import AppointmentCreate, AppointmentUpdate, PatientProof
from clinicsync.db.base import utcnow
from clinicsync.errors import Conflict, NotFound, ValidationFailed
from clinicsync.sync import external_only
from clinicsync.sync.external_only import PmsFailed
from clinicsync.sync.slots import service as pms_slots


def _status(appointment: Appointment) -> str:
    return appointment.status.value.replace("_", " ")


def _note(ctx: AgentContext, reason: str) -> str:
    via = f"booked by {ctx.booking_source.value} via {ctx.surface}"
    if ctx.call_id:
        via += f", call {ctx.call_id}"
    return f"{reason.strip()} ({via})" if reason.strip() else via


async def book(session: AsyncSession, ctx: AgentContext, args: BookArgs) -> ToolAnswer:
    clinic = await clinic_of(session, ctx)
    if not clinic.rules.booking_enabled:
        raise ToolProblem("This clinic doesn't take bookings by assistant; please call the front desk.")
    patient = await _patient(session, ctx, args.patient_id)
    wanted = local_start(args.start, clinic)
    if wanted.date() < clinic.today or wanted < utcnow():
        raise ToolProblem("That time has already passed.")
    who = await resolve_practitioner(session, ctx, clinic, args.practitioner)
    kind = await resolve_type(session, ctx, clinic, args.appointment_type)
    minutes = kind.duration_minutes if kind else (args.duration_minutes or clinic.default_minutes)
    if who is None:
        who = await who_is_free(session, ctx, clinic, wanted, minutes, kind)
        if who is None:
            raise await unavailable(session, ctx, clinic, None, wanted, minutes, kind)
    elif clinic.slot_integration is not None and not await who_is_free(
        session, ctx, clinic, wanted, minutes, kind, only=who
    ):
        # The PMS's slot is full (or not in its schedule): the PMS would refuse it; say so first.
        raise await unavailable(session, ctx, clinic, who, wanted, minutes, kind)
    start = wanted.astimezone(ZoneInfo("UTC"))
    request = AppointmentCreate(
        patient_id=patient.id,
        practitioner_id=who.id,
        start=start,
        end=start + timedelta(minutes=minutes),
        appointment_type_id=kind.id if kind else None,
        booking_source=ctx.booking_source,
        notes=_note(ctx, args.reason),
    )
    practitioner_name = who.name
    try:
        created = await gateway.create(ctx.sync, session, ctx.principal, request)
    except (Conflict, ValidationFailed) as error:
        if isinstance(error, ValidationFailed) and error.field not in ("start", "end"):
            raise
        raise await unavailable(session, ctx, clinic, who, wanted, minutes, kind) from None
    except PmsFailed as error:
        if clinic.slot_integration is None or error.code != "pms_refused":
            raise
        # Our count had a place but the PMS has filled the slot since it was last read.
        raise await unavailable(session, ctx, clinic, who, wanted, minutes, kind, excluding=start) from None
    if clinic.slot_integration is not None:
        await pms_slots.recompute_booked(
            session,
            ctx.principal.organization_id,
            clinic.slot_integration,
            start - timedelta(days=1),
            start + timedelta(minutes=minutes),
        )
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
            "appointment_type": kind.name if kind else None,
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
    phone = phone_of(args.phone, clinic)
    born = birth_date(args.date_of_birth)
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
        phone=phone_of(args.phone, clinic),
        date_of_birth=birth_date(args.date_of_birth),
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
    clinic = await clinic_of(session, ctx)
    appointment = await _proven(session, ctx, clinic, args)
    facts = _describe(appointment, clinic)
    if appointment.status not in ACTIVE_STATUSES:
        text = f"Booking {facts['booking_reference']} for {facts['spoken']} is {_status(appointment)}."
    else:
        text = f"Booking {facts['booking_reference']} is {facts['spoken']} with {facts['practitioner']}."
    return ToolAnswer(ok=True, text=text, data=facts)


async def reschedule(session: AsyncSession, ctx: AgentContext, args: RescheduleArgs) -> ToolAnswer:
    clinic = await clinic_of(session, ctx)
    if not clinic.rules.booking_enabled:
        raise ToolProblem("This clinic doesn't take bookings by assistant; please call the front desk.")
    appointment = await _proven(session, ctx, clinic, args)
    if appointment.status not in ACTIVE_STATUSES:
        raise ToolProblem(f"That booking is {_status(appointment)} and can't be moved.")
    wanted = local_start(args.new_start, clinic)
    if wanted < utcnow():
        raise ToolProblem("That time has already passed.")
    who = await resolve_practitioner(session, ctx, clinic, args.practitioner) if args.practitioner else None
    if who is None and not clinic.rules.offers(appointment.practitioner_id):
        raise ToolProblem("That booking can only be changed by the front desk.")
    kind_id = appointment.appointment_type_id
    if kind_id is not None and not clinic.rules.books_type(kind_id):
        raise ToolProblem("That booking can only be changed by the front desk.")
    minutes = int((appointment.ends_at - appointment.starts_at).total_seconds() // 60)
    appointment_id, version = appointment.id, appointment.version
    staying_with = who or await booking.get_practitioner(session, ctx.principal, appointment.practitioner_id)
    was = appointment.starts_at
    if clinic.slot_integration is not None and not await who_is_free(
        session, ctx, clinic, wanted, minutes, only=staying_with
    ):
        raise await unavailable(session, ctx, clinic, staying_with, wanted, minutes)
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
        raise await unavailable(session, ctx, clinic, staying_with, wanted, minutes) from None
    if clinic.slot_integration is not None:
        # Both the slot it left and the one it took change their counts.
        for instant in (was, moved.starts_at):
            await pms_slots.recompute_booked(
                session,
                ctx.principal.organization_id,
                clinic.slot_integration,
                instant - timedelta(days=1),
                instant + timedelta(minutes=minutes),
            )
    await policy.record_booking(session, ctx, moved.id, moved.booking_reference, "rescheduled")
    facts = _describe(moved, clinic)
    return ToolAnswer(
        ok=True,
        text=f"Moved booking {facts['booking_reference']} to {facts['spoken']} with {facts['practitioner']}.",
        data=facts,
    )


async def cancel(session: AsyncSession, ctx: AgentContext, args: CancelArgs) -> ToolAnswer:
    clinic = await clinic_of(session, ctx)
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
