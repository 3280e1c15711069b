"""The event as clients receive it (the SSE ``data`` field)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class ChangeEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    organization_id: uuid.UUID
    entity: str
    entity_id: uuid.UUID
    operation: str
    practitioner_id: uuid.UUID | None
    payload: dict[str, Any]
    created_at: datetime
