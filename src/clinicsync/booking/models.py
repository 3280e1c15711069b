"""Booking tables. Instants are UTC; weekly hours are local wall-clock times in the organization's zone."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime, time

from sqlalchemy import Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base, OrganizationOwned, Timestamps, UUIDPrimaryKey


class AppointmentStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"
    COMPLETED = "completed"


# Statuses that hold the practitioner's time. The overlap constraint and trigger list the same values.
ACTIVE_STATUSES = (AppointmentStatus.PENDING, AppointmentStatus.CONFIRMED)


class BookingSource(enum.StrEnum):
    MANUAL = "manual"
    CHATBOT = "chatbot"
    AI_VOICE = "ai_voice"
    ADMIN = "admin"
    API = "api"
    PMS_SYNC = "pms_sync"


def _enum(enum_class: type[enum.Enum]) -> Enum:
    return Enum(enum_class, native_enum=False, length=20, validate_strings=True, values_callable=_values)


def _values(enum_class: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_class]


class Practitioner(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    __tablename__ = "practitioners"

    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(20), default=None)
    title: Mapped[str] = mapped_column(String(120), default="")
    specialty: Mapped[str] = mapped_column(String(120), default="")
    is_active: Mapped[bool] = mapped_column(default=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # Removal keeps the row so past appointments still say who saw the patient.
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class AvailabilityRule(UUIDPrimaryKey, OrganizationOwned, Base):
    """A weekly interval: day_of_week 0=Monday..6=Sunday, local times in the organization's zone."""

    __tablename__ = "availability_rules"

    practitioner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("practitioners.id", ondelete="CASCADE"), index=True
    )
    day_of_week: Mapped[int] = mapped_column()
    start_time: Mapped[time] = mapped_column()
    end_time: Mapped[time] = mapped_column()
    is_available: Mapped[bool] = mapped_column(default=True)


class AvailabilityOverride(UUIDPrimaryKey, OrganizationOwned, Base):
    """A date exception: closed all day (no times), closed for some hours, or extra hours."""

    __tablename__ = "availability_overrides"

    practitioner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("practitioners.id", ondelete="CASCADE"), index=True
    )
    date: Mapped[date] = mapped_column()
    start_time: Mapped[time | None] = mapped_column(default=None)
    end_time: Mapped[time | None] = mapped_column(default=None)
    is_available: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str] = mapped_column(String(200), default="")


class Patient(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    __tablename__ = "patients"

    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(20), default=None)  # E.164
    date_of_birth: Mapped[date | None] = mapped_column(default=None)
    # Who registered the patient: a service account sees the patients it registered.
    registered_by_user_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)


class Appointment(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    __tablename__ = "appointments"
    __table_args__ = (
        Index("ix_appointments_practitioner_starts_at", "practitioner_id", "starts_at"),
        Index("ix_appointments_organization_starts_at", "organization_id", "starts_at"),
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"), index=True)
    practitioner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("practitioners.id", ondelete="RESTRICT"))
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime] = mapped_column()
    status: Mapped[AppointmentStatus] = mapped_column(
        _enum(AppointmentStatus), default=AppointmentStatus.PENDING
    )
    booking_source: Mapped[BookingSource] = mapped_column(_enum(BookingSource), default=BookingSource.API)
    booking_reference: Mapped[str] = mapped_column(String(16), unique=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    practitioner_name: Mapped[str] = mapped_column(String(200), default="")
    practitioner_email: Mapped[str | None] = mapped_column(String(320), default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    cancellation_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    version: Mapped[int] = mapped_column(default=1)
    # Who booked it: a service account sees and changes only what it booked (or what the
    # patient proves is theirs). No foreign key: users are deactivated, never deleted.
    booked_by_user_id: Mapped[uuid.UUID | None] = mapped_column(default=None, index=True)

    __mapper_args__ = {"version_id_col": version}


class IdempotencyRecord(UUIDPrimaryKey, OrganizationOwned, Base):
    """The first response to a request carrying an Idempotency-Key, replayed to its retries."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        UniqueConstraint("organization_id", "key", name="uq_idempotency_records_organization_key"),
    )

    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column()
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
