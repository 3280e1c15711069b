"""Login throttling: failed logins counted per account and per client address, in the database.

After ``account_limit`` failures for one account (or ``address_limit`` from one address, which
catches one client trying many accounts) within ``window_seconds``, further attempts are
refused with 429 and Retry-After until the oldest failure leaves the window. A refused attempt
is not checked at all, so it costs no password hashing. A successful login clears its account.

The failures are rows in ``login_failures``, so every process of a deployment (``serve
--workers N``, several hosts on one database) counts the same failures: N processes cannot be
tried N times as often. Keys are SHA-256 digests, so the table holds no email or address.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Double, Index, String, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base
from clinicsync.db.engine import session_scope


class LoginFailure(Base):
    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_failed_at", "key", "failed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))
    # Seconds since the epoch (wall clock): every process on every host reads the same scale.
    failed_at: Mapped[float] = mapped_column(Double, index=True)


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


@dataclass
class LoginThrottle:
    account_limit: int = 10
    address_limit: int = 50
    window_seconds: float = 15 * 60
    clock: Callable[[], float] = time.time

    def _limits(self, account: str, address: str) -> tuple[tuple[str, int], ...]:
        return (
            (_key("account", account), self.account_limit),
            (_key("address", address), self.address_limit),
        )

    async def retry_after(self, session: AsyncSession, account: str, address: str) -> int | None:
        """Seconds until ``account`` from ``address`` may try again, or None if it may now.

        Reads in the caller's session: a login already holds one for its own read, and taking a
        second connection per login would let a burst of logins use up the pool between them."""
        now = self.clock()
        since = now - self.window_seconds
        waits = []
        for key, limit in self._limits(account, address):
            recent = list(
                (
                    await session.execute(
                        select(LoginFailure.failed_at)
                        .where(LoginFailure.key == key, LoginFailure.failed_at > since)
                        .order_by(LoginFailure.failed_at.desc())
                        .limit(limit)
                    )
                ).scalars()
            )
            if len(recent) >= limit:
                waits.append(recent[-1] + self.window_seconds - now)
        return max(1, math.ceil(max(waits))) if waits else None

    async def failed(self, maker: async_sessionmaker[AsyncSession], account: str, address: str) -> None:
        now = self.clock()
        async with session_scope(maker) as session:
            # Failures older than the window count for nothing: the table holds one window at most.
            await session.execute(
                delete(LoginFailure).where(LoginFailure.failed_at <= now - self.window_seconds)
            )
            session.add_all(
                LoginFailure(key=key, failed_at=now) for key, _limit in self._limits(account, address)
            )

    async def succeeded(self, maker: async_sessionmaker[AsyncSession], account: str) -> None:
        key = _key("account", account)
        # Most logins follow no failure: a read, which on SQLite runs beside the writers, spares
        # them a turn for the write lock.
        async with session_scope(maker, write=False) as session:
            found = await session.scalar(select(LoginFailure.id).where(LoginFailure.key == key).limit(1))
        if found is None:
            return
        async with session_scope(maker) as session:
            await session.execute(delete(LoginFailure).where(LoginFailure.key == key))
