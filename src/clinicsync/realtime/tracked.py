"""The models that produce change events: one ``track`` line each (see ``registry`` for the options)."""

from __future__ import annotations

import uuid
from typing import Any

from clinicsync.booking.models import (
    Appointment,
    AvailabilityOverride,
    AvailabilityRule,
    Patient,
    Practitioner,
)
from clinicsync.realtime.registry import track
from clinicsync.sync.inbound_models import SyncConflict
from clinicsync.sync.models import IntegrationSyncConfig, OutboxItem
from clinicsync.sync.runs.models import SyncRun


def _patient_display(patient: Any) -> str:
    # First name and last initial: enough to recognise a booking, not enough to identify a person.
    last = (patient.last_name or "")[:1]
    return f"{patient.first_name} {last}." if last else str(patient.first_name)


def _outbox_practitioner(item: Any) -> uuid.UUID | None:
    # An appointment's push names its practitioner, who then sees its sync state change live.
    value = (item.payload or {}).get("practitioner_id") if isinstance(item.payload, dict) else None
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


APPOINTMENT_FIELDS = (
    "practitioner_id",
    "patient_id",
    "starts_at",
    "ends_at",
    "status",
    "booking_source",
    "booking_reference",
    "version",
)

track(Appointment, "appointment", fields=APPOINTMENT_FIELDS, practitioner="practitioner_id", owned=True)
track(
    AvailabilityRule,
    "availability",
    fields=("practitioner_id",),
    practitioner="practitioner_id",
    entity_id="practitioner_id",
)
track(
    AvailabilityOverride,
    "availability_override",
    fields=("practitioner_id", "date", "is_available"),
    practitioner="practitioner_id",
)
track(Practitioner, "practitioner", fields=("name", "is_active"), practitioner="id")
track(Patient, "patient", owned=True, display=_patient_display)
track(
    IntegrationSyncConfig,
    "sync_config",
    fields=(
        "integration_id",
        "sync_enabled",
        "sync_direction",
        "last_sync_status",
    ),
)
# Outbox items and conflicts: the ids, states and field names an admin screen needs to redraw,
# never the pushed payload or the differing values (they hold patient details).
track(
    OutboxItem,
    "outbox_item",
    practitioner=_outbox_practitioner,
    fields=(
        "integration_id",
        "record_type",
        "record_id",
        "operation",
        "status",
        "attempts",
        "last_error_code",
    ),
)
track(
    SyncConflict,
    "sync_conflict",
    fields=("integration_id", "record_type", "record_id", "reason", "status", "fields"),
)
# Sync runs: what the dashboard's progress bars and history redraw from (no PMS records).
track(
    SyncRun,
    "sync_run",
    fields=(
        "integration_id",
        "run_type",
        "status",
        "dry_run",
        "current_step",
        "completed_steps",
        "records_processed",
        "records_total",
    ),
)
