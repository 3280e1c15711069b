"""API shapes of sync runs, in the reference's field names (docs/api.md maps its paths to ours)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clinicsync.sync.runs.models import RunMode, RunType


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RunAsk(_Strict):
    """What to run. Windows left out come from the integration's run settings, then the
    deployment's defaults (14 days back, 14 forward, 7 reconciled, 20% delete guard)."""

    integration_id: uuid.UUID | None = Field(
        default=None, description="which integration; optional while the organization pulls from one"
    )
    sync_type: RunType = RunType.FULL
    sync_mode: RunMode = RunMode.COMPREHENSIVE
    dry_run: bool = Field(default=False, description="preview: read the PMS, report, write nothing")
    incremental: bool = False
    backward_days: int | None = Field(default=None, ge=0, le=366)
    forward_days: int | None = Field(default=None, ge=0, le=366)
    reconcile_days: int | None = Field(default=None, ge=0, le=366)
    max_delete_share: float | None = Field(default=None, ge=0, le=1)
    enrichment_concurrency: int | None = Field(default=None, ge=1, le=50)


class FullSyncAsk(_Strict):
    """The reference's POST /api/sync/full body."""

    clinic_id: uuid.UUID = Field(alias="clinicId")
    bidirectional: bool = True
    backward_days: int | None = Field(default=None, alias="backwardDays", ge=0, le=366)
    forward_days: int | None = Field(default=None, alias="forwardDays", ge=0, le=366)
    integration_id: uuid.UUID | None = Field(default=None, alias="integrationId")
    dry_run: bool = Field(default=False, alias="dryRun")


class SyncStarted(BaseModel):
    message: str
    sync_started: bool
    sync_id: str
    sync_type: str
    sync_mode: str
    dry_run: bool
    organization_id: str
    integration_id: str
    started_at: datetime | None
    timestamp: datetime
    resumed_from: str | None = None


class SyncProgress(BaseModel):
    sync_id: str
    organization_id: str
    integration_id: str
    status: str
    sync_type: str
    sync_mode: str
    dry_run: bool
    progress_percentage: float
    current_step: str | None
    total_steps: int
    completed_steps: int
    started_at: datetime | None
    estimated_completion: datetime | None
    records_processed: int
    records_total: int | None
    current_operation: str | None
    errors: list[dict[str, Any]]
    # What the run wants known that is not an error: a resume, a refused cursor's fallback.
    notes: list[str] = []


class SyncRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    run_type: RunType
    mode: RunMode
    status: str
    dry_run: bool
    incremental: bool
    params: dict[str, Any]
    steps: list[str]
    current_step: str | None
    completed_steps: int
    current_operation: str | None
    records_processed: int
    records_total: int | None
    counts: dict[str, Any]
    phases: dict[str, Any]
    errors: list[dict[str, Any]]
    notes: list[str]
    checkpoint: dict[str, Any] | None
    preview: list[dict[str, Any]] | None
    review_required: bool
    cancel_requested: bool
    requests_used: int
    resumed_from: uuid.UUID | None
    triggered_by: str | None
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    heartbeat_at: datetime | None


class RecentSync(BaseModel):
    sync_id: str
    sync_type: str
    started_at: datetime | None
    completed_at: datetime | None
    status: str
    records_processed: int
    records_success: int
    records_failed: int
    error_message: str | None
    metadata: dict[str, Any]


class SyncHistory(BaseModel):
    organization_id: str
    total_syncs: int
    successful_syncs: int
    failed_syncs: int
    cancelled_syncs: int
    last_sync_at: datetime | None
    last_successful_sync_at: datetime | None
    average_sync_duration_seconds: float | None
    recent_syncs: list[RecentSync]


class CleanupResult(BaseModel):
    message: str
    cleaned_syncs: int
    sync_ids: list[str]
    timestamp: datetime


class SchedulerStatus(BaseModel):
    organization_id: str
    sync_running: bool
    running_sync_id: str | None
    last_sync_time: datetime | None
    scheduler_active: bool
    interval_minutes: float
    integrations: list[dict[str, Any]]
    message: str


class RunSettingsWrite(_Strict):
    schedule_enabled: bool | None = None
    interval_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    backward_days: int | None = Field(default=None, ge=0, le=366)
    forward_days: int | None = Field(default=None, ge=0, le=366)
    reconcile_days: int | None = Field(default=None, ge=0, le=366)
    max_delete_share: float | None = Field(default=None, ge=0, le=1)


class RunSettingsRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    integration_id: uuid.UUID
    schedule_enabled: bool
    interval_minutes: int | None
    backward_days: int | None
    forward_days: int | None
    reconcile_days: int | None
    max_delete_share: float | None
    last_scheduled_at: datetime | None


class CaseRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    external_id: str
    patient_external_id: str | None
    practitioner_external_id: str | None
    starts_at: datetime
    ends_at: datetime | None
    status: str
    appointment: dict[str, Any]
    consultation: dict[str, Any] | None
    enriched_at: datetime | None
    deleted_at: datetime | None
    reconciliation: dict[str, Any] | None


class PmsAppointmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    external_id: str
    patient_external_id: str | None
    practitioner_external_id: str | None
    starts_at: datetime
    ends_at: datetime | None
    status: str
    deleted_at: datetime | None


class ConnectionTest(BaseModel):
    success: bool
    connection_status: str
    provider: str
    integration_id: str
    response_time_ms: int
    message: str | None
    test_timestamp: datetime


class ProviderStatus(BaseModel):
    organization_id: str
    provider: str
    integration_id: str
    connected: bool
    sync_enabled: bool
    sync_direction: str | None
    last_sync: datetime | None
    last_sync_status: str | None
    sync_running: bool
    cases: int
    upcoming_appointments: int
    sync_status: str
