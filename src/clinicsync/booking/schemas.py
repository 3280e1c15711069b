"""API shapes for the booking domain. Validation errors name the field and the reason."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Annotated

import phonenumbers
from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

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

# Dates far outside any diary overflow date arithmetic (year 9999 + one day) and mean a typing
# mistake; they are refused by name instead.
FIRST_YEAR, LAST_YEAR = 1900, 2200


def in_calendar(value: date | None) -> date | None:
    if value is not None and not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must be between the years {FIRST_YEAR} and {LAST_YEAR}")
    return value


CalendarDate = Annotated[date, AfterValidator(in_calendar)]
CalendarInstant = Annotated[AwareDatetime, AfterValidator(in_calendar)]
CalendarDateTime = Annotated[datetime, AfterValidator(in_calendar)]


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

    @field_validator("end_time")
    @classmethod
    def _after_start(cls, end_time: time, info: ValidationInfo) -> time:
        start_time = info.data.get("start_time")
        if start_time is not None and end_time <= start_time:
            raise ValueError("must be after start_time")
        return end_time


class WeeklyAvailability(BaseModel):
    """The whole week at once: replacing it is one step, so a half-saved week never exists."""

    intervals: list[AvailabilityInterval] = Field(max_length=200)


class WeeklyAvailabilityRead(WeeklyAvailability):
    practitioner_id: uuid.UUID


class OverrideCreate(BaseModel):
    date: CalendarDate
    start_time: time | None = None
    end_time: time | None = None
    is_available: bool = Field(default=False, description="false: closed; true: extra hours")
    reason: str = Field(default="", max_length=200)

    @field_validator("end_time")
    @classmethod
    def _paired_and_ordered(cls, end_time: time | None, info: ValidationInfo) -> time | None:
        start_time = info.data.get("start_time")
        if (start_time is None) != (end_time is None):
            raise ValueError("give both start_time and end_time, or neither for the whole day")
        if start_time is not None and end_time is not None and end_time <= start_time:
            raise ValueError("must be after start_time")
        return end_time

    @field_validator("is_available")
    @classmethod
    def _extra_hours_need_times(cls, is_available: bool, info: ValidationInfo) -> bool:
        if is_available and info.data.get("start_time") is None:
            raise ValueError("extra hours (is_available=true) need start_time and end_time")
        return is_available

    @model_validator(mode="after")
    def _checked_as_a_whole(self) -> OverrideCreate:
        # Field validators skip fields left out; an end_time left out must still be noticed.
        if (self.start_time is None) != (self.end_time is None):
            raise ValueError("end_time: give both start_time and end_time, or neither for the whole day")
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
    date_of_birth: CalendarDate | None = None

    @field_validator("date_of_birth")
    @classmethod
    def _birth_in_past(cls, value: date | None) -> date | None:
        if value is not None and value > date.today():
            raise ValueError("cannot be in the future")
        return value


class PatientUpdate(BaseModel):
    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, min_length=1, max_length=100)
    email: EmailStr | None = None
    phone: Phone = None
    date_of_birth: CalendarDate | None = None


class PatientLookup(BaseModel):
    """A phone or a last name (optionally with the first name), always with the date of birth."""

    phone: Phone = None
    first_name: str | None = Field(default=None, min_length=1, max_length=100)
    last_name: str | None = Field(default=None, min_length=1, max_length=100)
    date_of_birth: CalendarDate

    @model_validator(mode="after")
    def _phone_or_name(self) -> PatientLookup:
        if self.phone is None and self.last_name is None:
            raise ValueError("give phone or last_name together with date_of_birth")
        return self


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


def end_after_start(end: datetime | None, info: ValidationInfo) -> datetime | None:
    start = info.data.get("start")
    if end is not None and start is not None and end <= start:
        raise ValueError("must be after start")
    return end


class AppointmentCreate(BaseModel):
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    start: CalendarInstant = Field(description="With an offset, e.g. 2027-03-10T09:00:00-05:00")
    end: CalendarInstant | None = Field(
        default=None, description="Defaults to start + the clinic's default length"
    )
    status: AppointmentStatus = AppointmentStatus.PENDING
    booking_source: BookingSource = BookingSource.API
    notes: str = Field(default="", max_length=5000)

    _end_after_start = field_validator("end")(end_after_start)

    @field_validator("status")
    @classmethod
    def _new_status(cls, status: AppointmentStatus) -> AppointmentStatus:
        if status not in (AppointmentStatus.PENDING, AppointmentStatus.CONFIRMED):
            raise ValueError("a new appointment is pending or confirmed")
        return status


class PatientProof(BaseModel):
    """What a caller who did not book an appointment gives to act on it: the booking reference
    and the patient's phone or date of birth."""

    reference: str = Field(min_length=3, max_length=16, description="The booking reference, e.g. CS-7KQ2M9XD")
    phone: Phone = None
    date_of_birth: CalendarDate | None = None

    @model_validator(mode="after")
    def _phone_or_birth(self) -> PatientProof:
        if self.phone is None and self.date_of_birth is None:
            raise ValueError("give the patient's phone or date_of_birth with the reference")
        return self


class AppointmentUpdate(BaseModel):
    """Reschedule, change status or notes. `version` (or If-Match) guards against lost updates."""

    start: CalendarInstant | None = None
    end: CalendarInstant | None = None
    practitioner_id: uuid.UUID | None = None
    status: AppointmentStatus | None = None
    notes: str | None = Field(default=None, max_length=5000)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    proof: PatientProof | None = Field(
        default=None, description="For a service account changing an appointment it did not book"
    )

    _end_after_start = field_validator("end")(end_after_start)

    @field_validator("status")
    @classmethod
    def _not_cancel(cls, status: AppointmentStatus | None) -> AppointmentStatus | None:
        if status == AppointmentStatus.CANCELLED:
            raise ValueError("use POST /appointments/{id}/cancel to cancel, with a reason")
        return status


class AppointmentCancel(BaseModel):
    reason: str = Field(default="", max_length=500)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    proof: PatientProof | None = Field(
        default=None, description="For a service account cancelling an appointment it did not book"
    )


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
