"""What an owed push carries, in one place: the shape of each record kind, and which operation a
change owes the PMS. The SyncManager, the inbound path and external-only writes all use these."""

from __future__ import annotations

from typing import Any

from clinicsync.booking.models import Appointment, AppointmentStatus
from clinicsync.sync.models import OutboxOperation


def appointment_payload(appointment: Appointment) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "booking_reference": appointment.booking_reference,
        "patient_id": str(appointment.patient_id),
        "practitioner_id": str(appointment.practitioner_id),
        "starts_at": appointment.starts_at.isoformat(),
        "ends_at": appointment.ends_at.isoformat(),
        "status": appointment.status.value,
        "notes": appointment.notes or None,
    }
    if appointment.status == AppointmentStatus.CANCELLED:
        payload["reason"] = appointment.cancellation_reason
    return payload


def patient_payload(patient: Any) -> dict[str, Any]:
    """A patient's fields for the PMS: from a stored Patient, or from the request that registers one."""
    return {
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "email": patient.email.lower() if patient.email else None,
        "phone": patient.phone,
        "date_of_birth": patient.date_of_birth.isoformat() if patient.date_of_birth else None,
    }


def appointment_operation(appointment: Appointment, *, known: bool) -> OutboxOperation:
    """A changed appointment owes the PMS a cancel, an update, or (never pushed yet) a create."""
    if appointment.status == AppointmentStatus.CANCELLED:
        return OutboxOperation.CANCEL
    return OutboxOperation.UPDATE if known else OutboxOperation.CREATE


def patient_operation(*, known: bool) -> OutboxOperation:
    return OutboxOperation.UPDATE if known else OutboxOperation.CREATE
