"""Tenancy tables: an organization owns everything else."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.config import get_settings
from clinicsync.db.base import Base, OrganizationOwned, Timestamps, UUIDPrimaryKey
from clinicsync.tenancy.regions import region_for_zone


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    PRACTITIONER = "practitioner"
    STAFF = "staff"
    SERVICE = "service"  # a chatbot or voice agent booking on the clinic's behalf


ADMIN_ROLES = frozenset({Role.OWNER, Role.ADMIN})


class Organization(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "organizations"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    time_zone: Mapped[str] = mapped_column(String(64))
    # Booking rules that slot search and booking apply unless a request narrows them.
    min_notice_minutes: Mapped[int] = mapped_column(default=60)
    slot_interval_minutes: Mapped[int] = mapped_column(default=15)
    default_appointment_minutes: Mapped[int] = mapped_column(default=30)
    # How far ahead (in the clinic's days) patients and staff may book; admins may go further.
    booking_horizon_days: Mapped[int] = mapped_column(default=365, server_default="365")
    # ISO country for phone numbers typed without +; None: derived from the time zone.
    phone_region: Mapped[str | None] = mapped_column(String(2), default=None)

    @property
    def dialling_region(self) -> str:
        """The country for numbers typed without +: the setting, else the time zone's country."""
        return self.phone_region or region_for_zone(self.time_zone) or get_settings().default_phone_region


class User(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("organization_id", "email", name="uq_users_organization_email"),)

    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[Role] = mapped_column(
        Enum(
            Role,
            native_enum=False,
            length=20,
            validate_strings=True,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    is_active: Mapped[bool] = mapped_column(default=True)


class ApiToken(UUIDPrimaryKey, OrganizationOwned, Base):
    """An opaque bearer token. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
