"""API shapes for the booking domain. Validation errors name the field and the reason."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Annotated, Self

import phonenumbers
from pydantic import AfterValidator, AliasChoices, AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, model_validator

from clinicsync.booking.models import AppointmentStatus, BookingSource
from clinicsync.config import get_settings


def normalize_phone(value: str | None) -> str | None:
    """Any readable phone number -> E.164; unreadable or impossible numbers are refused."""
    if value is None or value.strip() == "":
        return None
    try:
        parsed = phonenumbers.parse(value, get_settings().default_phone_region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


Phone = Annotated[str | None, AfterValidator(normalize_phone)]


class PractitionerCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = Field(default=None, description="Creates the practitioner's login")
    password: str | None = Field(default=None, min_length=10, max_length=200)
    phone: Phone = None
    title: str = Field(default="", max_length=120)
    specialty: str = Field(default="", max_length=120)


class PractitionerUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: Phone = None
    title: str | None = Field(default=None, max_length=120)
    specialty: str | None = Field(default=None, max_length=120)
    is_active: bool | None = None


class PractitionerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    email: str | None
    phone: str | None
    title: str
    specialty: str
    is_active: bool
    user_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class PractitionerRemoved(BaseModel):
    id: uuid.UUID
    cancelled_appointments: int


class AvailabilityInterval(BaseModel):
    day_of_week: int = Field(ge=0, le=6, description="0=Monday .. 6=Sunday")
    start_time: time
    end_time: time
    is_available: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        return self


class WeeklyAvailability(BaseModel):
    """The whole week at once: replacing it is one step, so a half-saved week never exists."""

    intervals: list[AvailabilityInterval] = Field(max_length=200)


class WeeklyAvailabilityRead(WeeklyAvailability):
    practitioner_id: uuid.UUID


class OverrideCreate(BaseModel):
    date: date
    start_time: time | None = None
    end_time: time | None = None
    is_available: bool = Field(default=False, description="false: closed; true: extra hours")
    reason: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.start_time is None) != (self.end_time is None):
            raise ValueError("give both start_time and end_time, or neither for the whole day")
        if self.start_time is not None and self.end_time is not None and self.end_time <= self.start_time:
            raise ValueError("end_time must be after start_time")
        if self.is_available and self.start_time is None:
            raise ValueError("extra hours (is_available=true) need start_time and end_time")
        return self


class OverrideRead(OverrideCreate):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    practitioner_id: uuid.UUID


class PatientCreate(BaseModel):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: EmailStr | None = None
    phone: Phone = None
    date_of_birth: date | None = None

    @model_validator(mode="after")
    def _birth_in_past(self) -> Self:
        if self.date_of_birth is not None and self.date_of_birth > date.today():
            raise ValueError("date_of_birth cannot be in the future")
        return self


class PatientUpdate(BaseModel):
    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, min_length=1, max_length=100)
    email: EmailStr | None = None
    phone: Phone = None
    date_of_birth: date | None = None


class PatientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    date_of_birth: date | None
    created_at: datetime
    updated_at: datetime


class SlotRead(BaseModel):
    practitioner_id: uuid.UUID
    start: datetime
    end: datetime
    local_start: datetime


class SlotSearchResult(BaseModel):
    time_zone: str
    duration_minutes: int
    slots: list[SlotRead]


class AppointmentCreate(BaseModel):
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    start: AwareDatetime = Field(description="With an offset, e.g. 2027-03-10T09:00:00-05:00")
    end: AwareDatetime | None = Field(
        default=None, description="Defaults to start + the clinic's default length"
    )
    status: AppointmentStatus = AppointmentStatus.PENDING
    booking_source: BookingSource = BookingSource.API
    notes: str = Field(default="", max_length=5000)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.status not in (AppointmentStatus.PENDING, AppointmentStatus.CONFIRMED):
            raise ValueError("a new appointment is pending or confirmed")
        return self


class AppointmentUpdate(BaseModel):
    """Reschedule, change status or notes. `version` (or If-Match) guards against lost updates."""

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    practitioner_id: uuid.UUID | None = None
    status: AppointmentStatus | None = None
    notes: str | None = Field(default=None, max_length=5000)
    version: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.status == AppointmentStatus.CANCELLED:
            raise ValueError("use POST /appointments/{id}/cancel to cancel, with a reason")
        return self


class AppointmentCancel(BaseModel):
    reason: str = Field(default="", max_length=500)
    version: int | None = Field(default=None, ge=1)


class AppointmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization_id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    practitioner_name: str
    practitioner_email: str | None
    start: datetime = Field(validation_alias=AliasChoices("starts_at", "start"))
    end: datetime = Field(validation_alias=AliasChoices("ends_at", "end"))
    status: AppointmentStatus
    booking_source: BookingSource
    booking_reference: str
    notes: str
    cancelled_at: datetime | None
    cancellation_reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class AppointmentPage(BaseModel):
    items: list[AppointmentRead]
    total: int
    limit: int
    offset: int
