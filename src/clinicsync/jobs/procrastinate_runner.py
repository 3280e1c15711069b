"""Procrastinate on PostgreSQL: `clinicsync worker` processes (and optionally one inside the server).

The same task functions as the embedded runner, registered as Procrastinate tasks. The sweep is
a periodic task (every few seconds; Procrastinate makes each tick fire once across workers).
Deferring uses a queueing lock per item, so a sweep never piles up jobs for one item. Jobs only
wake workers: the outbox rows decide what is owed, and a claim with a lease decides who sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import datetime
from typing import Any

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from clinicsync.jobs import tasks
from clinicsync.logging import get_logger
from clinicsync.sync.delivery import SyncContext

log = get_logger(__name__)
QUEUE = "sync"
# Higher runs first. A read-back confirms a push already accepted, so a backlog of them never
# holds back a push still owed (nor the sweep, which recovers the pushes of a dead worker).
PRIORITIES = {tasks.READ_BACK: -1}


def conninfo(database_url: str) -> str:
    """libpq's URL for psycopg (the app's URL may name the asyncpg driver)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class ProcrastinateRunner:
    def __init__(
        self, ctx: SyncContext, *, concurrency: int, sweep_interval: float, works: bool = True
    ) -> None:
        self.ctx = ctx
        self.concurrency = concurrency
        # A process that only defers (an API server without an embedded worker) needs few connections.
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=conninfo(ctx.settings.database_url),
                min_size=1,
                max_size=concurrency + 2 if works else 2,
            )
        )
        self._worker: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        every = max(1, round(sweep_interval))
        self._register(every)

    def _register(self, every: int) -> None:
        runner = self

        @self.app.task(name=tasks.DELIVER, queue=QUEUE)
        async def deliver(item_id: str) -> str:
            return await tasks.deliver(runner.ctx, runner, item_id)

        @self.app.task(name=tasks.READ_BACK, queue=QUEUE)
        async def read_back(ref_id: str) -> str:
            return await tasks.read_back(runner.ctx, runner, ref_id)

        @self.app.task(name=tasks.APPLY_WEBHOOK, queue=QUEUE)
        async def apply_webhook(event_id: str) -> str:
            return await tasks.apply_webhook(runner.ctx, runner, event_id)

        @self.app.task(name=tasks.RUN_SYNC, queue=QUEUE)
        async def run_sync(run_id: str) -> str:
            return await tasks.run_sync(runner.ctx, runner, run_id)

        @self.app.periodic(cron=f"* * * * * */{every}", periodic_id="sync_schedule")
        @self.app.task(name=tasks.SCHEDULE_RUNS, queue=QUEUE, queueing_lock="schedule_runs")
        async def schedule_runs(timestamp: int) -> int:
            # Every worker's deferrer proposes the tick; Procrastinate lets one job per tick through.
            if not runner.ctx.settings.enable_sync_scheduler:
                return 0
            return await tasks.schedule_runs(runner.ctx, runner)

        @self.app.periodic(cron=f"* * * * * */{every}", periodic_id="outbox")
        @self.app.task(name=tasks.SWEEP, queue=QUEUE, queueing_lock="sweep")
        async def sweep(timestamp: int) -> int:
            await runner.release_stalled()
            return await tasks.sweep(runner.ctx, runner)

    async def defer(self, task: str, *, at: datetime | None = None, **kwargs: str) -> None:
        lock = f"{task}:{next(iter(kwargs.values()), '')}"
        # One waiting job per item is enough; it will see the latest state.
        with contextlib.suppress(AlreadyEnqueued):
            await self.app.configure_task(
                task, queueing_lock=lock, schedule_at=at, priority=PRIORITIES.get(task, 0)
            ).defer_async(**kwargs)

    async def waiting(self, task: str, argument: str) -> set[str]:
        """One query for the sweep: which items already have a job waiting (deferred, not started)."""
        rows = await self.app.connector.execute_query_all_async(
            "SELECT args->>%(argument)s AS value FROM procrastinate_jobs"
            " WHERE queue_name = %(queue)s AND task_name = %(task)s AND status = 'todo'",
            argument=argument,
            queue=QUEUE,
            task=task,
        )
        return {str(row["value"]) for row in rows if row["value"] is not None}

    async def _now(self, item_id: str) -> None:
        # A fresh write (or a person's retry) must not wait behind a retry scheduled for later, so
        # no queueing lock here; a second job for one item finds it claimed or done and stops.
        await self.app.configure_task(tasks.DELIVER).defer_async(item_id=item_id)

    async def release_stalled(self) -> None:
        """Jobs of a worker that died stay `doing` in Procrastinate; hand them to the living.

        Their outbox items are safe either way (the lease runs out and the sweep re-owns them); this
        only keeps the job table honest and lets the job run again."""
        for job in await self.app.job_manager.get_stalled_jobs(queue=QUEUE):
            with contextlib.suppress(Exception):
                await self.app.job_manager.retry_job(job)

    def wake(self, item_ids: list[str]) -> None:
        for item_id in item_ids:
            task = asyncio.ensure_future(self._now(item_id))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def open(self) -> None:
        await self.app.open_async()

    async def start(self, *, embedded_worker: bool) -> None:
        await self.open()
        if embedded_worker:
            self._worker = asyncio.create_task(self.run_worker(install_signal_handlers=False))

    async def run_worker(self, *, install_signal_handlers: bool = True) -> None:
        name = f"{socket.gethostname()}:{os.getpid()}"
        self.ctx.worker = name
        await self.app.run_worker_async(
            queues=[QUEUE],
            name=name,
            concurrency=self.concurrency,
            install_signal_handlers=install_signal_handlers,
            fetch_job_polling_interval=1.0,
            # On stop, running deliveries get a moment; an unfinished one is re-owned via its lease.
            shutdown_graceful_timeout=3.0,
            delete_jobs="successful",
        )

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._worker, timeout=5)
        if self._pending:
            # Deferring a job is one INSERT; one still waiting after a moment is stuck on a closing
            # pool, and the sweep re-finds its outbox item anyway.
            _done, stuck = await asyncio.wait(list(self._pending), timeout=2)
            for task in stuck:
                task.cancel()
        await self.app.close_async()
