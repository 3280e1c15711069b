"""The change_events table: what changed, in commit order, for live feeds and replay."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base, utcnow

# SQLite needs INTEGER PRIMARY KEY AUTOINCREMENT so an id is never reused after pruning: a reused
# id would make a client's Last-Event-ID point at the wrong place.
EventId = BigInteger().with_variant(Integer(), "sqlite")


class ChangeEvent(Base):
    __tablename__ = "change_events"
    __table_args__ = (
        Index("ix_change_events_organization_id_id", "organization_id", "id"),
        Index("ix_change_events_entity_entity_id", "entity", "entity_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[uuid.UUID] = mapped_column()
    operation: Mapped[str] = mapped_column(String(10))
    # Who may see it besides staff and admins: the practitioner whose diary it touches, and the user
    # that created the record (a service account sees what it booked).
    practitioner_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    owner_user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
