"""Booking tables. Instants are UTC; weekly hours are local wall-clock times in the organization's zone."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Column, Enum, ForeignKey, Index, String, Table, Text, UniqueConstraint, event, text
from sqlalchemy.orm import Mapped, Mapper, mapped_column, relationship

from clinicsync.db.base import Base, OrganizationOwned, Timestamps, UUIDPrimaryKey


class AppointmentStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"
    COMPLETED = "completed"


# Statuses that hold the practitioner's time. The overlap constraint and trigger list the same values.
ACTIVE_STATUSES = (AppointmentStatus.PENDING, AppointmentStatus.CONFIRMED)
ACTIVE_SQL = "status IN ('pending', 'confirmed')"
# The active condition as the partial index states it, for the overlap reads. SQLite uses a
# partial index only for a query that repeats the index's WHERE literally (bound parameters,
# as in status IN (?, ?), can't be proven to match), and otherwise scans the whole table.
ACTIVE_CONDITION = text(ACTIVE_SQL)
# The longest an appointment may block a diary, buffers included (a database check enforces it).
# Overlap checks look back this far and no further, so their cost is flat in the diary's history.
MAX_BLOCK = timedelta(hours=24)


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


appointment_type_practitioners = Table(
    "appointment_type_practitioners",
    Base.metadata,
    Column("appointment_type_id", ForeignKey("appointment_types.id", ondelete="CASCADE"), primary_key=True),
    Column("practitioner_id", ForeignKey("practitioners.id", ondelete="CASCADE"), primary_key=True),
)


class AppointmentType(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    """What is booked: its length, the buffers it keeps clear, who offers it and where it shows."""

    __tablename__ = "appointment_types"

    name: Mapped[str] = mapped_column(String(120))
    duration_minutes: Mapped[int] = mapped_column()
    buffer_before_minutes: Mapped[int] = mapped_column(default=0)
    buffer_after_minutes: Mapped[int] = mapped_column(default=0)
    colour: Mapped[str] = mapped_column(String(7), default="#4a90d9")
    bookable_online: Mapped[bool] = mapped_column(default=True)
    # True: every practitioner offers it, including ones added later; False: only those listed.
    all_practitioners: Mapped[bool] = mapped_column(default=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    practitioners: Mapped[list[Practitioner]] = relationship(
        secondary=appointment_type_practitioners, lazy="selectin", order_by="Practitioner.name"
    )

    @property
    def practitioner_ids(self) -> list[uuid.UUID]:
        return [practitioner.id for practitioner in self.practitioners]


class Patient(UUIDPrimaryKey, Timestamps, OrganizationOwned, Base):
    __tablename__ = "patients"
    __table_args__ = (
        # The patient list's order and its cursor: (last name, first name, id) within the clinic.
        Index("ix_patients_organization_name", "organization_id", "last_name", "first_name", "id"),
    )

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
        Index(
            "ix_appointments_active_practitioner_blocked_from",
            "practitioner_id",
            "blocked_from",
            sqlite_where=text(ACTIVE_SQL),
            postgresql_where=text(ACTIVE_SQL),
        ),
    )

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"), index=True)
    practitioner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("practitioners.id", ondelete="RESTRICT"))
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime] = mapped_column()
    appointment_type_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("appointment_types.id", ondelete="SET NULL"), default=None
    )
    # Buffers are copied from the type when booked, so editing a type never moves existing bookings.
    buffer_before_minutes: Mapped[int] = mapped_column(default=0)
    buffer_after_minutes: Mapped[int] = mapped_column(default=0)
    # The time the appointment keeps clear: [starts_at - buffer before, ends_at + buffer after).
    # Maintained on every flush (below); the overlap constraint and trigger compare these.
    blocked_from: Mapped[datetime] = mapped_column()
    blocked_until: Mapped[datetime] = mapped_column()
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


def _set_blocked_range(_mapper: Mapper[Any], _connection: Any, appointment: Appointment) -> None:
    appointment.blocked_from = appointment.starts_at - timedelta(
        minutes=appointment.buffer_before_minutes or 0
    )
    appointment.blocked_until = appointment.ends_at + timedelta(minutes=appointment.buffer_after_minutes or 0)


# Every writer (booking, sync, imports) gets a correct blocked range without having to know of it.
event.listen(Appointment, "before_insert", _set_blocked_range)
event.listen(Appointment, "before_update", _set_blocked_range)


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
