"""The inbound path: PMS changes applied to local records, with the integration's conflict rule.

:func:`apply_changes` takes canonical records (integrations/canonical.py) of one kind, as a
webhook job or a pull run reads them, and applies them in the caller's transaction, page by
page: references and local records are loaded in one query each.

For each record, the last synced snapshot on its external reference is the common ancestor:

* the PMS changed it and we did not -> the PMS's values are applied locally;
* both changed it since the snapshot (and they differ) -> a conflict, settled by the rule:
  ``external_wins`` applies the PMS's values (owed local pushes of the record are discarded),
  ``local_wins`` keeps ours and owes the PMS an update (when the integration pushes),
  ``latest_timestamp_wins`` picks the side changed last, ``manual`` queues the conflict for a
  person and changes neither side; the conflict row keeps both sides, so what was overwritten
  is on record;
* a PMS change that would double-book a practitioner here is a conflict for a person, whatever
  the rule (the database refuses the overlap; we never overwrite another booking);
* a record older than the snapshot (a replayed or late delivery) is ignored.

Integrations whose direction is to_external or local_only take nothing in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking.appointments import _conflicting, _is_overlap
from clinicsync.booking.models import ACTIVE_STATUSES, Appointment, AppointmentStatus, Patient
from clinicsync.db.base import utcnow
from clinicsync.sync import audit, outbox, payloads, refs
from clinicsync.sync.audit import AuditContext
from clinicsync.sync.inbound_models import ConflictReason, ConflictStatus, SyncConflict
from clinicsync.sync.models import (
    ConflictResolution,
    ExternalReference,
    IntegrationSyncConfig,
    OutboxItem,
    OutboxStatus,
    RecordType,
    SyncDirection,
)

FIELDS: dict[RecordType, tuple[str, ...]] = {
    RecordType.APPOINTMENT: ("starts_at", "ends_at", "status"),
    RecordType.PATIENT: ("first_name", "last_name", "email", "phone", "date_of_birth"),
}


def takes_inbound(config: IntegrationSyncConfig | None) -> bool:
    return (
        config is not None
        and config.sync_enabled
        and config.sync_direction in (SyncDirection.FROM_EXTERNAL, SyncDirection.BIDIRECTIONAL)
    )


@dataclass
class InboundResult:
    applied: int = 0  # PMS values written locally (no conflict, or the PMS won one)
    unchanged: int = 0  # nothing new since the snapshot
    stale: int = 0  # older than what we already hold
    unlinked: int = 0  # no local counterpart (imports belong to pulls)
    settled: int = 0  # conflicts the rule settled
    queued: int = 0  # conflicts waiting for a person
    conflict_ids: list[uuid.UUID] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "unchanged": self.unchanged,
            "stale": self.stale,
            "unlinked": self.unlinked,
            "settled": self.settled,
            "queued": self.queued,
        }


# ---- comparing -------------------------------------------------------------------------------


def _instant(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value)
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def comparable(name: str, value: Any) -> Any:
    """One value in the form both sides agree on (pending and confirmed both hold the time)."""
    if value is None or value == "":
        return None
    if name in ("starts_at", "ends_at"):
        return _instant(value)
    if name == "status":
        text = value.value if isinstance(value, AppointmentStatus) else str(value)
        return "active" if text in ("pending", "confirmed") else text
    if name == "date_of_birth":
        return value.isoformat() if isinstance(value, date) else str(value)
    if name in ("first_name", "last_name", "email"):
        return str(value).strip().casefold()
    return str(value)


def shown(name: str, value: Any) -> Any:
    """A value as the conflict queue and audit trail show it."""
    if name in ("starts_at", "ends_at"):
        instant = _instant(value)
        return instant.isoformat() if instant else None
    return audit.plain(value)


def local_values(record_type: RecordType, record: Any) -> dict[str, Any]:
    return {name: shown(name, getattr(record, name)) for name in FIELDS[record_type]}


def external_values(record_type: RecordType, record: dict[str, Any]) -> dict[str, Any]:
    return {name: shown(name, record.get(name)) for name in FIELDS[record_type] if name in record}


def _differs(name: str, one: Any, other: Any) -> bool:
    return comparable(name, one) != comparable(name, other)


# ---- writing local records --------------------------------------------------------------------


def _assign(record_type: RecordType, record: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if record_type == RecordType.APPOINTMENT and name in ("starts_at", "ends_at"):
            setattr(record, name, _instant(value))
        elif name == "status":
            new = AppointmentStatus(value)
            if comparable("status", new) == comparable("status", record.status):
                continue  # pending and confirmed are the same booking: keep our finer value
            record.status = new
            if new == AppointmentStatus.CANCELLED:
                record.cancelled_at = utcnow()
                record.cancellation_reason = record.cancellation_reason or "cancelled in the PMS"
        elif name == "date_of_birth":
            record.date_of_birth = date.fromisoformat(value) if value else None
        else:
            setattr(record, name, value)


async def _would_double_book(
    session: AsyncSession, appointment: Appointment, values: dict[str, Any]
) -> Appointment | None:
    starts = _instant(values.get("starts_at")) or appointment.starts_at
    ends = _instant(values.get("ends_at")) or appointment.ends_at
    status = values.get("status") or appointment.status.value
    if AppointmentStatus(status) not in ACTIVE_STATUSES:
        return None
    return await _conflicting(
        session,
        appointment.organization_id,
        appointment.practitioner_id,
        starts,
        ends,
        exclude=appointment.id,
    )


class DoubleBooking(Exception):
    def __init__(self, other: Appointment | None) -> None:
        super().__init__("the change would double-book the practitioner")
        self.other = other


async def write_local(
    session: AsyncSession,
    record_type: RecordType,
    record: Any,
    values: dict[str, Any],
    context: AuditContext,
) -> None:
    """Writes ``values`` to the local record (audited); raises DoubleBooking instead of overlapping."""
    changed = {name: value for name, value in values.items() if _differs(name, getattr(record, name), value)}
    if not changed:
        return
    if record_type == RecordType.APPOINTMENT:
        other = await _would_double_book(session, record, changed)
        if other is not None:
            raise DoubleBooking(other)
    with audit.context(session, context):
        savepoint = await session.begin_nested()
        _assign(record_type, record, changed)
        try:
            await session.flush()
        except IntegrityError as error:
            # A booking that landed between our check and the write: the database's refusal.
            await savepoint.rollback()
            if _is_overlap(error):
                raise DoubleBooking(None) from None
            raise
        await savepoint.commit()


async def owe_push(
    session: AsyncSession, config: IntegrationSyncConfig, record_type: RecordType, record: Any
) -> bool:
    """Owes the PMS the local record's current values, when the integration pushes at all."""
    if not config.pushes:
        return False
    if record_type == RecordType.APPOINTMENT:
        payload = payloads.appointment_payload(record)
        operation = payloads.appointment_operation(record, known=True)
        chain = record.patient_id
    else:
        payload, operation, chain = (
            payloads.patient_payload(record),
            payloads.patient_operation(known=True),
            record.id,
        )
    await outbox.enqueue(
        session,
        organization_id=config.organization_id,
        integration_id=config.integration_id,
        record_type=record_type,
        record_id=record.id,
        chain_key=chain,
        operation=operation,
        payload=payload,
    )
    return True


async def discard_owed(
    session: AsyncSession, integration_id: uuid.UUID, record_type: RecordType, record_id: uuid.UUID, why: str
) -> None:
    """Owed pushes of a record the PMS's version has replaced would undo it: they are dropped."""
    await session.execute(
        update(OutboxItem)
        .where(
            OutboxItem.integration_id == integration_id,
            OutboxItem.record_type == record_type,
            OutboxItem.record_id == record_id,
            OutboxItem.status.in_((OutboxStatus.PENDING, OutboxStatus.FAILED)),
        )
        .values(status=OutboxStatus.DISCARDED, discard_reason=why)
    )


# ---- the path ------------------------------------------------------------------------------------


async def _load(
    session: AsyncSession, config: IntegrationSyncConfig, record_type: RecordType, external_ids: list[str]
) -> tuple[dict[str, ExternalReference], dict[uuid.UUID, Any]]:
    found = await session.scalars(
        select(ExternalReference).where(
            ExternalReference.integration_id == config.integration_id,
            ExternalReference.record_type == record_type,
            ExternalReference.external_id.in_(external_ids),
        )
    )
    by_external = {str(ref.external_id): ref for ref in found}
    model: Any = Appointment if record_type == RecordType.APPOINTMENT else Patient
    ids = [ref.record_id for ref in by_external.values()]
    records: dict[uuid.UUID, Any] = {}
    if ids:
        rows = await session.scalars(
            select(model).where(model.id.in_(ids), model.organization_id == config.organization_id)
        )
        records = {row.id: row for row in rows}
    return by_external, records


async def _open_conflict(
    session: AsyncSession, integration_id: uuid.UUID, record_type: RecordType, record_id: uuid.UUID
) -> SyncConflict | None:
    found: SyncConflict | None = await session.scalar(
        select(SyncConflict).where(
            SyncConflict.integration_id == integration_id,
            SyncConflict.record_type == record_type,
            SyncConflict.record_id == record_id,
            SyncConflict.status == ConflictStatus.OPEN,
        )
    )
    return found


async def _conflict(
    session: AsyncSession,
    config: IntegrationSyncConfig,
    ref: ExternalReference,
    reason: ConflictReason,
    fields: list[str],
    local: dict[str, Any],
    external: dict[str, Any],
    *,
    status: ConflictStatus,
    detail: str | None = None,
) -> SyncConflict:
    record_type = ref.record_type
    if status == ConflictStatus.OPEN:
        existing = await _open_conflict(session, config.integration_id, record_type, ref.record_id)
        if existing is not None:
            # A newer PMS version of a queued conflict replaces its external side; still one item.
            existing.external, existing.local, existing.fields = external, local, fields
            existing.reason, existing.detail = reason, detail
            return existing
    conflict = SyncConflict(
        id=uuid.uuid4(),
        organization_id=config.organization_id,
        integration_id=config.integration_id,
        record_type=record_type,
        record_id=ref.record_id,
        external_id=str(ref.external_id),
        reason=reason,
        status=status,
        strategy=config.conflict_resolution.value,
        fields=fields,
        local=local,
        external=external,
        base=external_values(record_type, ref.snapshot or {}) if ref.snapshot else None,
        detail=detail,
    )
    session.add(conflict)
    await session.flush()
    return conflict


def _remember(ref: ExternalReference, record: dict[str, Any]) -> None:
    """The PMS's version becomes the snapshot later changes on either side are measured against."""
    ref.snapshot = refs.json_safe(dict(record))
    ref.last_synced_at = utcnow()


def _local_updated(record: Any) -> datetime:
    stamp: datetime = record.updated_at
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


async def apply_changes(
    session: AsyncSession,
    config: IntegrationSyncConfig,
    record_type: RecordType,
    records: Sequence[dict[str, Any]],
    *,
    source: audit.ChangeSource,
    actor: str,
) -> InboundResult:
    """Applies one page of the PMS's canonical records of one kind; see the module docstring."""
    result = InboundResult()
    if not takes_inbound(config) or not records:
        return result
    wanted = [str(record["id"]) for record in records if record.get("id") is not None]
    by_external, locals_ = await _load(session, config, record_type, wanted)
    context = AuditContext(source, actor, config.integration_id)
    for record in records:
        ref = by_external.get(str(record.get("id")))
        local = locals_.get(ref.record_id) if ref is not None else None
        if ref is None or local is None:
            result.unlinked += 1
            continue
        await _apply_one(session, config, ref, local, record, context, result)
    await session.flush()
    return result


async def _apply_one(
    session: AsyncSession,
    config: IntegrationSyncConfig,
    ref: ExternalReference,
    local: Any,
    record: dict[str, Any],
    context: AuditContext,
    result: InboundResult,
) -> None:
    record_type = ref.record_type
    names = FIELDS[record_type]
    base = ref.snapshot or {}
    seen = _instant(base.get("updated_at"))
    incoming = _instant(record.get("updated_at"))
    if seen is not None and incoming is not None and incoming < seen:
        result.stale += 1
        return
    theirs = external_values(record_type, record)
    ours = local_values(record_type, local)
    if base:
        external_changed = [n for n in names if n in theirs and n in base and _differs(n, theirs[n], base[n])]
        local_changed = [n for n in names if n in base and _differs(n, ours[n], base[n])]
    else:
        # Linked by hand or never synced: no ancestor, so the PMS's differing values are its changes.
        external_changed = [n for n in names if n in theirs and _differs(n, theirs[n], ours[n])]
        local_changed = []
    differing = [n for n in names if n in theirs and _differs(n, theirs[n], ours[n])]
    if not external_changed or not differing:
        # Nothing new from the PMS, or it already agrees with us: only the snapshot moves.
        _remember(ref, record)
        result.unchanged += 1
        return
    both = bool(local_changed)
    if not both:
        await _take_external(session, config, ref, local, record, differing, ours, theirs, context, result)
        return
    strategy = config.conflict_resolution
    if strategy == ConflictResolution.MANUAL:
        conflict = await _conflict(
            session,
            config,
            ref,
            ConflictReason.BOTH_CHANGED,
            differing,
            ours,
            theirs,
            status=ConflictStatus.OPEN,
        )
        result.queued += 1
        result.conflict_ids.append(conflict.id)
        return
    external_wins = strategy == ConflictResolution.EXTERNAL_WINS
    if strategy == ConflictResolution.LATEST_TIMESTAMP_WINS:
        external_wins = incoming is not None and incoming > _local_updated(local)
    if external_wins:
        await _take_external(
            session, config, ref, local, record, differing, ours, theirs, context, result, strategy=strategy
        )
        return
    conflict = await _conflict(
        session,
        config,
        ref,
        ConflictReason.BOTH_CHANGED,
        differing,
        ours,
        theirs,
        status=ConflictStatus.SETTLED,
        detail=f"{strategy.value}: the local values were kept",
    )
    conflict.resolution = "keep_local"
    conflict.resolved_at = utcnow()
    conflict.resolved_by = context.actor
    pushed = await owe_push(session, config, record_type, local)
    if pushed:
        audit.record_external(
            session,
            organization_id=config.organization_id,
            record_type=record_type,
            record_id=local.id,
            audit=AuditContext(
                context.source,
                context.actor,
                config.integration_id,
                conflict.id,
                f"{strategy.value}: local kept",
            ),
            changes={n: {"before": theirs[n], "after": ours[n]} for n in differing},
        )
    _remember(ref, record)
    result.settled += 1
    result.conflict_ids.append(conflict.id)


async def _take_external(
    session: AsyncSession,
    config: IntegrationSyncConfig,
    ref: ExternalReference,
    local: Any,
    record: dict[str, Any],
    differing: list[str],
    ours: dict[str, Any],
    theirs: dict[str, Any],
    context: AuditContext,
    result: InboundResult,
    *,
    strategy: ConflictResolution | None = None,
) -> None:
    record_type = ref.record_type
    values = {name: theirs[name] for name in differing}
    conflict: SyncConflict | None = None
    if strategy is not None:
        conflict = await _conflict(
            session,
            config,
            ref,
            ConflictReason.BOTH_CHANGED,
            differing,
            ours,
            theirs,
            status=ConflictStatus.SETTLED,
            detail=f"{strategy.value}: the PMS's values were applied",
        )
    applied = AuditContext(
        context.source,
        context.actor,
        config.integration_id,
        conflict.id if conflict else None,
        f"{strategy.value}: local overwritten" if strategy else None,
    )
    try:
        await write_local(session, record_type, local, values, applied)
    except DoubleBooking as clash:
        if conflict is not None:
            await session.delete(conflict)
        other = f" (booking {clash.other.booking_reference})" if clash.other is not None else ""
        queued = await _conflict(
            session,
            config,
            ref,
            ConflictReason.DOUBLE_BOOKING,
            differing,
            ours,
            theirs,
            status=ConflictStatus.OPEN,
            detail=f"the PMS's change would double-book the practitioner{other}",
        )
        result.queued += 1
        result.conflict_ids.append(queued.id)
        return
    if conflict is not None:
        conflict.resolution = "keep_external"
        conflict.resolved_at = utcnow()
        conflict.resolved_by = context.actor
        await discard_owed(
            session,
            config.integration_id,
            record_type,
            local.id,
            f"replaced by the PMS's version ({strategy})",
        )
        result.settled += 1
        result.conflict_ids.append(conflict.id)
    result.applied += 1
    _remember(ref, record)


async def config_of(session: AsyncSession, integration_id: uuid.UUID) -> IntegrationSyncConfig | None:
    found: IntegrationSyncConfig | None = await session.scalar(
        select(IntegrationSyncConfig).where(IntegrationSyncConfig.integration_id == integration_id)
    )
    return found
