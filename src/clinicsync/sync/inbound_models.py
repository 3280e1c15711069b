"""Inbound sync tables: conflicts waiting for (or settled by) a rule, the audit trail, webhooks."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base, OrganizationOwned, UUIDPrimaryKey, utcnow
from clinicsync.sync.models import RecordType, _enum


class ConflictStatus(enum.StrEnum):
    OPEN = "open"  # waits for a person; neither side was changed
    SETTLED = "settled"  # settled by the integration's rule when it arose
    RESOLVED = "resolved"  # settled by a person through the review queue


class ConflictReason(enum.StrEnum):
    BOTH_CHANGED = "both_changed"  # changed locally and in the PMS since the last synced snapshot
    DOUBLE_BOOKING = "double_booking"  # the PMS's change would overlap another local booking


class ChangeSource(enum.StrEnum):
    API = "api"
    WEBHOOK = "webhook"
    PULL = "pull"
    CONFLICT_RESOLUTION = "conflict_resolution"


class ChangeSide(enum.StrEnum):
    LOCAL = "local"  # the change was applied to our record
    EXTERNAL = "external"  # the change is owed to (pushed to) the PMS's record


class SyncConflict(UUIDPrimaryKey, OrganizationOwned, Base):
    __tablename__ = "sync_conflicts"
    __table_args__ = (
        Index("ix_sync_conflicts_open", "organization_id", "status"),
        Index("ix_sync_conflicts_record", "record_type", "record_id"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    record_type: Mapped[RecordType] = mapped_column(_enum(RecordType))
    record_id: Mapped[uuid.UUID] = mapped_column()
    external_id: Mapped[str] = mapped_column(String(200))
    reason: Mapped[ConflictReason] = mapped_column(_enum(ConflictReason))
    status: Mapped[ConflictStatus] = mapped_column(_enum(ConflictStatus), default=ConflictStatus.OPEN)
    strategy: Mapped[str] = mapped_column(String(30))
    # The differing fields, each side's value and the last synced value, as JSON-safe values.
    fields: Mapped[list[str]] = mapped_column(JSON)
    local: Mapped[dict[str, Any]] = mapped_column(JSON)
    external: Mapped[dict[str, Any]] = mapped_column(JSON)
    base: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    resolution: Mapped[str | None] = mapped_column(String(30), default=None)
    chosen: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # field -> "local"/"external"
    resolved_by: Mapped[str | None] = mapped_column(String(120), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SyncAuditEntry(UUIDPrimaryKey, OrganizationOwned, Base):
    """One applied change to one record: which fields, from what to what, from where, by whom."""

    __tablename__ = "sync_audit"
    __table_args__ = (Index("ix_sync_audit_record", "record_type", "record_id", "created_at"),)

    record_type: Mapped[RecordType] = mapped_column(_enum(RecordType))
    record_id: Mapped[uuid.UUID] = mapped_column()
    integration_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    side: Mapped[ChangeSide] = mapped_column(_enum(ChangeSide))
    source: Mapped[ChangeSource] = mapped_column(_enum(ChangeSource))
    actor: Mapped[str] = mapped_column(String(120))  # "user:<id>", "webhook:<event id>", "run:<id>"
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)  # field -> {"before": .., "after": ..}
    conflict_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    note: Mapped[str | None] = mapped_column(String(300), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(UUIDPrimaryKey, OrganizationOwned, Base):
    """Per integration: the secret a provider signs or echoes, and where notify-only feeds left off."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (UniqueConstraint("integration_id", name="uq_webhook_endpoints_integration_id"),)

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    secret_ciphertext: Mapped[str | None] = mapped_column(Text, default=None)
    # For providers whose notification says only "something changed": changes since this instant.
    cursor: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookEventStatus(enum.StrEnum):
    RECEIVED = "received"  # stored and acknowledged; a job applies it
    APPLIED = "applied"
    IGNORED = "ignored"  # nothing to apply (a channel's hello, sync off)
    FAILED = "failed"


class WebhookEvent(UUIDPrimaryKey, OrganizationOwned, Base):
    """A verified delivery, stored before it is acknowledged; its dedupe key refuses a replay."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("integration_id", "dedupe_key", name="uq_webhook_events_dedupe"),
        Index("ix_webhook_events_due", "status", "received_at"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    dedupe_key: Mapped[str] = mapped_column(String(200))
    headers: Mapped[dict[str, str]] = mapped_column(JSON)  # the provider's routing headers only
    body: Mapped[Any] = mapped_column(JSON, default=None)
    status: Mapped[WebhookEventStatus] = mapped_column(
        _enum(WebhookEventStatus), default=WebhookEventStatus.RECEIVED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(default=None)
