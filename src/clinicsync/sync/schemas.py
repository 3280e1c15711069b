"""API shapes for sync configs, external references, the outbox and sync status."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clinicsync.booking.schemas import AppointmentRead, PatientRead
from clinicsync.sync.models import (
    ConflictResolution,
    OutboxOperation,
    OutboxStatus,
    RecordType,
    ScheduleSource,
    SyncDirection,
    SyncState,
)

OWED_PUSHES_POLICY = (
    "Pushes already owed when a config changes are kept and delivered as they were written; the change "
    "applies to writes made after it. Owed pushes are discarded only on an explicit request "
    "(POST /api/admin/sync/outbox/{item_id}/discard, or DELETE with discard_owed=true and a reason)."
)


class SyncConfigFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sync_enabled: bool | None = None
    sync_direction: SyncDirection | None = None
    sync_on_create: bool | None = None
    sync_on_update: bool | None = None
    sync_on_delete: bool | None = None
    always_keep_local_copy: bool | None = None
    conflict_resolution: ConflictResolution | None = None
    schedule_source: ScheduleSource | None = Field(
        default=None,
        description="local (practitioners' hours here) or pms_slots (the PMS's own slots with a capacity, "
        "read by the sync; agents then offer and book those); one integration per clinic may be pms_slots",
    )


class SyncConfigCreate(SyncConfigFields):
    """Fields left out take the defaults: sync off, local_only, create and update on, delete off,
    keep a local copy, external_wins."""

    integration_id: uuid.UUID


class SyncConfigUpdate(SyncConfigFields):
    """A partial update: only the fields sent change."""


class OwedPushes(BaseModel):
    count: int = Field(description="pushes still owed to this integration (pending, in flight or failed)")
    policy: str = OWED_PUSHES_POLICY


class SyncConfigRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    provider_key: str | None = None
    sync_enabled: bool
    sync_direction: SyncDirection
    sync_on_create: bool
    sync_on_update: bool
    sync_on_delete: bool
    always_keep_local_copy: bool
    conflict_resolution: ConflictResolution
    schedule_source: ScheduleSource
    mode: str = Field(description="local_only, dual_write, external_only, from_external or bidirectional")
    last_sync_at: datetime | None
    last_sync_status: str | None
    last_sync_error: str | None
    created_at: datetime
    updated_at: datetime
    owed_pushes: OwedPushes


class SyncConfigDeleted(BaseModel):
    id: uuid.UUID
    owed_pushes: OwedPushes
    discarded: int


class ExternalRefRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    integration_id: uuid.UUID
    provider_key: str | None = None
    external_id: str | None
    sync_state: SyncState
    last_error: str | None = None
    last_synced_at: datetime | None = None
    confirmed_at: datetime | None = None
    mismatch: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None


class OutboxItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    record_type: RecordType
    record_id: uuid.UUID
    operation: OutboxOperation
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_error_code: str | None
    external_id: str | None
    discard_reason: str | None
    created_at: datetime
    delivered_at: datetime | None
    age_seconds: float


class OutboxPage(BaseModel):
    items: list[OutboxItemRead]
    total: int


class DiscardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class RetryResult(BaseModel):
    retried: int


class IntegrationSyncStatus(BaseModel):
    integration_id: uuid.UUID
    provider_key: str
    display_name: str
    config: SyncConfigRead | None
    last_sync_at: datetime | None
    last_sync_status: str | None
    last_sync_error: str | None
    outbox_depth: int = Field(description="pushes owed and not failed: pending or in flight")
    oldest_pending_age_seconds: float | None
    failed_count: int
    conflicts_waiting: int = 0
    states: dict[str, int] = Field(description="records per sync state")


class ExternalLinkCreate(BaseModel):
    """Link a local record to its counterpart in the PMS by hand (e.g. a practitioner)."""

    model_config = ConfigDict(extra="forbid")

    integration_id: uuid.UUID
    record_type: RecordType
    record_id: uuid.UUID
    external_id: str = Field(min_length=1, max_length=200)


class AppointmentWithSync(AppointmentRead):
    """An appointment with where it stands in each integration."""

    external_refs: list[ExternalRefRead] = Field(default_factory=list)


class PatientWithSync(PatientRead):
    external_refs: list[ExternalRefRead] = Field(default_factory=list)


class AppointmentPageWithSync(BaseModel):
    items: list[AppointmentWithSync]
    total: int | None = Field(description="Matching appointments; null when paging by cursor")
    limit: int
    offset: int
    next_cursor: str | None = Field(default=None, description="Pass as cursor for the next page")
