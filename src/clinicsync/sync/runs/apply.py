"""What one page of a run writes: cases, consultations, the PMS's upcoming appointments, deletes.

Each function takes the session of the page's transaction and canonical records, loads what it
needs in one query, writes in bulk, and answers the actions record by record. The same
functions serve real runs and previews (a preview runs them in a savepoint it rolls back), so a
preview reports exactly what the real run does with the same PMS data.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking.models import Patient
from clinicsync.booking.service import duplicate_match
from clinicsync.db.base import utcnow
from clinicsync.sync import audit, inbound
from clinicsync.sync.audit import AuditContext
from clinicsync.sync.inbound_models import ChangeSource
from clinicsync.sync.models import ExternalReference, RecordType, SyncState
from clinicsync.sync.refs import json_safe
from clinicsync.sync.runs.models import PmsAppointment, SyncCase
from clinicsync.sync.slots import service as slots

COUNT_KEYS = ("found", "created", "updated", "unchanged", "deleted", "failed")


@dataclass
class Action:
    entity: str
    external_id: str
    action: str  # create, update, unchanged, delete, review
    fields: list[str] = field(default_factory=list)

    def as_dict(self, phase: str) -> dict[str, Any]:
        return {
            "phase": phase,
            "entity": self.entity,
            "external_id": self.external_id,
            "action": self.action,
            "fields": self.fields,
        }


@dataclass
class PageOutcome:
    actions: list[Action] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)  # e.g. inbound conflicts
    touched_cases: list[SyncCase] = field(default_factory=list)
    tallies: dict[str, dict[str, int]] = field(default_factory=dict)  # counted without per-record actions

    def merge(self, other: PageOutcome) -> None:
        self.actions += other.actions
        for entity, number in other.found.items():
            self.found[entity] = self.found.get(entity, 0) + number
        for key, number in other.extra.items():
            self.extra[key] = self.extra.get(key, 0) + number
        self.touched_cases += other.touched_cases

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for entity, number in self.found.items():
            counts.setdefault(entity, dict.fromkeys(COUNT_KEYS, 0))["found"] += number
        verbs = {"create": "created", "update": "updated", "unchanged": "unchanged", "delete": "deleted"}
        for action in self.actions:
            key = verbs.get(action.action, "failed" if action.action == "failed" else None)
            if key is not None:
                counts.setdefault(action.entity, dict.fromkeys(COUNT_KEYS, 0))[key] += 1
        for entity, values in self.tallies.items():
            into = counts.setdefault(entity, dict.fromkeys(COUNT_KEYS, 0))
            for key, number in values.items():
                into[key] = into.get(key, 0) + number
        return counts


def _visit_columns(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "patient_external_id": record.get("patient_id"),
        "practitioner_external_id": record.get("practitioner_id"),
        "starts_at": record["starts_at"],
        "ends_at": record.get("ends_at"),
        "status": record.get("status") or "pending",
    }


def _changed(row: Any, columns: dict[str, Any], snapshot: dict[str, Any], snapshot_name: str) -> list[str]:
    """Fields that differ; a new change stamp alone is not a change."""
    changed = {name for name, value in columns.items() if getattr(row, name) != value}
    old = getattr(row, snapshot_name) or {}
    changed |= {name for name in snapshot if name not in columns and old.get(name) != snapshot[name]}
    return sorted(changed - {"updated_at"})


async def upsert_cases(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    records: Sequence[dict[str, Any]],
) -> PageOutcome:
    """Past visits as cases, one per PMS appointment (deduplicated by its external id)."""
    outcome = PageOutcome(found={"cases": len(records)})
    wanted = {str(record["id"]): record for record in records}
    existing = {
        row.external_id: row
        for row in await session.scalars(
            select(SyncCase).where(
                SyncCase.integration_id == integration_id, SyncCase.external_id.in_(list(wanted))
            )
        )
    }
    for external_id, record in wanted.items():
        columns, snapshot = _visit_columns(record), json_safe(record)
        row = existing.get(external_id)
        if row is None:
            row = SyncCase(
                id=uuid.uuid4(),
                organization_id=organization_id,
                integration_id=integration_id,
                external_id=external_id,
                appointment=snapshot,
                **columns,
            )
            session.add(row)
            outcome.actions.append(Action("cases", external_id, "create"))
        else:
            changed = _changed(row, columns, snapshot, "appointment")
            if row.deleted_at is not None:
                # Back in the PMS after a reconciliation removed it.
                changed.append("deleted_at")
                row.deleted_at, row.reconciliation = None, None
            if not changed:
                outcome.actions.append(Action("cases", external_id, "unchanged"))
                continue
            for name, value in columns.items():
                setattr(row, name, value)
            row.appointment = snapshot
            outcome.actions.append(Action("cases", external_id, "update", changed))
        outcome.touched_cases.append(row)
    await session.flush()
    return outcome


_VISIT_COLUMNS = ("patient_external_id", "practitioner_external_id", "starts_at", "ends_at", "status")


async def upsert_pms_appointments(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    records: Sequence[dict[str, Any]],
    *,
    run_id: uuid.UUID,
) -> PageOutcome:
    """Upcoming PMS appointments kept as the PMS has them (for slot counts); those linked to a
    local booking also go through the inbound path, conflicts and all.

    A page is one SELECT of what is held (plain rows, no ORM objects), one multi-row INSERT of
    what is new and one executemany UPDATE of what changed: a page of the forward window is
    written at the cost of a handful of statements, however many visits the day holds."""
    outcome = PageOutcome(found={"appointments": len(records)})
    wanted = {str(record["id"]): record for record in records}
    held = {
        row.external_id: row
        for row in await session.execute(
            select(
                PmsAppointment.id,
                PmsAppointment.external_id,
                PmsAppointment.record,
                PmsAppointment.deleted_at,
                *(getattr(PmsAppointment, name) for name in _VISIT_COLUMNS),
            ).where(
                PmsAppointment.integration_id == integration_id, PmsAppointment.external_id.in_(list(wanted))
            )
        )
    }
    now = utcnow()
    created: list[dict[str, Any]] = []
    changed_rows: list[dict[str, Any]] = []
    actions = outcome.actions
    for external_id, record in wanted.items():
        columns, snapshot = _visit_columns(record), json_safe(record)
        row = held.get(external_id)
        if row is None:
            created.append(
                {
                    "id": uuid.uuid4(),
                    "organization_id": organization_id,
                    "integration_id": integration_id,
                    "external_id": external_id,
                    "record": snapshot,
                    "deleted_at": None,
                    "created_at": now,
                    "updated_at": now,
                    **columns,
                }
            )
            actions.append(Action("appointments", external_id, "create"))
            continue
        changed = _changed(row, columns, snapshot, "record")
        if row.deleted_at is not None:
            changed.append("deleted_at")
        if not changed:
            actions.append(Action("appointments", external_id, "unchanged"))
            continue
        changed_rows.append(
            {"id": row.id, "record": snapshot, "deleted_at": None, "updated_at": now, **columns}
        )
        actions.append(Action("appointments", external_id, "update", changed))
    table: Table = PmsAppointment.__table__  # type: ignore[assignment]
    if created:
        await session.execute(insert(table), created)
    if changed_rows:
        await session.execute(
            update(table).where(table.c.id == bindparam("row_id")),
            [{**values, "row_id": values.pop("id")} for values in changed_rows],
        )
    await _inbound(session, integration_id, records, run_id, outcome)
    return outcome


async def _inbound(
    session: AsyncSession,
    integration_id: uuid.UUID,
    records: Sequence[dict[str, Any]],
    run_id: uuid.UUID,
    outcome: PageOutcome,
) -> None:
    config = await inbound.config_of(session, integration_id)
    if not inbound.takes_inbound(config) or config is None:
        return
    result = await inbound.apply_changes(
        session,
        config,
        RecordType.APPOINTMENT,
        list(records),
        source=ChangeSource.PULL,
        actor=f"sync_run:{run_id}",
    )
    linked = len(records) - result.unlinked
    outcome.found["linked_appointments"] = linked
    counts = outcome.extra
    counts["linked_applied"] = result.applied
    counts["linked_unchanged"] = result.unchanged + result.stale
    counts["conflicts_settled"] = result.settled
    counts["conflicts_queued"] = result.queued


async def known_visits(
    session: AsyncSession, integration_id: uuid.UUID, external_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The visits a PMS reported deleted by their id alone (Google's cancelled entries promise
    only the id), as the records this integration holds for them with the status cancelled:
    they then go through the same page writes as any change. Ids never seen here are left out."""
    wanted = list(dict.fromkeys(external_ids))
    if not wanted:
        return []
    held: dict[str, PmsAppointment | SyncCase] = {}
    for row in await session.scalars(
        select(SyncCase).where(SyncCase.integration_id == integration_id, SyncCase.external_id.in_(wanted))
    ):
        held[row.external_id] = row
    for upcoming in await session.scalars(
        select(PmsAppointment).where(
            PmsAppointment.integration_id == integration_id, PmsAppointment.external_id.in_(wanted)
        )
    ):
        held[upcoming.external_id] = upcoming
    records = []
    for external_id, visit in held.items():
        snapshot = visit.appointment if isinstance(visit, SyncCase) else visit.record
        records.append(
            {
                **(snapshot or {}),
                "id": external_id,
                "starts_at": visit.starts_at,
                "ends_at": visit.ends_at,
                "status": "cancelled",
            }
        )
    return records


async def upsert_slots(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    grid: dict[str, Any],
    window: tuple[datetime, datetime],
    visits: Sequence[dict[str, Any]],
    outcome: PageOutcome,
    *,
    zone: str,
    seen_at: datetime,
) -> None:
    """The page's day of the PMS's slot grid, each slot counted with the day's visits; slots that
    start before the window (earlier today) are left alone."""
    day = window[0].astimezone(ZoneInfo(zone)).date()
    records = slots.slots_from_schedule(grid, day, day, visits=visits, timezone=grid.get("timezone") or zone)
    records = [record for record in records if window[0] <= record["starts_at"] < window[1]]
    result = await slots.upsert_page(session, organization_id, integration_id, records, seen_at=seen_at)
    outcome.found["slots"] = outcome.found.get("slots", 0) + len(records)
    outcome.tallies["slots"] = {
        "created": result.created,
        "updated": result.updated,
        "unchanged": len(records) - result.created - result.updated,
    }


async def settle_slots(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    window: tuple[datetime, datetime],
    *,
    seen_at: datetime,
) -> PageOutcome:
    """After the whole forward window was read: slots it no longer has are gone, and every slot's
    booked_count is recounted against its capacity (our own bookings since included)."""
    outcome = PageOutcome()
    gone = await slots.retire_unseen(session, integration_id, window[0], window[1], seen_before=seen_at)
    recounted = await slots.recompute_booked(session, organization_id, integration_id, window[0], window[1])
    outcome.tallies["slots"] = {"deleted": gone}
    outcome.extra["slots_recounted"] = recounted
    return outcome


async def attach_consultations(
    session: AsyncSession, integration_id: uuid.UUID, consultations: Sequence[dict[str, Any]]
) -> PageOutcome:
    """Each consultation into its visit's case (SOAP notes, discharge summary)."""
    outcome = PageOutcome(found={"consultations": len(consultations)})
    by_visit = {
        str(record["appointment_id"]): record for record in consultations if record.get("appointment_id")
    }
    cases = {
        row.external_id: row
        for row in await session.scalars(
            select(SyncCase).where(
                SyncCase.integration_id == integration_id, SyncCase.external_id.in_(list(by_visit))
            )
        )
    }
    for visit_id, record in by_visit.items():
        case = cases.get(visit_id)
        consultation_id = str(record.get("id"))
        if case is None:
            outcome.actions.append(Action("consultations", consultation_id, "failed", ["case"]))
            continue
        snapshot = json_safe(record)
        if case.consultation == snapshot:
            outcome.actions.append(Action("consultations", consultation_id, "unchanged"))
            continue
        verb = "create" if case.consultation is None else "update"
        case.consultation = snapshot
        case.enriched_at = utcnow()
        outcome.actions.append(Action("consultations", consultation_id, verb))
        outcome.touched_cases.append(case)
    await session.flush()
    return outcome


async def reconcile_cases(
    session: AsyncSession,
    integration_id: uuid.UUID,
    window: tuple[datetime, datetime],
    fetched: dict[str, dict[str, Any]],
    *,
    max_delete_share: float,
    run_id: uuid.UUID,
) -> tuple[PageOutcome, str | None]:
    """Soft-deletes the window's cases whose PMS appointment is gone and takes changed statuses;
    never looks outside the window fetched. Too many deletes stop it for a person's review.
    Answers the outcome and, when it stopped, why."""
    start, end = window
    local = list(
        await session.scalars(
            select(SyncCase).where(
                SyncCase.integration_id == integration_id,
                SyncCase.starts_at >= start,
                SyncCase.starts_at < end,
                SyncCase.deleted_at.is_(None),
            )
        )
    )
    outcome = PageOutcome(found={"cases": len(fetched)})
    missing = [case for case in local if case.external_id not in fetched]
    if local and len(missing) > max_delete_share * len(local):
        reason = (
            f"{len(missing)} of {len(local)} cases in the window ({len(missing) / len(local):.0%}) would be "
            f"deleted, more than the {max_delete_share:.0%} allowed: nothing was deleted; review the PMS "
            "data, then run again with a higher max_delete_share if it is right"
        )
        outcome.actions += [Action("cases", case.external_id, "review") for case in missing]
        return outcome, reason
    now = utcnow()
    for case in missing:
        case.deleted_at = now
        case.reconciliation = {
            "run_id": str(run_id),
            "reason": "not in the PMS any more",
            "at": now.isoformat(),
        }
        outcome.actions.append(Action("cases", case.external_id, "delete"))
        outcome.touched_cases.append(case)
    for case in local:
        record = fetched.get(case.external_id)
        if record is None:
            continue
        status = record.get("status") or case.status
        if status != case.status:
            case.status = status
            case.appointment = json_safe(record)
            outcome.actions.append(Action("cases", case.external_id, "update", ["status"]))
            outcome.touched_cases.append(case)
    await session.flush()
    return outcome, None


CASE_COLUMNS = (
    "id",
    "organization_id",
    "integration_id",
    "external_id",
    "patient_external_id",
    "practitioner_external_id",
    "starts_at",
    "ends_at",
    "status",
    "appointment",
    "consultation",
    "enriched_at",
    "deleted_at",
    "reconciliation",
)


def case_values(case: SyncCase) -> dict[str, Any]:
    return {name: getattr(case, name) for name in CASE_COLUMNS}


async def replay_cases(
    session: AsyncSession, integration_id: uuid.UUID, overlay: dict[str, dict[str, Any]]
) -> None:
    """A preview's earlier pages, written again inside the current page's savepoint, so later
    phases see what the real run would have written by then."""
    if not overlay:
        return
    existing = {
        row.external_id: row
        for row in await session.scalars(
            select(SyncCase).where(
                SyncCase.integration_id == integration_id, SyncCase.external_id.in_(list(overlay))
            )
        )
    }
    for external_id, values in overlay.items():
        row = existing.get(external_id)
        if row is None:
            session.add(SyncCase(**values))
        else:
            for name, value in values.items():
                if name != "id":
                    setattr(row, name, value)
    await session.flush()


# ---- patients ------------------------------------------------------------------------------------

PATIENT_COLUMNS = {"first_name": 100, "last_name": 100, "email": 320, "phone": 20}


def _patient_columns(record: dict[str, Any]) -> dict[str, Any] | None:
    """A PMS patient as local columns; None when it has no name to register it by."""
    first, last = (str(record.get(name) or "").strip() for name in ("first_name", "last_name"))
    if not first or not last:
        return None
    email = str(record["email"]).strip().lower() if record.get("email") else None
    columns: dict[str, Any] = {
        "first_name": first,
        "last_name": last,
        "email": email or None,
        "phone": record.get("phone") or None,
        "date_of_birth": record.get("date_of_birth"),
    }
    for name, limit in PATIENT_COLUMNS.items():
        if columns[name] is not None:
            columns[name] = str(columns[name])[:limit]
    return columns


def _same_person(candidates: list[Patient], columns: dict[str, Any]) -> Patient | None:
    """The oldest candidate the duplicate rule says is this PMS patient (a date of birth needed)."""
    born = columns["date_of_birth"]
    if born is None:
        return None
    for candidate in candidates:
        if candidate.date_of_birth == born and duplicate_match(
            candidate,
            first_name=columns["first_name"],
            last_name=columns["last_name"],
            email=columns["email"],
            phone=columns["phone"],
        ):
            return candidate
    return None


async def upsert_patients(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    records: Sequence[dict[str, Any]],
    *,
    run_id: uuid.UUID,
) -> PageOutcome:
    """One page of the PMS's patients into local patients, each linked to its PMS id by an
    external reference. A patient already linked takes the PMS's changes through the inbound
    path (conflict rule included); an unlinked one is matched to a local patient by the booking
    core's duplicate rule (same date of birth and the same name, email or phone; oldest first,
    never one linked to another PMS patient) and linked, or else created. A fixed number of
    queries per page, whatever its size."""
    outcome = PageOutcome(found={"patients": len(records)})
    wanted = {str(record["id"]): record for record in records if record.get("id") is not None}
    refs_by_external = {
        str(ref.external_id): ref
        for ref in await session.scalars(
            select(ExternalReference).where(
                ExternalReference.integration_id == integration_id,
                ExternalReference.record_type == RecordType.PATIENT,
                ExternalReference.external_id.in_(list(wanted)),
            )
        )
    }
    linked_ids = [ref.record_id for ref in refs_by_external.values()]
    locals_: dict[uuid.UUID, Patient] = {}
    if linked_ids:
        locals_ = {
            row.id: row
            for row in await session.scalars(
                select(Patient).where(Patient.id.in_(linked_ids), Patient.organization_id == organization_id)
            )
        }
    linked: dict[str, Patient] = {}
    newly_linked: set[str] = set()
    unlinked: dict[str, dict[str, Any]] = {}
    for external_id, record in wanted.items():
        ref = refs_by_external.get(external_id)
        local = locals_.get(ref.record_id) if ref is not None else None
        if local is not None:
            linked[external_id] = local
            continue
        columns = _patient_columns(record)
        if columns is None:
            outcome.actions.append(Action("patients", external_id, "failed", ["first_name", "last_name"]))
            continue
        unlinked[external_id] = columns
    # Local patients born on the days of the page's unlinked ones, minus those already linked.
    births = {columns["date_of_birth"] for columns in unlinked.values() if columns["date_of_birth"]}
    candidates: list[Patient] = []
    if births:
        taken = select(ExternalReference.record_id).where(
            ExternalReference.integration_id == integration_id,
            ExternalReference.record_type == RecordType.PATIENT,
        )
        candidates = list(
            await session.scalars(
                select(Patient)
                .where(
                    Patient.organization_id == organization_id,
                    Patient.date_of_birth.in_(births),
                    Patient.id.not_in(taken),
                )
                .order_by(Patient.created_at, Patient.id)
            )
        )
    context = AuditContext(ChangeSource.PULL, f"sync_run:{run_id}", integration_id)
    now = utcnow()
    with audit.context(session, context):
        for external_id, columns in unlinked.items():
            match = _same_person(candidates, columns)
            if match is not None:
                candidates.remove(match)  # one PMS patient per local patient
                patient, verb = match, "update"
                linked[external_id] = match
                newly_linked.add(external_id)
            else:
                patient = Patient(id=uuid.uuid4(), organization_id=organization_id, **columns)
                session.add(patient)
                verb = "create"
            ref = refs_by_external.get(external_id)
            if ref is None:
                ref = ExternalReference(
                    id=uuid.uuid4(),
                    organization_id=organization_id,
                    integration_id=integration_id,
                    record_type=RecordType.PATIENT,
                    external_id=external_id,
                    read_back_attempts=0,
                )
                session.add(ref)
            ref.record_id = patient.id
            ref.sync_state = SyncState.CONFIRMED
            ref.confirmed_at = now
            if verb == "create":
                # Made from the PMS's record: that is the common ancestor of later changes.
                ref.snapshot = json_safe(dict(wanted[external_id]))
                ref.last_synced_at = now
                outcome.actions.append(Action("patients", external_id, "create"))
        await session.flush()
    outcome.extra["patients_linked_existing"] = len(newly_linked)
    await _patients_inbound(session, integration_id, wanted, linked, newly_linked, run_id, outcome)
    return outcome


async def _patients_inbound(
    session: AsyncSession,
    integration_id: uuid.UUID,
    wanted: dict[str, dict[str, Any]],
    linked: dict[str, Patient],
    newly_linked: set[str],
    run_id: uuid.UUID,
    outcome: PageOutcome,
) -> None:
    """Linked patients take the PMS's values through the inbound path; what each one's local
    values did (changed or not) is its action."""
    if not linked:
        return
    before = {external_id: inbound.local_values(RecordType.PATIENT, p) for external_id, p in linked.items()}
    config = await inbound.config_of(session, integration_id)
    if config is not None and inbound.takes_inbound(config):
        result = await inbound.apply_changes(
            session,
            config,
            RecordType.PATIENT,
            [wanted[external_id] for external_id in linked],
            source=ChangeSource.PULL,
            actor=f"sync_run:{run_id}",
        )
        outcome.extra["conflicts_settled"] = outcome.extra.get("conflicts_settled", 0) + result.settled
        outcome.extra["conflicts_queued"] = outcome.extra.get("conflicts_queued", 0) + result.queued
    for external_id, patient in linked.items():
        after = inbound.local_values(RecordType.PATIENT, patient)
        changed = sorted(name for name, value in after.items() if before[external_id][name] != value)
        if external_id in newly_linked:
            outcome.actions.append(Action("patients", external_id, "update", ["linked", *changed]))
        elif changed:
            outcome.actions.append(Action("patients", external_id, "update", changed))
        else:
            outcome.actions.append(Action("patients", external_id, "unchanged"))
