"""Agent tables: a clinic's agent-booking policy, voice-platform channels, replayable tool calls
and the trail linking an agent's booking to the call or conversation that made it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base, OrganizationOwned, Timestamps, UUIDPrimaryKey


class AgentSettings(Timestamps, Base):
    """One row per organization; a missing row means agents may book with anyone."""

    __tablename__ = "agent_settings"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    booking_enabled: Mapped[bool] = mapped_column(default=True)
    # None: every practitioner; a list: only these may be offered and booked by an agent.
    practitioner_ids: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    appointment_types: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    phone_region: Mapped[str | None] = mapped_column(String(2), default=None)


class AgentChannel(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    """A voice platform's way in: Vapi presents the channel token, Retell signs with its API key."""

    __tablename__ = "agent_channels"

    platform: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(120), default="")
    service_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16))
    # Retell signs requests with the clinic's Retell API key; kept encrypted, needed in clear to verify.
    signing_secret_ciphertext: Mapped[str | None] = mapped_column(Text, default=None)
    booking_source: Mapped[str] = mapped_column(String(20), default="ai_voice")
    is_active: Mapped[bool] = mapped_column(default=True)


class AgentToolCall(UUIDPrimaryKey, OrganizationOwned, Base):
    """The first answer to a write tool call, replayed when a platform retries the same call."""

    __tablename__ = "agent_tool_calls"
    __table_args__ = (
        UniqueConstraint("organization_id", "key", name="uq_agent_tool_calls_organization_key"),
    )

    key: Mapped[str] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(String(60))
    answer: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column()


class AgentBooking(UUIDPrimaryKey, OrganizationOwned, Base):
    """Which agent surface and which call or conversation made or changed an appointment."""

    __tablename__ = "agent_bookings"

    # No foreign key: an external-only clinic's appointment lives in the PMS, under an id of ours
    # that only its external reference carries.
    appointment_id: Mapped[uuid.UUID] = mapped_column(index=True)
    booking_reference: Mapped[str] = mapped_column(String(16), index=True)
    action: Mapped[str] = mapped_column(String(20))
    surface: Mapped[str] = mapped_column(String(20))
    booking_source: Mapped[str] = mapped_column(String(20))
    # Who acted: a service user sees only its own entries, as it sees only what it booked.
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    call_id: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column()
