"""Choosing and starting the job runner for a process (server or `clinicsync worker`)."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from clinicsync.jobs.inprocess import InProcessRunner
from clinicsync.jobs.procrastinate_runner import ProcrastinateRunner
from clinicsync.jobs.tasks import Deferrer
from clinicsync.sync.delivery import SyncContext


class Runner(Deferrer, Protocol):
    def wake(self, item_ids: list[str]) -> None: ...

    async def stop(self) -> None: ...


def kind(ctx: SyncContext, engine: AsyncEngine) -> str:
    chosen = ctx.settings.sync_jobs
    if chosen == "auto":
        return "procrastinate" if engine.dialect.name == "postgresql" else "in_process"
    return chosen


async def start_for_server(ctx: SyncContext, engine: AsyncEngine) -> Runner | None:
    """In process on SQLite; on PostgreSQL the server defers and workers deliver (or one embedded)."""
    settings = ctx.settings
    chosen = kind(ctx, engine)
    if chosen == "off":
        return None
    if chosen == "procrastinate":
        runner = ProcrastinateRunner(
            ctx,
            concurrency=settings.sync_worker_concurrency,
            sweep_interval=settings.sync_sweep_interval_seconds,
            works=settings.sync_embedded_worker,
        )
        await runner.start(embedded_worker=settings.sync_embedded_worker)
        return runner
    in_process = InProcessRunner(
        ctx, concurrency=settings.sync_worker_concurrency, sweep_interval=settings.sync_sweep_interval_seconds
    )
    await in_process.start()
    return in_process
