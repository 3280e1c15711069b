"""External references: a local record's id in each integration, its sync state, what was sent."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from clinicsync.errors import NotFound, ValidationFailed
from clinicsync.integrations.models import ExternalIntegration
from clinicsync.sync.models import ExternalReference, RecordType, SyncState
from clinicsync.sync.schemas import ExternalLinkCreate, ExternalRefRead
from clinicsync.tenancy.principal import Principal

NEW_REFS_KEY = "clinicsync.refs.new"


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_new_refs(session: Session) -> None:
    session.info.pop(NEW_REFS_KEY, None)


def json_safe(record: dict[str, Any]) -> dict[str, Any]:
    """A canonical record as JSON: instants in ISO 8601 UTC, dates as ISO dates."""
    safe: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, datetime | date):
            safe[key] = value.isoformat()
        else:
            safe[key] = value
    return safe


async def get_ref(
    session: AsyncSession, integration_id: uuid.UUID, record_type: RecordType, record_id: uuid.UUID
) -> ExternalReference | None:
    ref: ExternalReference | None = await session.scalar(
        select(ExternalReference).where(
            ExternalReference.integration_id == integration_id,
            ExternalReference.record_type == record_type,
            ExternalReference.record_id == record_id,
        )
    )
    return ref


async def mark_pending(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    record_type: RecordType,
    record_id: uuid.UUID,
    *,
    new_record: bool = False,
) -> ExternalReference:
    """The record's reference to the integration, pending; a record this transaction inserted has
    none yet, so it is created without looking. New references are kept in the session so the
    write's answer can show them without reading them back (see ``new_refs``)."""
    ref = None if new_record else await get_ref(session, integration_id, record_type, record_id)
    if ref is None:
        ref = ExternalReference(
            id=uuid.uuid4(),
            organization_id=organization_id,
            integration_id=integration_id,
            record_type=record_type,
            record_id=record_id,
            sync_state=SyncState.PENDING,
            read_back_attempts=0,
        )
        session.add(ref)
        session.info.setdefault(NEW_REFS_KEY, {}).setdefault(record_id, []).append(ref)
    else:
        ref.sync_state = SyncState.PENDING
    return ref


def new_refs(session: AsyncSession, record_id: uuid.UUID) -> list[ExternalReference]:
    """The references this transaction created for the record."""
    created: dict[uuid.UUID, list[ExternalReference]] = session.info.get(NEW_REFS_KEY, {})
    return created.get(record_id, [])


async def refs_by_record(
    session: AsyncSession,
    organization_id: uuid.UUID,
    record_type: RecordType,
    record_ids: Iterable[uuid.UUID],
) -> dict[uuid.UUID, list[ExternalRefRead]]:
    """Every record's references, in one query; records with none get an empty list."""
    ids = list(record_ids)
    found: dict[uuid.UUID, list[ExternalRefRead]] = {record_id: [] for record_id in ids}
    if not ids:
        return found
    rows = await session.execute(
        select(ExternalReference, ExternalIntegration.provider_key)
        .join(ExternalIntegration, ExternalIntegration.id == ExternalReference.integration_id)
        .where(
            ExternalReference.organization_id == organization_id,
            ExternalReference.record_type == record_type,
            ExternalReference.record_id.in_(ids),
        )
        .order_by(ExternalIntegration.provider_key)
    )
    for ref, provider_key in rows:
        found[ref.record_id].append(ref_read(ref, provider_key))
    return found


def ref_read(ref: ExternalReference, provider_key: str | None) -> ExternalRefRead:
    """A reference as the API shows it, named by its integration's provider."""
    read = ExternalRefRead.model_validate(ref)
    read.provider_key = provider_key
    return read


async def link(session: AsyncSession, principal: Principal, data: ExternalLinkCreate) -> ExternalReference:
    """Links a local record to an existing PMS record by hand: nothing is pushed, the link is confirmed."""
    row = await session.get(ExternalIntegration, data.integration_id)
    if row is None or row.organization_id != principal.organization_id:
        raise ValidationFailed(
            "integration_id", f"integration {data.integration_id} not found in this organization"
        )
    if not await _record_exists(session, principal.organization_id, data.record_type, data.record_id):
        raise NotFound(f"{data.record_type.value} {data.record_id} not found")
    ref = await get_ref(session, data.integration_id, data.record_type, data.record_id)
    if ref is None:
        ref = ExternalReference(
            id=uuid.uuid4(),
            organization_id=principal.organization_id,
            integration_id=data.integration_id,
            record_type=data.record_type,
            record_id=data.record_id,
            read_back_attempts=0,
        )
        session.add(ref)
    ref.external_id = data.external_id
    ref.sync_state = SyncState.CONFIRMED
    ref.last_error = None
    await session.flush()
    return ref


async def _record_exists(
    session: AsyncSession, organization_id: uuid.UUID, record_type: RecordType, record_id: uuid.UUID
) -> bool:
    # The sync domain joins booking records to integrations; reading their ids is its business.
    from clinicsync.booking.models import Appointment, Patient, Practitioner

    model: Any = {
        RecordType.APPOINTMENT: Appointment,
        RecordType.PATIENT: Patient,
        RecordType.PRACTITIONER: Practitioner,
    }[record_type]
    found = await session.scalar(
        select(model.id).where(model.id == record_id, model.organization_id == organization_id)
    )
    return found is not None
