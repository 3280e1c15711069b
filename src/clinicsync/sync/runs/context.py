"""A run in progress: its windows and context, and the one transaction per page that writes a
page with its counts and checkpoint (see engine.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.integrations import canonical
from clinicsync.integrations.ratebudget import Priority
from clinicsync.integrations.runtime import ResolvedIntegration
from clinicsync.integrations.sync_spec import SyncOperation
from clinicsync.logging import get_logger
from clinicsync.realtime.hooks import hold_organization
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.runs import apply
from clinicsync.sync.runs.apply import PageOutcome
from clinicsync.sync.runs.models import ACTIVE_RUN_STATUSES, RunStatus, SyncRun

log = get_logger(__name__)


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
    first_sync_token: str | None = None  # the PMS's change token at its first answer with one

    def supports(self, operation: SyncOperation) -> bool:
        return operation in self.resolved.definition.sync

    async def read(self, operation: SyncOperation, payload: dict[str, Any]) -> list[dict[str, Any]]:
        return (await self.read_result(operation, payload)).records

    async def read_result(
        self, operation: SyncOperation, payload: dict[str, Any]
    ) -> canonical.OperationResult:
        result = await canonical.perform_resolved(
            self.ctx.executor.caller, self.resolved, operation, payload, priority=Priority.BACKGROUND
        )
        self.requests += result.requests
        if self.first_server_time is None and result.server_time is not None:
            self.first_server_time = result.server_time
        if self.first_sync_token is None and result.sync_token:
            self.first_sync_token = result.sync_token
        return result

    async def read_pages(
        self, operation: SyncOperation, payload: dict[str, Any]
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """A list operation's records a provider page (one request) at a time."""
        async for page in canonical.pages_resolved(
            self.ctx.executor.caller, self.resolved, operation, payload, priority=Priority.BACKGROUND
        ):
            self.requests += 1
            yield page

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


async def _locked_run(session: AsyncSession, organization_id: uuid.UUID, run_id: uuid.UUID) -> SyncRun:
    await hold_organization(session, organization_id)
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
        run = await _locked_run(session, rc.organization_id, rc.run_id)
        if rc.dry_run:
            savepoint = await session.begin_nested()
            await apply.replay_cases(session, rc.integration_id, rc.overlay)
            outcome = await work(session)
            for case in outcome.touched_cases:
                rc.overlay[case.external_id] = apply.case_values(case)
            await savepoint.rollback()
            # The rollback expired what the savepoint saw; read the run's row again.
            reread = await session.get(SyncRun, rc.run_id, populate_existing=True)
            assert reread is not None
            run = reread
        else:
            # The row locked above is current: the page's writes never touch the run.
            outcome = await work(session)
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


async def update_run(rc: RunContext, **changes: Any) -> None:
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


class NeedsReview(Exception):
    pass


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
