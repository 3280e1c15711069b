"""API shapes for organizations, users, tokens and login."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from clinicsync.tenancy.models import Role


def check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. America/New_York)") from None
    return value


class OrganizationCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    time_zone: str = Field(description="IANA time zone, e.g. Australia/Sydney")
    slug: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{1,78}$")

    _tz = field_validator("time_zone")(check_time_zone)


class OrganizationUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    time_zone: str | None = None
    min_notice_minutes: int | None = Field(default=None, ge=0, le=60 * 24 * 60)
    slot_interval_minutes: int | None = Field(default=None, ge=5, le=24 * 60)
    default_appointment_minutes: int | None = Field(default=None, ge=5, le=24 * 60)

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_time_zone(value)


class OrganizationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str
    time_zone: str
    min_notice_minutes: int
    slot_interval_minutes: int
    default_appointment_minutes: int


class UserCreate(BaseModel):
    email: EmailStr
    full_name: str = Field(default="", max_length=200)
    role: Role
    password: str | None = Field(default=None, min_length=10, max_length=200)


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization_id: uuid.UUID
    email: str
    full_name: str
    role: Role
    is_active: bool


class TokenCreate(BaseModel):
    name: str = Field(default="", max_length=120)
    user_id: uuid.UUID | None = Field(
        default=None, description="Owners and admins may issue tokens for users up to their own role"
    )
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="Defaults per kind of user (30 days, service accounts 365); capped at 90 (service: 730)",
    )


class TokenIssued(BaseModel):
    id: uuid.UUID
    token: str = Field(description="Shown once; only its hash is stored")
    prefix: str
    expires_at: datetime | None
    organization_id: uuid.UUID
    user_id: uuid.UUID
    role: Role


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class LoginRequest(BaseModel):
    email: EmailStr
    password: str = Field(min_length=1, max_length=200)
    organization: str | None = Field(
        default=None, description="Organization slug, needed if the email is in several"
    )
