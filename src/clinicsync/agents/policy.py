"""A clinic's agent-booking policy and the trail of what agents booked.

Clinics may switch agent booking off, or let agents offer only some practitioners (the others
keep their diaries for the front desk) and book only some appointment types (the rest need a
person on the phone). Each agent booking, move and cancel is recorded with
the surface and the call or conversation that made it, so staff can see who booked what.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.agents.models import AgentBooking, AgentSettings
from clinicsync.config import get_settings
from clinicsync.db.base import utcnow

if TYPE_CHECKING:
    from clinicsync.agents.context import AgentContext


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    booking_enabled: bool = True
    practitioner_ids: frozenset[uuid.UUID] | None = None
    appointment_types: tuple[str, ...] | None = None
    phone_region: str | None = None

    def offers(self, practitioner_id: uuid.UUID) -> bool:
        return self.practitioner_ids is None or practitioner_id in self.practitioner_ids

    def books_type(self, type_id: uuid.UUID) -> bool:
        """Settings store type ids; a list that names none leaves agents no type to book."""
        return self.appointment_types is None or str(type_id) in self.appointment_types


def default_region() -> str:
    return get_settings().default_phone_region


async def load(session: AsyncSession, organization_id: uuid.UUID) -> AgentPolicy:
    row = await session.get(AgentSettings, organization_id)
    if row is None:
        return AgentPolicy()
    return AgentPolicy(
        booking_enabled=row.booking_enabled,
        practitioner_ids=(
            frozenset(uuid.UUID(value) for value in row.practitioner_ids)
            if row.practitioner_ids is not None
            else None
        ),
        appointment_types=tuple(row.appointment_types) if row.appointment_types is not None else None,
        phone_region=row.phone_region,
    )


async def record_booking(
    session: AsyncSession, ctx: AgentContext, appointment_id: uuid.UUID, reference: str, action: str
) -> None:
    session.add(
        AgentBooking(
            organization_id=ctx.principal.organization_id,
            appointment_id=appointment_id,
            booking_reference=reference,
            action=action,
            surface=ctx.surface,
            booking_source=ctx.booking_source.value,
            user_id=ctx.principal.user_id,
            call_id=ctx.call_id,
            created_at=utcnow(),
        )
    )
    await session.flush()


async def bookings_of(
    session: AsyncSession, organization_id: uuid.UUID, limit: int, user_id: uuid.UUID | None = None
) -> list[AgentBooking]:
    query = select(AgentBooking).where(AgentBooking.organization_id == organization_id)
    if user_id is not None:
        query = query.where(AgentBooking.user_id == user_id)
    rows = await session.scalars(query.order_by(AgentBooking.created_at.desc()).limit(limit))
    return list(rows)


async def booked_by_agent(
    session: AsyncSession, organization_id: uuid.UUID, reference: str
) -> uuid.UUID | None:
    """The record id an agent booking's reference names (external-only clinics keep no local row)."""
    found: uuid.UUID | None = await session.scalar(
        select(AgentBooking.appointment_id)
        .where(AgentBooking.organization_id == organization_id, AgentBooking.booking_reference == reference)
        .limit(1)
    )
    return found
