"""Executes one run: its phases in order, page by page, each page committed with its checkpoint.

A page's writes, the run's counts and its checkpoint are one transaction, so a worker killed at
any moment leaves the run exactly at its last committed page; the run that follows resumes there
(service.start_run carries the checkpoint) and its counts come out as if nothing had happened.
Between pages the run reads its own row: a cancel request stops it there, and a run failed as
stale by the cleanup (its worker presumed dead) stops writing at once.

A failing phase is recorded with its reason and the next phase runs. A preview (dry run) runs
the same page functions inside a savepoint that it rolls back, replaying its own earlier pages
first, and keeps the record-by-record actions instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.errors import ClinicSyncError
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.runtime import ResolvedIntegration
from clinicsync.logging import get_logger
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.runs.context import (
    NeedsReview,
    PhaseSkipped,
    RunContext,
    RunStopped,
    Windows,
    update_run,
)
from clinicsync.sync.runs.models import ACTIVE_RUN_STATUSES, RunStatus, SyncRun
from clinicsync.sync.runs.phases import PHASES, save_full_cursor
from clinicsync.sync.runs.service import sync_error
from clinicsync.tenancy.models import Organization

log = get_logger(__name__)


def _zone(resolved: ResolvedIntegration, fallback: str) -> ZoneInfo:
    for name in (resolved.settings.get("timezone"), fallback, "UTC"):
        if name:
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
                return ZoneInfo(str(name))
    return ZoneInfo("UTC")


def _error(phase: str, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, IntegrationError):
        retry = int(exc.retry_after) if exc.retry_after is not None else None
        details = sync_error(exc.code, str(exc), error_code=f"PMS_{exc.code.upper()}", retry_after=retry)
    elif isinstance(exc, ClinicSyncError):
        details = sync_error(exc.code, exc.message, error_code=exc.code.upper())
    else:
        details = sync_error("internal_error", type(exc).__name__, error_code="INTERNAL_ERROR")
    return {"phase": phase, **details, "at": utcnow().isoformat()}


async def _heartbeat(ctx: SyncContext, run_id: uuid.UUID, every: float) -> None:
    """Beats while the run waits on the PMS (a slow or rate-limited page), so only a dead worker
    goes stale."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            async with session_scope(ctx.sessionmaker) as session:
                run = await session.get(SyncRun, run_id)
                if run is None or run.status not in ACTIVE_RUN_STATUSES:
                    return
                run.heartbeat_at = utcnow()


async def execute(ctx: SyncContext, run_id: uuid.UUID) -> str:
    """Runs the run to its end; answers its final status."""
    async with session_scope(ctx.sessionmaker) as session:
        run = await session.get(SyncRun, run_id)
        if run is None or run.status != RunStatus.STARTING:
            return run.status.value if run is not None else "missing"
        run.status = RunStatus.RUNNING
        run.worker = ctx.worker
        run.heartbeat_at = utcnow()
        organization_id, integration_id = run.organization_id, run.integration_id
        params, steps, dry_run = dict(run.params), list(run.steps), run.dry_run
        checkpoint, phases = run.checkpoint, dict(run.phases)
        organization = await session.get(Organization, organization_id)
        fallback_zone = getattr(organization, "time_zone", None) or "UTC"
    beat = asyncio.create_task(_heartbeat(ctx, run_id, max(0.5, ctx.settings.sync_run_stale_seconds / 4)))
    try:
        return await _execute(
            ctx,
            run_id,
            organization_id,
            integration_id,
            params,
            steps,
            dry_run,
            checkpoint,
            phases,
            fallback_zone,
        )
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beat


async def _execute(
    ctx: SyncContext,
    run_id: uuid.UUID,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    params: dict[str, Any],
    steps: list[str],
    dry_run: bool,
    checkpoint: dict[str, Any] | None,
    phases: dict[str, Any],
    fallback_zone: str,
) -> str:
    try:
        resolution = await ctx.executor.resolve_id(organization_id, integration_id)
    except Exception as exc:
        await update_run(
            _bare(ctx, run_id),
            status=RunStatus.FAILED,
            completed_at=utcnow(),
            error=_error("start", exc),
            error_message=f"the integration could not be used: {exc}",
        )
        return RunStatus.FAILED.value
    resolved = resolution.resolved
    windows = Windows(
        as_of=datetime.fromisoformat(params["as_of"]) if params.get("as_of") else utcnow(),
        zone=_zone(resolved, fallback_zone),
        backward_days=int(params["backward_days"]),
        forward_days=int(params["forward_days"]),
        reconcile_days=int(params["reconcile_days"]),
    )
    rc = RunContext(
        ctx, run_id, organization_id, integration_id, resolved, windows, params, dry_run, checkpoint
    )
    # A full read's cursor starts where its windows were fixed; a resumed run's earlier pages were
    # read by the run before it, so the PMS's clock at this run's first answer would be too late.
    started = windows.as_of
    failed: list[str] = []
    review: str | None = None
    try:
        for number, step in enumerate(steps):
            if (phases.get(step) or {}).get("status") in ("completed", "failed", "skipped", "needs_review"):
                continue
            await update_run(
                rc,
                current_step=step,
                current_operation=f"{step}: starting",
                phase=(step, {"status": "running", "started_at": utcnow().isoformat()}),
            )
            result: dict[str, Any] = {"completed_at": None}
            try:
                await PHASES[step](rc)
                result["status"] = "completed"
            except RunStopped:
                raise
            except PhaseSkipped as skipped:
                result.update(status="skipped", reason=str(skipped))
            except NeedsReview as flagged:
                review = str(flagged)
                result.update(status="needs_review", reason=review)
            except Exception as exc:
                log.warning("sync_phase_failed", phase=step, error_type=type(exc).__name__)
                failed.append(step)
                error = _error(step, exc)
                result.update(status="failed", reason=error["message"], error_code=error["error_code"])
                await update_run(rc, error=error)
            result["completed_at"] = utcnow().isoformat()
            await update_run(rc, phase=(step, result), completed_steps=number + 1)
    except RunStopped as stop:
        if stop.reason == "cancelled":
            await update_run(
                rc,
                status=RunStatus.CANCELLED,
                completed_at=utcnow(),
                current_operation="cancelled between pages",
            )
            return RunStatus.CANCELLED.value
        return "lost"
    full_read = {"backward", "forward"} <= set(steps)
    if full_read and not failed and not dry_run:
        await save_full_cursor(rc, started)
    status = RunStatus.FAILED if failed else RunStatus.COMPLETED
    message = "; ".join(f"{step} failed" for step in failed) or None
    final: dict[str, Any] = {
        "status": status,
        "completed_at": utcnow(),
        "current_operation": "done",
        "error_message": message,
        "review_required": review is not None,
    }
    async with session_scope(ctx.sessionmaker, write=False) as session:
        current = await session.get(SyncRun, run_id)
        final["records_total"] = current.records_processed if current is not None else None
    if dry_run:
        final["preview"] = rc.preview
    if not failed:
        final["checkpoint"] = None
    await update_run(rc, **final)
    return status.value


def _bare(ctx: SyncContext, run_id: uuid.UUID) -> RunContext:
    """A context for recording a run that could not resolve its integration."""
    return RunContext(ctx, run_id, uuid.uuid4(), uuid.uuid4(), None, None, {}, False, None)  # type: ignore[arg-type]
