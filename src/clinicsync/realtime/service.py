"""Reading change events: who may see which, replay after an id, the retention window."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.booking import service as booking_service
from clinicsync.realtime.models import ChangeEvent
from clinicsync.realtime.schemas import ChangeEventRead
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.principal import Principal

# Schedules hold no personal data and keep a service account's view of free slots current.
SCHEDULE_ENTITIES = frozenset({"availability", "availability_override", "practitioner"})
ORGANIZATION_WIDE_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.STAFF})


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event ready to send: the fields audiences filter on and its SSE frame, encoded once for
    every subscriber (with 100 clients, per-client work per event is what decides the latency)."""

    id: int
    organization_id: uuid.UUID
    entity: str
    practitioner_id: uuid.UUID | None
    owner_user_id: uuid.UUID | None
    data: str
    frame: bytes

    @classmethod
    def of(cls, event: ChangeEvent) -> Delivery:
        data = ChangeEventRead.model_validate(event).model_dump_json()
        frame = f"id: {event.id}\ndata: {data}\n\n".encode()
        return cls(
            event.id,
            event.organization_id,
            event.entity,
            event.practitioner_id,
            event.owner_user_id,
            data,
            frame,
        )


@dataclass(frozen=True)
class Audience:
    """What one subscriber may receive: their organization, narrowed by role."""

    organization_id: uuid.UUID
    role: Role
    user_id: uuid.UUID
    practitioner_id: uuid.UUID | None = None

    def allows(self, event: ChangeEvent | Delivery) -> bool:
        if event.organization_id != self.organization_id:
            return False
        if self.role in ORGANIZATION_WIDE_ROLES:
            return True
        if self.role == Role.PRACTITIONER:
            return self.practitioner_id is not None and event.practitioner_id == self.practitioner_id
        return event.owner_user_id == self.user_id or event.entity in SCHEDULE_ENTITIES

    def condition(self) -> ColumnElement[bool]:
        """``allows`` as SQL, for replay."""
        same_org = ChangeEvent.organization_id == self.organization_id
        if self.role in ORGANIZATION_WIDE_ROLES:
            return and_(same_org, true())
        if self.role == Role.PRACTITIONER:
            if self.practitioner_id is None:
                return false()
            return and_(same_org, ChangeEvent.practitioner_id == self.practitioner_id)
        return and_(
            same_org,
            or_(ChangeEvent.owner_user_id == self.user_id, ChangeEvent.entity.in_(SCHEDULE_ENTITIES)),
        )


async def audience_for(session: AsyncSession, principal: Principal) -> Audience:
    practitioner_id = None
    if principal.role == Role.PRACTITIONER:
        practitioner_id = await booking_service.practitioner_id_for_user(session, principal)
    return Audience(principal.organization_id, principal.role, principal.user_id, practitioner_id)


async def replay(
    session: AsyncSession, audience: Audience, after_id: int, *, limit: int = 500
) -> list[Delivery]:
    query = (
        select(ChangeEvent)
        .where(audience.condition(), ChangeEvent.id > after_id)
        .order_by(ChangeEvent.id)
        .limit(limit)
    )
    return [Delivery.of(event) for event in await session.scalars(query)]


async def fetch_new(
    session: AsyncSession, cursors: Mapping[uuid.UUID, int], *, limit: int = 500
) -> list[Delivery]:
    """Events after each organization's cursor, in id order."""
    if not cursors:
        return []
    condition = or_(
        *(
            and_(ChangeEvent.organization_id == organization_id, ChangeEvent.id > cursor)
            for organization_id, cursor in cursors.items()
        )
    )
    query = select(ChangeEvent).where(condition).order_by(ChangeEvent.id).limit(limit)
    return [Delivery.of(event) for event in await session.scalars(query)]


async def latest_id(session: AsyncSession, organization_id: uuid.UUID) -> int:
    newest = await session.scalar(
        select(func.max(ChangeEvent.id)).where(ChangeEvent.organization_id == organization_id)
    )
    return int(newest or 0)


async def too_far_behind(session: AsyncSession, last_event_id: int) -> bool:
    """True when events after ``last_event_id`` may have been pruned.

    Pruning removes the oldest ids, so a client whose last id sits below the oldest kept one
    (with a gap between) may have missed some: it has to reload instead of resuming.
    """
    oldest = await session.scalar(select(func.min(ChangeEvent.id)))
    return oldest is not None and last_event_id < int(oldest) - 1


async def prune(session: AsyncSession, older_than: datetime) -> int:
    """Deletes events older than the retention window, always keeping the newest one, so the
    oldest kept id still tells where the window begins."""
    newest = await session.scalar(select(func.max(ChangeEvent.id)))
    if newest is None:
        return 0
    result = await session.execute(
        delete(ChangeEvent).where(ChangeEvent.created_at < older_than, ChangeEvent.id < newest)
    )
    return int(getattr(result, "rowcount", 0) or 0)
