"""Tool arguments as a model sees them (few, plain, forgiving) and the agent admin API shapes.

The argument models double as the JSON Schema of each tool, for MCP, for the function
definitions any chatbot can load, and for what Vapi and Retell are configured with.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PHONE_HELP = (
    "The patient's phone number as said or typed, e.g. 'six one nine, five five five, one two three four'"
)
DOB_HELP = "Date of birth, e.g. 1984-07-21 or 21 July 1984"
PROOF_HELP = "Give the patient's phone number or date of birth to prove it is their booking"


class ToolArgs(BaseModel):
    # Models sometimes add arguments of their own; ignoring them is kinder than refusing the call.
    model_config = ConfigDict(extra="ignore")


class ListPractitionersArgs(ToolArgs):
    speciality: str | None = Field(
        default=None, description="Only practitioners whose role or speciality matches"
    )


class FindSlotsArgs(ToolArgs):
    practitioner: str = Field(default="any", description="A practitioner's name, or 'any'")
    date: str | None = Field(
        default=None, description="Local date to look on: 2026-03-03, 'today', 'tomorrow' or a weekday"
    )
    date_to: str | None = Field(default=None, description="Last local date of a range (optional)")
    part_of_day: Literal["any", "morning", "afternoon", "evening"] = "any"
    duration_minutes: int | None = Field(default=None, ge=5, le=480, description="Length of the appointment")
    appointment_type: str | None = Field(
        default=None, description="The kind of visit, e.g. 'Vaccination' or 'Check-up' (sets its length)"
    )


class FindPatientArgs(ToolArgs):
    phone: str | None = Field(default=None, description=PHONE_HELP)
    name: str | None = Field(default=None, description="The patient's full name")
    date_of_birth: str | None = Field(default=None, description=DOB_HELP)


class RegisterPatientArgs(ToolArgs):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    phone: str = Field(description=PHONE_HELP)
    date_of_birth: str | None = Field(default=None, description=DOB_HELP)
    email: str | None = None


class BookArgs(ToolArgs):
    patient_id: str = Field(description="From find_patient or register_patient")
    start: str = Field(description="Local start as offered by find_slots, e.g. 2026-03-03 14:30")
    practitioner: str = Field(default="any", description="A practitioner's name, or 'any'")
    duration_minutes: int | None = Field(default=None, ge=5, le=480)
    appointment_type: str | None = Field(
        default=None, description="The kind of visit, e.g. 'Vaccination' or 'Check-up' (sets its length)"
    )
    reason: str = Field(default="", max_length=500, description="Why the patient is coming, in a few words")


class ProofArgs(ToolArgs):
    booking_reference: str = Field(
        description="The reference given when the booking was made, e.g. CS-7K2M9QXA"
    )
    phone: str | None = Field(default=None, description=PROOF_HELP)
    date_of_birth: str | None = Field(default=None, description=PROOF_HELP)


class LookupBookingArgs(ProofArgs):
    pass


class RescheduleArgs(ProofArgs):
    new_start: str = Field(description="New local start as offered by find_slots, e.g. 2026-03-04 09:00")
    practitioner: str | None = Field(default=None, description="Another practitioner's name, if changing")


class CancelArgs(ProofArgs):
    reason: str = Field(default="", max_length=500)


class ToolAnswer(BaseModel):
    """What every tool returns: one line to say, and the facts behind it for programs."""

    ok: bool
    text: str
    data: dict[str, Any] = Field(default_factory=dict)


class FunctionDefinition(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class ToolCatalogue(BaseModel):
    """Both shapes at once: OpenAI's {type, function} list and Anthropic's {name, input_schema} list."""

    openai: list[dict[str, Any]]
    anthropic: list[dict[str, Any]]
    functions: list[FunctionDefinition]


class AgentSettingsRead(BaseModel):
    booking_enabled: bool
    practitioner_ids: list[uuid.UUID] | None
    appointment_types: list[str] | None
    phone_region: str | None


class AgentSettingsUpdate(BaseModel):
    booking_enabled: bool | None = None
    practitioner_ids: list[uuid.UUID] | None = Field(
        default=None, description="Only these practitioners are offered to agents; null for all"
    )
    appointment_types: list[str] | None = Field(
        default=None,
        description="Only these appointment types (ids or names) may be booked by agents; null for all",
    )
    phone_region: str | None = Field(default=None, min_length=2, max_length=2, pattern="^[A-Za-z]{2}$")


class ChannelCreate(BaseModel):
    platform: Literal["vapi", "retell"]
    name: str = Field(default="", max_length=120)
    signing_secret: str | None = Field(
        default=None, min_length=8, max_length=500, description="Retell: the API key it signs requests with"
    )
    booking_source: Literal["ai_voice", "chatbot"] = "ai_voice"


class ChannelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    platform: str
    name: str
    token_prefix: str
    booking_source: str
    is_active: bool
    created_at: datetime


class ChannelIssued(ChannelRead):
    token: str = Field(description="Shown once: Vapi sends it as X-Vapi-Secret or a Bearer token")


class AgentBookingRead(BaseModel):
    appointment_id: uuid.UUID
    booking_reference: str
    action: str
    surface: str
    booking_source: str
    call_id: str | None
    start: datetime
    status: str
    practitioner_name: str
    created_at: datetime
