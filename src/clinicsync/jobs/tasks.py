"""The task definitions. Both runners call these and nothing else.

* ``deliver(item_id)``: one attempt at one outbox item; schedules its own retry.
* ``read_back(ref_id)``: confirms an accepted write against the PMS.
* ``apply_webhook(event_id)``: applies one stored webhook event through the inbound path.
* ``run_sync(run_id)``: one sync run, start to end (sync/runs/engine.py).
* ``schedule_runs()``: starts the runs whose schedule is due (sync/runs/scheduler.py).
* ``sweep()``: the safety net, run periodically: re-owns items whose worker died, and defers
  every due item and read-back, so a job lost between a commit and its enqueue (or a restart)
  never loses a push.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

from clinicsync.db.base import utcnow
from clinicsync.logging import get_logger
from clinicsync.sync import delivery, outbox, webhooks
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import (
    OutboxStatus,
)

log = get_logger(__name__)

DELIVER = "deliver"
READ_BACK = "read_back"
SWEEP = "sweep"
APPLY_WEBHOOK = "apply_webhook"
RUN_SYNC = "run_sync"
SCHEDULE_RUNS = "schedule_runs"


class Deferrer(Protocol):
    async def defer(self, task: str, *, at: datetime | None = None, **kwargs: str) -> None: ...

    async def waiting(self, task: str, argument: str) -> set[str]:
        """The values of ``argument`` of the jobs of ``task`` waiting to run (not yet started)."""
        ...


async def _defer_missing(jobs: Deferrer, task: str, argument: str, values: list[uuid.UUID]) -> int:
    """Defers ``task`` for each value that has no job waiting yet; returns how many it deferred.

    The sweep finds every due item each time it runs, and with a backlog most of them already
    have a job queued (the one deferred with the write, or by the previous sweep). Deferring
    them all again cost one database round trip each, every sweep: at a few hundred owed
    pushes that was most of a worker's time, taken from the deliveries themselves.
    """
    if not values:
        return 0
    queued = await jobs.waiting(task, argument)
    missing = [str(value) for value in values if str(value) not in queued]
    for value in missing:
        named: dict[str, Any] = {argument: value}
        await jobs.defer(task, **named)
    return len(missing)


async def deliver(ctx: SyncContext, jobs: Deferrer, item_id: str) -> str:
    outcome = await delivery.deliver(ctx, uuid.UUID(item_id))
    if outcome.retry_at is not None:
        await jobs.defer(DELIVER, at=outcome.retry_at, item_id=item_id)
    if outcome.read_backs:
        delay = ctx.settings.sync_read_back_delay_seconds
        at = utcnow() + timedelta(seconds=delay) if delay > 0 else None
        for ref_id in outcome.read_backs:
            await jobs.defer(READ_BACK, at=at, ref_id=str(ref_id))
    if outcome.following is not None:
        await jobs.defer(DELIVER, item_id=str(outcome.following))
    return outcome.status


async def read_back(ctx: SyncContext, jobs: Deferrer, ref_id: str) -> str:
    result = await delivery.read_back(ctx, uuid.UUID(ref_id))
    return result


async def apply_webhook(ctx: SyncContext, jobs: Deferrer, event_id: str) -> str:
    status, retry_at = await webhooks.apply_event(ctx, uuid.UUID(event_id))
    if retry_at is not None:
        await jobs.defer(APPLY_WEBHOOK, at=retry_at, event_id=event_id)
    return status


async def run_sync(ctx: SyncContext, jobs: Deferrer, run_id: str) -> str:
    from clinicsync.sync.runs import engine

    return await engine.execute(ctx, uuid.UUID(run_id))


async def schedule_runs(ctx: SyncContext, jobs: Deferrer) -> int:
    from clinicsync.sync.runs import scheduler

    started = await scheduler.start_due(ctx)
    for run_id in started:
        await jobs.defer(RUN_SYNC, run_id=str(run_id))
    return len(started)


async def sweep(ctx: SyncContext, jobs: Deferrer) -> int:
    from clinicsync.sync.runs import scheduler

    # Runs whose worker died are failed as stale; the next run resumes from their checkpoint.
    await scheduler.clean_stale(ctx)
    # Runs no worker took (a job lost between commit and defer) are deferred again; one queued
    # job per run is enough.
    for run_id in await scheduler.waiting(ctx):
        await jobs.defer(RUN_SYNC, run_id=str(run_id))
    recovered = await outbox.recover_stale(ctx.sessionmaker)
    if recovered:
        log.warning("outbox_recovered_stale_items", count=recovered)
    due = await outbox.due(ctx.sessionmaker, limit=1000)
    await _defer_missing(jobs, DELIVER, "item_id", due)
    await _defer_missing(jobs, READ_BACK, "ref_id", await delivery.sweep_read_backs(ctx))
    # Events stored and acknowledged whose job was lost (a restart between commit and defer).
    for event_id in await webhooks.due_events(ctx, older_than=30):
        await jobs.defer(APPLY_WEBHOOK, event_id=str(event_id))
    return len(due)


__all__ = [
    "APPLY_WEBHOOK",
    "DELIVER",
    "READ_BACK",
    "RUN_SYNC",
    "SCHEDULE_RUNS",
    "SWEEP",
    "Deferrer",
    "OutboxStatus",
    "apply_webhook",
    "deliver",
    "read_back",
    "run_sync",
    "schedule_runs",
    "sweep",
]
