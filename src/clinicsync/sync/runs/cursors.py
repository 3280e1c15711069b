"""Where incremental pulls resume: one cursor per integration and entity.

Three kinds, in the order a complete read prefers them:

* ``provider_token``: an opaque token the PMS gave for asking only what changed since (Google's
  nextSyncToken, declared as the list function's `response.next_sync_token`). A pull asks with
  the token alone; the PMS may refuse it (410, code `gone`), and the run then reads the whole
  window and keeps the new token that read answers.
* ``server_time``: the provider's own clock on its answers (OpenDental's serverDateTime), so a
  change stamped by the PMS is never judged by our clock. It is asked from one second earlier
  (`asked_from`): its stamps are whole seconds and "changed after" is strict, so an edit in the
  same second as the cursor would otherwise never be read; the re-read second applies as
  unchanged.
* ``run_start``: for a provider with neither (Cliniko's `updated_at`, the vet PIMS's visit
  stamps), the run's start less `LOOKBACK`: the overlap is read again and applies as unchanged,
  so a few minutes of skew between the two clocks lose nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.sync.runs.models import SyncCursor

APPOINTMENTS = "appointments"
LOOKBACK = timedelta(minutes=5)
SERVER_CLOCK_OVERLAP = timedelta(seconds=1)

PROVIDER_TOKEN = "provider_token"
SERVER_TIME = "server_time"
RUN_START = "run_start"


@dataclass(frozen=True)
class Cursor:
    value: str
    kind: str

    @classmethod
    def at(cls, instant: datetime, kind: str) -> Cursor:
        return cls(instant.isoformat(), kind)

    @property
    def token(self) -> str | None:
        return self.value if self.kind == PROVIDER_TOKEN else None

    @property
    def instant(self) -> datetime | None:
        return None if self.kind == PROVIDER_TOKEN else datetime.fromisoformat(self.value)

    def asked_from(self) -> datetime:
        """What a pull asks the PMS for (a stamp cursor)."""
        instant = self.instant
        assert instant is not None, "a token cursor is asked with the token"
        return instant - SERVER_CLOCK_OVERLAP if self.kind == SERVER_TIME else instant

    def shown(self) -> str:
        """How a run records it: the instant, never the token (it reads the calendar's changes)."""
        return "the provider's sync token" if self.kind == PROVIDER_TOKEN else self.value


async def load(session: AsyncSession, integration_id: uuid.UUID, entity: str = APPOINTMENTS) -> Cursor | None:
    row = await session.scalar(
        select(SyncCursor).where(SyncCursor.integration_id == integration_id, SyncCursor.entity == entity)
    )
    if row is None or not row.value:
        return None
    return Cursor(row.value, row.kind)


async def save(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    cursor: Cursor,
    *,
    run_id: uuid.UUID,
    entity: str = APPOINTMENTS,
) -> None:
    row = await session.scalar(
        select(SyncCursor)
        .where(SyncCursor.integration_id == integration_id, SyncCursor.entity == entity)
        .with_for_update()
    )
    if row is None:
        row = SyncCursor(organization_id=organization_id, integration_id=integration_id, entity=entity)
        session.add(row)
    row.value, row.kind, row.last_run_id = cursor.value, cursor.kind, run_id
    await session.flush()


def next_value(
    server_time: datetime | None,
    started: datetime,
    previous: Cursor | None = None,
    *,
    sync_token: str | None = None,
) -> Cursor:
    """The cursor a complete read moves to. A token the PMS gave wins; then its clock. A provider
    that keeps a server clock but answered nothing this time (no change) keeps its cursor: the
    two clocks are never mixed."""
    if sync_token:
        return Cursor(sync_token, PROVIDER_TOKEN)
    if server_time is not None:
        return Cursor.at(server_time, SERVER_TIME)
    if previous is not None and previous.kind == SERVER_TIME:
        return previous
    return Cursor.at(started - LOOKBACK, RUN_START)
