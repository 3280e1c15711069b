"""Where incremental pulls resume: one cursor per integration and entity.

The cursor is the provider's own clock when the PMS has one on its answers (OpenDental's
serverDateTime), so a change stamped by the PMS is never judged by our clock. A provider without
one (Cliniko's and Google's `updated_at`, the vet PIMS's visit stamps) gets the run's start less
`LOOKBACK`: the overlap is read again and applies as unchanged, so a few minutes of skew between
the two clocks lose nothing. A server clock is asked from one second earlier (`asked_from`):
its stamps are whole seconds and "changed after" is strict, so an edit in the same second as the
cursor would otherwise never be read; the re-read second applies as unchanged.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.sync.runs.models import SyncCursor

APPOINTMENTS = "appointments"
LOOKBACK = timedelta(minutes=5)
SERVER_CLOCK_OVERLAP = timedelta(seconds=1)


def asked_from(value: datetime, kind: str | None) -> datetime:
    """What a pull asks the PMS for, given its cursor."""
    return value - SERVER_CLOCK_OVERLAP if kind == "server_time" else value


async def load(
    session: AsyncSession, integration_id: uuid.UUID, entity: str = APPOINTMENTS
) -> datetime | None:
    return (await load_with_kind(session, integration_id, entity))[0]


async def load_with_kind(
    session: AsyncSession, integration_id: uuid.UUID, entity: str = APPOINTMENTS
) -> tuple[datetime | None, str | None]:
    row = await session.scalar(
        select(SyncCursor).where(SyncCursor.integration_id == integration_id, SyncCursor.entity == entity)
    )
    if row is None or not row.value:
        return None, None
    return datetime.fromisoformat(row.value), row.kind


async def save(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    value: datetime,
    *,
    run_id: uuid.UUID,
    kind: str,
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
    row.value, row.kind, row.last_run_id = value.isoformat(), kind, run_id
    await session.flush()


def next_value(
    server_time: datetime | None,
    started: datetime,
    previous: tuple[datetime | None, str | None] = (None, None),
) -> tuple[datetime, str]:
    """The cursor a complete read moves to, and what kind of clock it is. A provider that keeps a
    server clock but answered nothing this time (no change) keeps its cursor: the two clocks are
    never mixed."""
    if server_time is not None:
        return server_time, "server_time"
    value, kind = previous
    if value is not None and kind == "server_time":
        return value, kind
    return started - LOOKBACK, "run_start"
