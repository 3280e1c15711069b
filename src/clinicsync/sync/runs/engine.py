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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.errors import ClinicSyncError
from clinicsync.integrations import canonical
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.ratebudget import Priority
from clinicsync.integrations.runtime import ResolvedIntegration
from clinicsync.integrations.sync_spec import SyncOperation
from clinicsync.logging import get_logger
from clinicsync.sync import inbound
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import ScheduleSource
from clinicsync.sync.runs import apply, cursors
from clinicsync.sync.runs.apply import PageOutcome
from clinicsync.sync.runs.models import ACTIVE_RUN_STATUSES, RunStatus, SyncCase, SyncRun
from clinicsync.sync.runs.service import sync_error
from clinicsync.tenancy.models import Organization

log = get_logger(__name__)

ENRICHMENT_BATCH = 25


class RunStopped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "cancelled" or "lost"


class PhaseSkipped(Exception):
    pass


@dataclass
class Windows:
    """The run's windows, fixed when it was asked for (a resumed run keeps them)."""

    as_of: datetime
    zone: ZoneInfo
    backward_days: int
    forward_days: int
    reconcile_days: int

    def _midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(), tzinfo=self.zone)

    def days(
        self, first: date, last: date, lower: datetime, upper: datetime
    ) -> list[tuple[datetime, datetime]]:
        """One page per local day from first to last, each clipped to [lower, upper)."""
        pages = []
        day = first
        while day <= last:
            start = max(self._midnight(day), lower)
            end = min(self._midnight(day + timedelta(days=1)), upper)
            if start < end:
                pages.append((start, end))
            day += timedelta(days=1)
        return pages

    def whole_days(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        first = start.astimezone(self.zone).date()
        last = (end - timedelta(microseconds=1)).astimezone(self.zone).date()
        return self._midnight(first), self._midnight(last + timedelta(days=1))

    @property
    def today(self) -> date:
        return self.as_of.astimezone(self.zone).date()

    def backward(self) -> list[tuple[datetime, datetime]]:
        first = self.today - timedelta(days=self.backward_days)
        return self.days(first, self.today, self._midnight(first), self.as_of)

    def forward(self) -> list[tuple[datetime, datetime]]:
        last = self.today + timedelta(days=self.forward_days)
        return self.days(self.today, last, self.as_of, self._midnight(last + timedelta(days=1)))

    def reconcile(self) -> list[tuple[datetime, datetime]]:
        first = self.today - timedelta(days=self.reconcile_days)
        return self.days(first, self.today, self._midnight(first), self.as_of)


def span(pages: list[tuple[datetime, datetime]]) -> tuple[datetime, datetime] | None:
    return (pages[0][0], pages[-1][1]) if pages else None


@dataclass
class RunContext:
    ctx: SyncContext
    run_id: uuid.UUID
    organization_id: uuid.UUID
    integration_id: uuid.UUID
    resolved: ResolvedIntegration
    windows: Windows
    params: dict[str, Any]
    dry_run: bool
    checkpoint: dict[str, Any] | None
    requests: int = 0
    overlay: dict[str, dict[str, Any]] = field(default_factory=dict)  # a preview's cases so far
    preview: list[dict[str, Any]] = field(default_factory=list)
    first_server_time: datetime | None = None  # the PMS's clock at its first answer with one

    def supports(self, operation: SyncOperation) -> bool:
        return operation in self.resolved.definition.sync

    async def read(self, operation: SyncOperation, payload: dict[str, Any]) -> list[dict[str, Any]]:
        result = await canonical.perform_resolved(
            self.ctx.executor.caller, self.resolved, operation, payload, priority=Priority.BACKGROUND
        )
        self.requests += result.requests
        if self.first_server_time is None and result.server_time is not None:
            self.first_server_time = result.server_time
        return result.records

    async def read_days(
        self, window: tuple[datetime, datetime]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The PMS's appointments (cancelled ones included) of the whole local days the window
        touches: providers list days (an end date, exclusive or inclusive, never a time). Answers
        those starting inside the window, and all of the days' (slot counts need the whole day)."""
        start, end = window
        ask_from, ask_to = self.windows.whole_days(start, end)
        records = await self.read(
            SyncOperation.APPOINTMENT_LIST_CHANGED, {"starts_from": ask_from, "starts_to": ask_to}
        )
        whole = {
            str(record["id"]): record
            for record in records
            if record.get("starts_at") is not None and ask_from <= record["starts_at"] < ask_to
        }
        inside = [record for record in whole.values() if start <= record["starts_at"] < end]
        return inside, list(whole.values())

    async def read_window(self, window: tuple[datetime, datetime]) -> list[dict[str, Any]]:
        return (await self.read_days(window))[0]

    def resume_page(self, phase: str) -> int:
        if self.checkpoint and self.checkpoint.get("phase") == phase:
            return int(self.checkpoint.get("page", 0))
        return 0


PageApply = Callable[[AsyncSession], Awaitable[PageOutcome]]


async def _locked_run(session: AsyncSession, run_id: uuid.UUID) -> SyncRun:
    run = await session.scalar(
        select(SyncRun)
        .where(SyncRun.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if run is None:
        raise RunStopped("lost")
    if run.status not in ACTIVE_RUN_STATUSES:
        raise RunStopped("cancelled" if run.status == RunStatus.CANCELLED else "lost")
    if run.cancel_requested:
        raise RunStopped("cancelled")
    return run


def merge_counts(total: dict[str, Any], add: dict[str, dict[str, int]]) -> dict[str, Any]:
    merged = {entity: dict(values) for entity, values in total.items()}
    for entity, values in add.items():
        into = merged.setdefault(entity, dict.fromkeys(apply.COUNT_KEYS, 0))
        for key, number in values.items():
            into[key] = into.get(key, 0) + number
    return merged


async def commit_page(
    rc: RunContext, phase: str, page: int, work: PageApply, *, operation: str, last: bool = False
) -> PageOutcome:
    """Applies one page and records it (counts, checkpoint, heartbeat) in one transaction."""
    async with session_scope(rc.ctx.sessionmaker) as session:
        await _locked_run(session, rc.run_id)
        if rc.dry_run:
            savepoint = await session.begin_nested()
            await apply.replay_cases(session, rc.integration_id, rc.overlay)
            outcome = await work(session)
            for case in outcome.touched_cases:
                rc.overlay[case.external_id] = apply.case_values(case)
            await savepoint.rollback()
        else:
            outcome = await work(session)
        run = await session.get(SyncRun, rc.run_id, populate_existing=True)
        assert run is not None
        counts = outcome.counts()
        run.counts = merge_counts(run.counts, counts)
        phases = dict(run.phases)
        result = dict(phases.get(phase) or {})
        result["counts"] = merge_counts(result.get("counts") or {}, counts)
        extra = dict(result.get("extra") or {})
        for key, number in outcome.extra.items():
            extra[key] = extra.get(key, 0) + number
        if extra:
            result["extra"] = extra
        result["pages_done"] = page + 1
        phases[phase] = result
        run.phases = phases
        run.checkpoint = {"phase": phase, "page": page + 1, "last": last}
        run.records_processed += sum(outcome.found.values())
        run.requests_used += rc.requests
        rc.requests = 0
        run.heartbeat_at = utcnow()
        run.current_operation = operation
        if rc.dry_run:
            rc.preview += [action.as_dict(phase) for action in outcome.actions]
    return outcome


async def _update_run(rc: RunContext, **changes: Any) -> None:
    async with session_scope(rc.ctx.sessionmaker) as session:
        run = await session.get(SyncRun, rc.run_id, populate_existing=True)
        assert run is not None
        for name, value in changes.items():
            if name == "phase":
                phase, result = value
                phases = dict(run.phases)
                phases[phase] = {**(phases.get(phase) or {}), **result}
                run.phases = phases
            elif name == "error":
                run.errors = [*run.errors, value]
            elif name == "note":
                run.notes = [*run.notes, value]
            else:
                setattr(run, name, value)
        run.requests_used += rc.requests
        rc.requests = 0
        run.heartbeat_at = utcnow()


# ---- the phases --------------------------------------------------------------------------------


# (session, records starting inside the page's window, all records of its days, the window)
PageWrite = Callable[
    [AsyncSession, list[dict[str, Any]], list[dict[str, Any]], tuple[datetime, datetime]],
    Awaitable[PageOutcome],
]


async def _paged_pull(
    rc: RunContext,
    phase: str,
    pages: list[tuple[datetime, datetime]],
    write: PageWrite,
    *,
    extra_pages: int = 0,
) -> None:
    await _update_run(rc, phase=(phase, {"pages_total": len(pages) + extra_pages}))
    for index in range(rc.resume_page(phase), len(pages)):
        window = pages[index]
        inside, whole = await rc.read_days(window)

        async def work(
            session: AsyncSession,
            inside: list[dict[str, Any]] = inside,
            whole: list[dict[str, Any]] = whole,
            window: tuple[datetime, datetime] = window,
        ) -> PageOutcome:
            return await write(session, inside, whole, window)

        day = window[0].astimezone(rc.windows.zone).date().isoformat()
        await commit_page(
            rc,
            phase,
            index,
            work,
            operation=f"{phase}: {day} ({len(inside)} appointments)",
            last=index == len(pages) - 1 and not extra_pages,
        )


async def backward(rc: RunContext) -> None:
    async def write(
        session: AsyncSession, records: list[dict[str, Any]], _whole: Any, _window: Any
    ) -> PageOutcome:
        return await apply.upsert_cases(session, rc.organization_id, rc.integration_id, records)

    await _paged_pull(rc, "backward", rc.windows.backward(), write)


async def _slot_grid(rc: RunContext) -> dict[str, Any] | None:
    """The PMS's diary grid when this clinic's schedule is the PMS's slots (one request)."""
    if not rc.supports(SyncOperation.SCHEDULE_CONFIG):
        return None
    async with session_scope(rc.ctx.sessionmaker, write=False) as session:
        config = await inbound.config_of(session, rc.integration_id)
    if config is None or config.schedule_source != ScheduleSource.PMS_SLOTS:
        return None
    found = await rc.read(SyncOperation.SCHEDULE_CONFIG, {})
    return found[0] if found else None


async def forward(rc: RunContext) -> None:
    pages = rc.windows.forward()
    grid = await _slot_grid(rc)

    async def write(
        session: AsyncSession,
        records: list[dict[str, Any]],
        whole: list[dict[str, Any]],
        window: tuple[datetime, datetime],
    ) -> PageOutcome:
        outcome = await apply.upsert_pms_appointments(
            session, rc.organization_id, rc.integration_id, records, run_id=rc.run_id
        )
        if grid is not None:
            await apply.upsert_slots(
                session,
                rc.organization_id,
                rc.integration_id,
                grid,
                window,
                whole,
                outcome,
                zone=str(rc.windows.zone),
                seen_at=rc.windows.as_of,
            )
        return outcome

    await _paged_pull(rc, "forward", pages, write, extra_pages=1 if grid is not None else 0)
    window = span(pages)
    if grid is None or window is None or rc.resume_page("forward") > len(pages):
        return

    async def recount(session: AsyncSession) -> PageOutcome:
        return await apply.settle_slots(
            session, rc.organization_id, rc.integration_id, window, seen_at=rc.windows.as_of
        )

    await commit_page(rc, "forward", len(pages), recount, operation="forward: slot counts", last=True)


async def _enrichment_targets(
    rc: RunContext, window: tuple[datetime, datetime]
) -> dict[str, dict[str, Any] | None]:
    """The window's live cases and the consultation each holds (external id -> consultation)."""
    async with session_scope(rc.ctx.sessionmaker, write=False) as session:
        rows = (
            await session.execute(
                select(SyncCase.external_id, SyncCase.consultation, SyncCase.starts_at).where(
                    SyncCase.integration_id == rc.integration_id,
                    SyncCase.starts_at >= window[0],
                    SyncCase.starts_at < window[1],
                    SyncCase.deleted_at.is_(None),
                )
            )
        ).all()
    targets: dict[str, dict[str, Any] | None] = {external_id: held for external_id, held, _ in rows}
    for external_id, values in rc.overlay.items():
        starts = values["starts_at"]
        if values.get("deleted_at") is None and window[0] <= starts < window[1]:
            targets[external_id] = values.get("consultation")
    return targets


async def enrichment(rc: RunContext) -> None:
    if not (rc.supports(SyncOperation.CONSULTATION_LIST) and rc.supports(SyncOperation.CONSULTATION_GET)):
        raise PhaseSkipped(f"{rc.resolved.definition.key} maps no consultation.list/consultation.get")
    window = span(rc.windows.backward())
    if window is None:
        raise PhaseSkipped("the backward window is empty")
    listed = await rc.read(
        SyncOperation.CONSULTATION_LIST,
        {"starts_from": window[0], "starts_to": window[1] - timedelta(seconds=1)},
    )
    targets = await _enrichment_targets(rc, window)
    wanted = []
    for summary in listed:
        visit = str(summary.get("appointment_id") or "")
        if visit not in targets:
            continue  # not a past visit of this window (or its case was removed)
        held = targets[visit]
        if held is None or held.get("updated_at") != _iso(summary.get("updated_at")):
            wanted.append(str(summary["id"]))
    batches = [wanted[i : i + ENRICHMENT_BATCH] for i in range(0, len(wanted), ENRICHMENT_BATCH)]
    await _update_run(rc, phase=("enrichment", {"pages_total": len(batches), "pages_done": 0}))
    gate = asyncio.Semaphore(int(rc.params.get("enrichment_concurrency") or 5))

    async def get(consultation_id: str) -> list[dict[str, Any]]:
        async with gate:
            return await rc.read(SyncOperation.CONSULTATION_GET, {"id": consultation_id})

    for index, batch in enumerate(batches):
        # Targets are recomputed from the cases, so a resumed run never fetches one twice.
        fetched = await asyncio.gather(*(get(consultation_id) for consultation_id in batch))
        records = [record for found in fetched for record in found]

        async def work(session: AsyncSession, records: list[dict[str, Any]] = records) -> PageOutcome:
            return await apply.attach_consultations(session, rc.integration_id, records)

        await commit_page(
            rc,
            "enrichment",
            index,
            work,
            operation=f"enrichment: {len(records)} consultations",
            last=index == len(batches) - 1,
        )


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def reconcile(rc: RunContext) -> None:
    pages = rc.windows.reconcile()
    window = span(pages)
    if window is None:
        raise PhaseSkipped("the reconciliation window is empty")
    await _update_run(
        rc, phase=("reconcile", {"pages_total": len(pages) + 1, "window": [_iso(window[0]), _iso(window[1])]})
    )
    fetched: dict[str, dict[str, Any]] = {}
    for index, page in enumerate(pages):
        for record in await rc.read_window(page):
            fetched[str(record["id"])] = record
        await _update_run(
            rc,
            phase=("reconcile", {"pages_done": index + 1}),
            current_operation=f"reconcile: read {index + 1} of {len(pages)} days",
        )
    stopped: list[str] = []

    async def work(session: AsyncSession) -> PageOutcome:
        outcome, reason = await apply.reconcile_cases(
            session,
            rc.integration_id,
            window,
            fetched,
            max_delete_share=float(rc.params.get("max_delete_share", 0.2)),
            run_id=rc.run_id,
        )
        if reason:
            stopped.append(reason)
        return outcome

    await commit_page(
        rc, "reconcile", len(pages), work, operation="reconcile: compared with the PMS", last=True
    )
    if stopped:
        raise NeedsReview(stopped[0])


class NeedsReview(Exception):
    pass


class CursorInvalidated(Exception):
    pass


async def pull(rc: RunContext) -> None:
    """An incremental pull: only what changed since the cursor, over the run's whole window
    (backward start to forward end), through the same page writes as the full sync."""
    started = utcnow()
    async with session_scope(rc.ctx.sessionmaker, write=False) as session:
        previous = await cursors.load_with_kind(session, rc.integration_id)
    cursor = previous[0]
    backward, forward_pages = rc.windows.backward(), rc.windows.forward()
    window = (
        (backward or forward_pages)[0][0],
        (forward_pages or backward)[-1][1],
    )
    ask_from, ask_to = rc.windows.whole_days(*window)
    payload: dict[str, Any] = {"starts_from": ask_from, "starts_to": ask_to}
    if cursor is not None:
        payload["updated_since"] = cursor
    await _update_run(rc, phase=("pull", {"pages_total": 1, "cursor": _iso(cursor)}))
    try:
        records = await rc.read(SyncOperation.APPOINTMENT_LIST_CHANGED, payload)
    except IntegrationError as exc:
        if exc.provider_status != 410 or cursor is None:
            raise
        # The PMS no longer answers from this cursor (Google's 410): read the whole window.
        note = f"the cursor from {cursor.isoformat()} was refused (410): the full window was read"
        await _update_run(rc, note=note, phase=("pull", {"fallback": "full_window", "fallback_reason": note}))
        payload.pop("updated_since")
        records = await rc.read(SyncOperation.APPOINTMENT_LIST_CHANGED, payload)
    inside = {
        str(record["id"]): record
        for record in records
        if record.get("starts_at") is not None and window[0] <= record["starts_at"] < window[1]
    }
    past = [record for record in inside.values() if record["starts_at"] < rc.windows.as_of]
    upcoming = [record for record in inside.values() if record["starts_at"] >= rc.windows.as_of]
    value, kind = cursors.next_value(rc.first_server_time, started, previous)
    if cursor is not None and kind == "server_time" and value < cursor:
        value = cursor

    async def work(session: AsyncSession) -> PageOutcome:
        outcome = await apply.upsert_cases(session, rc.organization_id, rc.integration_id, past)
        more = await apply.upsert_pms_appointments(
            session, rc.organization_id, rc.integration_id, upcoming, run_id=rc.run_id
        )
        outcome.merge(more)
        await cursors.save(session, rc.organization_id, rc.integration_id, value, run_id=rc.run_id, kind=kind)
        return outcome

    await commit_page(rc, "pull", 0, work, operation=f"pull: {len(inside)} changed appointments", last=True)
    await _update_run(rc, phase=("pull", {"next_cursor": value.isoformat(), "cursor_kind": kind}))


async def save_full_cursor(rc: RunContext, started: datetime) -> None:
    """After a complete full read of both windows, the next pull asks only for what changed."""
    server_time = None if rc.checkpoint else rc.first_server_time
    value, kind = cursors.next_value(server_time, started)
    async with session_scope(rc.ctx.sessionmaker) as session:
        await cursors.save(session, rc.organization_id, rc.integration_id, value, run_id=rc.run_id, kind=kind)


async def patients(rc: RunContext) -> None:
    raise PhaseSkipped("patient import is not available yet")


PHASES: dict[str, Callable[[RunContext], Awaitable[None]]] = {
    "backward": backward,
    "enrichment": enrichment,
    "forward": forward,
    "reconcile": reconcile,
    "patients": patients,
    "pull": pull,
}


# ---- the run -----------------------------------------------------------------------------------


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
        await _update_run(
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
            await _update_run(
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
                await _update_run(rc, error=error)
            result["completed_at"] = utcnow().isoformat()
            await _update_run(rc, phase=(step, result), completed_steps=number + 1)
    except RunStopped as stop:
        if stop.reason == "cancelled":
            await _update_run(
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
    await _update_run(rc, **final)
    return status.value


def _bare(ctx: SyncContext, run_id: uuid.UUID) -> RunContext:
    """A context for recording a run that could not resolve its integration."""
    return RunContext(ctx, run_id, uuid.uuid4(), uuid.uuid4(), None, None, {}, False, None)  # type: ignore[arg-type]
