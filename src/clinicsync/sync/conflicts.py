"""The review queue: conflicts a person settles, keeping one side or choosing field by field."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking.models import Appointment, Patient
from clinicsync.db.base import utcnow
from clinicsync.errors import Conflict, NotFound, ValidationFailed
from clinicsync.sync import audit, inbound, refs
from clinicsync.sync.audit import AuditContext
from clinicsync.sync.inbound_models import ChangeSource, ConflictStatus, SyncConflict
from clinicsync.sync.models import RecordType
from clinicsync.sync.schemas_inbound import ConflictResolve, Resolution
from clinicsync.tenancy.principal import Principal


async def list_conflicts(
    session: AsyncSession,
    principal: Principal,
    *,
    status: ConflictStatus | None,
    integration_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> tuple[list[SyncConflict], int]:
    query = select(SyncConflict).where(SyncConflict.organization_id == principal.organization_id)
    if status is not None:
        query = query.where(SyncConflict.status == status)
    if integration_id is not None:
        query = query.where(SyncConflict.integration_id == integration_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(
        query.order_by(SyncConflict.created_at.desc(), SyncConflict.id).limit(limit).offset(offset)
    )
    return list(rows.all()), int(total)


async def get_conflict(session: AsyncSession, principal: Principal, conflict_id: uuid.UUID) -> SyncConflict:
    conflict = await session.get(SyncConflict, conflict_id)
    if conflict is None or conflict.organization_id != principal.organization_id:
        raise NotFound(f"conflict {conflict_id} not found")
    return conflict


def _choices(conflict: SyncConflict, data: ConflictResolve) -> dict[str, str]:
    """Which side each differing field takes; a merge must choose for every one of them."""
    if data.resolution == Resolution.KEEP_LOCAL:
        return dict.fromkeys(conflict.fields, "local")
    if data.resolution == Resolution.KEEP_EXTERNAL:
        return dict.fromkeys(conflict.fields, "external")
    chosen = dict(data.fields or {})
    for name in chosen:
        if name not in conflict.fields:
            raise ValidationFailed(
                f"fields.{name}", f"is not one of the conflict's fields ({', '.join(conflict.fields)})"
            )
    missing = [name for name in conflict.fields if name not in chosen]
    if missing:
        raise ValidationFailed(f"fields.{missing[0]}", "choose local or external for every differing field")
    return {name: side.value for name, side in chosen.items()}


async def resolve(
    session: AsyncSession, principal: Principal, conflict_id: uuid.UUID, data: ConflictResolve
) -> SyncConflict:
    conflict = await get_conflict(session, principal, conflict_id)
    if conflict.status != ConflictStatus.OPEN:
        raise Conflict(f"conflict {conflict_id} is already {conflict.status.value}", code="conflict_closed")
    chosen = _choices(conflict, data)
    model: Any = Appointment if conflict.record_type == RecordType.APPOINTMENT else Patient
    local = await session.get(model, conflict.record_id)
    if local is None:
        raise NotFound(f"{conflict.record_type.value} {conflict.record_id} no longer exists")
    config = await inbound.config_of(session, conflict.integration_id)
    context = AuditContext(
        ChangeSource.CONFLICT_RESOLUTION,
        f"user:{principal.user_id}",
        conflict.integration_id,
        conflict.id,
        f"resolved: {data.resolution.value}",
    )
    ours = inbound.local_values(conflict.record_type, local)
    take_external = {name: conflict.external.get(name) for name, side in chosen.items() if side == "external"}
    if conflict.record_type == RecordType.APPOINTMENT:
        merged = ours | take_external
        starts, ends = (
            inbound.comparable("starts_at", merged["starts_at"]),
            inbound.comparable("ends_at", merged["ends_at"]),
        )
        if starts is not None and ends is not None and ends <= starts:
            raise ValidationFailed("fields.ends_at", "the merged appointment would end before it starts")
    try:
        await inbound.write_local(session, conflict.record_type, local, take_external, context)
    except inbound.DoubleBooking as clash:
        other = f" with booking {clash.other.booking_reference}" if clash.other is not None else ""
        raise Conflict(
            f"the PMS's time would double-book the practitioner{other}; keep the local values, "
            "or move the other booking first",
            code="double_booking",
        ) from None
    # Fields kept local that the PMS holds otherwise are owed to the PMS (when this integration pushes).
    owed = {
        name: {"before": conflict.external.get(name), "after": ours.get(name)}
        for name, side in chosen.items()
        if side == "local"
        and inbound.comparable(name, conflict.external.get(name)) != inbound.comparable(name, ours.get(name))
    }
    if owed and config is not None and await inbound.owe_push(session, config, conflict.record_type, local):
        audit.record_external(
            session,
            organization_id=principal.organization_id,
            record_type=conflict.record_type,
            record_id=local.id,
            audit=context,
            changes=owed,
        )
    ref = await refs.get_ref(session, conflict.integration_id, conflict.record_type, conflict.record_id)
    if ref is not None:
        # The PMS's version the person decided on is the new common ancestor.
        snapshot = dict(ref.snapshot or {})
        snapshot.update(conflict.external)
        ref.snapshot = snapshot
        ref.last_synced_at = utcnow()
    conflict.status = ConflictStatus.RESOLVED
    conflict.resolution = data.resolution.value
    conflict.chosen = chosen
    conflict.resolved_by = f"user:{principal.user_id}"
    conflict.resolved_at = utcnow()
    await session.flush()
    return conflict
