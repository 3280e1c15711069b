"""Schedule slots read from a PMS whose diary is a grid of slots with a capacity (a vet PIMS).

One row per slot per integration. ``capacity`` and ``pms_booked`` are what the PMS said when the
slot was last read (``last_seen_at``); ``booked_count`` is our best count now: the PMS's count
plus what we booked into the slot since that read (``service.recompute_booked``).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base, OrganizationOwned, Timestamps, UUIDPrimaryKey


class SlotStatus(enum.StrEnum):
    OPEN = "open"  # bookable while booked_count < capacity
    BLOCKED = "blocked"  # the PMS holds it closed (a meeting, a surgery block)
    GONE = "gone"  # not in the PMS's latest read of its window: never offered


class ScheduleSlot(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    __tablename__ = "schedule_slots"
    __table_args__ = (
        UniqueConstraint("integration_id", "external_id", name="uq_schedule_slots_integration_external"),
        Index("ix_schedule_slots_integration_starts_at", "integration_id", "starts_at"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE")
    )
    external_id: Mapped[str] = mapped_column(String(200))
    # The local practitioner the slot belongs to; None for a clinic-wide slot (any practitioner).
    practitioner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("practitioners.id", ondelete="SET NULL"), default=None
    )
    practitioner_external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    resource: Mapped[str | None] = mapped_column(String(200), default=None)  # a room, a table, a chair
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime] = mapped_column()
    capacity: Mapped[int] = mapped_column(default=1)
    pms_booked: Mapped[int | None] = mapped_column(default=None)
    booked_count: Mapped[int] = mapped_column(default=0)
    status: Mapped[SlotStatus] = mapped_column(
        Enum(
            SlotStatus,
            native_enum=False,
            length=12,
            validate_strings=True,
            values_callable=lambda members: [str(member.value) for member in members],
        ),
        default=SlotStatus.OPEN,
    )
    last_seen_at: Mapped[datetime] = mapped_column()

    @property
    def remaining(self) -> int:
        if self.status != SlotStatus.OPEN:
            return 0
        return max(0, self.capacity - self.booked_count)
