"""Tables of sync runs and of what they bring in: cases, the PMS's appointments, pull cursors."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base, OrganizationOwned, Timestamps, UUIDPrimaryKey


class RunType(enum.StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    FULL = "full"
    INBOUND = "inbound"  # forward appointments and slots only
    CASES = "cases"  # enrichment only
    RECONCILE = "reconcile"
    IMPORT_PATIENTS = "import_patients"


class RunMode(enum.StrEnum):
    COMPREHENSIVE = "comprehensive"
    BASIC = "basic"
    PATIENTS_ONLY = "patients-only"
    ACTIVE = "active"


class RunStatus(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.STARTING, RunStatus.RUNNING)
FINISHED_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def _enum(enum_class: type[enum.Enum], length: int = 24) -> Enum:
    return Enum(
        enum_class,
        native_enum=False,
        length=length,
        validate_strings=True,
        values_callable=lambda members: [str(member.value) for member in members],
    )


class SyncRun(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    """One run against one integration: what it was asked, how far it got, what it did."""

    __tablename__ = "sync_runs"
    __table_args__ = (
        # One active run per integration, whoever starts it: the database decides, on both backends.
        Index(
            "uq_sync_runs_one_active",
            "integration_id",
            unique=True,
            sqlite_where=text("status IN ('starting', 'running')"),
            postgresql_where=text("status IN ('starting', 'running')"),
        ),
        Index("ix_sync_runs_history", "organization_id", "started_at"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    run_type: Mapped[RunType] = mapped_column(_enum(RunType))
    mode: Mapped[RunMode] = mapped_column(_enum(RunMode), default=RunMode.COMPREHENSIVE)
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.STARTING)
    dry_run: Mapped[bool] = mapped_column(default=False)
    incremental: Mapped[bool] = mapped_column(default=False)
    # backward_days, forward_days, reconcile_days, enrichment_concurrency, max_delete_share, ...
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    steps: Mapped[list[str]] = mapped_column(JSON, default=list)
    current_step: Mapped[str | None] = mapped_column(String(40), default=None)
    completed_steps: Mapped[int] = mapped_column(default=0)
    current_operation: Mapped[str | None] = mapped_column(String(200), default=None)
    records_processed: Mapped[int] = mapped_column(default=0)
    records_total: Mapped[int | None] = mapped_column(default=None)
    # entity -> {found, created, updated, unchanged, deleted, failed}
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # phase -> {status, reason, counts, started_at, completed_at, ...}
    phases: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Where a run resumes: the phase and the last page done, with the counts up to there.
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # A dry run's record-by-record report: [{phase, entity, external_id, action, changes}].
    preview: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    review_required: Mapped[bool] = mapped_column(default=False)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    requests_used: Mapped[int] = mapped_column(default=0)
    resumed_from: Mapped[uuid.UUID | None] = mapped_column(default=None)
    triggered_by: Mapped[str | None] = mapped_column(String(120), default=None)
    worker: Mapped[str | None] = mapped_column(String(120), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)


class SyncCase(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    """A past visit brought in from the PMS (one per PMS appointment), enriched with its notes."""

    __tablename__ = "sync_cases"
    __table_args__ = (
        UniqueConstraint("integration_id", "external_id", name="uq_sync_cases_external"),
        Index("ix_sync_cases_window", "integration_id", "starts_at"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    external_id: Mapped[str] = mapped_column(String(200))
    patient_external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    practitioner_external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(24))
    # The PMS's appointment as last read (canonical), and the consultation it led to.
    appointment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    consultation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    enriched_at: Mapped[datetime | None] = mapped_column(default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    # Why it was soft-deleted (the run that found its PMS counterpart gone).
    reconciliation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class PmsAppointment(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    """An upcoming appointment as the PMS holds it (the forward window), for slot counts."""

    __tablename__ = "pms_appointments"
    __table_args__ = (
        UniqueConstraint("integration_id", "external_id", name="uq_pms_appointments_external"),
        Index("ix_pms_appointments_window", "integration_id", "starts_at"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    external_id: Mapped[str] = mapped_column(String(200))
    patient_external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    practitioner_external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(24))
    record: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class SyncCursor(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    """Where the last incremental pull of one entity from one integration stopped."""

    __tablename__ = "sync_cursors"
    __table_args__ = (UniqueConstraint("integration_id", "entity", name="uq_sync_cursors_entity"),)

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    entity: Mapped[str] = mapped_column(String(40))
    # The provider's own stamp (its server time, never ours) or token, as text.
    value: Mapped[str | None] = mapped_column(String(500), default=None)
    kind: Mapped[str] = mapped_column(String(20), default="updated_since")
    last_run_id: Mapped[uuid.UUID | None] = mapped_column(default=None)


class RunSettings(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    """Per integration: the run defaults (windows, guard) and its schedule."""

    __tablename__ = "sync_run_settings"
    __table_args__ = (UniqueConstraint("integration_id", name="uq_sync_run_settings_integration"),)

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    schedule_enabled: Mapped[bool] = mapped_column(default=True)
    # None: the deployment's SYNC_INTERVAL_MINUTES.
    interval_minutes: Mapped[int | None] = mapped_column(default=None)
    backward_days: Mapped[int | None] = mapped_column(default=None)
    forward_days: Mapped[int | None] = mapped_column(default=None)
    reconcile_days: Mapped[int | None] = mapped_column(default=None)
    max_delete_share: Mapped[float | None] = mapped_column(default=None)
    last_scheduled_at: Mapped[datetime | None] = mapped_column(default=None)
