"""Cliniko API simulator (``/v1``), faithful to the contract in docs/sandbox.md.

What it reproduces, and why each matters to a sync client:

- Basic auth with the API key as user name; the key's ``-xx9`` suffix names its shard and a key for
  another shard is refused, as the real per-shard hosts do. A ``User-Agent`` of the form
  ``Name (email)`` is required.
- String ids that do not fit a JavaScript number (ids start above 2**53).
- ``page``/``per_page`` (default 50, max 100) with ``total_entries`` and ``links.self|next|previous``.
- ``q[]=field:<op><value>`` filters per field type, the ``*`` "any value" operator that brings back
  cancelled and archived rows the default lists hide, ``sort``/``order``.
- Cancel needs a reason code and is irreversible (``cancelled_at`` never moves); archive and the
  deprecated DELETE hide rows; every edit bumps ``updated_at``.
- UTC ``Z`` datetimes only: filters refuse anything else, and a written time with an offset (or
  none) is misread, its wall clock taken as UTC, as the real API was reported to do;
  ``422 {"message": "Validation Failed", "errors": {...}}``.
- 200 requests a minute per API key (configurable), then 429 with ``X-RateLimit-Reset``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers

from clinicsync.sandbox.core import ActionHandler, ControlError, SandboxServer
from clinicsync.sandbox.generator import GeneratedClinic
from clinicsync.sandbox.state import StateCodec

# --------------------------------------------------------------------------------------------- wire


SHARDS = ("au1", "au2", "au3", "au4", "ca1", "uk1", "uk2", "eu1")
SHARD_SUFFIX = re.compile(r"^\w{2}\d{1,2}$")
USER_AGENT_FORMAT = re.compile(r"^\s*(?P<name>[^()]*\S)\s*\((?P<email>[^()\s]+@[^()\s]+\.[^()\s]+)\)\s*$")
UTC_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?Z$")
WALL_CLOCK_DATETIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)(?:[+-]\d{2}:?\d{2})?$"
)
DATE_PATTERN = re.compile(r"^[\d*]{4}-[\d*]{2}-[\d*]{2}$")
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 100
MAX_AVAILABLE_TIMES_SPAN_DAYS = 7
INVALID_TIME_FRAME = "Invalid time frame definition. Please check from/to param limitations."
# Ids start above 2**53 so a client that parses them as floating-point numbers loses precision, as
# it would against real Cliniko ids.
FIRST_ID = 1_000_000_000_000_000_001

CANCELLATION_REASONS: dict[int, str] = {
    10: "Feeling better",
    20: "Condition worse",
    30: "Sick",
    31: "COVID-19",
    40: "Away",
    50: "Other",
    60: "Work",
}


class ClinikoError(Exception):
    """An error response in Cliniko's shape; routes turn it into JSON."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def validation_failed(errors: Mapping[str, str]) -> ClinikoError:
    return ClinikoError(422, {"message": "Validation Failed", "errors": dict(errors)})


def not_found(resource: str) -> ClinikoError:
    return ClinikoError(404, {"message": f"{resource} not found"})


def format_utc(instant: datetime | None) -> str | None:
    if instant is None:
        return None
    if instant.tzinfo is not UTC:
        instant = instant.astimezone(UTC)
    # isoformat is several times faster than strftime, which matters when rendering 50k rows.
    return instant.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def parse_utc(value: Any) -> datetime | None:
    """Parse a UTC ``...Z`` datetime; ``None`` for anything else (offsets and naive times included)."""
    if not isinstance(value, str):
        return None
    match = UTC_DATETIME.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError:
        return None


def misread_wall_clock(value: Any) -> datetime | None:
    """What Cliniko makes of a written time with an offset or none: its wall clock, read as UTC.

    The API is UTC only, and times sent with an offset (or without ``Z``) were reported to be
    stored shifted by the offset rather than refused (cliniko-api issues #272, #215). Filters
    still refuse them; a client must always send UTC.
    """
    if not isinstance(value, str):
        return None
    match = WALL_CLOCK_DATETIME.match(value.strip())
    return parse_utc(match.group(1) + "Z") if match else None


def shard_of_key(api_key: str) -> tuple[str, str]:
    """Split an API key into (key without suffix, shard); keys without a suffix belong to au1."""
    head, _, suffix = api_key.rpartition("-")
    if head and SHARD_SUFFIX.match(suffix):
        return head, suffix.lower()
    return api_key, "au1"


def basic_auth_user(authorization: str | None) -> str | None:
    """The user name of a ``Basic`` Authorization header, or None when absent or malformed."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, _, _password = decoded.partition(":")
    return user or None


# ------------------------------------------------------------------------------------------ records


@dataclass
class Business:
    id: str
    business_name: str
    time_zone_identifier: str
    time_zone: str
    address_1: str
    city: str
    state: str
    post_code: str
    country: str
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


@dataclass
class AppointmentType:
    id: str
    name: str
    category: str
    color: str
    duration_in_minutes: int
    description: str
    max_attendees: int
    created_at: datetime
    updated_at: datetime
    show_in_online_bookings: bool = True
    archived_at: datetime | None = None


@dataclass
class Practitioner:
    id: str
    first_name: str
    last_name: str
    title: str
    designation: str
    created_at: datetime
    updated_at: datetime
    active: bool = True
    show_in_online_bookings: bool = True
    business_ids: list[str] = field(default_factory=list)
    appointment_type_ids: list[str] = field(default_factory=list)
    # Weekday (0 = Monday) -> [(start "HH:MM", end "HH:MM")] in the business's local time.
    working_hours: dict[int, list[tuple[str, str]]] = field(
        default_factory=lambda: {day: [("09:00", "17:00")] for day in range(5)}
    )


@dataclass
class Patient:
    id: str
    first_name: str
    last_name: str
    created_at: datetime
    updated_at: datetime
    preferred_first_name: str | None = None
    date_of_birth: date | None = None
    email: str | None = None
    phone_numbers: list[dict[str, str]] = field(default_factory=list)
    address_1: str | None = None
    address_2: str | None = None
    address_3: str | None = None
    city: str | None = None
    state: str | None = None
    post_code: str | None = None
    country: str | None = None
    time_zone: str | None = None
    notes: str | None = None
    old_reference_id: str | None = None
    archived_at: datetime | None = None
    deleted_at: datetime | None = None


@dataclass
class Appointment:
    id: str
    starts_at: datetime
    ends_at: datetime
    patient_id: str
    practitioner_id: str
    appointment_type_id: str
    business_id: str
    created_at: datetime
    updated_at: datetime
    notes: str | None = None
    cancelled_at: datetime | None = None
    cancellation_reason: int | None = None
    cancellation_note: str | None = None
    archived_at: datetime | None = None
    deleted_at: datetime | None = None
    did_not_arrive: bool = False
    patient_arrived: bool = False
    repeated_from_id: str | None = None

    @property
    def occupies_time(self) -> bool:
        return self.cancelled_at is None and self.archived_at is None and self.deleted_at is None


# ------------------------------------------------------------------------------------------ filters


class FieldKind(Enum):
    DATETIME = "datetime"
    DATE = "date"
    NUMERIC = "numeric"
    STRING = "string"
    BOOLEAN = "boolean"


# Operators per field type, longest first so ">=" is not read as ">" followed by "=...".
OPERATORS: dict[FieldKind, tuple[str, ...]] = {
    FieldKind.DATETIME: (">=", "<=", "!?", ">", "<", "?", "*"),
    FieldKind.DATE: (">=", "<=", "!?", "=", ">", "<", "?"),
    FieldKind.NUMERIC: (">=", "<=", "!=", "!?", "=", ">", "<", "?"),
    FieldKind.STRING: ("!=", "!?", "~~", "=", "~", "?"),
    FieldKind.BOOLEAN: ("!=", "="),
}
VALUELESS_OPERATORS = frozenset({"?", "!?", "*"})


@dataclass(frozen=True)
class Filter:
    field: str
    operator: str
    value: str
    kind: FieldKind


def parse_filter(raw: str, fields: Mapping[str, FieldKind]) -> Filter:
    """Parse ``field:<op><value>``; 422 names the parameter when the filter cannot be applied."""
    name, sep, rest = raw.partition(":")
    if not sep or name not in fields:
        raise validation_failed({"q": f"'{name}' is not a filterable field"})
    kind = fields[name]
    for operator in OPERATORS[kind]:
        if rest.startswith(operator):
            value = rest[len(operator) :]
            break
    else:
        raise validation_failed({"q": f"unsupported operator in '{raw}' for a {kind.value} field"})
    if operator in VALUELESS_OPERATORS:
        if value:
            raise validation_failed({"q": f"operator '{operator}' takes no value in '{raw}'"})
    elif kind is FieldKind.DATETIME and parse_utc(value) is None:
        raise validation_failed({"q": f"'{value}' is not a UTC datetime (YYYY-MM-DDThh:mm:ssZ)"})
    elif kind is FieldKind.DATE and not DATE_PATTERN.match(value):
        raise validation_failed({"q": f"'{value}' is not a date (YYYY-MM-DD, * wildcards allowed)"})
    elif kind is FieldKind.DATE and "*" in value and operator != "=":
        raise validation_failed({"q": f"date wildcards only work with '=' in '{raw}'"})
    elif kind is FieldKind.NUMERIC:
        numbers = value.split(",") if operator == "=" else [value]
        if not all(number.strip().isdigit() for number in numbers):
            raise validation_failed({"q": f"'{value}' is not a number"})
    elif kind is FieldKind.BOOLEAN and value not in ("true", "false"):
        raise validation_failed({"q": f"'{value}' is not true or false"})
    return Filter(name, operator, value, kind)


def _compare(operator: str, left: Any, right: Any) -> bool:
    if operator == "=":
        return bool(left == right)
    if operator == "!=":
        return bool(left != right)
    if operator == ">":
        return bool(left > right)
    if operator == ">=":
        return bool(left >= right)
    if operator == "<":
        return bool(left < right)
    return bool(left <= right)


def _like(pattern: str, text: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.lower().split("%"))
    return re.fullmatch(regex, text.lower(), flags=re.DOTALL) is not None


def filter_matches(record: object, flt: Filter) -> bool:
    actual = getattr(record, flt.field)
    if flt.operator == "*":
        return True
    if flt.operator == "?":
        return actual is not None and actual != ""
    if flt.operator == "!?":
        return actual is None or actual == ""
    if actual is None:
        return flt.operator == "!="
    if flt.kind is FieldKind.DATETIME:
        wanted = parse_utc(flt.value)
        return _compare(flt.operator, actual, wanted)
    if flt.kind is FieldKind.DATE:
        text = actual.isoformat()
        if "*" in flt.value:
            return all(want in ("*", have) for want, have in zip(flt.value, text, strict=True))
        return _compare(flt.operator, text, flt.value)
    if flt.kind is FieldKind.NUMERIC:
        if flt.operator == "=":
            return int(actual) in {int(number) for number in flt.value.split(",")}
        return _compare(flt.operator, int(actual), int(flt.value))
    if flt.kind is FieldKind.BOOLEAN:
        return _compare(flt.operator, bool(actual), flt.value == "true")
    text = str(actual)
    if flt.operator == "~":
        return flt.value.lower() in text.lower()
    if flt.operator == "~~":
        return _like(flt.value, text)
    return _compare(flt.operator, text, flt.value)


@dataclass(frozen=True)
class ResourceSpec:
    """How one list endpoint filters, hides and sorts its rows."""

    key: str
    filters: Mapping[str, FieldKind]
    # Fields whose non-null value hides a row unless the query filters on that field.
    hidden_when_set: tuple[str, ...] = ()
    # Fields whose non-null value always hides a row from this endpoint (deleted rows).
    always_hidden_when_set: tuple[str, ...] = ()


APPOINTMENT_SPEC = ResourceSpec(
    key="individual_appointments",
    filters={
        "appointment_type_id": FieldKind.NUMERIC,
        "archived_at": FieldKind.DATETIME,
        "business_id": FieldKind.NUMERIC,
        "cancelled_at": FieldKind.DATETIME,
        "created_at": FieldKind.DATETIME,
        "ends_at": FieldKind.DATETIME,
        "id": FieldKind.NUMERIC,
        "patient_id": FieldKind.NUMERIC,
        "practitioner_id": FieldKind.NUMERIC,
        "repeated_from_id": FieldKind.NUMERIC,
        "starts_at": FieldKind.DATETIME,
        "updated_at": FieldKind.DATETIME,
        "did_not_arrive": FieldKind.BOOLEAN,
        "patient_arrived": FieldKind.BOOLEAN,
    },
    hidden_when_set=("cancelled_at", "archived_at"),
    always_hidden_when_set=("deleted_at",),
)
PATIENT_SPEC = ResourceSpec(
    key="patients",
    filters={
        "archived_at": FieldKind.DATETIME,
        "created_at": FieldKind.DATETIME,
        "date_of_birth": FieldKind.DATE,
        "email": FieldKind.STRING,
        "first_name": FieldKind.STRING,
        "id": FieldKind.NUMERIC,
        "last_name": FieldKind.STRING,
        "old_reference_id": FieldKind.STRING,
        "updated_at": FieldKind.DATETIME,
    },
    hidden_when_set=("archived_at",),
    always_hidden_when_set=("deleted_at",),
)
PRACTITIONER_SPEC = ResourceSpec(
    key="practitioners",
    filters={
        "created_at": FieldKind.DATETIME,
        "first_name": FieldKind.STRING,
        "id": FieldKind.NUMERIC,
        "last_name": FieldKind.STRING,
        "updated_at": FieldKind.DATETIME,
    },
)
BUSINESS_SPEC = ResourceSpec(
    key="businesses",
    filters={
        "archived_at": FieldKind.DATETIME,
        "business_name": FieldKind.STRING,
        "created_at": FieldKind.DATETIME,
        "id": FieldKind.NUMERIC,
        "updated_at": FieldKind.DATETIME,
    },
    hidden_when_set=("archived_at",),
)
APPOINTMENT_TYPE_SPEC = ResourceSpec(
    key="appointment_types",
    filters={
        "archived_at": FieldKind.DATETIME,
        "created_at": FieldKind.DATETIME,
        "id": FieldKind.NUMERIC,
        "name": FieldKind.STRING,
        "updated_at": FieldKind.DATETIME,
    },
    hidden_when_set=("archived_at",),
)


def parse_sort(sort: str | None, order: str | None, spec: ResourceSpec) -> list[tuple[str, bool]]:
    """``sort=a,b:desc`` plus ``order=asc|desc`` -> [(field, descending)], created_at asc by default."""
    if order not in (None, "", "asc", "desc"):
        raise validation_failed({"order": "must be asc or desc"})
    default_descending = order == "desc"
    columns: list[tuple[str, bool]] = []
    for part in (sort or "created_at").split(","):
        name, _, direction = part.strip().partition(":")
        if name not in spec.filters:
            raise validation_failed({"sort": f"'{name}' is not a sortable field"})
        if direction not in ("", "asc", "desc"):
            raise validation_failed({"sort": f"'{direction}' is not asc or desc"})
        columns.append((name, direction == "desc" if direction else default_descending))
    # Ties fall back to the id so pages never overlap or skip rows.
    if all(name != "id" for name, _ in columns):
        columns.append(("id", default_descending))
    return columns


def _sort_value(record: object, name: str) -> tuple[int, Any]:
    value = getattr(record, name)
    if name == "id" or name.endswith("_id"):
        return (0, int(value)) if value is not None else (1, 0)
    # Nulls last, as in SQL ascending order.
    return (0, value) if value is not None else (1, 0)


def select_records(
    records: Iterable[Any], spec: ResourceSpec, filters: Sequence[Filter], sort: list[tuple[str, bool]]
) -> list[Any]:
    filtered_fields = {flt.field for flt in filters}
    hiding = [name for name in spec.hidden_when_set if name not in filtered_fields]
    rows = [
        record
        for record in records
        if all(getattr(record, name) is None for name in spec.always_hidden_when_set)
        and all(getattr(record, name) is None for name in hiding)
        and all(filter_matches(record, flt) for flt in filters)
    ]
    # Python's sort is stable: apply the keys from the least significant to the most.
    for name, descending in reversed(sort):
        rows.sort(key=lambda record, name=name: _sort_value(record, name), reverse=descending)  # type: ignore[misc]
    return rows


@dataclass(frozen=True)
class PageRequest:
    page: int
    per_page: int


def parse_page(params: Mapping[str, str]) -> PageRequest:
    errors: dict[str, str] = {}
    page = per_page = 0
    try:
        page = int(params.get("page", "1"))
        if page < 1:
            errors["page"] = "must be greater than or equal to 1"
    except ValueError:
        errors["page"] = "is not a number"
    try:
        per_page = int(params.get("per_page", str(DEFAULT_PER_PAGE)))
        if not 1 <= per_page <= MAX_PER_PAGE:
            errors["per_page"] = f"must be between 1 and {MAX_PER_PAGE}"
    except ValueError:
        errors["per_page"] = "is not a number"
    if errors:
        raise validation_failed(errors)
    return PageRequest(page, per_page)


# ------------------------------------------------------------------------------------------- state


class QueryCache:
    """The last few filtered, sorted row lists, valid while the data version is unchanged.

    A full paginated read of 50k appointments asks the same question hundreds of times; this keeps
    each page O(per_page) instead of re-filtering and re-sorting every row per request.
    """

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[int, list[Any]]] = OrderedDict()

    def get(self, key: tuple[Any, ...], version: int, compute: Callable[[], list[Any]]) -> list[Any]:
        hit = self._entries.get(key)
        if hit is not None and hit[0] == version:
            self._entries.move_to_end(key)
            return hit[1]
        rows = compute()
        self._entries[key] = (version, rows)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return rows


class RateLimiter:
    """A fixed one-minute window per API key, on the real clock.

    The real clock, not the sandbox clock: a client computes its wait from ``X-RateLimit-Reset`` and
    its own wall clock, which a test moving the sandbox clock must not disturb.
    """

    def __init__(self, limit_per_minute: int) -> None:
        self.limit_per_minute = limit_per_minute
        self._windows: dict[str, tuple[float, int]] = {}

    def check(self, key: str) -> int | None:
        """Count a request; None when allowed, else the epoch second the window resets."""
        if self.limit_per_minute <= 0:
            return None
        now = time.time()
        started, count = self._windows.get(key, (now, 0))
        if now - started >= 60.0:
            started, count = now, 0
        if count >= self.limit_per_minute:
            self._windows[key] = (started, count)
            return int(started + 60.0) + 1
        self._windows[key] = (started, count + 1)
        return None

    def reset(self) -> None:
        self._windows.clear()


def _text(
    body: Mapping[str, Any], name: str, errors: dict[str, str], *, required: bool = False
) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            errors[name] = "can't be blank"
        return None
    if not isinstance(value, str):
        errors[name] = "must be a string"
        return None
    return value


def _datetime_field(
    body: Mapping[str, Any], name: str, errors: dict[str, str], *, required: bool = False
) -> datetime | None:
    value = body.get(name)
    if value is None:
        if required:
            errors[name] = "can't be blank"
        return None
    parsed = parse_utc(value) or misread_wall_clock(value)
    if parsed is None:
        errors[name] = "must be a UTC datetime ending in Z, e.g. 2016-07-21T03:45:00Z"
    return parsed


def _bool_field(body: Mapping[str, Any], name: str, errors: dict[str, str]) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        errors[name] = "must be true or false"
        return None
    return value


def _reference(value: Any) -> str | None:
    """A written ``*_id``: Cliniko accepts the string form and (small) JSON numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    return None


PATIENT_TEXT_FIELDS = (
    "preferred_first_name",
    "email",
    "address_1",
    "address_2",
    "address_3",
    "city",
    "state",
    "post_code",
    "country",
    "time_zone",
    "notes",
    "old_reference_id",
)
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ClinikoStore:
    """One Cliniko account's data and the rules of every write.

    Each mutation bumps ``version`` (which invalidates cached list queries) and stamps
    ``updated_at`` from the sandbox clock.
    """

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self.businesses: dict[str, Business] = {}
        self.practitioners: dict[str, Practitioner] = {}
        self.appointment_types: dict[str, AppointmentType] = {}
        self.patients: dict[str, Patient] = {}
        self.appointments: dict[str, Appointment] = {}
        self.version = 0
        self._next_id = FIRST_ID
        # Reproduces issue #215: an unknown patient_id on create answered 500 instead of a 422.
        self.unknown_patient_is_server_error = False
        self.cache = QueryCache()

    def now(self) -> datetime:
        # Cliniko stores whole seconds; keeping them avoids sub-second drift in updated_at filters.
        return self._now().astimezone(UTC).replace(microsecond=0)

    def new_id(self) -> str:
        value = self._next_id
        self._next_id += 1
        return str(value)

    def changed(self) -> None:
        self.version += 1

    # --------------------------------------------------------------------------- reference data

    def add_business(self, name: str, time_zone_identifier: str, **extra: str) -> Business:
        now = self.now()
        business = Business(
            id=self.new_id(),
            business_name=name,
            time_zone_identifier=time_zone_identifier,
            time_zone=time_zone_identifier.rsplit("/", 1)[-1].replace("_", " "),
            address_1=extra.get("address_1", "1 Main Street"),
            city=extra.get("city", "Springfield"),
            state=extra.get("state", ""),
            post_code=extra.get("post_code", "0000"),
            country=extra.get("country", ""),
            created_at=now,
            updated_at=now,
        )
        self.businesses[business.id] = business
        self.changed()
        return business

    def add_appointment_type(
        self, name: str, duration_in_minutes: int, *, category: str = ""
    ) -> AppointmentType:
        now = self.now()
        appointment_type = AppointmentType(
            id=self.new_id(),
            name=name,
            category=category,
            color="#3a87ad",
            duration_in_minutes=duration_in_minutes,
            description="",
            max_attendees=1,
            created_at=now,
            updated_at=now,
        )
        self.appointment_types[appointment_type.id] = appointment_type
        self.changed()
        return appointment_type

    def add_practitioner(
        self,
        first_name: str,
        last_name: str,
        *,
        business_ids: Sequence[str],
        appointment_type_ids: Sequence[str],
        title: str = "Dr",
        designation: str = "",
        active: bool = True,
    ) -> Practitioner:
        now = self.now()
        practitioner = Practitioner(
            id=self.new_id(),
            first_name=first_name,
            last_name=last_name,
            title=title,
            designation=designation,
            created_at=now,
            updated_at=now,
            active=active,
            business_ids=list(business_ids),
            appointment_type_ids=list(appointment_type_ids),
        )
        self.practitioners[practitioner.id] = practitioner
        self.changed()
        return practitioner

    # ------------------------------------------------------------------------------- patients

    def patient(self, patient_id: str) -> Patient:
        patient = self.patients.get(patient_id)
        if patient is None or patient.deleted_at is not None:
            raise not_found("Patient")
        return patient

    def _apply_patient_fields(
        self, patient: Patient, body: Mapping[str, Any], errors: dict[str, str]
    ) -> None:
        for name in ("first_name", "last_name"):
            if name in body:
                value = _text(body, name, errors, required=True)
                if value is not None:
                    setattr(patient, name, value)
        for name in PATIENT_TEXT_FIELDS:
            if name in body:
                setattr(patient, name, _text(body, name, errors))
        if patient.email is not None and not EMAIL_PATTERN.match(patient.email):
            errors["email"] = "is invalid"
        if patient.time_zone is not None:
            try:
                ZoneInfo(patient.time_zone)
            except (KeyError, ValueError):
                errors["time_zone"] = "is not a valid time zone"
        if "date_of_birth" in body:
            raw = body["date_of_birth"]
            if raw is None:
                patient.date_of_birth = None
            else:
                try:
                    patient.date_of_birth = date.fromisoformat(raw) if isinstance(raw, str) else None
                except ValueError:
                    patient.date_of_birth = None
                if patient.date_of_birth is None:
                    errors["date_of_birth"] = "is not a date (YYYY-MM-DD)"
        if "patient_phone_numbers" in body:
            numbers = body["patient_phone_numbers"] or []
            if not isinstance(numbers, list) or not all(
                isinstance(item, dict) and isinstance(item.get("number"), str) for item in numbers
            ):
                errors["patient_phone_numbers"] = "must be a list of {phone_type, number}"
            else:
                patient.phone_numbers = [
                    {"phone_type": str(item.get("phone_type") or "Mobile"), "number": item["number"]}
                    for item in numbers
                ]

    def create_patient(self, body: Mapping[str, Any]) -> Patient:
        now = self.now()
        errors: dict[str, str] = {}
        first_name = _text(body, "first_name", errors, required=True)
        last_name = _text(body, "last_name", errors, required=True)
        patient = Patient(
            id="", first_name=first_name or "", last_name=last_name or "", created_at=now, updated_at=now
        )
        self._apply_patient_fields(patient, body, errors)
        if errors:
            raise validation_failed(errors)
        patient.id = self.new_id()
        self.patients[patient.id] = patient
        self.changed()
        return patient

    def update_patient(self, patient_id: str, body: Mapping[str, Any]) -> Patient:
        patient = self.patient(patient_id)
        errors: dict[str, str] = {}
        draft = Patient(**{name: getattr(patient, name) for name in patient.__dataclass_fields__})
        self._apply_patient_fields(draft, body, errors)
        if errors:
            raise validation_failed(errors)
        for name in patient.__dataclass_fields__:
            setattr(patient, name, getattr(draft, name))
        patient.updated_at = self.now()
        self.changed()
        return patient

    def archive_patient(self, patient_id: str) -> None:
        patient = self.patient(patient_id)
        if patient.archived_at is None:
            patient.archived_at = patient.updated_at = self.now()
            self.changed()

    def unarchive_patient(self, patient_id: str) -> None:
        patient = self.patient(patient_id)
        if patient.archived_at is not None:
            patient.archived_at = None
            patient.updated_at = self.now()
            self.changed()

    def delete_patient(self, patient_id: str) -> None:
        patient = self.patient(patient_id)
        patient.deleted_at = patient.updated_at = self.now()
        self.changed()

    # --------------------------------------------------------------------------- appointments

    def appointment(self, appointment_id: str) -> Appointment:
        appointment = self.appointments.get(appointment_id)
        if appointment is None or appointment.deleted_at is not None:
            raise not_found("Individual appointment")
        return appointment

    def _check_references(self, values: Mapping[str, str | None], errors: dict[str, str]) -> None:
        tables: dict[str, Mapping[str, Any]] = {
            "patient_id": self.patients,
            "practitioner_id": self.practitioners,
            "appointment_type_id": self.appointment_types,
            "business_id": self.businesses,
        }
        for name, value in values.items():
            if value is None:
                continue
            row = tables[name].get(value)
            if row is None or getattr(row, "deleted_at", None) is not None:
                if name == "patient_id" and self.unknown_patient_is_server_error:
                    raise ClinikoError(500, {"message": "We're sorry, but something went wrong."})
                errors[name.removesuffix("_id")] = "must exist"

    def create_appointment(self, body: Mapping[str, Any]) -> Appointment:
        errors: dict[str, str] = {}
        references: dict[str, str | None] = {}
        for name in ("patient_id", "practitioner_id", "appointment_type_id", "business_id"):
            raw = body.get(name)
            if raw is None or raw == "":
                errors[name] = "can't be blank"
                references[name] = None
                continue
            references[name] = _reference(raw)
            if references[name] is None:
                errors[name] = "is not a number"
        starts_at = _datetime_field(body, "starts_at", errors, required=True)
        ends_at = _datetime_field(body, "ends_at", errors)
        notes = _text(body, "notes", errors)
        self._check_references(references, errors)
        appointment_type = self.appointment_types.get(references.get("appointment_type_id") or "")
        if starts_at is not None and ends_at is None and "ends_at" not in errors and appointment_type:
            ends_at = starts_at + timedelta(minutes=appointment_type.duration_in_minutes)
        if starts_at is not None and ends_at is not None and ends_at <= starts_at:
            errors["ends_at"] = "must be after starts_at"
        if errors:
            raise validation_failed(errors)
        assert starts_at is not None and ends_at is not None
        now = self.now()
        appointment = Appointment(
            id=self.new_id(),
            starts_at=starts_at,
            ends_at=ends_at,
            patient_id=references["patient_id"] or "",
            practitioner_id=references["practitioner_id"] or "",
            appointment_type_id=references["appointment_type_id"] or "",
            business_id=references["business_id"] or "",
            created_at=now,
            updated_at=now,
            notes=notes,
        )
        self.appointments[appointment.id] = appointment
        self.changed()
        return appointment

    def update_appointment(self, appointment_id: str, body: Mapping[str, Any]) -> Appointment:
        appointment = self.appointment(appointment_id)
        errors: dict[str, str] = {}
        references: dict[str, str | None] = {}
        for name in ("patient_id", "practitioner_id", "appointment_type_id", "business_id"):
            if name in body:
                references[name] = _reference(body[name])
                if references[name] is None:
                    errors[name] = "is not a number"
        self._check_references(references, errors)
        starts_at = _datetime_field(body, "starts_at", errors) if "starts_at" in body else None
        ends_at = _datetime_field(body, "ends_at", errors) if "ends_at" in body else None
        new_start = starts_at or appointment.starts_at
        # Moving only the start keeps the length of the visit.
        new_end = ends_at or (new_start + (appointment.ends_at - appointment.starts_at))
        if new_end <= new_start:
            errors["ends_at"] = "must be after starts_at"
        notes = _text(body, "notes", errors) if "notes" in body else appointment.notes
        flags = {name: _bool_field(body, name, errors) for name in ("did_not_arrive", "patient_arrived")}
        if errors:
            raise validation_failed(errors)
        appointment.starts_at, appointment.ends_at, appointment.notes = new_start, new_end, notes
        for name, value in references.items():
            setattr(appointment, name, value)
        for name, flag in flags.items():
            if flag is not None:
                setattr(appointment, name, flag)
        appointment.updated_at = self.now()
        self.changed()
        return appointment

    def cancel_appointment(self, appointment_id: str, body: Mapping[str, Any]) -> None:
        appointment = self.appointment(appointment_id)
        reason = body.get("cancellation_reason")
        errors: dict[str, str] = {}
        if reason is None:
            errors["cancellation_reason"] = "can't be blank"
        elif isinstance(reason, bool) or not isinstance(reason, int) or reason not in CANCELLATION_REASONS:
            allowed = ", ".join(str(code) for code in CANCELLATION_REASONS)
            errors["cancellation_reason"] = f"is not included in the list ({allowed})"
        note = _text(body, "cancellation_note", errors)
        if errors:
            raise validation_failed(errors)
        # Cancelling is irreversible and cancelled_at never moves, so a repeated cancel (a client
        # retrying after a lost response) changes nothing.
        if appointment.cancelled_at is not None:
            return
        appointment.cancelled_at = appointment.updated_at = self.now()
        appointment.cancellation_reason = int(reason)  # type: ignore[arg-type]
        appointment.cancellation_note = note
        self.changed()

    def archive_appointment(self, appointment_id: str) -> None:
        appointment = self.appointment(appointment_id)
        if appointment.archived_at is None:
            appointment.archived_at = appointment.updated_at = self.now()
            self.changed()

    def delete_appointment(self, appointment_id: str) -> None:
        appointment = self.appointment(appointment_id)
        appointment.deleted_at = appointment.updated_at = self.now()
        self.changed()

    def has_conflicts(self, appointment_id: str) -> bool:
        target = self.appointment(appointment_id)
        return any(
            other.id != target.id
            and other.occupies_time
            and other.practitioner_id == target.practitioner_id
            and other.starts_at < target.ends_at
            and target.starts_at < other.ends_at
            for other in self.appointments.values()
        )

    # ------------------------------------------------------------------------ available times

    def available_times(
        self, business_id: str, practitioner_id: str, appointment_type_id: str, from_text: str, to_text: str
    ) -> list[datetime]:
        business = self.businesses.get(business_id)
        practitioner = self.practitioners.get(practitioner_id)
        appointment_type = self.appointment_types.get(appointment_type_id)
        if business is None:
            raise not_found("Business")
        if practitioner is None:
            raise not_found("Practitioner")
        if appointment_type is None:
            raise not_found("Appointment type")
        zone = ZoneInfo(business.time_zone_identifier)
        try:
            first_day, last_day = date.fromisoformat(from_text), date.fromisoformat(to_text)
        except ValueError:
            raise ClinikoError(400, {"message": INVALID_TIME_FRAME})
        today = self.now().astimezone(zone).date()
        span = (last_day - first_day).days
        if first_day < today or span < 0 or span > MAX_AVAILABLE_TIMES_SPAN_DAYS:
            raise ClinikoError(400, {"message": INVALID_TIME_FRAME})
        offered = (
            practitioner.active
            and practitioner.show_in_online_bookings
            and appointment_type.show_in_online_bookings
            and appointment_type.archived_at is None
            and business.id in practitioner.business_ids
            and appointment_type.id in practitioner.appointment_type_ids
        )
        if not offered:
            return []
        length = timedelta(minutes=appointment_type.duration_in_minutes)
        busy = sorted(
            (appointment.starts_at, appointment.ends_at)
            for appointment in self.appointments.values()
            if appointment.practitioner_id == practitioner.id and appointment.occupies_time
        )
        now = self.now()
        starts: list[datetime] = []
        for offset in range(span + 1):
            day = first_day + timedelta(days=offset)
            for window_start, window_end in practitioner.working_hours.get(day.weekday(), []):
                local = datetime.combine(day, datetime.strptime(window_start, "%H:%M").time(), tzinfo=zone)
                local_end = datetime.combine(day, datetime.strptime(window_end, "%H:%M").time(), tzinfo=zone)
                slot = local.astimezone(UTC)
                end = local_end.astimezone(UTC)
                while slot + length <= end:
                    if slot >= now and not any(
                        b_start < slot + length and slot < b_end for b_start, b_end in busy
                    ):
                        starts.append(slot)
                    slot += length
        return starts

    # ------------------------------------------------------------------------------- seeding

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        """Fill the account from the shared generator: one business in the clinic's time zone."""
        business = self.add_business("Main Street Clinic", clinic.timezone)
        type_ids: dict[int, str] = {}
        for generated_type in clinic.appointment_types:
            type_ids[generated_type.id] = self.add_appointment_type(
                generated_type.name,
                generated_type.duration_minutes,
                category="Hygiene" if generated_type.for_hygiene else "General",
            ).id
        practitioner_ids: dict[int, str] = {}
        open_hours = [(f"{clinic.spec.open_hour:02d}:00", f"{clinic.spec.close_hour % 24:02d}:00")]
        for generated_practitioner in clinic.practitioners:
            practitioner = self.add_practitioner(
                generated_practitioner.first_name,
                generated_practitioner.last_name,
                business_ids=[business.id],
                appointment_type_ids=[
                    type_ids[t.id]
                    for t in clinic.appointment_types
                    if t.for_hygiene == generated_practitioner.is_hygienist
                ],
                title=generated_practitioner.title,
                designation="Hygienist" if generated_practitioner.is_hygienist else "Dentist",
            )
            practitioner.working_hours = {day: list(open_hours) for day in range(5)}
            practitioner_ids[generated_practitioner.id] = practitioner.id
        patient_ids: dict[int, str] = {}
        for generated_patient in clinic.patients:
            phones = [{"phone_type": "Mobile", "number": generated_patient.mobile_phone}]
            if generated_patient.home_phone:
                phones.append({"phone_type": "Home", "number": generated_patient.home_phone})
            patient = Patient(
                id=self.new_id(),
                first_name=generated_patient.first_name,
                last_name=generated_patient.last_name,
                created_at=generated_patient.created_at.replace(microsecond=0),
                updated_at=generated_patient.created_at.replace(microsecond=0),
                preferred_first_name=generated_patient.preferred_name or None,
                date_of_birth=generated_patient.birth_date,
                email=generated_patient.email or None,
                phone_numbers=phones,
                address_1=generated_patient.address,
                city=generated_patient.city,
                state=generated_patient.state,
                post_code=generated_patient.zip_code,
                country="United States",
                old_reference_id=str(generated_patient.id),
            )
            self.patients[patient.id] = patient
            patient_ids[generated_patient.id] = patient.id
        for generated in clinic.appointments:
            created = generated.created_at.replace(microsecond=0)
            updated = generated.updated_at.replace(microsecond=0)
            appointment = Appointment(
                id=self.new_id(),
                starts_at=generated.start,
                ends_at=generated.end,
                patient_id=patient_ids[generated.patient_id],
                practitioner_id=practitioner_ids[generated.practitioner_id],
                appointment_type_id=type_ids[generated.appointment_type_id],
                business_id=business.id,
                created_at=created,
                updated_at=updated,
                notes=generated.note or None,
                did_not_arrive=generated.status == "noshow",
                patient_arrived=generated.status == "fulfilled",
            )
            if generated.status == "cancelled":
                appointment.cancelled_at = updated
                appointment.cancellation_reason = 50
            self.appointments[appointment.id] = appointment
        self.changed()

    # --------------------------------------------------------------------------- serialization

    def patient_name(self, patient_id: str) -> str:
        patient = self.patients.get(patient_id)
        return f"{patient.first_name} {patient.last_name}" if patient else ""


def _link(base: str, path: str) -> dict[str, Any]:
    return {"links": {"self": f"{base}{path}"}}


def business_json(business: Business, base: str) -> dict[str, Any]:
    return {
        "id": business.id,
        "business_name": business.business_name,
        "display_name": business.business_name,
        "time_zone": business.time_zone,
        "time_zone_identifier": business.time_zone_identifier,
        "address_1": business.address_1,
        "address_2": None,
        "city": business.city,
        "state": business.state,
        "post_code": business.post_code,
        "country": business.country,
        "show_in_online_bookings": True,
        "archived_at": format_utc(business.archived_at),
        "created_at": format_utc(business.created_at),
        "updated_at": format_utc(business.updated_at),
        "practitioners": _link(base, f"/businesses/{business.id}/practitioners"),
        "links": {"self": f"{base}/businesses/{business.id}"},
    }


def appointment_type_json(appointment_type: AppointmentType, base: str) -> dict[str, Any]:
    return {
        "id": appointment_type.id,
        "name": appointment_type.name,
        "category": appointment_type.category,
        "color": appointment_type.color,
        "description": appointment_type.description,
        "duration_in_minutes": appointment_type.duration_in_minutes,
        "max_attendees": appointment_type.max_attendees,
        "show_in_online_bookings": appointment_type.show_in_online_bookings,
        "archived_at": format_utc(appointment_type.archived_at),
        "created_at": format_utc(appointment_type.created_at),
        "updated_at": format_utc(appointment_type.updated_at),
        "practitioners": _link(base, f"/appointment_types/{appointment_type.id}/practitioners"),
        "links": {"self": f"{base}/appointment_types/{appointment_type.id}"},
    }


def practitioner_json(practitioner: Practitioner, base: str) -> dict[str, Any]:
    display = " ".join(
        part for part in (practitioner.title, practitioner.first_name, practitioner.last_name) if part
    )
    return {
        "id": practitioner.id,
        "first_name": practitioner.first_name,
        "last_name": practitioner.last_name,
        "title": practitioner.title,
        "designation": practitioner.designation,
        "display_name": display,
        "label": practitioner.designation,
        "active": practitioner.active,
        "show_in_online_bookings": practitioner.show_in_online_bookings,
        "created_at": format_utc(practitioner.created_at),
        "updated_at": format_utc(practitioner.updated_at),
        "appointments": _link(base, f"/practitioners/{practitioner.id}/appointments"),
        "appointment_types": _link(base, f"/practitioners/{practitioner.id}/appointment_types"),
        "links": {"self": f"{base}/practitioners/{practitioner.id}"},
    }


def patient_json(patient: Patient, base: str) -> dict[str, Any]:
    return {
        "id": patient.id,
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "preferred_first_name": patient.preferred_first_name,
        "date_of_birth": patient.date_of_birth.isoformat() if patient.date_of_birth else None,
        "email": patient.email,
        "patient_phone_numbers": [dict(number) for number in patient.phone_numbers],
        "address_1": patient.address_1,
        "address_2": patient.address_2,
        "address_3": patient.address_3,
        "city": patient.city,
        "state": patient.state,
        "post_code": patient.post_code,
        "country": patient.country,
        "time_zone": patient.time_zone,
        "notes": patient.notes,
        "old_reference_id": patient.old_reference_id,
        "custom_fields": None,
        "archived_at": format_utc(patient.archived_at),
        "deleted_at": format_utc(patient.deleted_at),
        "created_at": format_utc(patient.created_at),
        "updated_at": format_utc(patient.updated_at),
        "appointments": _link(base, f"/patients/{patient.id}/appointments"),
        "links": {"self": f"{base}/patients/{patient.id}"},
    }


def appointment_json(appointment: Appointment, base: str, patient_name: str) -> dict[str, Any]:
    reason = appointment.cancellation_reason
    return {
        "id": appointment.id,
        "created_at": format_utc(appointment.created_at),
        "updated_at": format_utc(appointment.updated_at),
        "starts_at": format_utc(appointment.starts_at),
        "ends_at": format_utc(appointment.ends_at),
        "cancelled_at": format_utc(appointment.cancelled_at),
        "cancellation_reason": reason,
        "cancellation_note": appointment.cancellation_note,
        "cancellation_reason_description": CANCELLATION_REASONS.get(reason, "") if reason is not None else "",
        "archived_at": format_utc(appointment.archived_at),
        "deleted_at": format_utc(appointment.deleted_at),
        "did_not_arrive": appointment.did_not_arrive,
        "patient_arrived": appointment.patient_arrived,
        "notes": appointment.notes,
        "patient_name": patient_name,
        "repeat_rule": {},
        "repeats": None,
        "repeated_from": None,
        "email_reminder_sent": False,
        "sms_reminder_sent": False,
        "invoice_status": None,
        "treatment_note_status": None,
        "telehealth_url": None,
        "booking_ip_address": None,
        "online_booking_policy_accepted": None,
        "appointment_type": _link(base, f"/appointment_types/{appointment.appointment_type_id}"),
        "business": _link(base, f"/businesses/{appointment.business_id}"),
        "practitioner": _link(base, f"/practitioners/{appointment.practitioner_id}"),
        "patient": _link(base, f"/patients/{appointment.patient_id}"),
        "attendees": _link(base, f"/individual_appointments/{appointment.id}/attendees"),
        "conflicts": _link(base, f"/individual_appointments/{appointment.id}/conflicts"),
        "links": {"self": f"{base}/individual_appointments/{appointment.id}"},
    }


# ------------------------------------------------------------------------------------------ server


class ClinikoSettings(BaseModel):
    """Live-tunable account settings (``PUT /_sandbox/settings``)."""

    model_config = ConfigDict(extra="forbid")

    shard: str = Field("au1", pattern=r"^\w{2}\d{1,2}$", description="The shard this server plays.")
    api_keys: list[str] = Field(default_factory=lambda: [DEFAULT_API_KEY], min_length=1)
    rate_limit_per_minute: int = Field(200, ge=0, description="Requests a minute per API key; 0 = unlimited.")
    require_user_agent: bool = True
    unknown_patient_is_server_error: bool = Field(
        False, description="Answer an unknown patient_id on create with 500, as Cliniko did in 2018 (#215)."
    )


DEFAULT_API_KEY = "MS0xLXNhbmRib3gtY2xpbmlrby1rZXk-au1"
DEFAULT_USER_AGENT = "clinicsync sandbox (sandbox@example.com)"


# Stamps are stored in the API's own ``...Z`` form, to the second.
STATE = StateCodec(encode_datetime=format_utc, decode_datetime=parse_utc)
# ClinikoStore attribute -> record type, in state file order.
TABLES: dict[str, type[Any]] = {
    "businesses": Business,
    "appointment_types": AppointmentType,
    "practitioners": Practitioner,
    "patients": Patient,
    "appointments": Appointment,
}
# Appointments are stored under their resource name.
STATE_KEYS = {"appointments": "individual_appointments"}


class ClinikoSandbox(SandboxServer):
    """The Cliniko API simulator; see the module docstring for what it reproduces."""

    name = "cliniko"
    title = "Cliniko API"
    api_prefix = "/v1"
    Settings = ClinikoSettings

    def __init__(self, **options: Any) -> None:
        self.store = ClinikoStore(self._clock_now)
        self.rate_limiter = RateLimiter(200)
        super().__init__(**options)

    def _clock_now(self) -> datetime:
        return self.clock.now()

    @property
    def account(self) -> ClinikoSettings:
        assert isinstance(self.settings, ClinikoSettings)
        return self.settings

    # ------------------------------------------------------------------ framework hooks

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        self.store = ClinikoStore(self._clock_now)
        self.store.load_clinic(clinic)

    def dump_state(self) -> dict[str, Any]:
        store = self.store
        return {
            "next_id": store._next_id,
            **STATE.dump_tables(store, TABLES, state_keys=STATE_KEYS),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        store = ClinikoStore(self._clock_now)
        store._next_id = int(state["next_id"])
        STATE.load_tables(store, TABLES, state, state_keys=STATE_KEYS)
        store.changed()
        self.store = store

    def state_summary(self) -> dict[str, Any]:
        appointments = self.store.appointments.values()
        return {
            "businesses": len(self.store.businesses),
            "practitioners": len(self.store.practitioners),
            "appointment_types": len(self.store.appointment_types),
            "patients": len(self.store.patients),
            "individual_appointments": len(self.store.appointments),
            "cancelled": sum(1 for row in appointments if row.cancelled_at is not None),
            "archived": sum(1 for row in appointments if row.archived_at is not None),
            "deleted": sum(1 for row in appointments if row.deleted_at is not None),
        }

    def render_error(self, status: int, message: str, *, reason: str | None = None) -> Response:
        return JSONResponse({"message": message}, status)

    def rate_limit_headers(self, retry_after: int) -> dict[str, str]:
        return {"X-RateLimit-Reset": str(int(time.time()) + retry_after)}

    def identify(self, headers: Headers) -> str | None:
        user = basic_auth_user(headers.get("authorization"))
        if user is None:
            return None
        key, shard = shard_of_key(user)
        return f"{key[:6]}...-{shard}"

    def credentials(self) -> dict[str, str]:
        return {
            "api_key": self.account.api_keys[0],
            "shard": self.account.shard,
            "user_agent": DEFAULT_USER_AGENT,
            "auth": "HTTP Basic, API key as user name, empty password",
        }

    # ------------------------------------------------------------------ request plumbing

    def check_request(self, request: Request) -> None:
        """Identification, authentication, shard and rate limit, in the order Cliniko applies them."""
        account = self.account
        if account.require_user_agent and not USER_AGENT_FORMAT.match(request.headers.get("user-agent", "")):
            raise ClinikoError(
                403,
                {"message": "A User-Agent of the form 'APP_VENDOR_NAME (APP_VENDOR_EMAIL)' is required."},
            )
        user = basic_auth_user(request.headers.get("authorization"))
        denied = ClinikoError(
            401, {"message": "HTTP Basic: Access denied."}, {"WWW-Authenticate": 'Basic realm="Application"'}
        )
        if user is None:
            raise denied
        key, shard = shard_of_key(user)
        known = {shard_of_key(candidate)[0]: shard_of_key(candidate)[1] for candidate in account.api_keys}
        # A key is valid only on its own shard: the same key sent to another shard's host is unknown there.
        if shard != account.shard.lower() or known.get(key) != shard:
            raise denied
        if self.consume_token_expiry(request):
            raise denied
        self.rate_limiter.limit_per_minute = account.rate_limit_per_minute
        self.store.unknown_patient_is_server_error = account.unknown_patient_is_server_error
        reset_at = self.rate_limiter.check(key)
        if reset_at is not None:
            self.note_fault(request, "cliniko_rate_limit")
            raise ClinikoError(429, {"message": "Too Many Requests"}, {"X-RateLimit-Reset": str(reset_at)})

    @staticmethod
    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            raise ClinikoError(400, {"message": "The request body is not valid JSON."})
        if not isinstance(body, dict):
            raise ClinikoError(400, {"message": "The request body must be a JSON object."})
        return body

    @staticmethod
    def api_base(request: Request) -> str:
        return str(request.base_url).rstrip("/") + ClinikoSandbox.api_prefix

    def list_response(
        self,
        request: Request,
        spec: ResourceSpec,
        scope: tuple[Any, ...],
        source: Callable[[], Iterable[Any]],
        render: Callable[[Any, str], dict[str, Any]],
        *,
        apply_hiding: bool = True,
    ) -> Response:
        """One page of a filtered, sorted list with ``total_entries`` and ``links``."""
        params = request.query_params
        raw_filters = params.getlist("q[]") + params.getlist("q")
        filters = [parse_filter(raw, spec.filters) for raw in raw_filters]
        sort = parse_sort(params.get("sort"), params.get("order"), spec)
        page = parse_page(params)
        effective_spec = spec if apply_hiding else ResourceSpec(key=spec.key, filters=spec.filters)
        key = (spec.key, scope, apply_hiding, tuple(raw_filters), tuple(sort))
        rows = self.store.cache.get(
            key, self.store.version, lambda: select_records(source(), effective_spec, filters, sort)
        )
        offset = (page.page - 1) * page.per_page
        visible = self.paginate(request, rows, offset, page.per_page)
        base = self.api_base(request)
        return JSONResponse(
            {
                spec.key: [render(row, base) for row in visible],
                "total_entries": len(rows),
                "links": self.page_links(request, page, len(rows)),
            }
        )

    @staticmethod
    def page_links(request: Request, page: PageRequest, total: int) -> dict[str, str]:
        kept = [
            (name, value)
            for name, value in request.query_params.multi_items()
            if name not in ("page", "per_page")
        ]

        def url(number: int) -> str:
            query = urlencode([*kept, ("page", str(number)), ("per_page", str(page.per_page))])
            return f"{str(request.base_url).rstrip('/')}{request.url.path}?{query}"

        links = {"self": url(page.page)}
        if page.page * page.per_page < total:
            links["next"] = url(page.page + 1)
        if page.page > 1:
            links["previous"] = url(page.page - 1)
        return links

    def render_appointment(self, appointment: Appointment, base: str) -> dict[str, Any]:
        return appointment_json(appointment, base, self.store.patient_name(appointment.patient_id))

    # ------------------------------------------------------------------ routes

    def add_routes(self, router: APIRouter) -> None:
        server = self

        class ClinikoRoute(APIRoute):
            """Runs the account checks first and renders ``ClinikoError`` for every endpoint."""

            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()

                async def guarded(request: Request) -> Response:
                    try:
                        server.check_request(request)
                        return await handler(request)
                    except ClinikoError as error:
                        return JSONResponse(error.body, error.status, headers=error.headers)

                return guarded

        router.route_class = ClinikoRoute
        store = lambda: self.store  # noqa: E731 - the store is replaced on reseed, so always look it up

        # ---------------------------------------------------------------- patients

        @router.get("/patients")
        async def list_patients(request: Request) -> Response:
            return self.list_response(
                request, PATIENT_SPEC, (), lambda: store().patients.values(), patient_json
            )

        @router.get("/patients/deleted")
        async def list_deleted_patients(request: Request) -> Response:
            # The legacy endpoint: only the deletion time and a link survive a delete.
            return self.list_response(
                request,
                PATIENT_SPEC,
                ("deleted",),
                lambda: [row for row in store().patients.values() if row.deleted_at is not None],
                lambda row, base: {
                    "deleted_at": format_utc(row.deleted_at),
                    "links": {"self": f"{base}/patients/{row.id}"},
                },
                apply_hiding=False,
            )

        @router.post("/patients")
        async def create_patient(request: Request) -> Response:
            patient = store().create_patient(await self.json_body(request))
            base = self.api_base(request)
            return JSONResponse(
                patient_json(patient, base), 201, headers={"Location": f"{base}/patients/{patient.id}"}
            )

        @router.get("/patients/{patient_id}")
        async def get_patient(patient_id: str, request: Request) -> Response:
            return JSONResponse(patient_json(store().patient(patient_id), self.api_base(request)))

        @router.patch("/patients/{patient_id}")
        @router.put("/patients/{patient_id}")
        async def update_patient(patient_id: str, request: Request) -> Response:
            patient = store().update_patient(patient_id, await self.json_body(request))
            return JSONResponse(patient_json(patient, self.api_base(request)))

        @router.post("/patients/{patient_id}/archive")
        async def archive_patient(patient_id: str) -> Response:
            store().archive_patient(patient_id)
            return Response(status_code=204)

        @router.post("/patients/{patient_id}/unarchive")
        async def unarchive_patient(patient_id: str) -> Response:
            store().unarchive_patient(patient_id)
            return Response(status_code=204)

        @router.delete("/patients/{patient_id}")
        async def delete_patient(patient_id: str) -> Response:
            store().delete_patient(patient_id)
            return Response(status_code=204)

        @router.get("/patients/{patient_id}/appointments")
        async def list_patient_appointments(patient_id: str, request: Request) -> Response:
            store().patient(patient_id)
            return self.list_response(
                request,
                APPOINTMENT_SPEC,
                ("patient", patient_id),
                lambda: [row for row in store().appointments.values() if row.patient_id == patient_id],
                self.render_appointment,
            )

        # ---------------------------------------------------------------- appointments

        @router.get("/individual_appointments")
        async def list_appointments(request: Request) -> Response:
            return self.list_response(
                request, APPOINTMENT_SPEC, (), lambda: store().appointments.values(), self.render_appointment
            )

        @router.get("/individual_appointments/deleted")
        async def list_deleted_appointments(request: Request) -> Response:
            return self.list_response(
                request,
                APPOINTMENT_SPEC,
                ("deleted",),
                lambda: [row for row in store().appointments.values() if row.deleted_at is not None],
                self.render_appointment,
                apply_hiding=False,
            )

        @router.post("/individual_appointments")
        async def create_appointment(request: Request) -> Response:
            appointment = store().create_appointment(await self.json_body(request))
            base = self.api_base(request)
            return JSONResponse(
                self.render_appointment(appointment, base),
                201,
                headers={"Location": f"{base}/individual_appointments/{appointment.id}"},
            )

        @router.get("/individual_appointments/{appointment_id}")
        async def get_appointment(appointment_id: str, request: Request) -> Response:
            return JSONResponse(
                self.render_appointment(store().appointment(appointment_id), self.api_base(request))
            )

        @router.patch("/individual_appointments/{appointment_id}")
        @router.put("/individual_appointments/{appointment_id}")
        async def update_appointment(appointment_id: str, request: Request) -> Response:
            appointment = store().update_appointment(appointment_id, await self.json_body(request))
            return JSONResponse(self.render_appointment(appointment, self.api_base(request)))

        @router.patch("/individual_appointments/{appointment_id}/cancel")
        async def cancel_appointment(appointment_id: str, request: Request) -> Response:
            store().cancel_appointment(appointment_id, await self.json_body(request))
            return Response(status_code=204)

        @router.post("/individual_appointments/{appointment_id}/archive")
        async def archive_appointment(appointment_id: str) -> Response:
            store().archive_appointment(appointment_id)
            return Response(status_code=204)

        @router.delete("/individual_appointments/{appointment_id}")
        async def delete_appointment(appointment_id: str) -> Response:
            store().delete_appointment(appointment_id)
            return Response(status_code=204)

        @router.get("/individual_appointments/{appointment_id}/conflicts")
        async def appointment_conflicts(appointment_id: str) -> Response:
            return JSONResponse({"conflicts": {"exist": store().has_conflicts(appointment_id)}})

        # ---------------------------------------------------------------- practitioners

        def practitioners_where(
            request: Request, scope: tuple[Any, ...], keep: Callable[[Practitioner], bool]
        ) -> Response:
            return self.list_response(
                request,
                PRACTITIONER_SPEC,
                scope,
                lambda: [row for row in store().practitioners.values() if keep(row)],
                practitioner_json,
            )

        @router.get("/practitioners")
        async def list_practitioners(request: Request) -> Response:
            return practitioners_where(request, ("active",), lambda row: row.active)

        @router.get("/practitioners/inactive")
        async def list_inactive_practitioners(request: Request) -> Response:
            return practitioners_where(request, ("inactive",), lambda row: not row.active)

        @router.get("/practitioners/{practitioner_id}")
        async def get_practitioner(practitioner_id: str, request: Request) -> Response:
            practitioner = store().practitioners.get(practitioner_id)
            if practitioner is None:
                raise not_found("Practitioner")
            return JSONResponse(practitioner_json(practitioner, self.api_base(request)))

        @router.get("/businesses/{business_id}/practitioners")
        async def list_business_practitioners(business_id: str, request: Request) -> Response:
            if business_id not in store().businesses:
                raise not_found("Business")
            return practitioners_where(
                request, ("business", business_id), lambda row: row.active and business_id in row.business_ids
            )

        @router.get("/appointment_types/{type_id}/practitioners")
        async def list_type_practitioners(type_id: str, request: Request) -> Response:
            if type_id not in store().appointment_types:
                raise not_found("Appointment type")
            return practitioners_where(
                request, ("type", type_id), lambda row: row.active and type_id in row.appointment_type_ids
            )

        # ---------------------------------------------------------------- businesses, types

        @router.get("/businesses")
        async def list_businesses(request: Request) -> Response:
            return self.list_response(
                request, BUSINESS_SPEC, (), lambda: store().businesses.values(), business_json
            )

        @router.get("/businesses/{business_id}")
        async def get_business(business_id: str, request: Request) -> Response:
            business = store().businesses.get(business_id)
            if business is None:
                raise not_found("Business")
            return JSONResponse(business_json(business, self.api_base(request)))

        @router.get("/appointment_types")
        async def list_appointment_types(request: Request) -> Response:
            return self.list_response(
                request,
                APPOINTMENT_TYPE_SPEC,
                (),
                lambda: store().appointment_types.values(),
                appointment_type_json,
            )

        @router.get("/appointment_types/{type_id}")
        async def get_appointment_type(type_id: str, request: Request) -> Response:
            appointment_type = store().appointment_types.get(type_id)
            if appointment_type is None:
                raise not_found("Appointment type")
            return JSONResponse(appointment_type_json(appointment_type, self.api_base(request)))

        @router.get("/practitioners/{practitioner_id}/appointment_types")
        async def list_practitioner_types(practitioner_id: str, request: Request) -> Response:
            practitioner = store().practitioners.get(practitioner_id)
            if practitioner is None:
                raise not_found("Practitioner")
            offered = set(practitioner.appointment_type_ids)
            return self.list_response(
                request,
                APPOINTMENT_TYPE_SPEC,
                ("practitioner", practitioner_id),
                lambda: [row for row in store().appointment_types.values() if row.id in offered],
                appointment_type_json,
            )

        # ---------------------------------------------------------------- available times

        times_path = "/businesses/{business_id}/practitioners/{practitioner_id}/appointment_types/{type_id}"

        @router.get(times_path + "/available_times")
        async def available_times(
            business_id: str, practitioner_id: str, type_id: str, request: Request
        ) -> Response:
            params = request.query_params
            if "from" not in params or "to" not in params:
                raise ClinikoError(400, {"message": INVALID_TIME_FRAME})
            starts = store().available_times(
                business_id, practitioner_id, type_id, params["from"], params["to"]
            )
            page = parse_page(params)
            offset = (page.page - 1) * page.per_page
            return JSONResponse(
                {
                    "available_times": [
                        {"appointment_start": format_utc(start)}
                        for start in starts[offset : offset + page.per_page]
                    ],
                    "total_entries": len(starts),
                    "links": self.page_links(request, page, len(starts)),
                }
            )

        @router.get(times_path + "/next_available_time")
        async def next_available_time(
            business_id: str, practitioner_id: str, type_id: str, request: Request
        ) -> Response:
            business = store().businesses.get(business_id)
            if business is None:
                raise not_found("Business")
            today = self.clock.now().astimezone(ZoneInfo(business.time_zone_identifier)).date()
            # Look a few weeks ahead, one allowed window at a time.
            for week in range(NEXT_AVAILABLE_WEEKS):
                first = today + timedelta(days=week * (MAX_AVAILABLE_TIMES_SPAN_DAYS + 1))
                last = first + timedelta(days=MAX_AVAILABLE_TIMES_SPAN_DAYS)
                starts = store().available_times(
                    business_id, practitioner_id, type_id, first.isoformat(), last.isoformat()
                )
                if starts:
                    return JSONResponse(
                        {"appointment_start": format_utc(starts[0]), "links": {"self": str(request.url)}}
                    )
            return JSONResponse({"appointment_start": None, "links": {"self": str(request.url)}})

    # ------------------------------------------------------------------ front desk

    def actions(self) -> dict[str, ActionHandler]:
        return {
            "reschedule": self._action_reschedule,
            "cancel": self._action_cancel,
            "archive": self._action_archive,
            "delete": self._action_delete,
            "new_patient": self._action_new_patient,
            "book": self._action_book,
            "archive_patient": self._action_archive_patient,
        }

    def _front_desk(self, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return work()
        except ClinikoError as error:
            errors = error.body.get("errors") or {"body": error.body.get("message", "refused")}
            raise ControlError(
                [{"field": name, "message": str(message)} for name, message in errors.items()],
                error.status if error.status != 422 else 422,
            )

    def _appointment_view(self, appointment_id: str) -> dict[str, Any]:
        base = self.base_url or self.api_prefix
        stored = self.store.appointments[appointment_id]
        return self.render_appointment(stored, base)

    @staticmethod
    def _required(body: Mapping[str, Any], name: str) -> str:
        value = body.get(name)
        if value is None or value == "":
            raise ControlError([{"field": name, "message": "is required"}])
        return str(value)

    async def _action_reschedule(self, body: dict[str, Any]) -> dict[str, Any]:
        """Move an appointment: {appointment_id, starts_at, ends_at?} (UTC Z); updated_at moves too."""
        appointment_id = self._required(body, "appointment_id")
        changes: dict[str, Any] = {
            name: body[name] for name in ("starts_at", "ends_at", "practitioner_id") if name in body
        }

        def work() -> dict[str, Any]:
            self.store.update_appointment(appointment_id, changes)
            return self._appointment_view(appointment_id)

        return self._front_desk(work)

    async def _action_cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        """Cancel an appointment: {appointment_id, cancellation_reason? (default 50), cancellation_note?}."""
        appointment_id = self._required(body, "appointment_id")
        reason = {
            "cancellation_reason": body.get("cancellation_reason", 50),
            "cancellation_note": body.get("cancellation_note"),
        }

        def work() -> dict[str, Any]:
            self.store.cancel_appointment(appointment_id, reason)
            return self._appointment_view(appointment_id)

        return self._front_desk(work)

    async def _action_archive(self, body: dict[str, Any]) -> dict[str, Any]:
        """Archive an appointment: {appointment_id}; it leaves the default lists."""
        appointment_id = self._required(body, "appointment_id")

        def work() -> dict[str, Any]:
            self.store.archive_appointment(appointment_id)
            return self._appointment_view(appointment_id)

        return self._front_desk(work)

    async def _action_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Delete an appointment: {appointment_id}; only /individual_appointments/deleted shows it after."""
        appointment_id = self._required(body, "appointment_id")

        def work() -> dict[str, Any]:
            self.store.delete_appointment(appointment_id)
            return self._appointment_view(appointment_id)

        return self._front_desk(work)

    async def _action_new_patient(self, body: dict[str, Any]) -> dict[str, Any]:
        """Register a walk-in patient: any patient fields; names default to 'Walk' 'In'."""
        fields = {"first_name": "Walk", "last_name": "In"} | body

        def work() -> dict[str, Any]:
            patient = self.store.create_patient(fields)
            return patient_json(patient, self.base_url or self.api_prefix)

        return self._front_desk(work)

    async def _action_book(self, body: dict[str, Any]) -> dict[str, Any]:
        """Book at the desk: appointment create fields; missing references default to the first of each."""
        store = self.store
        defaults = {
            "business_id": next(iter(store.businesses), None),
            "practitioner_id": next(iter(store.practitioners), None),
            "appointment_type_id": next(iter(store.appointment_types), None),
            "patient_id": next(iter(store.patients), None),
        }
        fields = {name: value for name, value in defaults.items() if value is not None} | body

        def work() -> dict[str, Any]:
            appointment = store.create_appointment(fields)
            return self._appointment_view(appointment.id)

        return self._front_desk(work)

    async def _action_archive_patient(self, body: dict[str, Any]) -> dict[str, Any]:
        """Archive a patient: {patient_id}; /patients hides them unless q[]=archived_at:* is sent."""
        patient_id = self._required(body, "patient_id")

        def work() -> dict[str, Any]:
            self.store.archive_patient(patient_id)
            return patient_json(self.store.patients[patient_id], self.base_url or self.api_prefix)

        return self._front_desk(work)


NEXT_AVAILABLE_WEEKS = 8
