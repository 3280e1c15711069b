"""API shapes for the PMS's schedule slots (read-only: the sync writes them)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from clinicsync.sync.slots.models import SlotStatus


class ScheduleSlotRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    external_id: str
    practitioner_id: uuid.UUID | None = Field(description="null: a clinic-wide slot, any practitioner")
    practitioner_external_id: str | None
    resource: str | None
    starts_at: datetime
    ends_at: datetime
    capacity: int
    booked_count: int = Field(description="the PMS's count at the last read plus our bookings since")
    remaining: int = Field(description="places left; 0 when full, blocked or gone")
    status: SlotStatus
    last_seen_at: datetime


class ScheduleSlotPage(BaseModel):
    time_zone: str
    slots: list[ScheduleSlotRead]
    next_cursor: str | None = Field(default=None, description="Pass as cursor for the next page")
