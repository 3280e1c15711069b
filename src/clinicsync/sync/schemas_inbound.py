"""API shapes for the conflict review queue, the audit trail and webhook endpoints."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clinicsync.sync.inbound_models import (
    ChangeSide,
    ChangeSource,
    ConflictReason,
    ConflictStatus,
    WebhookEventStatus,
)
from clinicsync.sync.models import RecordType


class Resolution(enum.StrEnum):
    KEEP_LOCAL = "keep_local"
    KEEP_EXTERNAL = "keep_external"
    MERGE = "merge"


class Side(enum.StrEnum):
    LOCAL = "local"
    EXTERNAL = "external"


class ConflictResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Resolution
    fields: dict[str, Side] | None = Field(
        default=None, description="merge: for every differing field, which side's value to keep"
    )

    @model_validator(mode="after")
    def _fields_with_merge(self) -> ConflictResolve:
        if self.resolution == Resolution.MERGE and not self.fields:
            raise ValueError("fields: a merge chooses local or external for every differing field")
        if self.resolution != Resolution.MERGE and self.fields:
            raise ValueError(f"fields: only a merge chooses field by field, not {self.resolution.value}")
        return self


class ConflictRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    record_type: RecordType
    record_id: uuid.UUID
    external_id: str
    reason: ConflictReason
    status: ConflictStatus
    strategy: str
    fields: list[str]
    local: dict[str, Any]
    external: dict[str, Any]
    base: dict[str, Any] | None
    resolution: str | None
    chosen: dict[str, Any] | None
    resolved_by: str | None
    resolved_at: datetime | None
    detail: str | None
    created_at: datetime


class ConflictPage(BaseModel):
    items: list[ConflictRead]
    total: int


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    record_type: RecordType
    record_id: uuid.UUID
    integration_id: uuid.UUID | None
    side: ChangeSide
    source: ChangeSource
    actor: str
    changes: dict[str, Any]
    conflict_id: uuid.UUID | None
    note: str | None
    created_at: datetime


class WebhookEndpointRead(BaseModel):
    integration_id: uuid.UUID
    url: str = Field(description="where the provider posts, relative to this server")
    scheme: str
    has_secret: bool
    secret: str | None = Field(default=None, description="shown once, when issued")
    received: int
    applied: int
    failed: int


class WebhookSubscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_url: str = Field(
        min_length=8,
        max_length=500,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="this server's address as the PMS reaches it, e.g. https://sync.example-clinic.org",
    )


class WebhookSubscription(BaseModel):
    url: str = Field(description="the webhook URL the provider now posts to")
    scheme: str
    opened: list[dict[str, Any]] = Field(
        description="each subscribe call and the provider's answer, secrets left out"
    )


class WebhookAck(BaseModel):
    status: str
    event_id: uuid.UUID | None = None


class WebhookEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: WebhookEventStatus
    attempts: int
    outcome: dict[str, Any] | None
    last_error: str | None
    received_at: datetime
    applied_at: datetime | None
