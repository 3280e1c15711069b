"""Sync tables: per-integration configs, external references and the outbox of owed pushes."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Sequence,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base, OrganizationOwned, Timestamps, UUIDPrimaryKey, utcnow


class SyncDirection(enum.StrEnum):
    LOCAL_ONLY = "local_only"
    TO_EXTERNAL = "to_external"
    FROM_EXTERNAL = "from_external"
    BIDIRECTIONAL = "bidirectional"


class ConflictResolution(enum.StrEnum):
    EXTERNAL_WINS = "external_wins"
    LOCAL_WINS = "local_wins"
    LATEST_TIMESTAMP_WINS = "latest_timestamp_wins"
    MANUAL = "manual"


class ScheduleSource(enum.StrEnum):
    """Where a clinic's bookable times come from."""

    LOCAL = "local"  # practitioners' weekly hours here, cut into the clinic's grid
    PMS_SLOTS = "pms_slots"  # the PMS's own slots, each with a capacity (sync/slots)


class SyncState(enum.StrEnum):
    """Where one record stands with one integration."""

    LOCAL_ONLY = "local_only"  # nothing owed: sync off for this record or integration
    PENDING = "pending"  # a push is owed and not yet accepted
    ACCEPTED = "accepted"  # the PMS answered with its id
    CONFIRMED = "confirmed"  # read back from the PMS and matching what was sent
    FAILED = "failed"  # refused by the PMS, or discarded; waits for a person


class RecordType(enum.StrEnum):
    APPOINTMENT = "appointment"
    PATIENT = "patient"
    PRACTITIONER = "practitioner"


class OutboxOperation(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    CANCEL = "cancel"


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"  # owed; delivered when next_attempt_at has passed
    IN_FLIGHT = "in_flight"  # claimed by a worker until lease_until
    DONE = "done"
    FAILED = "failed"  # refused by the PMS: waits for a person (retry or discard)
    DISCARDED = "discarded"  # a person decided it is not owed any more


# Items that still hold back later items of the same chain.
UNFINISHED_STATUSES = (OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT, OutboxStatus.FAILED)


def _enum(enum_class: type[enum.Enum], length: int = 24) -> Enum:
    return Enum(
        enum_class,
        native_enum=False,
        length=length,
        validate_strings=True,
        values_callable=lambda members: [str(member.value) for member in members],
    )


class IntegrationSyncConfig(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    __tablename__ = "integration_sync_configs"
    __table_args__ = (UniqueConstraint("integration_id", name="uq_integration_sync_configs_integration_id"),)

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    sync_enabled: Mapped[bool] = mapped_column(default=False)
    sync_direction: Mapped[SyncDirection] = mapped_column(
        _enum(SyncDirection), default=SyncDirection.LOCAL_ONLY
    )
    sync_on_create: Mapped[bool] = mapped_column(default=True)
    sync_on_update: Mapped[bool] = mapped_column(default=True)
    sync_on_delete: Mapped[bool] = mapped_column(default=False)
    always_keep_local_copy: Mapped[bool] = mapped_column(default=True)
    conflict_resolution: Mapped[ConflictResolution] = mapped_column(
        _enum(ConflictResolution), default=ConflictResolution.EXTERNAL_WINS
    )
    schedule_source: Mapped[ScheduleSource] = mapped_column(
        _enum(ScheduleSource, 12), default=ScheduleSource.LOCAL
    )
    last_sync_at: Mapped[datetime | None] = mapped_column(default=None)
    last_sync_status: Mapped[str | None] = mapped_column(String(20), default=None)
    last_sync_error: Mapped[str | None] = mapped_column(Text, default=None)

    @property
    def pushes(self) -> bool:
        return self.sync_enabled and self.sync_direction in (
            SyncDirection.TO_EXTERNAL,
            SyncDirection.BIDIRECTIONAL,
        )

    @property
    def external_only(self) -> bool:
        return self.pushes and not self.always_keep_local_copy


class ExternalReference(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    """One local record's counterpart in one integration, and what was last sent and read back."""

    __tablename__ = "external_references"
    __table_args__ = (
        UniqueConstraint("integration_id", "record_type", "record_id", name="uq_external_references_record"),
        Index("ix_external_references_external_id", "integration_id", "record_type", "external_id"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    record_type: Mapped[RecordType] = mapped_column(_enum(RecordType))
    record_id: Mapped[uuid.UUID] = mapped_column()
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    sync_state: Mapped[SyncState] = mapped_column(_enum(SyncState), default=SyncState.PENDING)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The canonical record as last sent (and, once read back, as the PMS holds it).
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # What the read-back found different from what was sent; never silently overwritten.
    mismatch: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    last_synced_at: Mapped[datetime | None] = mapped_column(default=None)
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)
    read_back_attempts: Mapped[int] = mapped_column(default=0)


OUTBOX_SEQUENCE = Sequence("sync_outbox_seq")


class OutboxItem(UUIDPrimaryKey, OrganizationOwned, Base):
    """A push owed to a PMS, written in the same transaction as the local change it carries."""

    __tablename__ = "sync_outbox"
    __table_args__ = (
        Index("ix_sync_outbox_due", "status", "next_attempt_at"),
        Index("ix_sync_outbox_chain", "integration_id", "chain_key", "seq"),
        Index("ix_sync_outbox_record", "record_type", "record_id"),
    )

    # Monotonic order of writes: per chain, pushes are delivered in this order.
    # PostgreSQL draws it from a sequence; SQLite writers are serialized, so the outbox takes max + 1.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), OUTBOX_SEQUENCE, unique=True
    )
    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    record_type: Mapped[RecordType] = mapped_column(_enum(RecordType))
    record_id: Mapped[uuid.UUID] = mapped_column()
    # A patient and their appointments share a chain, so the patient reaches the PMS first
    # and two of their appointments never race to create the same patient.
    chain_key: Mapped[uuid.UUID] = mapped_column()
    operation: Mapped[OutboxOperation] = mapped_column(_enum(OutboxOperation))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[OutboxStatus] = mapped_column(_enum(OutboxStatus), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    # Set (and committed) before every call that may create something in the PMS; cleared only
    # when the call certainly was not acted on. While set, the next attempt looks first.
    maybe_sent: Mapped[bool] = mapped_column(default=False)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(100), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_error_code: Mapped[str | None] = mapped_column(String(40), default=None)
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    discard_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
