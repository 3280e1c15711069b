"""Dentrix Ascend ("API Exchange") simulator.

What it reproduces (the contract is secondary-sourced; see docs/sandbox.md for what is verified):

- an Apigee OAuth2 client-credentials token endpoint at
  ``POST /oauth/client_credential/accesstoken?grant_type=client_credentials`` (form body
  ``client_id``/``client_secret``, or HTTP Basic). Tokens live ``token_lifetime_seconds`` on the
  sandbox clock; ``POST /_sandbox/tokens/expire`` revokes every token issued so far;
- the gateway at ``/ascend-gateway/api/v1`` needs both ``Authorization: Bearer <token>`` and
  ``Organization-ID``; gateway failures (bad or expired token, throttling) use Apigee's
  ``{"fault": {"faultstring", "detail": {"errorcode"}}}`` body, API failures the Ascend envelope
  ``{"data", "warnings", "errors", "meta"}``;
- ``/patients``, ``/appointments``, ``/providers``, ``/operatories`` lists with the comma-joined
  ``filter`` grammar (``==  !=  >=  <=  >  <  ~=  ->[a,b]``, dotted fields such as ``patient.id``),
  ``page``/``pageSize`` paging with ``meta.pagination.total`` and ``responseFields``;
- appointment create, update (``PUT``/``PATCH`` merge), cancel (``status`` set to the cancelled
  status) and delete; patient create with a possible-duplicate warning;
- per-endpoint request limits and a monthly call quota answered with 429 and ``Retry-After``; a
  vendor not yet enabled for the organization gets 403 on every call.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp

from clinicsync.sandbox.core import ActionHandler, SandboxError, SandboxServer
from clinicsync.sandbox.generator import GeneratedClinic
from clinicsync.sandbox.state import StateCodec

TOKEN_PATH = "/oauth/client_credential/accesstoken"
DEFAULT_CLIENT_ID = "sandbox-ascend-client"
DEFAULT_CLIENT_SECRET = "sandbox-ascend-secret"
DEFAULT_ORGANIZATION_ID = "70010001"

# Apigee gateway error codes (the gateway in front of the Ascend API answers these itself).
INVALID_TOKEN = "oauth.v2.InvalidAccessToken"
EXPIRED_TOKEN = "keymanagement.service.access_token_expired"
SPIKE_ARREST = "policies.ratelimit.SpikeArrestViolation"
QUOTA_VIOLATION = "policies.ratelimit.QuotaViolation"
GATEWAY_CODES = frozenset({INVALID_TOKEN, EXPIRED_TOKEN, SPIKE_ARREST, QUOTA_VIOLATION})

# Id ranges per kind so an id never names two kinds of record (Ascend ids are large integers).
LOCATION_ID_BASE = 100
PROVIDER_ID_BASE = 2_000
OPERATORY_ID_BASE = 3_000
PATIENT_ID_BASE = 1_000_000
APPOINTMENT_ID_BASE = 50_000_000

GENERATED_STATUS = {
    "booked": "CONFIRMED",
    "fulfilled": "COMPLETE",
    "cancelled": "CANCELLED",
    "noshow": "BROKEN",
}


# ---------------------------------------------------------------------------------------- settings


class AscendSettings(BaseModel):
    """Live-tunable account and gateway behaviour (``PUT /_sandbox/settings``).

    Fields marked unverified in docs/sandbox.md are settings so a test can try the other reading.
    """

    model_config = ConfigDict(extra="forbid")

    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    organization_id: str = DEFAULT_ORGANIZATION_ID
    vendor_enabled: bool = Field(True, description="False: every call answers 403, as for a new vendor.")
    token_lifetime_seconds: int = Field(3600, ge=1, le=86_400)
    expires_in_as_string: bool = Field(True, description="Apigee sends expires_in as a JSON string.")
    default_page_size: int = Field(100, ge=1, le=10_000)
    max_page_size: int = Field(500, ge=1, le=10_000)
    first_page: int = Field(1, ge=0, le=1, description="Number of the first page (1 or 0).")
    rate_limit_per_window: int = Field(0, ge=0, description="Calls per endpoint per window; 0 = no limit.")
    rate_limit_window_seconds: int = Field(60, ge=1, le=3600)
    endpoint_rate_limits: dict[str, int] = Field(
        default_factory=dict, description="Per-endpoint overrides, e.g. {'appointments': 5}."
    )
    monthly_call_quota: int = Field(30_000, ge=0, description="Calls per organization a month; 0 = no quota.")
    appointment_statuses: list[str] = Field(
        default_factory=lambda: [
            "UNCONFIRMED",
            "CONFIRMED",
            "LEFT_MESSAGE",
            "CHECKED_IN",
            "IN_CHAIR",
            "COMPLETE",
            "BROKEN",
            "CANCELLED",
        ],
        min_length=1,
    )
    cancelled_status: str = "CANCELLED"
    list_cancelled: bool = Field(True, description="Cancelled appointments stay in default lists.")
    booking_types: list[str] = Field(
        default_factory=lambda: ["TREATMENT", "RECARE", "NEW_PATIENT", "EXISTING_PATIENT"], min_length=1
    )
    reject_operatory_overlap: bool = Field(
        False, description="True: an overlapping booking is refused with 409 instead of a warning."
    )
    allow_delete: bool = True
    time_grid_minutes: int = Field(5, ge=0, le=60, description="Start and duration granularity; 0 = any.")


# ---------------------------------------------------------------------------------------- records


@dataclass(slots=True)
class Location:
    id: int
    name: str
    timezone: str
    created: datetime
    lastModified: datetime  # wire names, so rows filter and render without mapping


@dataclass(slots=True)
class Provider:
    id: int
    firstName: str
    lastName: str
    shortName: str
    providerType: str
    color: str
    active: bool
    location_id: int
    created: datetime
    lastModified: datetime


@dataclass(slots=True)
class Operatory:
    id: int
    name: str
    shortName: str
    hygiene: bool
    active: bool
    location_id: int
    created: datetime
    lastModified: datetime


@dataclass(slots=True)
class Patient:
    id: int
    firstName: str
    lastName: str
    middleInitial: str
    preferredName: str
    dateOfBirth: date | None
    gender: str
    emailAddress: str
    phones: list[dict[str, str]]
    address: dict[str, str]
    status: str
    primary_provider_id: int | None
    location_id: int
    created: datetime
    lastModified: datetime


@dataclass(slots=True)
class Appointment:
    id: int
    start: datetime
    duration: int
    title: str
    status: str
    bookingType: str
    patient_id: int
    provider_id: int
    operatory_id: int
    location_id: int
    other: str
    created: datetime
    lastModified: datetime
    deleted: bool = False

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.duration)


Record = Location | Provider | Operatory | Patient | Appointment


def format_instant(instant: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``, to the second."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(value: Any) -> datetime | None:
    """An ISO-8601 instant; a value without an offset is read as UTC (as the gateway does)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def ref(record_id: int | None, kind: str) -> dict[str, Any] | None:
    return None if record_id is None else {"id": record_id, "type": kind}


# ---------------------------------------------------------------------------------------- filters


class FieldKind(Enum):
    INTEGER = "integer"
    STRING = "string"
    INSTANT = "instant"
    DATE = "date"
    BOOLEAN = "boolean"


@dataclass(frozen=True, slots=True)
class FilterField:
    kind: FieldKind
    getter: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class FilterClause:
    field_name: str
    operator: str
    value: Any  # a list for ``->``


class FilterError(ValueError):
    """A filter the API refuses; the message names the clause."""


_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(==|!=|>=|<=|~=|->|>|<)\s*(.*?)\s*$", re.DOTALL)
ORDERED_OPERATORS = frozenset({">=", "<=", ">", "<"})


def split_filter(expression: str) -> list[str]:
    """Split on the commas that separate clauses, not those inside an ``->[...]`` list."""
    clauses: list[str] = []
    depth = 0
    current: list[str] = []
    for char in expression:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise FilterError(f"unbalanced ']' in filter '{expression}'")
        if char == "," and depth == 0:
            clauses.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise FilterError(f"unbalanced '[' in filter '{expression}'")
    clauses.append("".join(current))
    return [clause for clause in clauses if clause.strip()]


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _coerce(kind: FieldKind, raw: str, clause: str) -> Any:
    text = _unquote(raw)
    if kind is FieldKind.INTEGER:
        try:
            return int(text)
        except ValueError:
            raise FilterError(f"'{text}' is not an integer in '{clause}'")
    if kind is FieldKind.INSTANT:
        instant = parse_instant(text)
        if instant is None:
            raise FilterError(f"'{text}' is not an ISO-8601 date-time in '{clause}'")
        return instant
    if kind is FieldKind.DATE:
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            raise FilterError(f"'{text}' is not a date (YYYY-MM-DD) in '{clause}'")
    if kind is FieldKind.BOOLEAN:
        if text.lower() not in ("true", "false"):
            raise FilterError(f"'{text}' is not true or false in '{clause}'")
        return text.lower() == "true"
    return text


def parse_filter(expression: str, known: Mapping[str, FilterField]) -> list[FilterClause]:
    """Parse ``field<op>value[,...]`` against the resource's filterable fields."""
    parsed: list[FilterClause] = []
    for clause in split_filter(expression):
        match = _CLAUSE.match(clause)
        if match is None:
            raise FilterError(f"cannot parse filter clause '{clause.strip()}'")
        name, operator, raw = match.groups()
        spec = known.get(name)
        if spec is None:
            raise FilterError(f"unknown filter field '{name}'; filterable: {', '.join(sorted(known))}")
        if operator == "~=" and spec.kind is not FieldKind.STRING:
            raise FilterError(f"'~=' needs a text field, '{name}' is {spec.kind.value}")
        if operator in ORDERED_OPERATORS and spec.kind is FieldKind.BOOLEAN:
            raise FilterError(f"'{operator}' cannot compare the boolean field '{name}'")
        if operator == "->":
            raw = raw.strip()
            if not (raw.startswith("[") and raw.endswith("]")):
                raise FilterError(f"'->' needs a list like [1,2] in '{clause.strip()}'")
            items = [item for item in raw[1:-1].split(",") if item.strip()]
            value: Any = [_coerce(spec.kind, item, clause.strip()) for item in items]
        else:
            value = _coerce(spec.kind, raw, clause.strip())
        parsed.append(FilterClause(name, operator, value))
    return parsed


def _compare(operator: str, left: Any, right: Any, kind: FieldKind) -> bool:
    if operator == "->":
        if kind is FieldKind.STRING:
            return left is not None and str(left).lower() in {str(item).lower() for item in right}
        return left in right
    if operator == "~=":
        return left is not None and str(right).lower() in str(left).lower()
    if kind is FieldKind.STRING and left is not None:
        left, right = str(left).lower(), str(right).lower()
    if operator == "==":
        return bool(left == right)
    if operator == "!=":
        return bool(left != right)
    if left is None:
        return False
    if operator == ">=":
        return bool(left >= right)
    if operator == "<=":
        return bool(left <= right)
    if operator == ">":
        return bool(left > right)
    return bool(left < right)


def matches(record: Any, clauses: list[FilterClause], known: Mapping[str, FilterField]) -> bool:
    for clause in clauses:
        spec = known[clause.field_name]
        if not _compare(clause.operator, spec.getter(record), clause.value, spec.kind):
            return False
    return True


def _f(kind: FieldKind, getter: Callable[[Any], Any]) -> FilterField:
    return FilterField(kind, getter)


INT, STR, TIME = FieldKind.INTEGER, FieldKind.STRING, FieldKind.INSTANT
DAY, BOOL = FieldKind.DATE, FieldKind.BOOLEAN
COMMON_FIELDS: dict[str, FilterField] = {
    "id": _f(INT, lambda r: r.id),
    "lastModified": _f(TIME, lambda r: r.lastModified),
    "created": _f(TIME, lambda r: r.created),
}
APPOINTMENT_FIELDS: dict[str, FilterField] = COMMON_FIELDS | {
    "start": _f(TIME, lambda r: r.start),
    "duration": _f(INT, lambda r: r.duration),
    "title": _f(STR, lambda r: r.title),
    "status": _f(STR, lambda r: r.status),
    "bookingType": _f(STR, lambda r: r.bookingType),
    "patient.id": _f(INT, lambda r: r.patient_id),
    "provider.id": _f(INT, lambda r: r.provider_id),
    "operatory.id": _f(INT, lambda r: r.operatory_id),
    "location.id": _f(INT, lambda r: r.location_id),
}
PATIENT_FIELDS: dict[str, FilterField] = COMMON_FIELDS | {
    "firstName": _f(STR, lambda r: r.firstName),
    "lastName": _f(STR, lambda r: r.lastName),
    "preferredName": _f(STR, lambda r: r.preferredName),
    "dateOfBirth": _f(DAY, lambda r: r.dateOfBirth),
    "gender": _f(STR, lambda r: r.gender),
    "emailAddress": _f(STR, lambda r: r.emailAddress),
    "status": _f(STR, lambda r: r.status),
    "primaryProvider.id": _f(INT, lambda r: r.primary_provider_id),
    "location.id": _f(INT, lambda r: r.location_id),
}
PROVIDER_FIELDS: dict[str, FilterField] = COMMON_FIELDS | {
    "firstName": _f(STR, lambda r: r.firstName),
    "lastName": _f(STR, lambda r: r.lastName),
    "shortName": _f(STR, lambda r: r.shortName),
    "providerType": _f(STR, lambda r: r.providerType),
    "active": _f(BOOL, lambda r: r.active),
    "location.id": _f(INT, lambda r: r.location_id),
}
OPERATORY_FIELDS: dict[str, FilterField] = COMMON_FIELDS | {
    "name": _f(STR, lambda r: r.name),
    "shortName": _f(STR, lambda r: r.shortName),
    "hygiene": _f(BOOL, lambda r: r.hygiene),
    "active": _f(BOOL, lambda r: r.active),
    "location.id": _f(INT, lambda r: r.location_id),
}


# ---------------------------------------------------------------------------------------- wire shapes


def appointment_json(row: Appointment) -> dict[str, Any]:
    return {
        "id": row.id,
        "start": format_instant(row.start),
        "duration": row.duration,
        "title": row.title,
        "status": row.status,
        "bookingType": row.bookingType,
        "patient": ref(row.patient_id, "PatientV1"),
        "provider": ref(row.provider_id, "ProviderV1"),
        "operatory": ref(row.operatory_id, "OperatoryV1"),
        "location": ref(row.location_id, "LocationV1"),
        "other": row.other,
        "created": format_instant(row.created),
        "lastModified": format_instant(row.lastModified),
    }


def patient_json(row: Patient) -> dict[str, Any]:
    return {
        "id": row.id,
        "firstName": row.firstName,
        "lastName": row.lastName,
        "middleInitial": row.middleInitial,
        "preferredName": row.preferredName,
        "dateOfBirth": row.dateOfBirth.isoformat() if row.dateOfBirth else None,
        "gender": row.gender,
        "emailAddress": row.emailAddress,
        "phones": [dict(phone) for phone in row.phones],
        "address": dict(row.address),
        "status": row.status,
        "primaryProvider": ref(row.primary_provider_id, "ProviderV1"),
        "location": ref(row.location_id, "LocationV1"),
        "created": format_instant(row.created),
        "lastModified": format_instant(row.lastModified),
    }


def provider_json(row: Provider) -> dict[str, Any]:
    return {
        "id": row.id,
        "firstName": row.firstName,
        "lastName": row.lastName,
        "shortName": row.shortName,
        "providerType": row.providerType,
        "color": row.color,
        "active": row.active,
        "location": ref(row.location_id, "LocationV1"),
        "created": format_instant(row.created),
        "lastModified": format_instant(row.lastModified),
    }


def operatory_json(row: Operatory) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "shortName": row.shortName,
        "hygiene": row.hygiene,
        "active": row.active,
        "location": ref(row.location_id, "LocationV1"),
        "created": format_instant(row.created),
        "lastModified": format_instant(row.lastModified),
    }


@dataclass(frozen=True, slots=True)
class Resource:
    """One listable resource: its filter fields, wire shape and the fields sent without responseFields."""

    name: str
    filters: Mapping[str, FilterField]
    render: Callable[[Any], dict[str, Any]]
    default_fields: frozenset[str]
    all_fields: frozenset[str]
    sort_key: Callable[[Any], Any]


APPOINTMENT_WIRE_FIELDS = frozenset(
    {"id", "start", "duration", "title", "status", "bookingType", "patient", "provider", "operatory"}
    | {"location", "other", "created", "lastModified"}
)
PATIENT_WIRE_FIELDS = frozenset(
    {"id", "firstName", "lastName", "middleInitial", "preferredName", "dateOfBirth", "gender", "emailAddress"}
    | {"phones", "address", "status", "primaryProvider", "location", "created", "lastModified"}
)
PROVIDER_WIRE_FIELDS = frozenset(
    {"id", "firstName", "lastName", "shortName", "providerType", "color", "active", "location", "created"}
    | {"lastModified"}
)
OPERATORY_WIRE_FIELDS = frozenset(
    {"id", "name", "shortName", "hygiene", "active", "location", "created", "lastModified"}
)

# Without responseFields the API sends a core subset; notes and contact details need responseFields=ALL.
RESOURCES: dict[str, Resource] = {
    "appointments": Resource(
        "appointments",
        APPOINTMENT_FIELDS,
        appointment_json,
        APPOINTMENT_WIRE_FIELDS - {"location", "other", "created"},
        APPOINTMENT_WIRE_FIELDS,
        lambda row: (row.start, row.id),
    ),
    "patients": Resource(
        "patients",
        PATIENT_FIELDS,
        patient_json,
        frozenset({"id", "firstName", "lastName", "preferredName", "dateOfBirth", "gender", "status"})
        | {"lastModified"},
        PATIENT_WIRE_FIELDS,
        lambda row: row.id,
    ),
    "providers": Resource(
        "providers",
        PROVIDER_FIELDS,
        provider_json,
        PROVIDER_WIRE_FIELDS - {"color", "created"},
        PROVIDER_WIRE_FIELDS,
        lambda row: row.id,
    ),
    "operatories": Resource(
        "operatories",
        OPERATORY_FIELDS,
        operatory_json,
        OPERATORY_WIRE_FIELDS - {"created"},
        OPERATORY_WIRE_FIELDS,
        lambda row: row.id,
    ),
}


def select_fields(document: dict[str, Any], wanted: frozenset[str] | None) -> dict[str, Any]:
    if wanted is None:
        return document
    return {key: value for key, value in document.items() if key in wanted or key == "id"}


def envelope(
    data: Any,
    *,
    warnings: list[dict[str, Any]] | None = None,
    errors: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"data": data, "warnings": warnings or [], "errors": errors or [], "meta": meta or {}}


class AscendApiError(Exception):
    """An API-level refusal with one or more envelope errors (field-level validation)."""

    def __init__(self, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None):
        super().__init__("; ".join(str(error.get("message")) for error in errors))
        self.status = status
        self.errors = errors
        self.headers = headers or {}


def api_error(status: int, code: str, message: str, **extra: Any) -> AscendApiError:
    return AscendApiError(status, [{"code": code, "message": message, **extra}])


# ---------------------------------------------------------------------------------------- store


@dataclass
class IssuedToken:
    client_id: str
    issued_at: datetime
    expires_at: datetime
    epoch: int


@dataclass
class AscendStore:
    """The organization's records plus gateway bookkeeping (tokens, rate windows, monthly calls)."""

    locations: dict[int, Location] = field(default_factory=dict)
    providers: dict[int, Provider] = field(default_factory=dict)
    operatories: dict[int, Operatory] = field(default_factory=dict)
    patients: dict[int, Patient] = field(default_factory=dict)
    appointments: dict[int, Appointment] = field(default_factory=dict)
    next_patient_id: int = PATIENT_ID_BASE + 1
    next_appointment_id: int = APPOINTMENT_ID_BASE + 1
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    rate_windows: dict[tuple[str, int], int] = field(default_factory=dict)
    monthly_calls: dict[str, int] = field(default_factory=dict)
    # Sorted, filtered lists by query, valid while ``revision`` is unchanged: every page of a full read
    # asks the same question, and re-filtering and re-sorting 50,000 rows per page dominated it.
    revision: int = 0
    selections: dict[tuple[Any, ...], tuple[int, list[Any]]] = field(default_factory=dict)

    def changed(self) -> None:
        """Call after any change to a patient or appointment: cached list selections become stale."""
        self.revision += 1
        self.selections.clear()

    def selection(self, key: tuple[Any, ...], compute: Callable[[], list[Any]]) -> list[Any]:
        cached = self.selections.get(key)
        if cached is not None and cached[0] == self.revision:
            return cached[1]
        rows = compute()
        if len(self.selections) >= 16:
            self.selections.clear()
        self.selections[key] = (self.revision, rows)
        return rows

    def table(self, resource: str) -> dict[int, Any]:
        tables: dict[str, dict[int, Any]] = {
            "appointments": self.appointments,
            "patients": self.patients,
            "providers": self.providers,
            "operatories": self.operatories,
        }
        return tables[resource]


TABLE_TYPES: dict[str, type[Any]] = {
    "locations": Location,
    "providers": Provider,
    "operatories": Operatory,
    "patients": Patient,
    "appointments": Appointment,
}


STATE = StateCodec()


# ---------------------------------------------------------------------------------------- server


class DentrixAscendSandbox(SandboxServer):
    """The Dentrix Ascend API Exchange simulator; the module docstring lists what it reproduces."""

    name: ClassVar[str] = "dentrix_ascend"
    title: ClassVar[str] = "Dentrix Ascend API"
    api_prefix: ClassVar[str] = "/ascend-gateway/api/v1"
    Settings: ClassVar[type[BaseModel]] = AscendSettings

    def __init__(self, **options: Any) -> None:
        self.store = AscendStore()
        super().__init__(**options)

    @property
    def account(self) -> AscendSettings:
        assert isinstance(self.settings, AscendSettings)
        return self.settings

    # ------------------------------------------------------------------ framework hooks

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        store = AscendStore()
        created = datetime.combine(clinic.today - timedelta(days=900), datetime.min.time(), tzinfo=UTC)
        location = Location(LOCATION_ID_BASE + 1, "Main Office", clinic.timezone, created, created)
        store.locations[location.id] = location
        for practitioner in clinic.practitioners:
            provider = Provider(
                id=PROVIDER_ID_BASE + practitioner.id,
                firstName=practitioner.first_name,
                lastName=practitioner.last_name,
                shortName=practitioner.abbreviation,
                providerType="HYGIENIST" if practitioner.is_hygienist else "DENTIST",
                color=practitioner.color,
                active=True,
                location_id=location.id,
                created=created,
                lastModified=created,
            )
            store.providers[provider.id] = provider
        for room in clinic.rooms:
            operatory = Operatory(
                id=OPERATORY_ID_BASE + room.id,
                name=room.name,
                shortName=room.abbreviation,
                hygiene=room.is_hygiene,
                active=True,
                location_id=location.id,
                created=created,
                lastModified=created,
            )
            store.operatories[operatory.id] = operatory
        for source in clinic.patients:
            phones = [{"number": source.mobile_phone, "type": "MOBILE"}]
            if source.home_phone:
                phones.append({"number": source.home_phone, "type": "HOME"})
            patient = Patient(
                id=PATIENT_ID_BASE + source.id,
                firstName=source.first_name,
                lastName=source.last_name,
                middleInitial=source.middle_initial,
                preferredName=source.preferred_name,
                dateOfBirth=source.birth_date,
                gender=source.gender.upper(),
                emailAddress=source.email,
                phones=phones,
                address={
                    "street1": source.address,
                    "city": source.city,
                    "state": source.state,
                    "postalCode": source.zip_code,
                },
                status="ACTIVE",
                primary_provider_id=PROVIDER_ID_BASE + source.primary_practitioner_id,
                location_id=location.id,
                created=source.created_at,
                lastModified=source.created_at,
            )
            store.patients[patient.id] = patient
        types = {kind.id: kind for kind in clinic.appointment_types}
        hygiene_type_ids = {kind.id for kind in clinic.appointment_types if kind.for_hygiene}
        for source_appointment in clinic.appointments:
            status = GENERATED_STATUS[source_appointment.status]
            if status == "CONFIRMED" and not source_appointment.confirmed:
                status = "UNCONFIRMED"
            if source_appointment.is_new_patient:
                booking_type = "NEW_PATIENT"
            elif source_appointment.appointment_type_id in hygiene_type_ids:
                booking_type = "RECARE"
            else:
                booking_type = "TREATMENT"
            appointment = Appointment(
                id=APPOINTMENT_ID_BASE + source_appointment.id,
                start=source_appointment.start,
                duration=source_appointment.duration_minutes,
                title=types[source_appointment.appointment_type_id].name,
                status=status,
                bookingType=booking_type,
                patient_id=PATIENT_ID_BASE + source_appointment.patient_id,
                provider_id=PROVIDER_ID_BASE + source_appointment.practitioner_id,
                operatory_id=OPERATORY_ID_BASE + source_appointment.room_id,
                location_id=location.id,
                other=source_appointment.note,
                created=source_appointment.created_at,
                lastModified=source_appointment.updated_at,
            )
            store.appointments[appointment.id] = appointment
        store.next_patient_id = PATIENT_ID_BASE + len(clinic.patients) + 1
        store.next_appointment_id = APPOINTMENT_ID_BASE + len(clinic.appointments) + 1
        self.store = store

    def dump_state(self) -> dict[str, Any]:
        store = self.store
        state: dict[str, Any] = STATE.dump_tables(store, TABLE_TYPES)
        state["next_patient_id"] = store.next_patient_id
        state["next_appointment_id"] = store.next_appointment_id
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        store = AscendStore()
        STATE.load_tables(store, TABLE_TYPES, state)
        store.next_patient_id = int(state.get("next_patient_id", PATIENT_ID_BASE + len(store.patients) + 1))
        store.next_appointment_id = int(
            state.get("next_appointment_id", APPOINTMENT_ID_BASE + len(store.appointments) + 1)
        )
        self.store = store

    def state_summary(self) -> dict[str, Any]:
        appointments = self.store.appointments.values()
        return {
            "organization_id": self.account.organization_id,
            "locations": len(self.store.locations),
            "providers": len(self.store.providers),
            "operatories": len(self.store.operatories),
            "patients": len(self.store.patients),
            "appointments": sum(1 for row in appointments if not row.deleted),
            "cancelled": sum(
                1 for row in appointments if row.status == self.account.cancelled_status and not row.deleted
            ),
            "deleted": sum(1 for row in appointments if row.deleted),
            "live_tokens": sum(1 for token in self.store.tokens.values() if self._token_live(token)),
        }

    def render_error(self, status: int, message: str, *, reason: str | None = None) -> Response:
        """Gateway failures in Apigee's fault shape; everything else in the Ascend envelope."""
        if reason in GATEWAY_CODES or status == 429:
            errorcode = reason if reason in GATEWAY_CODES else SPIKE_ARREST
            return JSONResponse(
                {"fault": {"faultstring": message, "detail": {"errorcode": errorcode}}}, status
            )
        code = (reason or "error").upper()
        return JSONResponse(envelope(None, errors=[{"code": code, "message": message}]), status)

    def rate_limit_headers(self, retry_after: int) -> dict[str, str]:
        return {"Retry-After": str(retry_after)}

    def identify(self, headers: Headers) -> str | None:
        organization = headers.get("organization-id")
        authorization = headers.get("authorization", "")
        token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
        if organization is None and not token:
            return None
        return f"org={organization or '-'} token={token[:6] + '...' if token else '-'}"

    def credentials(self) -> dict[str, str]:
        return {
            "token_url": (self.root_url or "") + TOKEN_PATH + "?grant_type=client_credentials",
            "client_id": self.account.client_id,
            "client_secret": self.account.client_secret,
            "organization_id": self.account.organization_id,
            "auth": "OAuth2 client credentials; send Authorization: Bearer <token> and Organization-ID",
        }

    def actions(self) -> dict[str, ActionHandler]:
        async def cancel_appointment(body: dict[str, Any]) -> dict[str, Any]:
            """Cancel an appointment at the front desk (status becomes the cancelled status)."""
            row = self._appointment_for_action(body)
            row.status = self.account.cancelled_status
            row.lastModified = self.clock.now()
            self.store.changed()
            return appointment_json(row)

        async def move_appointment(body: dict[str, Any]) -> dict[str, Any]:
            """Move an appointment to a new start (and optionally operatory) at the front desk."""
            row = self._appointment_for_action(body)
            start = parse_instant(body.get("start"))
            if start is None:
                raise SandboxError(422, "start must be an ISO-8601 date-time", reason="start")
            row.start = start
            if body.get("operatory_id") is not None:
                operatory_id = int(body["operatory_id"])
                if operatory_id not in self.store.operatories:
                    raise SandboxError(404, f"no operatory {operatory_id}", reason="operatory_id")
                row.operatory_id = operatory_id
            row.lastModified = self.clock.now()
            self.store.changed()
            return appointment_json(row)

        async def delete_appointment(body: dict[str, Any]) -> dict[str, Any]:
            """Delete an appointment outright: it vanishes from lists without a lastModified change."""
            row = self._appointment_for_action(body)
            row.deleted = True
            self.store.changed()
            return {"deleted": row.id}

        async def add_patient(body: dict[str, Any]) -> dict[str, Any]:
            """Register a walk-in patient (firstName, lastName, optional dateOfBirth/emailAddress)."""
            try:
                patient, _warnings = self.create_patient(body)
            except AscendApiError as exc:
                raise SandboxError(422, str(exc), reason="body")
            return patient_json(patient)

        return {
            "cancel_appointment": cancel_appointment,
            "move_appointment": move_appointment,
            "delete_appointment": delete_appointment,
            "add_patient": add_patient,
        }

    def _appointment_for_action(self, body: Mapping[str, Any]) -> Appointment:
        try:
            appointment_id = int(body.get("id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SandboxError(422, "id must be an appointment id", reason="id")
        row = self.store.appointments.get(appointment_id)
        if row is None or row.deleted:
            raise SandboxError(404, f"no appointment {appointment_id}", reason="id")
        return row

    # ------------------------------------------------------------------ gateway: tokens and limits

    def _token_live(self, token: IssuedToken) -> bool:
        return token.epoch == self.token_epoch and self.clock.now() < token.expires_at

    def issue_token(self, client_id: str) -> tuple[str, IssuedToken]:
        lifetime = self.token_ttl(self.account.token_lifetime_seconds)
        now = self.clock.now()
        token = IssuedToken(client_id, now, now + timedelta(seconds=lifetime), self.token_epoch)
        value = secrets.token_urlsafe(24)
        self.store.tokens[value] = token
        return value, token

    def check_gateway(self, request: Request, endpoint: str) -> None:
        """Token, organization, vendor enablement, rate limit and quota, in the gateway's order."""
        authorization = request.headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        token = self.store.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise SandboxError(401, "Invalid access token", reason=INVALID_TOKEN)
        if not self._token_live(token) or self.consume_token_expiry(request):
            raise SandboxError(401, "Access Token expired", reason=EXPIRED_TOKEN)
        organization = request.headers.get("organization-id")
        if not organization:
            raise SandboxError(
                400, "The Organization-ID header is required", reason="missing_organization_id"
            )
        account = self.account
        if organization != account.organization_id:
            raise SandboxError(
                403, f"Organization {organization} has not authorized this application", reason="forbidden"
            )
        if not account.vendor_enabled:
            raise SandboxError(
                403, "This vendor is not enabled for the organization", reason="vendor_not_enabled"
            )
        self._check_rate(request, organization, endpoint)

    def _check_rate(self, request: Request, organization: str, endpoint: str) -> None:
        account = self.account
        now = self.clock.now()
        if account.monthly_call_quota:
            month = now.astimezone(self.clock.zone).strftime("%Y-%m")
            key = f"{organization}:{month}"
            used = self.store.monthly_calls.get(key, 0)
            if used >= account.monthly_call_quota:
                local = now.astimezone(self.clock.zone)
                next_month = (local.replace(day=1) + timedelta(days=32)).replace(
                    day=1, hour=0, minute=0, second=0, microsecond=0
                )
                # Subtract in UTC: aware datetimes sharing a zone subtract as wall times, wrong across DST.
                seconds = (next_month.astimezone(UTC) - now.astimezone(UTC)).total_seconds()
                retry_after = max(1, math.ceil(seconds))
                self.note_fault(request, "ascend_quota")
                raise SandboxError(
                    429,
                    f"Rate limit quota violation. Quota limit {account.monthly_call_quota} exceeded.",
                    reason=QUOTA_VIOLATION,
                    headers={"Retry-After": str(retry_after)},
                )
            self.store.monthly_calls[key] = used + 1
        limit = account.endpoint_rate_limits.get(endpoint, account.rate_limit_per_window)
        if limit <= 0:
            return
        window = account.rate_limit_window_seconds
        epoch_seconds = now.timestamp()
        window_index = int(epoch_seconds // window)
        key_window = (f"{organization}:{endpoint}", window_index)
        count = self.store.rate_windows.get(key_window, 0) + 1
        self.store.rate_windows[key_window] = count
        if count > limit:
            retry_after = max(1, math.ceil((window_index + 1) * window - epoch_seconds))
            self.note_fault(request, "ascend_rate_limit")
            raise SandboxError(
                429,
                f"Spike arrest violation. Allowed rate: {limit} per {window}s on {endpoint}",
                reason=SPIKE_ARREST,
                headers={"Retry-After": str(retry_after)},
            )
        # Old windows are never read again; keep the map small during long runs.
        if len(self.store.rate_windows) > 1000:
            self.store.rate_windows = {
                key: value for key, value in self.store.rate_windows.items() if key[1] >= window_index
            }

    # ------------------------------------------------------------------ API rules

    def _page(self, request: Request) -> tuple[int, int, list[dict[str, Any]]]:
        account = self.account
        warnings: list[dict[str, Any]] = []
        params = request.query_params
        try:
            page = int(params.get("page", account.first_page))
            page_size = int(params.get("pageSize", account.default_page_size))
        except ValueError:
            raise api_error(400, "INVALID_PAGINATION", "page and pageSize must be integers")
        if page < account.first_page:
            raise api_error(400, "INVALID_PAGINATION", f"page must be >= {account.first_page}")
        if page_size < 1:
            raise api_error(400, "INVALID_PAGINATION", "pageSize must be >= 1")
        if page_size > account.max_page_size:
            warnings.append(
                {
                    "code": "PAGE_SIZE_CAPPED",
                    "message": f"pageSize {page_size} exceeds the maximum; {account.max_page_size} used",
                }
            )
            page_size = account.max_page_size
        return page, page_size, warnings

    @staticmethod
    def _response_fields(request: Request, resource: Resource) -> frozenset[str] | None:
        """The fields to send: the resource's defaults, every field (``ALL``) or a named subset."""
        raw = request.query_params.get("responseFields")
        if raw is None or not raw.strip():
            return resource.default_fields
        if raw.strip().upper() == "ALL":
            return None
        return frozenset(name.strip() for name in raw.split(",") if name.strip())

    def list_resource(self, request: Request, resource: Resource) -> Response:
        page, page_size, warnings = self._page(request)
        raw_filter = request.query_params.get("filter", "")
        try:
            clauses = parse_filter(raw_filter, resource.filters) if raw_filter.strip() else []
        except FilterError as exc:
            raise api_error(400, "INVALID_FILTER", str(exc), filter=raw_filter)
        account = self.account

        def select() -> list[Any]:
            rows = [
                row for row in self.store.table(resource.name).values() if not getattr(row, "deleted", False)
            ]
            if resource.name == "appointments" and not account.list_cancelled:
                asks_for_status = any(clause.field_name == "status" for clause in clauses)
                if not asks_for_status:
                    rows = [row for row in rows if row.status != account.cancelled_status]
            return sorted(
                (row for row in rows if matches(row, clauses, resource.filters)), key=resource.sort_key
            )

        key = (resource.name, raw_filter, account.list_cancelled, account.cancelled_status)
        selected = self.store.selection(key, select)
        wanted = self._response_fields(request, resource)
        if wanted is not None and request.query_params.get("responseFields"):
            unknown = sorted(name for name in wanted if name not in resource.all_fields)
            if unknown:
                warnings.append(
                    {
                        "code": "UNKNOWN_RESPONSE_FIELD",
                        "message": f"ignored unknown fields: {', '.join(unknown)}",
                    }
                )
        offset = (page - account.first_page) * page_size
        visible = self.paginate(request, selected, offset, page_size)
        total = len(selected)
        meta = {
            "pagination": {
                "page": page,
                "pageSize": page_size,
                "total": total,
                "totalPages": math.ceil(total / page_size) if total else 0,
            }
        }
        data = [select_fields(resource.render(row), wanted) for row in visible]
        return JSONResponse(envelope(data, warnings=warnings, meta=meta))

    def get_one(self, resource: Resource, record_id: str) -> Any:
        try:
            key = int(record_id)
        except ValueError:
            raise api_error(400, "INVALID_ID", f"'{record_id}' is not a valid id")
        row = self.store.table(resource.name).get(key)
        if row is None or getattr(row, "deleted", False):
            raise api_error(404, "NOT_FOUND", f"No {resource.name[:-1]} with id {key}")
        return row

    def _reference_id(
        self, body: Mapping[str, Any], name: str, table: Mapping[int, Any], errors: list[dict[str, Any]]
    ) -> int | None:
        value = body.get(name)
        raw = value.get("id") if isinstance(value, Mapping) else value
        if raw is None:
            errors.append({"code": "REQUIRED", "field": f"{name}.id", "message": f"{name}.id is required"})
            return None
        try:
            key = int(raw)
        except (TypeError, ValueError):
            errors.append(
                {"code": "INVALID_VALUE", "field": f"{name}.id", "message": f"{name}.id must be an id"}
            )
            return None
        if key not in table:
            errors.append({"code": "NOT_FOUND", "field": f"{name}.id", "message": f"No {name} with id {key}"})
            return None
        return key

    def _validate_timing(
        self, start: datetime | None, duration: Any, errors: list[dict[str, Any]]
    ) -> int | None:
        grid = self.account.time_grid_minutes
        if start is not None and grid and (start.minute % grid or start.second or start.microsecond):
            errors.append(
                {
                    "code": "INVALID_VALUE",
                    "field": "start",
                    "message": f"start must fall on a {grid}-minute mark",
                }
            )
        if isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0:
            errors.append(
                {
                    "code": "INVALID_VALUE",
                    "field": "duration",
                    "message": "duration must be a positive integer",
                }
            )
            return None
        if grid and duration % grid:
            errors.append(
                {
                    "code": "INVALID_VALUE",
                    "field": "duration",
                    "message": f"duration must be a multiple of {grid} minutes",
                }
            )
            return None
        return duration

    def _overlaps(self, candidate: Appointment) -> list[Appointment]:
        cancelled = self.account.cancelled_status
        return [
            row
            for row in self.store.appointments.values()
            if row.id != candidate.id
            and not row.deleted
            and row.status not in (cancelled, "BROKEN")
            and row.operatory_id == candidate.operatory_id
            and row.start < candidate.end
            and candidate.start < row.end
        ]

    def _overlap_warnings(self, candidate: Appointment) -> list[dict[str, Any]]:
        clashes = self._overlaps(candidate)
        if not clashes:
            return []
        ids = [row.id for row in clashes]
        if self.account.reject_operatory_overlap:
            raise api_error(
                409,
                "OPERATORY_CONFLICT",
                f"Operatory {candidate.operatory_id} is booked at that time",
                ids=ids,
            )
        return [
            {
                "code": "OPERATORY_OVERLAP",
                "message": f"Operatory {candidate.operatory_id} already has appointments {ids} at that time",
            }
        ]

    def _check_enum(
        self, body: Mapping[str, Any], name: str, allowed: list[str], errors: list[dict[str, Any]]
    ) -> str | None:
        value = body.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or value not in allowed:
            errors.append(
                {
                    "code": "INVALID_VALUE",
                    "field": name,
                    "message": f"{name} must be one of {', '.join(allowed)}",
                }
            )
            return None
        return value

    def create_appointment(self, body: Mapping[str, Any]) -> tuple[Appointment, list[dict[str, Any]]]:
        errors: list[dict[str, Any]] = []
        account = self.account
        start = parse_instant(body.get("start"))
        if start is None:
            errors.append(
                {"code": "REQUIRED", "field": "start", "message": "start must be an ISO-8601 date-time"}
            )
        duration = self._validate_timing(start, body.get("duration"), errors)
        patient_id = self._reference_id(body, "patient", self.store.patients, errors)
        provider_id = self._reference_id(body, "provider", self.store.providers, errors)
        operatory_id = self._reference_id(body, "operatory", self.store.operatories, errors)
        status = self._check_enum(body, "status", account.appointment_statuses, errors) or "UNCONFIRMED"
        booking_type = (
            self._check_enum(body, "bookingType", account.booking_types, errors) or "EXISTING_PATIENT"
        )
        for text_field in ("title", "other"):
            if body.get(text_field) is not None and not isinstance(body.get(text_field), str):
                errors.append(
                    {"code": "INVALID_VALUE", "field": text_field, "message": f"{text_field} must be text"}
                )
        if errors:
            raise AscendApiError(400, errors)
        assert start is not None and duration is not None
        assert patient_id is not None and provider_id is not None and operatory_id is not None
        now = self.clock.now()
        appointment = Appointment(
            id=self.store.next_appointment_id,
            start=start,
            duration=duration,
            title=str(body.get("title") or ""),
            status=status,
            bookingType=booking_type,
            patient_id=patient_id,
            provider_id=provider_id,
            operatory_id=operatory_id,
            location_id=self.store.operatories[operatory_id].location_id,
            other=str(body.get("other") or ""),
            created=now,
            lastModified=now,
        )
        warnings = self._overlap_warnings(appointment)
        self.store.next_appointment_id += 1
        self.store.appointments[appointment.id] = appointment
        self.store.changed()
        return appointment, warnings

    def update_appointment(
        self, row: Appointment, body: Mapping[str, Any]
    ) -> tuple[Appointment, list[dict[str, Any]]]:
        account = self.account
        errors: list[dict[str, Any]] = []
        if row.status == account.cancelled_status:
            raise api_error(
                409, "APPOINTMENT_CANCELLED", f"Appointment {row.id} is cancelled and cannot change"
            )
        if "patient" in body:
            patient = body["patient"]
            patient_id = patient.get("id") if isinstance(patient, Mapping) else patient
            if str(patient_id) != str(row.patient_id):
                errors.append(
                    {
                        "code": "READ_ONLY",
                        "field": "patient.id",
                        "message": "an appointment's patient cannot change",
                    }
                )
        start = row.start
        if "start" in body:
            parsed = parse_instant(body.get("start"))
            if parsed is None:
                errors.append(
                    {
                        "code": "INVALID_VALUE",
                        "field": "start",
                        "message": "start must be an ISO-8601 date-time",
                    }
                )
            else:
                start = parsed
        duration = self._validate_timing(start, body.get("duration", row.duration), errors)
        provider_id = (
            self._reference_id(body, "provider", self.store.providers, errors)
            if "provider" in body
            else row.provider_id
        )
        operatory_id = (
            self._reference_id(body, "operatory", self.store.operatories, errors)
            if "operatory" in body
            else row.operatory_id
        )
        status = self._check_enum(body, "status", account.appointment_statuses, errors)
        booking_type = self._check_enum(body, "bookingType", account.booking_types, errors)
        if errors:
            raise AscendApiError(400, errors)
        assert duration is not None and provider_id is not None and operatory_id is not None
        candidate = Appointment(**{item.name: getattr(row, item.name) for item in fields(row)})
        candidate.start, candidate.duration = start, duration
        candidate.provider_id, candidate.operatory_id = provider_id, operatory_id
        candidate.location_id = self.store.operatories[operatory_id].location_id
        if status is not None:
            candidate.status = status
        if booking_type is not None:
            candidate.bookingType = booking_type
        for text_field in ("title", "other"):
            if isinstance(body.get(text_field), str):
                setattr(candidate, text_field, body[text_field])
        # Cancelling frees the chair, so only bookings that keep the chair are checked for overlap.
        warnings = [] if candidate.status == account.cancelled_status else self._overlap_warnings(candidate)
        candidate.lastModified = self.clock.now()
        self.store.appointments[row.id] = candidate
        self.store.changed()
        return candidate, warnings

    def create_patient(self, body: Mapping[str, Any]) -> tuple[Patient, list[dict[str, Any]]]:
        errors: list[dict[str, Any]] = []
        names: dict[str, str] = {}
        for name in ("firstName", "lastName"):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                errors.append({"code": "REQUIRED", "field": name, "message": f"{name} is required"})
            else:
                names[name] = value.strip()
        birth: date | None = None
        if body.get("dateOfBirth") is not None:
            try:
                birth = date.fromisoformat(str(body["dateOfBirth"]))
            except ValueError:
                errors.append(
                    {
                        "code": "INVALID_VALUE",
                        "field": "dateOfBirth",
                        "message": "dateOfBirth must be YYYY-MM-DD",
                    }
                )
        gender = str(body.get("gender") or "UNKNOWN").upper()
        if gender not in ("MALE", "FEMALE", "UNKNOWN", "OTHER"):
            errors.append(
                {
                    "code": "INVALID_VALUE",
                    "field": "gender",
                    "message": "gender must be MALE, FEMALE, OTHER or UNKNOWN",
                }
            )
        provider_id: int | None = None
        if body.get("primaryProvider") is not None:
            provider_id = self._reference_id(body, "primaryProvider", self.store.providers, errors)
        phones_raw = body.get("phones") or []
        if not isinstance(phones_raw, list) or not all(
            isinstance(phone, Mapping) and isinstance(phone.get("number"), str) for phone in phones_raw
        ):
            errors.append(
                {"code": "INVALID_VALUE", "field": "phones", "message": "phones must be [{number, type}]"}
            )
            phones_raw = []
        if errors:
            raise AscendApiError(400, errors)
        duplicates = [
            row.id
            for row in self.store.patients.values()
            if row.firstName.lower() == names["firstName"].lower()
            and row.lastName.lower() == names["lastName"].lower()
            and row.dateOfBirth == birth
        ]
        now = self.clock.now()
        location_id = next(iter(self.store.locations), LOCATION_ID_BASE + 1)
        patient = Patient(
            id=self.store.next_patient_id,
            firstName=names["firstName"],
            lastName=names["lastName"],
            middleInitial=str(body.get("middleInitial") or ""),
            preferredName=str(body.get("preferredName") or ""),
            dateOfBirth=birth,
            gender=gender,
            emailAddress=str(body.get("emailAddress") or ""),
            phones=[{"number": p["number"], "type": str(p.get("type") or "MOBILE")} for p in phones_raw],
            address={key: str(value) for key, value in (body.get("address") or {}).items()},
            status="ACTIVE",
            primary_provider_id=provider_id,
            location_id=location_id,
            created=now,
            lastModified=now,
        )
        self.store.next_patient_id += 1
        self.store.patients[patient.id] = patient
        self.store.changed()
        warnings = (
            [
                {
                    "code": "POSSIBLE_DUPLICATE",
                    "message": f"Patients {duplicates} have the same name and birth date",
                }
            ]
            if duplicates
            else []
        )
        return patient, warnings

    # ------------------------------------------------------------------ routes

    def build_app(self) -> ASGIApp:
        """The gateway app plus the token endpoint, which lives outside the API prefix."""
        wrapped = super().build_app()
        token_router = APIRouter()

        @token_router.post(TOKEN_PATH)
        async def access_token(request: Request) -> Response:
            return await self.token_endpoint(request)

        self.fastapi_app.include_router(token_router)
        return wrapped

    async def token_endpoint(self, request: Request) -> Response:
        grant_type = request.query_params.get("grant_type")
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        grant_type = grant_type or form.get("grant_type")
        if grant_type != "client_credentials":
            return JSONResponse(
                {"ErrorCode": "invalid_request", "Error": f"Unsupported grant type : {grant_type or ''}"}, 400
            )
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        authorization = request.headers.get("authorization", "")
        if client_id is None and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_id, _, client_secret = decoded.partition(":")
        account = self.account
        if client_id != account.client_id:
            return JSONResponse({"ErrorCode": "invalid_client", "Error": "ClientId is Invalid"}, 401)
        if client_secret != account.client_secret:
            return JSONResponse(
                {"ErrorCode": "invalid_client", "Error": "Client credentials are invalid"}, 401
            )
        value, token = self.issue_token(client_id)
        lifetime = int((token.expires_at - token.issued_at).total_seconds())
        return JSONResponse(
            {
                "token_type": "BearerToken",
                "access_token": value,
                "expires_in": str(lifetime) if account.expires_in_as_string else lifetime,
                "issued_at": str(int(token.issued_at.timestamp() * 1000)),
                "client_id": client_id,
                "application_name": "clinicsync-sandbox",
                "scope": "",
                "status": "approved",
            },
            headers={"Cache-Control": "no-store"},
        )

    def add_routes(self, router: APIRouter) -> None:
        server = self

        class GatewayRoute(APIRoute):
            """Runs the gateway checks before every endpoint and renders envelope errors."""

            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()
                # Limits are per endpoint: the resource named by the first path segment.
                endpoint = self.path_format.removeprefix(server.api_prefix).strip("/").split("/")[0]

                async def gateway(request: Request) -> Response:
                    try:
                        server.check_gateway(request, endpoint)
                        return await handler(request)
                    except AscendApiError as exc:
                        return JSONResponse(
                            envelope(None, errors=exc.errors), exc.status, headers=exc.headers
                        )

                return gateway

        router.route_class = GatewayRoute

        def add_read_routes(resource: Resource) -> None:
            async def list_endpoint(request: Request) -> Response:
                return self.list_resource(request, resource)

            async def single_endpoint(record_id: str) -> Response:
                return JSONResponse(envelope(resource.render(self.get_one(resource, record_id))))

            router.add_api_route(f"/{resource.name}", list_endpoint, methods=["GET"])
            router.add_api_route(f"/{resource.name}/{{record_id}}", single_endpoint, methods=["GET"])

        for resource in RESOURCES.values():
            add_read_routes(resource)

        @router.post("/appointments")
        async def create_appointment(request: Request) -> Response:
            appointment, warnings = self.create_appointment(await json_body(request))
            return JSONResponse(envelope(appointment_json(appointment), warnings=warnings), 201)

        @router.put("/appointments/{record_id}")
        @router.patch("/appointments/{record_id}")
        async def update_appointment(request: Request, record_id: str) -> Response:
            row = self.get_one(RESOURCES["appointments"], record_id)
            appointment, warnings = self.update_appointment(row, await json_body(request))
            return JSONResponse(envelope(appointment_json(appointment), warnings=warnings))

        @router.delete("/appointments/{record_id}")
        async def delete_appointment(record_id: str) -> Response:
            if not self.account.allow_delete:
                raise api_error(
                    405, "METHOD_NOT_ALLOWED", "Appointments cannot be deleted; cancel them instead"
                )
            row = self.get_one(RESOURCES["appointments"], record_id)
            row.deleted = True
            self.store.changed()
            return Response(status_code=204)

        @router.post("/patients")
        async def create_patient(request: Request) -> Response:
            patient, warnings = self.create_patient(await json_body(request))
            return JSONResponse(envelope(patient_json(patient), warnings=warnings), 201)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except json.JSONDecodeError as exc:
        raise api_error(400, "INVALID_JSON", f"request body is not valid JSON: {exc.msg}")
    if not isinstance(body, dict):
        raise api_error(400, "INVALID_JSON", "request body must be a JSON object")
    return body
