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


def normalize_phone(value: str | None, region: str | None = None) -> str | None:
    """Any readable phone number -> E.164; unreadable or impossible numbers are refused.

    ``region`` is the clinic's country, used for numbers typed without a + (0412 345 678 in
    an Australian clinic); the services pass it once they know the caller's organization.
    """
    if value is None or value.strip() == "":
        return None
    try:
        parsed = phonenumbers.parse(value, region or get_settings().default_phone_region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _readable_phone(value: str | None) -> str | None:
    """Parse-time check: international numbers are normalized here, national ones by the service
    (which knows the clinic's country); anything that is no phone number at all is refused now."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if value.startswith("+"):
        return normalize_phone(value)
    if not any(char.isdigit() for char in value):
        raise ValueError("not a phone number")
    return value


Phone = Annotated[str | None, Field(default=None, max_length=40), AfterValidator(_readable_phone)]

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
    date_of_birth: CalendarDate | None = Field(
        default=None, description="Not after today in the clinic's zone"
    )
    allow_duplicate: bool = Field(
        default=False,
        description="Create even when a patient with the same name, email or phone and date of birth exists",
    )


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
    start: datetime = Field(description="In the clinic's zone, with its UTC offset")
    end: datetime
    label: str = Field(
        description="Local date, time and zone abbreviation with offset, e.g. 01:30 EST (-05:00)"
    )
    override: bool = Field(
        default=False, description="Shown to an admin who asked to override; booking it needs override=true"
    )


class SlotSearchResult(BaseModel):
    time_zone: str
    duration_minutes: int
    appointment_type_id: uuid.UUID | None = None
    slots: list[SlotRead]
    next_cursor: str | None = Field(default=None, description="Pass as cursor for the next page")


class AppointmentTypeCreate(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    duration_minutes: int = Field(ge=5, le=12 * 60)
    buffer_before_minutes: int = Field(default=0, ge=0, le=240)
    buffer_after_minutes: int = Field(default=0, ge=0, le=240)
    colour: str = Field(default="#4a90d9", pattern=r"^#[0-9a-fA-F]{6}$", description="#rrggbb")
    bookable_online: bool = Field(default=True, description="Chatbots and voice agents may book it")
    practitioner_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=500, description="Who offers it; omit or null for every practitioner"
    )


class AppointmentTypeUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    duration_minutes: int | None = Field(default=None, ge=5, le=12 * 60)
    buffer_before_minutes: int | None = Field(default=None, ge=0, le=240)
    buffer_after_minutes: int | None = Field(default=None, ge=0, le=240)
    colour: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")
    bookable_online: bool | None = None
    practitioner_ids: list[uuid.UUID] | None = Field(default=None, max_length=500)
    is_active: bool | None = None


class AppointmentTypeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    colour: str
    bookable_online: bool
    all_practitioners: bool
    practitioner_ids: list[uuid.UUID]
    is_active: bool


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
    appointment_type_id: uuid.UUID | None = Field(
        default=None, description="Sets the length and buffers; the practitioner must offer it"
    )
    status: AppointmentStatus = AppointmentStatus.PENDING
    booking_source: BookingSource = BookingSource.API
    notes: str = Field(default="", max_length=5000)
    override: bool = Field(
        default=False,
        description="Owners and admins only: book inside notice, past the horizon or off the slot grid",
    )

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
    override: bool = Field(
        default=False,
        description="Owners and admins only: move inside notice, past the horizon or off the grid",
    )
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
    appointment_type_id: uuid.UUID | None = None
    buffer_before_minutes: int = 0
    buffer_after_minutes: int = 0
    status: AppointmentStatus
    booking_source: BookingSource
    booking_reference: str
    notes: str
    cancelled_at: datetime | None
    cancellation_reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime

    @field_validator("buffer_before_minutes", "buffer_after_minutes", mode="before")
    @classmethod
    def _no_buffer(cls, value: int | None) -> int:
        # An appointment not yet flushed (a PMS record shown in our shape) has no defaults yet.
        return 0 if value is None else value


class AppointmentPage(BaseModel):
    items: list[AppointmentRead]
    total: int | None = Field(description="Matching appointments; null when paging by cursor")
    limit: int
    offset: int
    next_cursor: str | None = Field(default=None, description="Pass as cursor for the next page")
