"""Schedules on the job engine: every tick, start the runs that are due; fail stale runs.

Due: an integration whose sync config takes PMS data in (sync on, from_external or
bidirectional), whose schedule is on, and whose last scheduled start is an interval ago (its own
`interval_minutes`, else SYNC_INTERVAL_MINUTES). Two workers ticking at once cannot both start
one: the integration's settings row is locked while it is checked and the run inserted, and the
database allows one active run per integration anyway.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.logging import get_logger
from clinicsync.sync import inbound
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.models import IntegrationSyncConfig
from clinicsync.sync.runs import service
from clinicsync.sync.runs.models import RunSettings, RunType

log = get_logger(__name__)


async def clean_stale(ctx: SyncContext) -> list[uuid.UUID]:
    async with session_scope(ctx.sessionmaker) as session:
        failed = await service.fail_stale(session, timedelta(seconds=ctx.settings.sync_run_stale_seconds))
    if failed:
        log.warning("sync_runs_failed_stale", count=len(failed))
    return failed


async def waiting(ctx: SyncContext) -> list[uuid.UUID]:
    async with session_scope(ctx.sessionmaker, write=False) as session:
        return await service.waiting(session, timedelta(seconds=ctx.settings.sync_run_stale_seconds))


async def _candidates(ctx: SyncContext) -> list[tuple[uuid.UUID, uuid.UUID]]:
    async with session_scope(ctx.sessionmaker, write=False) as session:
        configs = list(await session.scalars(select(IntegrationSyncConfig)))
    return [
        (config.organization_id, config.integration_id) for config in configs if inbound.takes_inbound(config)
    ]


async def start_due(ctx: SyncContext) -> list[uuid.UUID]:
    """Starts (inserts) every due scheduled run; answers their ids for the caller to defer."""
    started: list[uuid.UUID] = []
    default_interval = timedelta(minutes=ctx.settings.sync_interval_minutes)
    for organization_id, integration_id in await _candidates(ctx):
        try:
            async with session_scope(ctx.sessionmaker) as session:
                own = await session.scalar(
                    select(RunSettings).where(RunSettings.integration_id == integration_id).with_for_update()
                )
                if own is None:
                    own = RunSettings(
                        organization_id=organization_id, integration_id=integration_id, schedule_enabled=True
                    )
                    session.add(own)
                    await session.flush()
                if not own.schedule_enabled:
                    continue
                interval = (
                    timedelta(minutes=own.interval_minutes) if own.interval_minutes else default_interval
                )
                now = utcnow()
                if own.last_scheduled_at is not None and now - own.last_scheduled_at < interval:
                    continue
                if await service.active_run(session, integration_id) is not None:
                    continue  # never two at once; the next tick tries again
                run = await service.start_run(
                    session,
                    organization_id,
                    integration_id,
                    service.RunRequest(run_type=RunType.SCHEDULED, triggered_by="scheduler"),
                    ctx.settings,
                )
                own.last_scheduled_at = now
                started.append(run.id)
        except (service.RunAlreadyActive, IntegrityError):
            continue  # another worker got there first
    return started
