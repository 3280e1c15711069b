"""Delivering one outbox item to its PMS, and reading accepted writes back.

No provider is named here: every call is a canonical operation (integrations/canonical.py).
Failures are sorted three ways: never sent (send again), refused (wait for a person), outcome
unknown (look the record up in the PMS, adopt it if it is there, create only if it is not).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.booking.models import Appointment
from clinicsync.config import Settings
from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.errors import ClinicSyncError, Conflict
from clinicsync.integrations import canonical
from clinicsync.integrations.canonical import SyncOperation
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.logging import get_logger
from clinicsync.realtime import hooks as realtime_hooks
from clinicsync.sync import outbox, payloads, refs
from clinicsync.sync.models import (
    ExternalReference,
    OutboxOperation,
    RecordType,
    SyncState,
)
from clinicsync.sync.outbox import Claim, FailureKind

log = get_logger(__name__)
REFUSED_CODES = frozenset({"validation_failed", "not_found", "gone", "auth_failed", "permanent"})


@dataclass
class SyncContext:
    """What the task functions need, the same in the server's process and in a worker."""

    sessionmaker: async_sessionmaker[AsyncSession]
    executor: IntegrationExecutor
    settings: Settings
    worker: str = "clinicsync"


class NotReady(Exception):
    """Something the item needs is owed first (e.g. its patient is still being created)."""


class Refused(ClinicSyncError):
    """We cannot deliver this item without a person (no counterpart to address, bad data)."""

    code = "permanent"


def classify(error: Exception) -> FailureKind:
    """never sent -> send again; refused -> a person decides; anything else -> look before resending."""
    if isinstance(error, IntegrationError):
        outcome = getattr(error, "outcome", None)
        if outcome in ("not_sent", "refused", "unknown"):
            return outcome
        if error.request_not_sent:
            return "not_sent"
        if error.code in REFUSED_CODES:
            return "refused"
        return "unknown"
    if isinstance(error, Conflict) and error.code == "integration_disabled":
        return "not_sent"
    if isinstance(error, ClinicSyncError):
        return "refused"  # our own payload or definition was refused before anything was sent
    return "unknown"


def booking_note(payload: dict[str, Any]) -> str:
    """The PMS note carries our booking reference first, so a lookup can find the booking exactly."""
    notes = (payload.get("notes") or "").strip()
    return f"{payload['booking_reference']} {notes}".strip()


async def _perform(
    ctx: SyncContext,
    claim_org: uuid.UUID,
    integration_id: uuid.UUID,
    op: SyncOperation,
    payload: dict[str, Any],
) -> list[dict[str, Any]]:
    result = await canonical.perform(ctx.executor, claim_org, integration_id, op, payload)
    return result.records


async def supported(
    ctx: SyncContext, organization_id: uuid.UUID, integration_id: uuid.UUID
) -> frozenset[SyncOperation]:
    """What the integration's definition can do (cached by the executor per definition revision)."""
    resolution = await ctx.executor.resolve_id(organization_id, integration_id)
    return canonical.supported_operations(resolution.resolved.definition)


async def _store_ref(
    ctx: SyncContext,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    record_type: RecordType,
    record_id: uuid.UUID,
    external_id: str,
    snapshot: dict[str, Any] | None,
    state: SyncState,
) -> None:
    async with session_scope(ctx.sessionmaker) as session:
        ref = await refs.get_ref(session, integration_id, record_type, record_id)
        if ref is None:
            ref = await refs.mark_pending(session, organization_id, integration_id, record_type, record_id)
        ref.external_id = external_id
        ref.sync_state = state
        ref.last_synced_at = utcnow()
        ref.last_error = None
        if snapshot is not None:
            ref.snapshot = refs.json_safe(snapshot)


async def _external_id(
    ctx: SyncContext, integration_id: uuid.UUID, record_type: RecordType, record_id: uuid.UUID
) -> str | None:
    async with session_scope(ctx.sessionmaker, write=False) as session:
        ref = await refs.get_ref(session, integration_id, record_type, record_id)
        return ref.external_id if ref is not None else None


async def _external_ids(
    ctx: SyncContext, integration_id: uuid.UUID, records: list[tuple[RecordType, uuid.UUID]]
) -> dict[tuple[RecordType, uuid.UUID], str]:
    """Several records' ids in the PMS in one read (an appointment, its patient, its practitioner)."""
    async with session_scope(ctx.sessionmaker, write=False) as session:
        rows = await session.execute(
            select(
                ExternalReference.record_type, ExternalReference.record_id, ExternalReference.external_id
            ).where(
                ExternalReference.integration_id == integration_id,
                ExternalReference.record_id.in_([record_id for _, record_id in records]),
                ExternalReference.external_id.is_not(None),
            )
        )
        found = {(record_type, record_id): str(external_id) for record_type, record_id, external_id in rows}
    return {key: value for key, value in found.items() if key in records}


# ---- patients ---------------------------------------------------------------------------


def _findable(payload: dict[str, Any]) -> dict[str, Any] | None:
    keys = ("email", "phone", "date_of_birth", "first_name", "last_name")
    found = {key: payload[key] for key in keys if payload.get(key)}
    if found.get("email") or (found.get("phone") and found.get("date_of_birth")):
        return found
    if found.get("first_name") and found.get("last_name") and found.get("date_of_birth"):
        return found
    return None


async def ensure_patient(
    ctx: SyncContext,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    patient_id: uuid.UUID,
    payload: dict[str, Any] | None = None,
    *,
    known: str | None = None,
) -> str:
    """The patient's id in the PMS: by reference, else matched (email, or phone + birth date), else new."""
    existing = known or await _external_id(ctx, integration_id, RecordType.PATIENT, patient_id)
    if existing is not None:
        return existing
    if SyncOperation.PATIENT_CREATE not in await supported(ctx, organization_id, integration_id):
        # A provider without a patient register (a calendar) carries our own id on the appointment.
        return str(patient_id)
    if payload is None:
        from clinicsync.booking.models import Patient

        async with session_scope(ctx.sessionmaker, write=False) as session:
            patient = await session.get(Patient, patient_id)
            if patient is None:
                raise Refused(f"patient {patient_id} no longer exists")
            payload = payloads.patient_payload(patient)
    clean = {key: value for key, value in payload.items() if value is not None}
    query = _findable(clean)
    if query is not None:
        found = await _perform(ctx, organization_id, integration_id, SyncOperation.PATIENT_FIND, query)
        if found:
            record = found[0]
            await _store_ref(
                ctx,
                organization_id,
                integration_id,
                RecordType.PATIENT,
                patient_id,
                record["id"],
                clean | {"id": record["id"]},
                SyncState.ACCEPTED,
            )
            return str(record["id"])
    created = await _perform(ctx, organization_id, integration_id, SyncOperation.PATIENT_CREATE, clean)
    if not created or not created[0].get("id"):
        raise IntegrationError("permanent", "the PMS answered the patient create without an id")
    external_id = str(created[0]["id"])
    await _store_ref(
        ctx,
        organization_id,
        integration_id,
        RecordType.PATIENT,
        patient_id,
        external_id,
        clean | {"id": external_id},
        SyncState.ACCEPTED,
    )
    return external_id


async def _patient(ctx: SyncContext, claim: Claim) -> tuple[str | None, dict[str, Any] | None]:
    payload = {key: value for key, value in claim.payload.items() if value is not None}
    if SyncOperation.PATIENT_CREATE not in await supported(ctx, claim.organization_id, claim.integration_id):
        return None, None  # this provider keeps no patients: nothing to push
    external_id = await _external_id(ctx, claim.integration_id, RecordType.PATIENT, claim.record_id)
    if claim.operation == OutboxOperation.CREATE and external_id is None:
        external_id = await ensure_patient(
            ctx, claim.organization_id, claim.integration_id, claim.record_id, payload
        )
        return external_id, payload | {"id": external_id}
    if external_id is None:
        external_id = await ensure_patient(
            ctx, claim.organization_id, claim.integration_id, claim.record_id, payload
        )
    # An update (or a create whose patient was already matched) sends the current fields; it is idempotent.
    await _perform(
        ctx,
        claim.organization_id,
        claim.integration_id,
        SyncOperation.PATIENT_UPDATE,
        payload | {"id": external_id},
    )
    return external_id, payload | {"id": external_id}


# ---- appointments -----------------------------------------------------------------------


async def practitioner_id(
    ctx: SyncContext,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    local_id: uuid.UUID,
    *,
    known: str | None = None,
) -> str:
    """The practitioner's id in the PMS: a stored link, else the one PMS practitioner with the same name."""
    existing = known or await _external_id(ctx, integration_id, RecordType.PRACTITIONER, local_id)
    if existing is not None:
        return existing
    if SyncOperation.PRACTITIONER_LIST not in await supported(ctx, organization_id, integration_id):
        return str(local_id)
    from clinicsync.booking.models import Practitioner

    async with session_scope(ctx.sessionmaker, write=False) as session:
        practitioner = await session.get(Practitioner, local_id)
        name = practitioner.name if practitioner else ""
    listed = await _perform(ctx, organization_id, integration_id, SyncOperation.PRACTITIONER_LIST, {})
    match = match_practitioner(listed, name)
    external_id = str(match["id"])
    await _store_ref(
        ctx,
        organization_id,
        integration_id,
        RecordType.PRACTITIONER,
        local_id,
        external_id,
        None,
        SyncState.CONFIRMED,
    )
    return external_id


def _plain_name(value: str) -> str:
    return " ".join(value.casefold().replace("dr.", "").split())


def match_practitioner(listed: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The one PMS practitioner whose display name (or first + last) is the local name."""
    wanted = _plain_name(name)
    matches = [
        record
        for record in listed
        if wanted
        and wanted
        in {
            _plain_name(str(record.get("display_name") or "")),
            _plain_name(f"{record.get('first_name') or ''} {record.get('last_name') or ''}"),
        }
    ]
    if len(matches) != 1:
        how = "no" if not matches else "more than one"
        raise Refused(
            f"practitioner {name!r} has {how} counterpart in the PMS; link it with POST /api/admin/sync/links"
        )
    return matches[0]


def _appointment_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "starts_at": payload["starts_at"],
        "ends_at": payload["ends_at"],
        "status": payload["status"],
        "note": booking_note(payload),
    }


async def _appointment(ctx: SyncContext, claim: Claim) -> tuple[str, dict[str, Any]]:
    org, integration = claim.organization_id, claim.integration_id
    payload = claim.payload
    if claim.operation == OutboxOperation.CANCEL:
        external_id = await _external_id(ctx, integration, RecordType.APPOINTMENT, claim.record_id)
        if external_id is None:
            raise Refused("the appointment was never created in the PMS, so there is nothing to cancel there")
        if claim.looked_up_first:
            current = await _perform(
                ctx, org, integration, SyncOperation.APPOINTMENT_GET, {"id": external_id}
            )
            if current and current[0].get("status") == "cancelled":
                return external_id, {"id": external_id, "status": "cancelled"}
        await _perform(
            ctx,
            org,
            integration,
            SyncOperation.APPOINTMENT_CANCEL,
            {"id": external_id, "reason": payload.get("reason")},
        )
        return external_id, {"id": external_id, "status": "cancelled"}
    patient_id, practitioner_local = uuid.UUID(payload["patient_id"]), uuid.UUID(payload["practitioner_id"])
    known = await _external_ids(
        ctx,
        integration,
        [
            (RecordType.APPOINTMENT, claim.record_id),
            (RecordType.PATIENT, patient_id),
            (RecordType.PRACTITIONER, practitioner_local),
        ],
    )
    external_id = known.get((RecordType.APPOINTMENT, claim.record_id))
    patient = await ensure_patient(
        ctx, org, integration, patient_id, known=known.get((RecordType.PATIENT, patient_id))
    )
    practitioner = await practitioner_id(
        ctx,
        org,
        integration,
        practitioner_local,
        known=known.get((RecordType.PRACTITIONER, practitioner_local)),
    )
    fields = _appointment_fields(payload) | {"patient_id": patient, "practitioner_id": practitioner}
    if external_id is None and claim.looked_up_first:
        found = await _perform(
            ctx,
            org,
            integration,
            SyncOperation.APPOINTMENT_FIND,
            {
                "reference": payload["booking_reference"],
                "patient_id": patient,
                "practitioner_id": practitioner,
                "starts_at": payload["starts_at"],
            },
        )
        if found:
            external_id = str(found[0]["id"])
            log.info("outbox_adopted", item_id=str(claim.id), operation=claim.operation.value)
    if external_id is None:
        created = await _perform(ctx, org, integration, SyncOperation.APPOINTMENT_CREATE, fields)
        if not created or not created[0].get("id"):
            raise IntegrationError("permanent", "the PMS answered the appointment create without an id")
        return str(created[0]["id"]), fields | {"id": str(created[0]["id"])}
    if claim.operation == OutboxOperation.CREATE and not claim.looked_up_first:
        return external_id, fields | {"id": external_id}
    update = {key: value for key, value in fields.items() if key != "patient_id"} | {"id": external_id}
    await _perform(ctx, org, integration, SyncOperation.APPOINTMENT_UPDATE, update)
    return external_id, fields | {"id": external_id}


# ---- the task bodies ----------------------------------------------------------------------


@dataclass
class DeliveryOutcome:
    status: str  # skipped, done, retry, failed, postponed
    retry_at: datetime | None = None
    read_backs: list[uuid.UUID] = field(default_factory=list)
    following: uuid.UUID | None = None  # the next item of the chain, free to go now


async def deliver(ctx: SyncContext, item_id: uuid.UUID) -> DeliveryOutcome:
    """One attempt at one outbox item (the body of the `deliver` job)."""
    settings = ctx.settings
    claim = await outbox.claim(
        ctx.sessionmaker, item_id, worker=ctx.worker, lease_seconds=settings.sync_lease_seconds
    )
    if claim is None:
        return DeliveryOutcome("skipped")
    try:
        external_id: str | None
        sent: dict[str, Any] | None
        if claim.record_type == RecordType.PATIENT:
            external_id, sent = await _patient(ctx, claim)
        else:
            external_id, sent = await _appointment(ctx, claim)
    except NotReady as exc:
        retry_at: datetime | None = await outbox.postpone(
            ctx.sessionmaker, claim, seconds=settings.sync_retry_base_seconds, reason=str(exc)
        )
        return DeliveryOutcome("postponed", retry_at)
    except Exception as exc:
        kind = classify(exc)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        code = getattr(exc, "code", None) or type(exc).__name__
        delay = outbox.backoff(
            claim.attempt,
            base=settings.sync_retry_base_seconds,
            cap=settings.sync_retry_max_seconds,
            retry_after=getattr(exc, "retry_after", None),
        )
        retry_at = await outbox.fail(
            ctx.sessionmaker, claim, kind=kind, message=message, code=code, delay_seconds=delay
        )
        log.warning(
            "outbox_delivery_failed",
            item_id=str(claim.id),
            record_type=claim.record_type.value,
            operation=claim.operation.value,
            attempt=claim.attempt,
            outcome=kind,
            code=code,
        )
        if kind != "refused" and not isinstance(exc, ClinicSyncError):
            log.exception("outbox_delivery_error", item_id=str(claim.id))
        if retry_at is None:
            # A refused appointment holds back only later pushes of itself: the patient's other
            # appointments behind it in the chain may go now.
            async with session_scope(ctx.sessionmaker, write=False) as session:
                following = await outbox.next_in_chain(session, claim)
            return DeliveryOutcome("failed", following=following)
        return DeliveryOutcome("retry", retry_at)
    delivered = await outbox.succeed(ctx.sessionmaker, claim, external_id=external_id, snapshot=sent)
    return DeliveryOutcome("done", read_backs=delivered.read_backs, following=delivered.following)


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    text = str(value)
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _status_class(value: Any) -> Any:
    return "active" if value in ("pending", "confirmed") else value


def differences(record_type: RecordType, sent: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """Fields where the PMS holds something other than what was sent."""
    diff: dict[str, Any] = {}
    if record_type == RecordType.APPOINTMENT:
        for key in ("starts_at", "ends_at"):
            if key in sent and found.get(key) is not None and _instant(sent[key]) != _instant(found[key]):
                diff[key] = {"sent": sent[key], "pms": refs.json_safe({key: found[key]})[key]}
        for key in ("patient_id", "practitioner_id"):
            if sent.get(key) is not None and found.get(key) is not None and str(sent[key]) != str(found[key]):
                diff[key] = {"sent": sent[key], "pms": found[key]}
        if (
            "status" in sent
            and found.get("status") is not None
            and _status_class(sent["status"]) != _status_class(found["status"])
        ):
            diff["status"] = {"sent": sent["status"], "pms": found["status"]}
    else:
        for key in ("first_name", "last_name", "email", "phone", "date_of_birth"):
            mine, theirs = sent.get(key), found.get(key)
            if isinstance(theirs, date):
                theirs = theirs.isoformat()
            if mine is None or theirs is None:
                continue
            if str(mine).strip().casefold() != str(theirs).strip().casefold():
                diff[key] = {"sent": mine, "pms": theirs}
    return diff


async def read_back(ctx: SyncContext, ref_id: uuid.UUID) -> str:
    """Reads an accepted write back from the PMS: confirmed when it matches, flagged when not."""
    async with session_scope(ctx.sessionmaker, write=False) as session:
        ref = await session.get(ExternalReference, ref_id)
        if ref is None or ref.sync_state != SyncState.ACCEPTED or ref.external_id is None:
            return "skipped"
        organization_id, integration_id, record_type = (
            ref.organization_id,
            ref.integration_id,
            ref.record_type,
        )
        external_id, sent = ref.external_id, dict(ref.snapshot or {})
    operation = (
        SyncOperation.APPOINTMENT_GET if record_type == RecordType.APPOINTMENT else SyncOperation.PATIENT_GET
    )
    try:
        found = await _perform(ctx, organization_id, integration_id, operation, {"id": external_id})
    except Exception as exc:
        code = getattr(exc, "code", None)
        log.warning("read_back_failed", ref_id=str(ref_id), error_type=type(exc).__name__, code=code)
        async with session_scope(ctx.sessionmaker) as session:
            ref = await session.get(ExternalReference, ref_id)
            if ref is None:
                return "skipped"
            ref.read_back_attempts += 1
            if ref.read_back_attempts < outbox.READ_BACK_ATTEMPTS:
                return "retry"
            # The write was accepted but the PMS never let us see it: a person must look, so it
            # is flagged like a mismatch instead of waiting as "accepted" for ever.
            unreadable = f"unreadable after {ref.read_back_attempts} tries ({code})"
            ref.mismatch = {"record": {"sent": "present", "pms": unreadable}}
            await _announce_read_back(session, ref, "mismatch")
            return "mismatch"
    async with session_scope(ctx.sessionmaker) as session:
        ref = await session.get(ExternalReference, ref_id)
        if ref is None or ref.sync_state != SyncState.ACCEPTED or ref.external_id != external_id:
            return "skipped"
        if not found:
            ref.mismatch = {"record": {"sent": "present", "pms": "missing"}}
            outcome = "mismatch"
        elif diff := differences(record_type, sent, found[0]):
            # Flagged for a person (and the inbound sync's conflict rules), never overwritten here.
            ref.mismatch = diff
            outcome = "mismatch"
        else:
            ref.sync_state = SyncState.CONFIRMED
            ref.confirmed_at = utcnow()
            ref.mismatch = None
            outcome = "confirmed"
        await _announce_read_back(session, ref, outcome)
        return outcome


async def _announce_read_back(session: AsyncSession, ref: ExternalReference, outcome: str) -> None:
    """Open portals redraw the booking's PMS badge when its read-back settles. References are not
    tracked models (a full sync writes thousands); this is the one change a person waits to see."""
    practitioner_id = None
    if ref.record_type == RecordType.APPOINTMENT:
        # The practitioner's own portal is an audience: their events carry their id.
        practitioner_id = await session.scalar(
            select(Appointment.practitioner_id).where(Appointment.id == ref.record_id)
        )
    await realtime_hooks.record(
        session,
        organization_id=ref.organization_id,
        entity="external_ref",
        entity_id=ref.id,
        operation="updated",
        payload={
            "integration_id": str(ref.integration_id),
            "record_type": ref.record_type.value,
            "record_id": str(ref.record_id),
            "sync_state": ref.sync_state.value,
            "read_back": outcome,
        },
        practitioner_id=practitioner_id,
    )


async def sweep_read_backs(ctx: SyncContext) -> list[uuid.UUID]:
    return await outbox.read_backs_due(
        ctx.sessionmaker, older_than=30 + ctx.settings.sync_read_back_delay_seconds, limit=500
    )


async def refs_for_record(
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
