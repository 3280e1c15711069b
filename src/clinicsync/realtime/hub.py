"""One hub per server process: wakes on commit (this process) or NOTIFY (any process), reads the
new events once and hands each to the subscribers allowed to see it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.logging import get_logger
from clinicsync.realtime import service
from clinicsync.realtime.hooks import CHANNEL, add_commit_listener, remove_commit_listener
from clinicsync.realtime.service import Audience, Delivery

log = get_logger(__name__)

SUBSCRIBER_QUEUE_SIZE = 1000
# Put on every subscriber's queue by the hub's one heartbeat timer: one timer per process instead
# of a timeout around every wait of every stream.
HEARTBEAT = None


@dataclass(eq=False)
class Subscriber:
    audience: Audience
    start_id: int
    queue: asyncio.Queue[Delivery | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
    )
    # Set when the queue overflowed: the stream catches up from the database instead.
    overflowed: bool = False

    def offer(self, event: Delivery) -> None:
        if self.overflowed or not self.audience.allows(event):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def beat(self) -> None:
        if self.queue.empty():
            self.queue.put_nowait(HEARTBEAT)


class Hub:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        database_url: str,
        *,
        poll_seconds: float = 5.0,
        heartbeat_seconds: float = 15.0,
        retention: timedelta = timedelta(days=7),
        prune_seconds: float = 600.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._database_url = database_url
        self._poll_seconds = poll_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._retention = retention
        self._prune_seconds = prune_seconds
        self._subscribers: dict[uuid.UUID, set[Subscriber]] = {}
        self._cursors: dict[uuid.UUID, int] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_postgres(self) -> bool:
        return make_url(self._database_url).get_backend_name() in ("postgresql", "postgres")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        add_commit_listener(self.wake)
        self._tasks.append(asyncio.create_task(self._dispatch_forever(), name="realtime-dispatch"))
        self._tasks.append(asyncio.create_task(self._prune_forever(), name="realtime-prune"))
        self._tasks.append(asyncio.create_task(self._heartbeat_forever(), name="realtime-heartbeat"))
        if self.is_postgres:
            self._tasks.append(asyncio.create_task(self._listen_forever(), name="realtime-listen"))

    async def stop(self) -> None:
        remove_commit_listener(self.wake)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def wake(self) -> None:
        """Safe from any thread: commits in this process and NOTIFY callbacks call it."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def subscribe(self, audience: Audience) -> Subscriber:
        organization_id = audience.organization_id
        if organization_id not in self._cursors:
            async with session_scope(self._sessionmaker, write=False) as session:
                latest = await service.latest_id(session, organization_id)
            # Another subscriber of this organization may have set it while we read.
            self._cursors.setdefault(organization_id, latest)
        subscriber = Subscriber(audience, self._cursors[organization_id])
        self._subscribers.setdefault(organization_id, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        organization_id = subscriber.audience.organization_id
        subscribers = self._subscribers.get(organization_id)
        if subscribers is None:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self._subscribers[organization_id]
            self._cursors.pop(organization_id, None)

    @property
    def subscriber_count(self) -> int:
        return sum(len(group) for group in self._subscribers.values())

    async def _dispatch_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            self._wake.clear()
            try:
                await self._dispatch()
            except Exception as error:  # keep serving: the next wake or poll catches up
                log.warning("realtime_dispatch_failed", error_type=type(error).__name__)
                await asyncio.sleep(0.5)

    async def _dispatch(self) -> None:
        while self._cursors:
            async with session_scope(self._sessionmaker, write=False) as session:
                events = await service.fetch_new(session, dict(self._cursors))
            for event in events:
                if event.organization_id in self._cursors:
                    self._cursors[event.organization_id] = max(self._cursors[event.organization_id], event.id)
                for subscriber in list(self._subscribers.get(event.organization_id, ())):
                    subscriber.offer(event)
            if len(events) < 500:
                return

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            for group in list(self._subscribers.values()):
                for subscriber in list(group):
                    subscriber.beat()

    def _listen_dsn(self) -> str:
        return make_url(self._database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def _listen_forever(self) -> None:
        """One dedicated connection per process (a pooled one can't hold LISTEN), reconnecting."""
        delay = 0.5
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self._listen_dsn())
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, lambda *_args: self.wake())
                delay = 0.5
                self.wake()  # catch up on whatever was committed while we were not listening
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 30)
                    if not lost.is_set():
                        await connection.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("realtime_listen_lost", error_type=type(error).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
            finally:
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close()

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(self._prune_seconds)
            try:
                async with session_scope(self._sessionmaker) as session:
                    removed = await service.prune(session, utcnow() - self._retention)
                if removed:
                    log.info("realtime_pruned", events=removed)
            except Exception as error:
                log.warning("realtime_prune_failed", error_type=type(error).__name__)
