"""Runs as product data: start one (one active per integration), watch, cancel, clean up, history.

The run row is the durable record people look at; the job engine only wakes a worker for it.
Starting a run inserts the row; the partial unique index on active runs makes a second start
for the same integration fail in the database, whoever tries, and the caller hears 409 with the
running run's id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.config import Settings
from clinicsync.db.base import utcnow
from clinicsync.errors import ClinicSyncError, NotFound, ValidationFailed
from clinicsync.integrations.models import ExternalIntegration
from clinicsync.sync.runs import cursors
from clinicsync.sync.runs.models import (
    ACTIVE_RUN_STATUSES,
    RunMode,
    RunSettings,
    RunStatus,
    RunType,
    SyncRun,
)

STALE_REASON = "stale: no heartbeat from its worker"

# What each run type does, in order.
STEPS: dict[RunType, list[str]] = {
    RunType.FULL: ["backward", "enrichment", "forward", "reconcile"],
    RunType.MANUAL: ["backward", "enrichment", "forward", "reconcile"],
    RunType.SCHEDULED: ["backward", "enrichment", "forward", "reconcile"],
    RunType.INBOUND: ["forward"],
    RunType.CASES: ["backward", "enrichment"],
    RunType.RECONCILE: ["reconcile"],
    RunType.IMPORT_PATIENTS: ["patients"],
}


def sync_error(
    error_type: str, message: str, *, error_code: str, retry_after: int | None = None
) -> dict[str, Any]:
    """The reference's error details (error_type, message, retry_after, error_code), carried
    inside our error shape's `details`."""
    return {
        "error_type": error_type,
        "message": message,
        "retry_after": retry_after,
        "error_code": error_code,
    }


class RunAlreadyActive(ClinicSyncError):
    status_code = 409
    code = "sync_already_running"

    def __init__(self, run: SyncRun) -> None:
        message = f"a sync run of this integration is already {run.status.value}: {run.id}"
        super().__init__(
            message,
            details={
                "sync_id": str(run.id),
                "status": run.status.value,
                **sync_error(
                    "sync_already_running", message, error_code="SYNC_ALREADY_RUNNING", retry_after=30
                ),
            },
        )


class RunFinished(ClinicSyncError):
    status_code = 409
    code = "sync_finished"


@dataclass(frozen=True)
class RunRequest:
    run_type: RunType = RunType.FULL
    mode: RunMode = RunMode.COMPREHENSIVE
    dry_run: bool = False
    incremental: bool = False
    backward_days: int | None = None
    forward_days: int | None = None
    reconcile_days: int | None = None
    max_delete_share: float | None = None
    enrichment_concurrency: int | None = None
    triggered_by: str | None = None


async def integration_of(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID
) -> ExternalIntegration:
    row = await session.get(ExternalIntegration, integration_id)
    if row is None or row.organization_id != organization_id:
        raise NotFound("integration not found", details={"integration_id": str(integration_id)})
    return row


async def settings_of(session: AsyncSession, integration_id: uuid.UUID) -> RunSettings | None:
    found: RunSettings | None = await session.scalar(
        select(RunSettings).where(RunSettings.integration_id == integration_id)
    )
    return found


def _params(request: RunRequest, own: RunSettings | None, settings: Settings) -> dict[str, Any]:
    def pick(asked: Any, integration: Any, deployment: Any) -> Any:
        return asked if asked is not None else integration if integration is not None else deployment

    return {
        "backward_days": pick(request.backward_days, own and own.backward_days, settings.sync_backward_days),
        "forward_days": pick(request.forward_days, own and own.forward_days, settings.sync_forward_days),
        "reconcile_days": pick(
            request.reconcile_days, own and own.reconcile_days, settings.sync_reconcile_days
        ),
        "max_delete_share": pick(
            request.max_delete_share, own and own.max_delete_share, settings.sync_max_delete_share
        ),
        "enrichment_concurrency": request.enrichment_concurrency or settings.sync_enrichment_concurrency,
    }


async def active_run(session: AsyncSession, integration_id: uuid.UUID) -> SyncRun | None:
    found: SyncRun | None = await session.scalar(
        select(SyncRun).where(
            SyncRun.integration_id == integration_id, SyncRun.status.in_(ACTIVE_RUN_STATUSES)
        )
    )
    return found


async def _resumable(session: AsyncSession, integration_id: uuid.UUID, run_type: RunType) -> SyncRun | None:
    """The last run of this kind, if it died (stale) with work checkpointed: the new run goes on
    from there instead of starting again."""
    last: SyncRun | None = await session.scalar(
        select(SyncRun)
        .where(
            SyncRun.integration_id == integration_id, SyncRun.run_type == run_type, SyncRun.dry_run.is_(False)
        )
        .order_by(SyncRun.created_at.desc())
        .limit(1)
    )
    if last is None or last.status != RunStatus.FAILED or last.checkpoint is None:
        return None
    return last if (last.error_message or "").startswith("stale") else None


async def start_run(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    request: RunRequest,
    settings: Settings,
) -> SyncRun:
    """Inserts the run (status starting); the caller defers its job after commit."""
    await integration_of(session, organization_id, integration_id)
    own = await settings_of(session, integration_id)
    params = _params(request, own, settings)
    if not 0 <= params["max_delete_share"] <= 1:
        raise ValidationFailed("max_delete_share", "must be between 0 and 1")
    for name in ("backward_days", "forward_days", "reconcile_days"):
        if not 0 <= params[name] <= 366:
            raise ValidationFailed(name, "must be between 0 and 366 days")
    params["as_of"] = utcnow().isoformat()
    steps = list(STEPS[request.run_type])
    incremental = request.incremental or request.run_type == RunType.SCHEDULED
    notes: list[str] = []
    if incremental and "backward" in steps:
        if await cursors.load(session, integration_id) is not None:
            steps = ["pull"]
        else:
            notes.append("no cursor yet: the full windows are read, and the next pull asks for changes only")
    run = SyncRun(
        id=uuid.uuid4(),
        organization_id=organization_id,
        integration_id=integration_id,
        run_type=request.run_type,
        mode=request.mode,
        status=RunStatus.STARTING,
        dry_run=request.dry_run,
        incremental=steps == ["pull"],
        params=params,
        steps=steps,
        counts={},
        phases={},
        errors=[],
        notes=notes,
        triggered_by=request.triggered_by,
        started_at=utcnow(),
        heartbeat_at=utcnow(),
    )
    if not request.dry_run:
        previous = await _resumable(session, integration_id, request.run_type)
        if previous is not None and _same_ask(previous.params, params):
            # Same ask: carry the work done (counts, finished phases) and go on from its page,
            # inside the same windows (its as_of), so pages line up.
            run.params = {**params, "as_of": previous.params.get("as_of")}
            run.resumed_from = previous.id
            run.checkpoint = previous.checkpoint
            run.counts = dict(previous.counts)
            run.phases = dict(previous.phases)
            run.notes = [*notes, f"resumed from run {previous.id} at its checkpoint"]
    try:
        async with session.begin_nested():
            session.add(run)
    except IntegrityError:
        running = await active_run(session, integration_id)
        if running is None:
            raise
        raise RunAlreadyActive(running) from None
    return run


def _same_ask(one: dict[str, Any], other: dict[str, Any]) -> bool:
    return {k: v for k, v in one.items() if k != "as_of"} == {k: v for k, v in other.items() if k != "as_of"}


async def get_run(session: AsyncSession, organization_id: uuid.UUID, run_id: uuid.UUID) -> SyncRun:
    run = await session.get(SyncRun, run_id)
    if run is None or run.organization_id != organization_id:
        raise NotFound("sync run not found", details={"sync_id": str(run_id)})
    return run


async def request_cancel(session: AsyncSession, organization_id: uuid.UUID, run_id: uuid.UUID) -> SyncRun:
    """Asks the run to stop; it stops between pages and records what it did. A run still
    waiting for a worker is cancelled at once."""
    run = await get_run(session, organization_id, run_id)
    if run.status not in ACTIVE_RUN_STATUSES:
        raise RunFinished(
            f"the run is already {run.status.value}",
            details=sync_error(
                "sync_finished", f"the run is already {run.status.value}", error_code="SYNC_FINISHED"
            ),
        )
    run.cancel_requested = True
    if run.status == RunStatus.STARTING:
        run.status = RunStatus.CANCELLED
        run.completed_at = utcnow()
        run.current_operation = "cancelled before it started"
    await session.flush()
    return run


async def fail_stale(
    session: AsyncSession, stale_after: timedelta, organization_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Fails running runs whose worker stopped beating; their checkpoint stays for the next run.
    A run still waiting for a worker (starting) is not stale: its job is deferred again instead
    (`waiting`)."""
    cutoff = utcnow() - stale_after
    query = select(SyncRun.id).where(
        SyncRun.status == RunStatus.RUNNING,
        func.coalesce(SyncRun.heartbeat_at, SyncRun.started_at) < cutoff,
    )
    if organization_id is not None:
        query = query.where(SyncRun.organization_id == organization_id)
    ids = list(await session.scalars(query))
    if ids:
        now = utcnow()
        await session.execute(
            update(SyncRun)
            .where(SyncRun.id.in_(ids), SyncRun.status == RunStatus.RUNNING)
            .values(
                status=RunStatus.FAILED,
                completed_at=now,
                error_message=f"{STALE_REASON} since {cutoff.isoformat()}",
                current_operation="failed as stale; the next run resumes from its checkpoint",
            )
        )
    return ids


async def waiting(session: AsyncSession, older_than: timedelta) -> list[uuid.UUID]:
    """Runs asked for a while ago that no worker has taken: their job may have been lost."""
    cutoff = utcnow() - older_than
    found = await session.scalars(
        select(SyncRun.id).where(SyncRun.status == RunStatus.STARTING, SyncRun.created_at < cutoff).limit(500)
    )
    return list(found)


async def history(
    session: AsyncSession, organization_id: uuid.UUID, *, limit: int, integration_id: uuid.UUID | None = None
) -> dict[str, Any]:
    base = [SyncRun.organization_id == organization_id, SyncRun.dry_run.is_(False)]
    if integration_id is not None:
        base.append(SyncRun.integration_id == integration_id)
    rows = (
        await session.execute(select(SyncRun.status, func.count()).where(*base).group_by(SyncRun.status))
    ).all()
    by_status = {RunStatus(status): count for status, count in rows}
    last_at = await session.scalar(select(func.max(SyncRun.started_at)).where(*base))
    last_success = await session.scalar(
        select(func.max(SyncRun.completed_at)).where(*base, SyncRun.status == RunStatus.COMPLETED)
    )
    finished = list(
        await session.scalars(
            select(SyncRun)
            .where(*base, SyncRun.status == RunStatus.COMPLETED, SyncRun.completed_at.is_not(None))
            .order_by(SyncRun.completed_at.desc())
            .limit(200)
        )
    )
    durations = [_seconds(run.started_at, run.completed_at) for run in finished]
    recent = list(
        await session.scalars(
            select(SyncRun)
            .where(SyncRun.organization_id == organization_id, *base[1:])
            .order_by(SyncRun.started_at.desc(), SyncRun.id)
            .limit(limit)
        )
    )
    return {
        "organization_id": str(organization_id),
        "total_syncs": sum(by_status.values()),
        "successful_syncs": by_status.get(RunStatus.COMPLETED, 0),
        "failed_syncs": by_status.get(RunStatus.FAILED, 0),
        "cancelled_syncs": by_status.get(RunStatus.CANCELLED, 0),
        "last_sync_at": last_at,
        "last_successful_sync_at": last_success,
        "average_sync_duration_seconds": round(sum(durations) / len(durations), 3) if durations else None,
        "recent_syncs": recent,
    }


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return max(0.0, (end - start).total_seconds())


def progress(run: SyncRun) -> dict[str, Any]:
    """The reference's progress shape, computed from the run row."""
    total_steps = len(run.steps)
    if run.status == RunStatus.COMPLETED:
        percentage = 100.0
    else:
        # Each step is an equal share, the running one counted by its pages: a phase learns its
        # page count only when it starts, so a share per step keeps the figure moving forward.
        current = run.phases.get(run.current_step or "") or {}
        fraction = 0.0
        if current.get("status") == "running" and current.get("pages_total"):
            fraction = min(1.0, int(current.get("pages_done") or 0) / int(current["pages_total"]))
        share = (run.completed_steps + fraction) / total_steps if total_steps else 0.0
        percentage = round(100.0 * min(1.0, share), 1)
    estimated = None
    if run.status in ACTIVE_RUN_STATUSES and run.started_at is not None and 0 < percentage < 100:
        elapsed = (utcnow() - run.started_at).total_seconds()
        estimated = run.started_at + timedelta(seconds=elapsed * 100.0 / percentage)
    return {
        "sync_id": str(run.id),
        "organization_id": str(run.organization_id),
        "integration_id": str(run.integration_id),
        "status": run.status.value,
        "sync_type": run.run_type.value,
        "sync_mode": run.mode.value,
        "dry_run": run.dry_run,
        "progress_percentage": percentage,
        "current_step": run.current_step,
        "total_steps": total_steps,
        "completed_steps": run.completed_steps,
        "started_at": run.started_at,
        "estimated_completion": estimated,
        "records_processed": run.records_processed,
        "records_total": run.records_total,
        "current_operation": run.current_operation,
        "errors": run.errors,
        "notes": run.notes,
    }
