"""The audit trail: every change to an appointment or a patient, whoever made it, field by field.

Local changes are recorded by one flush hook, so no write path (the API, an applied webhook, a
pull, a resolved conflict) can forget it. The write path says what it is with :func:`context`;
a request's session already names its user (``deps.get_principal``), so a plain API write needs
nothing. Changes owed to the PMS (a local value that wins a conflict) are recorded explicitly
with :func:`record_external`, since they are applied by the outbox later.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction

from clinicsync.booking.models import Appointment, Patient
from clinicsync.sync.inbound_models import ChangeSide, ChangeSource, SyncAuditEntry
from clinicsync.sync.models import RecordType

CONTEXT_KEY = "clinicsync.audit.context"
ACTOR_KEY = "clinicsync.actor"  # set by deps.get_principal: "user:<id>"

APPOINTMENT_FIELDS = ("starts_at", "ends_at", "status", "practitioner_id", "patient_id", "notes")
PATIENT_FIELDS = ("first_name", "last_name", "email", "phone", "date_of_birth")
AUDITED: Mapping[type[Any], tuple[RecordType, tuple[str, ...]]] = {
    Appointment: (RecordType.APPOINTMENT, APPOINTMENT_FIELDS),
    Patient: (RecordType.PATIENT, PATIENT_FIELDS),
}


@dataclass(frozen=True)
class AuditContext:
    source: ChangeSource
    actor: str
    integration_id: uuid.UUID | None = None
    conflict_id: uuid.UUID | None = None
    note: str | None = None


def plain(value: Any) -> Any:
    """A field value as JSON: instants and dates in ISO 8601, enums and ids as their text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@contextmanager
def context(session: AsyncSession, audit: AuditContext) -> Iterator[None]:
    """Changes flushed inside the block are recorded as coming from ``audit``'s source and actor."""
    info = session.sync_session.info
    previous = info.get(CONTEXT_KEY)
    info[CONTEXT_KEY] = audit
    try:
        yield
    finally:
        if previous is None:
            info.pop(CONTEXT_KEY, None)
        else:
            info[CONTEXT_KEY] = previous


def _current(session: Session) -> AuditContext:
    found = session.info.get(CONTEXT_KEY)
    if isinstance(found, AuditContext):
        return found
    return AuditContext(ChangeSource.API, str(session.info.get(ACTOR_KEY) or "system"))


@event.listens_for(Session, "before_flush")
def _record_local_changes(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    audit: AuditContext | None = None
    for obj in list(session.new) + list(session.dirty):
        kind = AUDITED.get(type(obj))
        if kind is None:
            continue
        record_type, fields = kind
        state = inspect(obj)
        changes: dict[str, dict[str, Any]] = {}
        for name in fields:
            history = state.attrs[name].history
            if state.pending:
                value = getattr(obj, name)
                if value is not None and value != "":
                    changes[name] = {"before": None, "after": plain(value)}
            elif history.has_changes():
                before = history.deleted[0] if history.deleted else None
                after = history.added[0] if history.added else None
                if plain(before) != plain(after):
                    changes[name] = {"before": plain(before), "after": plain(after)}
        if not changes:
            continue
        if obj.id is None:
            obj.id = uuid.uuid4()  # the entry needs the id the flush would give it
        audit = audit or _current(session)
        session.add(
            SyncAuditEntry(
                id=uuid.uuid4(),
                organization_id=obj.organization_id,
                record_type=record_type,
                record_id=obj.id,
                integration_id=audit.integration_id,
                side=ChangeSide.LOCAL,
                source=audit.source,
                actor=audit.actor,
                changes=changes,
                conflict_id=audit.conflict_id,
                note=("created" if state.pending else audit.note),
            )
        )


def record_external(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    record_type: RecordType,
    record_id: uuid.UUID,
    audit: AuditContext,
    changes: dict[str, dict[str, Any]],
) -> None:
    """Records a change owed to the PMS (delivered by the outbox) with what it overwrites there."""
    if not changes:
        return
    session.add(
        SyncAuditEntry(
            id=uuid.uuid4(),
            organization_id=organization_id,
            record_type=record_type,
            record_id=record_id,
            integration_id=audit.integration_id,
            side=ChangeSide.EXTERNAL,
            source=audit.source,
            actor=audit.actor,
            changes=changes,
            conflict_id=audit.conflict_id,
            note=audit.note,
        )
    )


async def trail(
    session: AsyncSession, organization_id: uuid.UUID, record_type: RecordType, record_id: uuid.UUID
) -> list[SyncAuditEntry]:
    rows = await session.scalars(
        select(SyncAuditEntry)
        .where(
            SyncAuditEntry.organization_id == organization_id,
            SyncAuditEntry.record_type == record_type,
            SyncAuditEntry.record_id == record_id,
        )
        .order_by(SyncAuditEntry.created_at, SyncAuditEntry.id)
    )
    return list(rows.all())
