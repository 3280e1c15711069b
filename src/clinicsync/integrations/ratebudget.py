"""Rate budgets: how fast an integration may be called, shared by everyone who calls it.

A provider's limit (OpenDental's one request a second per customer key, Cliniko's 200 a
minute) belongs to the account, not to a process: two workers that each kept their own
limiter would send twice the allowance. :class:`DatabaseBudget` keeps one token bucket per
integration in the ``integration_rate_budgets`` row, taken under the row's lock
(``SELECT ... FOR UPDATE``), so every process and machine on a PostgreSQL database draws
from the same allowance. :class:`LocalBudget` is the in-process form (aiolimiter): the one
budget of an embedded SQLite deployment, which is a single process, and of callers without
a database (see :func:`shared_budget`).

Both give precedence to live work: a caller with ``Priority.LIVE`` (a booking being
pushed while a person waits) announces that it is waiting, and ``Priority.BACKGROUND``
callers (reads of a sync run) hold back while it does, so a long background read never
makes a booking wait behind it for more than one request.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from aiolimiter import AsyncLimiter
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.engine import session_scope
from clinicsync.integrations.definitions import RateLimitSpec
from clinicsync.integrations.models import IntegrationRateBudget


class Priority(IntEnum):
    LIVE = 0
    BACKGROUND = 1


# How long a waiting live caller keeps background callers back beyond its own expected wait:
# long enough to cover one poll of the database, short enough that a caller that died
# frees the budget at once.
LIVE_CLAIM_MARGIN = 0.25


@dataclass(frozen=True)
class BucketShape:
    """A token bucket that never lets more than `requests` through in any `per_seconds` window.

    A bucket of capacity b refilled at rate r admits at most b + r*T in a window T, so the
    rate is (N - b)/T: a small burst goes at once, the rest is spread out evenly.
    """

    capacity: float
    rate: float  # tokens per second

    @classmethod
    def of(cls, spec: RateLimitSpec) -> BucketShape:
        limit = spec.requests
        if limit == 1:
            return cls(1.0, 1.0 / spec.per_seconds)
        burst = min(spec.burst or max(1, limit // 10), limit - 1)
        return cls(float(burst), (limit - burst) / spec.per_seconds)


class RateBudget(Protocol):
    async def acquire(self, priority: Priority = Priority.LIVE) -> None: ...


class LocalBudget:
    """One process's budget (aiolimiter), with live callers first."""

    def __init__(self, spec: RateLimitSpec) -> None:
        shape = BucketShape.of(spec)
        self._limiter = AsyncLimiter(shape.capacity, shape.capacity / shape.rate)
        self._live_waiting = 0
        self._no_live_waiting = asyncio.Event()
        self._no_live_waiting.set()
        self._background_turn = asyncio.Lock()

    async def acquire(self, priority: Priority = Priority.LIVE) -> None:
        if priority is Priority.LIVE:
            self._live_waiting += 1
            self._no_live_waiting.clear()
            try:
                await self._limiter.acquire()
            finally:
                self._live_waiting -= 1
                if self._live_waiting == 0:
                    self._no_live_waiting.set()
            return
        # One background caller at a time waits inside the limiter: a live caller arriving later
        # then queues behind at most that one, not behind every read already waiting there.
        async with self._background_turn:
            await self._no_live_waiting.wait()
            await self._limiter.acquire()


class DatabaseBudget:
    """One integration's token bucket in the database, shared by every process.

    Within a process, callers of one priority queue behind one another (an asyncio lock,
    first come first served), so only the head of each queue polls the database.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        integration_id: uuid.UUID,
        spec: RateLimitSpec,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.integration_id = integration_id
        self.shape = BucketShape.of(spec)
        self._queues = {priority: asyncio.Lock() for priority in Priority}

    async def acquire(self, priority: Priority = Priority.LIVE) -> None:
        async with self._queues[priority]:
            while True:
                wait, booked = await self._try_take(priority)
                if wait is None:
                    return
                if booked:
                    # The token is ours from then on: no second look at the row, so a live
                    # caller goes at its turn exactly (polling again cost a transaction and a
                    # jitter every turn, a tenth of a 10/s allowance unused).
                    await asyncio.sleep(wait)
                    return
                # Jitter keeps processes that wait for the same token from polling in lockstep.
                await asyncio.sleep(wait * random.uniform(1.0, 1.15))

    async def remaining(self) -> float:
        """Tokens available now (for status pages); does not take one."""
        async with session_scope(self.sessionmaker, write=False) as session:
            row = await session.get(IntegrationRateBudget, self.integration_id)
        if row is None:
            return self.shape.capacity
        return max(0.0, self._refilled(row, time.time()))

    def _refilled(self, row: IntegrationRateBudget, now: float) -> float:
        # Clocks of different machines may disagree a little; never refill backwards.
        elapsed = max(0.0, now - row.refilled_at)
        return min(self.shape.capacity, row.tokens + elapsed * self.shape.rate)

    async def _row(self, session: AsyncSession) -> IntegrationRateBudget:
        query = (
            select(IntegrationRateBudget)
            .where(IntegrationRateBudget.integration_id == self.integration_id)
            .with_for_update()
        )
        row = (await session.scalars(query)).first()
        if row is not None:
            return row
        values = {
            "integration_id": self.integration_id,
            "tokens": self.shape.capacity,
            "refilled_at": time.time(),
            "live_waiting_until": 0.0,
        }
        dialect = (await session.connection()).dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        await session.execute(insert(IntegrationRateBudget).values(values).on_conflict_do_nothing())
        created = (await session.scalars(query.execution_options(populate_existing=True))).first()
        assert created is not None, "the budget row exists once inserted"
        return created

    async def _try_take(self, priority: Priority) -> tuple[float | None, bool]:
        """Take a token now (None, False); book the next one for a live caller (its wait, True);
        or say how long a background caller waits before looking again (its wait, False).

        A booked token leaves the bucket below zero until it refills: every caller after it, in
        any process, waits for the refill, so the allowance is kept exactly."""
        async with session_scope(self.sessionmaker) as session:
            row = await self._row(session)
            now = time.time()
            tokens = self._refilled(row, now)
            live_ahead = priority is Priority.BACKGROUND and row.live_waiting_until > now
            row.tokens, row.refilled_at = tokens, now
            if tokens >= 1.0 and not live_ahead:
                row.tokens = tokens - 1.0
                return None, False
            wait = (1.0 - tokens) / self.shape.rate if tokens < 1.0 else 1.0 / self.shape.rate
            if priority is Priority.LIVE:
                row.tokens = tokens - 1.0
                row.live_waiting_until = max(row.live_waiting_until, now + wait + LIVE_CLAIM_MARGIN)
                return wait, True
            if live_ahead:
                wait = max(wait, min(row.live_waiting_until - now, LIVE_CLAIM_MARGIN))
            return wait, False


_shared: dict[tuple[int, uuid.UUID, BucketShape], tuple[asyncio.AbstractEventLoop, RateBudget]] = {}


def shared_budget(
    sessionmaker: async_sessionmaker[AsyncSession], integration_id: uuid.UUID, spec: RateLimitSpec
) -> RateBudget:
    """The budget every caller of an integration draws on.

    PostgreSQL: the database row, shared by every process and machine. SQLite: one budget for
    the whole process. The embedded SQLite deployment is one process (jobs run inside the
    server), and a caller there may call a provider inside its own write transaction, which a
    budget row could only be taken after.
    """
    loop = asyncio.get_running_loop()
    bind = sessionmaker.kw.get("bind")
    on_sqlite = bind is not None and bind.dialect.name == "sqlite"
    shape = BucketShape.of(spec)
    key = (0 if on_sqlite else id(sessionmaker), integration_id, shape)
    found = _shared.get(key)
    budget = found[1] if found is not None and found[0] is loop else None
    if isinstance(budget, DatabaseBudget) and budget.sessionmaker is not sessionmaker:
        budget = None  # the id of a sessionmaker since gone, reused by a new one
    if budget is None:
        budget = LocalBudget(spec) if on_sqlite else DatabaseBudget(sessionmaker, integration_id, spec)
        _shared[key] = (loop, budget)
    return budget
