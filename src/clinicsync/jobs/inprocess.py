"""The embedded runner: the task functions as asyncio tasks inside the server's process (SQLite).

Jobs live in memory only; that is safe because the outbox rows are the durable record and the
periodic sweep (run at start and every few seconds) defers whatever is owed, so a restart or a
lost wake-up delays a push but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from clinicsync.db.base import utcnow
from clinicsync.jobs import tasks
from clinicsync.logging import get_logger
from clinicsync.sync.delivery import SyncContext

log = get_logger(__name__)

# How long a stopping runner waits for the jobs under way before it cancels them.
STOP_GRACE_SECONDS = 1.0


class InProcessRunner:
    def __init__(self, ctx: SyncContext, *, concurrency: int, sweep_interval: float) -> None:
        self.ctx = ctx
        self.sweep_interval = sweep_interval
        self._slots = asyncio.Semaphore(concurrency)
        # Jobs waiting for a slot, and jobs waiting for their time (a retry's backoff): one of
        # each per item is enough, as each sees the item's latest state when it runs.
        self._waiting_now: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self._timers: dict[tuple[str, tuple[tuple[str, str], ...]], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._between_sweeps = asyncio.Event()
        self._functions: dict[str, Callable[..., Awaitable[Any]]] = {
            tasks.DELIVER: tasks.deliver,
            tasks.READ_BACK: tasks.read_back,
            tasks.SWEEP: tasks.sweep,
            tasks.APPLY_WEBHOOK: tasks.apply_webhook,
            tasks.RUN_SYNC: tasks.run_sync,
            tasks.SCHEDULE_RUNS: tasks.schedule_runs,
        }

    async def defer(self, task: str, *, at: datetime | None = None, **kwargs: str) -> None:
        key = (task, tuple(sorted(kwargs.items())))
        delay = (at - utcnow()).total_seconds() if at is not None else 0.0
        if delay <= 0:
            # A job for now runs now even if a retry of the item waits for later: a fresh write,
            # a person's retry or the end of the item before it in its chain must not wait out
            # an old backoff. The timer stays; when it fires the item is done or claimed.
            self._now(key, kwargs)
            return
        if key in self._timers or key in self._waiting_now:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(key, None)
            self._now(key, kwargs)

        self._timers[key] = loop.call_later(delay, fire)

    async def waiting(self, task: str, argument: str) -> set[str]:
        return {
            dict(arguments)[argument]
            for name, arguments in (*self._waiting_now, *self._timers)
            if name == task and argument in dict(arguments)
        }

    def _now(self, key: tuple[str, tuple[tuple[str, str], ...]], kwargs: dict[str, str]) -> None:
        if key in self._waiting_now:
            return
        self._waiting_now.add(key)
        self._spawn(self._run(key, kwargs))

    def wake(self, item_ids: list[str]) -> None:
        """Called after a booking transaction commits with owed pushes in it."""
        for item_id in item_ids:
            self._spawn(self.defer(tasks.DELIVER, item_id=item_id))

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: tuple[str, tuple[tuple[str, str], ...]], kwargs: dict[str, str]) -> None:
        async with self._slots:
            self._waiting_now.discard(key)
            try:
                await self._functions[key[0]](self.ctx, self, **kwargs)
            except Exception:
                log.exception("job_failed", task=key[0])

    async def _sweep_forever(self) -> None:
        while True:
            self._between_sweeps.clear()
            try:
                await tasks.sweep(self.ctx, self)
            except Exception:
                log.exception("job_failed", task=tasks.SWEEP)
            if self.ctx.settings.enable_sync_scheduler:
                try:
                    await tasks.schedule_runs(self.ctx, self)
                except Exception:
                    log.exception("job_failed", task=tasks.SCHEDULE_RUNS)
            self._between_sweeps.set()
            await asyncio.sleep(self.sweep_interval)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        # Jobs and a sweep under way (one runs as the server starts) get a moment to end their
        # transactions: cancelled between a statement and its commit, SQLite's connection is torn
        # down the slow way, holding the database's write lock for a second or more meanwhile.
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        sweep_done = asyncio.ensure_future(self._between_sweeps.wait())
        under_way: list[asyncio.Future[Any]] = [*self._tasks]
        if self._sweeper is not None and not self._sweeper.done():
            under_way.append(sweep_done)
        if under_way:
            await asyncio.wait(under_way, timeout=STOP_GRACE_SECONDS)
        sweep_done.cancel()
        pending = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._waiting_now.clear()
