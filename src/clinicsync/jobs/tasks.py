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
from typing import Protocol

from sqlalchemy import select

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.logging import get_logger
from clinicsync.sync import delivery, outbox, webhooks
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import (
    UNFINISHED_STATUSES,
    ExternalReference,
    OutboxItem,
    OutboxStatus,
    RecordType,
    SyncState,
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


async def deliver(ctx: SyncContext, jobs: Deferrer, item_id: str) -> str:
    outcome = await delivery.deliver(ctx, uuid.UUID(item_id))
    if outcome.retry_at is not None:
        await jobs.defer(DELIVER, at=outcome.retry_at, item_id=item_id)
    if outcome.status == "done":
        if outcome.read_back is not None:
            at = utcnow() + timedelta(seconds=ctx.settings.sync_read_back_delay_seconds)
            await jobs.defer(READ_BACK, at=at, ref_id=str(outcome.read_back))
        for ref_id in await _patient_to_confirm(ctx, uuid.UUID(item_id)):
            await jobs.defer(READ_BACK, ref_id=str(ref_id))
        following = await _next_in_chain(ctx, uuid.UUID(item_id))
        if following is not None:
            await jobs.defer(DELIVER, item_id=str(following))
    return outcome.status


async def _next_in_chain(ctx: SyncContext, item_id: uuid.UUID) -> uuid.UUID | None:
    async with session_scope(ctx.sessionmaker, write=False) as session:
        item = await session.get(OutboxItem, item_id)
        if item is None:
            return None
        following: uuid.UUID | None = await session.scalar(
            select(OutboxItem.id)
            .where(
                OutboxItem.integration_id == item.integration_id,
                OutboxItem.chain_key == item.chain_key,
                OutboxItem.seq > item.seq,
                OutboxItem.status.in_(UNFINISHED_STATUSES),
            )
            .order_by(OutboxItem.seq)
            .limit(1)
        )
        return following


async def _patient_to_confirm(ctx: SyncContext, item_id: uuid.UUID) -> list[uuid.UUID]:
    """A patient matched or created on the way to their appointment is read back as well."""
    async with session_scope(ctx.sessionmaker, write=False) as session:
        item = await session.get(OutboxItem, item_id)
        if item is None or item.record_type != RecordType.APPOINTMENT:
            return []
        found = await session.scalars(
            select(ExternalReference.id).where(
                ExternalReference.integration_id == item.integration_id,
                ExternalReference.record_type == RecordType.PATIENT,
                ExternalReference.record_id == item.chain_key,
                ExternalReference.sync_state == SyncState.ACCEPTED,
            )
        )
        return list(found)


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
    for item_id in due:
        await jobs.defer(DELIVER, item_id=str(item_id))
    for ref_id in await delivery.sweep_read_backs(ctx):
        await jobs.defer(READ_BACK, ref_id=str(ref_id))
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
