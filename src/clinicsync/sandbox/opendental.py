"""OpenDental REST API simulator (``/api/v1``), following the OpenDental section of the PMS contract notes.

What it reproduces:

- ``Authorization: ODFHIR {DeveloperKey}/{CustomerKey}``; 401 for anything else, and for writes made
  with a read-only customer key (``ApiReadAll`` only).
- PascalCase fields, booleans as ``"true"``/``"false"`` strings, office-local datetimes without offset
  (``yyyy-MM-dd HH:mm:ss``), null dates as ``0001-01-01`` / ``0001-01-01 00:00:00``, ``serverDateTime``
  on every row of a GET; schedule numbers serialised as strings.
- ``Limit``/``Offset`` paging, at most 100 rows, no total count; ``DateTStamp`` returns rows changed
  strictly after the given second (stamps have one-second resolution, like the real database); a
  date alone (``DateTStamp=2020-07-30``, as in the docs' example) means midnight office time.
- Appointments: list/get/create/partial update, ``Break`` (Scheduled only), ``Note`` (appends),
  ``Confirm``, ``Slots``, ``ASAP``; ``histappointments`` with Created/Changed/Missed/Cancelled/Deleted;
  hard deletes only through the front-desk action and never in ``DateTStamp`` deltas.
- Patients: get, search (reduced fields), ``Simple`` (full fields, ``DateTStamp``), POST with the
  duplicate check, PUT where an empty string clears a field; no delete.
- Providers, operatories, schedules (from office hours), appointment types.
- Errors are short explanations with the documented status codes (200/201/400/401/404/410/504).
- Per-customer-key throttling (1 request/s, 1 per 5 s for read-only keys): off, queueing delay or
  an error, by setting.
- API Events: ``/subscriptions`` and database-event webhooks with ``Authorization: <CustomerKey>``,
  ``Workstation`` and ``Event-Type: WatchTable: <Table>`` headers, batches of at most 1000, and a
  failed delivery resent (changes of up to the last 3 days) on the next successful one.

Unverified parts of the contract are settings (``OpenDentalSettings``) so tests can try each reading.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers

from clinicsync.sandbox.core import ActionHandler, SandboxError, SandboxServer
from clinicsync.sandbox.generator import GeneratedClinic
from clinicsync.sandbox.state import StateCodec

DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
NULL_DATE = "0001-01-01"
NULL_DATETIME = "0001-01-01 00:00:00"
MAX_PAGE = 100
MAX_PATTERN = 108  # 9 hours of 5-minute characters
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
ZIP_RE = re.compile(r"^(\d{5}|\d{5}-\d{4}|\d{9}|[A-Za-z]\d[A-Za-z] \d[A-Za-z]\d)$")

APT_STATUSES = (
    "Scheduled",
    "Complete",
    "UnschedList",
    "ASAP",
    "Broken",
    "Planned",
    "PtNote",
    "PtNoteCompleted",
)
POST_APT_STATUSES = ("Scheduled", "Complete", "UnschedList", "PtNote", "PtNoteCompleted")
PUT_APT_STATUSES = ("Scheduled", "Complete", "UnschedList", "Broken", "Planned", "PtNote", "PtNoteCompleted")
# Statuses that hold a chair: everything else (broken, unscheduled, planned, notes) leaves it free.
OCCUPYING_STATUSES = frozenset({"Scheduled", "Complete", "ASAP"})
HIST_ACTIONS = ("Created", "Changed", "Missed", "Cancelled", "Deleted")
PAT_STATUSES = ("Patient", "NonPatient", "Inactive", "Archived", "Deceased", "Prospective")
GENDERS = ("Male", "Female", "Unknown")
POSITIONS = ("Single", "Married", "Child", "Widowed", "Divorced")
CONTACT_METHODS = (
    "None",
    "DoNotCall",
    "HmPhone",
    "WkPhone",
    "WirelessPh",
    "Email",
    "SeeNotes",
    "Mail",
    "TextMessage",
)
TXT_MSG_OK = ("Unknown", "Yes", "No")
WATCH_TABLES = (
    "Appointment",
    "AppointmentDeleted",
    "Patient",
    "PatField",
    "Provider",
    "Operatory",
    "Schedule",
)
# Appointment confirmation definitions (definition category ApptConfirmed). The numbers are this
# sandbox's own; the confirmVal names are the documented ones.
CONFIRM_DEFS: dict[int, str] = {
    19: "Not Called",
    20: "Unconfirmed",
    21: "Left Msg",
    22: "Confirmed",
    23: "Arrived",
    209: "Sent",
    210: "Not Accepted",
    211: "Failed",
}
CONFIRM_VALS = {"None": 19, "Sent": 209, "Confirmed": 22, "Not Accepted": 210, "Failed": 211}
BREAK_PROCEDURES = {"Missed": "D9986", "Cancelled": "D9987"}
# GET /patients (search) answers with this reduced field set; /patients/Simple has every field.
PATIENT_SEARCH_FIELDS = (
    "serverDateTime",
    "PatNum",
    "LName",
    "FName",
    "MiddleI",
    "Preferred",
    "PatStatus",
    "Gender",
    "Birthdate",
    "SSN",
    "HmPhone",
    "WkPhone",
    "WirelessPhone",
    "Email",
    "Address",
    "City",
    "State",
    "Zip",
    "ChartNumber",
    "PriProv",
    "priProvAbbr",
    "ClinicNum",
    "clinicAbbr",
)
PATIENT_TEXT_FIELDS = (
    "MiddleI",
    "Preferred",
    "SSN",
    "Address",
    "Address2",
    "City",
    "State",
    "HmPhone",
    "WkPhone",
    "WirelessPhone",
    "Email",
    "ChartNumber",
)


def _default_customer_keys() -> dict[str, Literal["readwrite", "readonly"]]:
    return {"sandbox-customer-key": "readwrite", "sandbox-readonly-key": "readonly"}


class OpenDentalSettings(BaseModel):
    """Provider settings; the [U] parts of the contract are choices here."""

    model_config = ConfigDict(extra="forbid")

    developer_key: str = "sandbox-developer-key"
    customer_keys: dict[str, Literal["readwrite", "readonly"]] = Field(default_factory=_default_customer_keys)
    disabled_customer_keys: list[str] = Field(default_factory=list)
    throttle_mode: Literal["off", "delay", "error"] = "off"
    throttle_error_status: int = Field(429, ge=400, le=599)
    throttle_interval_seconds: float = Field(1.0, ge=0.0, description="Per key with any write permission.")
    throttle_readonly_interval_seconds: float = Field(5.0, ge=0.0, description="Per ApiReadAll-only key.")
    error_body: Literal["text", "json_string"] = "text"
    require_content_type: bool = False
    econnector_running: bool = True
    reject_overlaps: bool = True
    duplicate_patient_response: Literal["error", "return_existing"] = "error"
    events_enabled: bool = True
    events_batch_size: int = Field(1000, ge=1, le=1000)
    events_polling_scale: float = Field(
        1.0, gt=0.0, description="Multiplies PollingSeconds (tests use 0.05)."
    )
    events_resend_days: float = Field(3.0, gt=0.0)
    events_timeout_seconds: float = Field(5.0, gt=0.0)
    workstation: str = "SANDBOX-WS"
    office_open: str = "08:00:00"
    office_close: str = "17:00:00"


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class Provider:
    ProvNum: int
    Abbr: str
    LName: str
    FName: str
    IsSecondary: bool
    IsHidden: bool
    ProvStatus: str
    provColor: str
    DateTStamp: datetime


@dataclass(slots=True)
class Operatory:
    OperatoryNum: int
    OpName: str
    Abbrev: str
    ItemOrder: int
    IsHidden: bool
    ProvDentist: int
    ProvHygienist: int
    IsHygiene: bool
    ClinicNum: int
    SetProspective: bool
    IsWebSched: bool
    OperatoryType: int
    DateTStamp: datetime


@dataclass(slots=True)
class AppointmentType:
    AppointmentTypeNum: int
    AppointmentTypeName: str
    appointmentTypeColor: str
    IsHidden: bool
    Pattern: str
    CodeStr: str


@dataclass(slots=True)
class Patient:
    PatNum: int
    LName: str
    FName: str
    MiddleI: str
    Preferred: str
    PatStatus: str
    Gender: str
    Position: str
    Birthdate: date | None
    SSN: str
    Address: str
    Address2: str
    City: str
    State: str
    Zip: str
    HmPhone: str
    WkPhone: str
    WirelessPhone: str
    Email: str
    ChartNumber: str
    Guarantor: int
    PriProv: int
    SecProv: int
    ClinicNum: int
    PreferConfirmMethod: str
    PreferContactMethod: str
    PreferRecallMethod: str
    TxtMsgOk: str
    DateFirstVisit: date | None
    SecDateEntry: date | None
    DateTStamp: datetime


@dataclass(slots=True)
class Appointment:
    AptNum: int
    PatNum: int
    AptStatus: str
    Pattern: str
    Confirmed: int
    TimeLocked: bool
    Op: int
    Note: str
    ProvNum: int
    ProvHyg: int
    AptDateTime: datetime  # naive, office-local wall time, as OpenDental stores it
    NextAptNum: int
    UnschedStatus: int
    IsNewPatient: bool
    ProcDescript: str
    ClinicNum: int
    IsHygiene: bool
    DateTStamp: datetime  # aware UTC, whole seconds
    DateTimeArrived: datetime | None
    DateTimeSeated: datetime | None
    DateTimeDismissed: datetime | None
    InsPlan1: int
    InsPlan2: int
    DateTimeAskedToArrive: datetime | None
    colorOverride: str
    AppointmentTypeNum: int
    SecUserNumEntry: int
    SecDateTEntry: datetime  # aware UTC
    Priority: str
    PatternSecondary: str
    ItemOrderPlanned: int

    @property
    def minutes(self) -> int:
        return len(self.Pattern) * 5

    @property
    def end(self) -> datetime:
        return self.AptDateTime + timedelta(minutes=self.minutes)


@dataclass(slots=True)
class HistAppointment:
    HistApptNum: int
    HistUserNum: int
    HistDateTStamp: datetime  # aware UTC
    HistApptAction: str
    ApptSource: str
    appointment: Appointment


@dataclass(slots=True)
class Subscription:
    SubscriptionNum: int
    EndPointUrl: str
    Workstation: str
    PollingSeconds: int
    WatchTable: str
    UiEventType: str
    DateTimeStart: datetime | None  # aware UTC
    DateTimeStop: datetime | None
    Note: str
    CustomerKey: str
    # Delivery bookkeeping (not on the wire).
    delivered_seq: int = 0
    next_poll: float = 0.0
    last_result: str = ""


@dataclass(slots=True)
class Change:
    seq: int
    table: str
    key: int
    at: datetime  # aware UTC
    snapshot: dict[str, Any] | None = None  # deleted rows keep their last shape


# Record stamps keep their awareness as held: AptDateTime naive office-local wall time, the rest aware UTC.
STATE = StateCodec()
# Sandbox attribute -> record type for the tables kept by primary key; history is a list of its own.
TABLES: dict[str, type[Any]] = {
    "providers": Provider,
    "operatories": Operatory,
    "appointment_types": AppointmentType,
    "patients": Patient,
    "appointments": Appointment,
    "subscriptions": Subscription,
}


# --------------------------------------------------------------------------- wire formatting


def wire_bool(value: bool) -> str:
    return "true" if value else "false"


def wire_date(value: date | None) -> str:
    if not value:
        return NULL_DATE
    # isoformat is several times faster than strftime (a full read formats hundreds of thousands of
    # values) and gives the same text, except that it zero-pads years below 1000 where strftime does not.
    if type(value) is date and value.year >= 1000:
        return value.isoformat()
    return value.strftime(DATE_FORMAT)


def wire_local(value: datetime | None) -> str:
    if not value:
        return NULL_DATETIME
    # As in wire_date; an aware value would also get an offset from isoformat, so it keeps strftime.
    if value.tzinfo is None and value.year >= 1000:
        return value.isoformat(sep=" ", timespec="seconds")
    return value.strftime(DATETIME_FORMAT)


def parse_bool(name: str, value: Any) -> bool:
    if value in ("true", "false"):
        return bool(value == "true")
    if isinstance(value, bool):
        return value
    raise SandboxError(400, f'{name} must be "true" or "false"', reason=name)


def parse_date(name: str, value: Any) -> date:
    if not isinstance(value, str) or not DATE_RE.match(value):
        raise SandboxError(400, f"{name} format must be yyyy-MM-dd", reason=name)
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise SandboxError(400, f"{name} format must be yyyy-MM-dd", reason=name) from exc


def parse_local_datetime(name: str, value: Any) -> datetime:
    if not isinstance(value, str) or not DATETIME_RE.match(value):
        raise SandboxError(400, f"{name} format must be yyyy-MM-dd HH:mm:ss", reason=name)
    try:
        return datetime.strptime(value, DATETIME_FORMAT)
    except ValueError as exc:
        raise SandboxError(400, f"{name} format must be yyyy-MM-dd HH:mm:ss", reason=name) from exc


def parse_int(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise SandboxError(400, f"{name} must be a number", reason=name)
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise SandboxError(400, f"{name} must be a number", reason=name) from exc
    if number < minimum:
        raise SandboxError(400, f"{name} is invalid", reason=name)
    return number


def parse_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    options = tuple(choices)
    if value not in options:
        raise SandboxError(400, f"{name} must be one of: {', '.join(options)}", reason=name)
    return str(value)


def parse_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SandboxError(400, f"{name} must be a string", reason=name)
    return value


def pattern_for(minutes: int) -> str:
    units = max(1, minutes // 5)
    return "X" * units if units < 3 else "/" + "X" * (units - 2) + "/"


class QueryParams:
    """Case-insensitive query parameters (OpenDental's are matched without regard to case)."""

    def __init__(self, request: Request) -> None:
        self._values = {key.lower(): value for key, value in request.query_params.items()}

    def get(self, name: str) -> str | None:
        return self._values.get(name.lower())

    def has(self, name: str) -> bool:
        return name.lower() in self._values

    def integer(self, name: str) -> int | None:
        raw = self.get(name)
        return None if raw is None else parse_int(name, raw)

    def date(self, name: str) -> date | None:
        raw = self.get(name)
        return None if raw is None else parse_date(name, raw)


# --------------------------------------------------------------------------- the server


RowT = TypeVar("RowT")


def _by_number(table: Mapping[int, RowT], raw: str, noun: str, reason: str) -> RowT:
    """A row by the number in its URL path; anything else (missing, 0, not a number) is OpenDental's 404."""
    row = table.get(int(raw)) if raw.isdigit() else None
    if row is None:
        raise SandboxError(404, f"{noun} not found", reason=reason)
    return row


class OpenDentalSandbox(SandboxServer):
    """OpenDental's REST API at ``/api/v1`` (see the module docstring)."""

    name = "opendental"
    title = "OpenDental API"
    api_prefix = "/api/v1"
    Settings = OpenDentalSettings

    @property
    def od(self) -> OpenDentalSettings:
        assert isinstance(self.settings, OpenDentalSettings)
        return self.settings

    # ---- state ---------------------------------------------------------------------------

    def _empty_state(self) -> None:
        self.providers: dict[int, Provider] = {}
        self.operatories: dict[int, Operatory] = {}
        self.appointment_types: dict[int, AppointmentType] = {}
        self.patients: dict[int, Patient] = {}
        self.appointments: dict[int, Appointment] = {}
        self.hist: list[HistAppointment] = []
        self.subscriptions: dict[int, Subscription] = {}
        self.changes: list[Change] = []
        self.deliveries: list[dict[str, Any]] = []
        self._seq = 0
        self._filter_cache: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
        self._throttle_next: dict[str, float] = {}
        self._next_num: dict[str, int] = {}

    def _stamp(self) -> datetime:
        return self.clock.now().replace(microsecond=0)

    def _local(self, instant: datetime) -> datetime:
        """Aware instant -> naive office-local wall time."""
        return instant.astimezone(self.clock.zone).replace(tzinfo=None)

    def _local_to_utc(self, naive: datetime) -> datetime:
        return naive.replace(tzinfo=self.clock.zone).astimezone(UTC)

    def _server_datetime(self) -> str:
        return wire_local(self._local(self.clock.now()))

    def _allocate(self, kind: str, existing: Iterable[int]) -> int:
        if kind not in self._next_num:
            self._next_num[kind] = max(existing, default=0) + 1
        number = self._next_num[kind]
        self._next_num[kind] = number + 1
        return number

    def _changed(self, table: str, key: int, snapshot: dict[str, Any] | None = None) -> None:
        self._seq += 1
        self._filter_cache.clear()
        self.changes.append(Change(self._seq, table, key, self.clock.now(), snapshot))

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        self._empty_state()
        stamp = self._stamp()
        zone = self.clock.zone
        for practitioner in clinic.practitioners:
            self.providers[practitioner.id] = Provider(
                ProvNum=practitioner.id,
                Abbr=practitioner.abbreviation,
                LName=practitioner.last_name,
                FName=practitioner.first_name,
                IsSecondary=practitioner.is_hygienist,
                IsHidden=False,
                ProvStatus="Active",
                provColor=practitioner.color,
                DateTStamp=stamp,
            )
        for order, room in enumerate(clinic.rooms):
            self.operatories[room.id] = Operatory(
                OperatoryNum=room.id,
                OpName=room.name,
                Abbrev=room.abbreviation,
                ItemOrder=order,
                IsHidden=False,
                ProvDentist=0 if room.is_hygiene else room.practitioner_id,
                ProvHygienist=room.practitioner_id if room.is_hygiene else 0,
                IsHygiene=room.is_hygiene,
                ClinicNum=0,
                SetProspective=False,
                IsWebSched=not room.is_hygiene,
                OperatoryType=0,
                DateTStamp=stamp,
            )
        for kind in clinic.appointment_types:
            self.appointment_types[kind.id] = AppointmentType(
                AppointmentTypeNum=kind.id,
                AppointmentTypeName=kind.name,
                appointmentTypeColor=kind.color,
                IsHidden=False,
                Pattern=pattern_for(kind.duration_minutes),
                CodeStr="",
            )
        for person in clinic.patients:
            created = min(person.created_at.replace(microsecond=0), stamp)
            self.patients[person.id] = Patient(
                PatNum=person.id,
                LName=person.last_name,
                FName=person.first_name,
                MiddleI=person.middle_initial,
                Preferred=person.preferred_name,
                PatStatus="Patient",
                Gender=person.gender,
                Position="Single",
                Birthdate=person.birth_date,
                SSN="",
                Address=person.address,
                Address2="",
                City=person.city,
                State=person.state,
                Zip=person.zip_code,
                HmPhone=_us_phone(person.home_phone),
                WkPhone="",
                WirelessPhone=_us_phone(person.mobile_phone),
                Email=person.email,
                ChartNumber="",
                Guarantor=person.id,
                PriProv=person.primary_practitioner_id,
                SecProv=0,
                ClinicNum=0,
                PreferConfirmMethod="None",
                PreferContactMethod="None",
                PreferRecallMethod="None",
                TxtMsgOk="Unknown",
                DateFirstVisit=None,
                SecDateEntry=created.astimezone(zone).date(),
                DateTStamp=created,
            )
        type_names = {kind.id: kind.name for kind in clinic.appointment_types}
        rooms = {room.id: room for room in clinic.rooms}
        for visit in clinic.appointments:
            room = rooms[visit.room_id]
            patient = self.patients[visit.patient_id]
            status = {"booked": "Scheduled", "fulfilled": "Complete", "cancelled": "UnschedList"}.get(
                visit.status, "Broken"
            )
            local_start = visit.start.astimezone(zone).replace(tzinfo=None)
            arrived = local_start if status == "Complete" else None
            self.appointments[visit.id] = Appointment(
                AptNum=visit.id,
                PatNum=visit.patient_id,
                AptStatus=status,
                Pattern=pattern_for(visit.duration_minutes),
                Confirmed=22 if visit.confirmed else 19,
                TimeLocked=False,
                Op=room.id,
                Note=visit.note,
                ProvNum=patient.PriProv if room.is_hygiene else room.practitioner_id,
                ProvHyg=room.practitioner_id if room.is_hygiene else 0,
                AptDateTime=local_start,
                NextAptNum=0,
                UnschedStatus=0,
                IsNewPatient=visit.is_new_patient,
                ProcDescript=type_names.get(visit.appointment_type_id, ""),
                ClinicNum=0,
                IsHygiene=room.is_hygiene,
                # Never stamped later than the sandbox's own now, whatever clock the data was made for.
                DateTStamp=min(visit.updated_at.replace(microsecond=0), stamp),
                DateTimeArrived=arrived,
                DateTimeSeated=arrived,
                DateTimeDismissed=(arrived + timedelta(minutes=visit.duration_minutes)) if arrived else None,
                InsPlan1=0,
                InsPlan2=0,
                DateTimeAskedToArrive=None,
                colorOverride="0,0,0",
                AppointmentTypeNum=visit.appointment_type_id,
                SecUserNumEntry=1,
                SecDateTEntry=min(visit.created_at.replace(microsecond=0), stamp),
                Priority="Normal",
                PatternSecondary="",
                ItemOrderPlanned=0,
            )

    def dump_state(self) -> dict[str, Any]:
        return {
            **STATE.dump_tables(self, TABLES),
            "hist": STATE.dump_rows(self.hist),
            "next_num": dict(self._next_num),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._empty_state()
        STATE.load_tables(self, TABLES, state)
        self.hist = STATE.load_rows(HistAppointment, state.get("hist", []))
        self._next_num = dict(state.get("next_num", {}))

    def state_summary(self) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        for appointment in self.appointments.values():
            statuses[appointment.AptStatus] = statuses.get(appointment.AptStatus, 0) + 1
        return {
            "providers": len(self.providers),
            "operatories": len(self.operatories),
            "patients": len(self.patients),
            "appointments": len(self.appointments),
            "appointment_statuses": statuses,
            "histappointments": len(self.hist),
            "subscriptions": len(self.subscriptions),
            "event_deliveries": self.deliveries[-50:],
            "server_datetime": self._server_datetime(),
        }

    # ---- framework hooks -----------------------------------------------------------------

    def render_error(self, status: int, message: str, *, reason: str | None = None) -> Response:
        if self.od.error_body == "json_string":
            return JSONResponse(message, status)
        return PlainTextResponse(message, status)

    def identify(self, headers: Headers) -> str | None:
        parsed = _parse_authorization(headers.get("authorization", ""))
        return f"customer:{parsed[1]}" if parsed else None

    def credentials(self) -> dict[str, str]:
        keys = self.od.customer_keys
        writer = next((k for k, v in keys.items() if v == "readwrite"), "")
        reader = next((k for k, v in keys.items() if v == "readonly"), "")
        return {
            "Authorization": f"ODFHIR {self.od.developer_key}/{writer}",
            "Authorization (read-only key)": f"ODFHIR {self.od.developer_key}/{reader}" if reader else "",
        }

    async def on_start(self) -> None:
        self._webhook_client = httpx.AsyncClient(timeout=self.od.events_timeout_seconds)
        # The API Service polls one subscription at a time; a forced poll (the front desk's
        # "deliver_events") waits for a poll already posting rather than posting the same rows twice.
        self._delivery_lock = asyncio.Lock()
        self.spawn(self._event_loop(), name=f"{self.name}-events")

    async def on_stop(self) -> None:
        client = getattr(self, "_webhook_client", None)
        if client is not None:
            await client.aclose()

    # ---- request gate: auth, eConnector, throttling -------------------------------------

    async def _gate(self, request: Request, *, write: bool = False) -> str:
        settings = self.od
        parsed = _parse_authorization(request.headers.get("authorization", ""))
        if parsed is None:
            raise SandboxError(
                401, "Authorization header must be ODFHIR DeveloperKey/CustomerKey", reason="auth"
            )
        developer, customer = parsed
        if developer != settings.developer_key:
            raise SandboxError(401, "Invalid DeveloperKey", reason="auth")
        permission = settings.customer_keys.get(customer)
        if permission is None or customer in settings.disabled_customer_keys:
            raise SandboxError(401, "Invalid or disabled CustomerKey", reason="auth")
        if self.consume_token_expiry(request):
            raise SandboxError(401, "CustomerKey is disabled", reason="auth")
        if write and permission == "readonly":
            raise SandboxError(
                401, "The CustomerKey does not have ApiPermission for this method", reason="auth"
            )
        if not settings.econnector_running:
            raise SandboxError(400, "The eConnector is not running at the office", reason="econnector")
        if settings.require_content_type and "application/json" not in request.headers.get(
            "content-type", ""
        ):
            raise SandboxError(400, "Content-Type must be application/json", reason="content_type")
        await self._throttle(request, customer, readonly=permission == "readonly")
        return customer

    async def _throttle(self, request: Request, customer: str, *, readonly: bool) -> None:
        settings = self.od
        if settings.throttle_mode == "off":
            return
        interval = (
            settings.throttle_readonly_interval_seconds if readonly else settings.throttle_interval_seconds
        )
        now = time.monotonic()
        next_allowed = self._throttle_next.get(customer, 0.0)
        if now >= next_allowed:
            self._throttle_next[customer] = now + interval
            return
        if settings.throttle_mode == "error":
            self.note_fault(request, "throttled")
            wait = max(1, round(next_allowed - now + 0.4999))
            raise SandboxError(
                settings.throttle_error_status,
                "Too many requests for this CustomerKey",
                reason="throttled",
                headers={"Retry-After": str(wait)},
            )
        # Queueing: this request takes the next free turn and waits for it.
        self._throttle_next[customer] = next_allowed + interval
        self.note_fault(request, f"throttle_delay:{round((next_allowed - now) * 1000)}ms")
        await asyncio.sleep(next_allowed - now)

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > 16_800_000:
            raise SandboxError(400, "Request body is too large", reason="body")
        try:
            body = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise SandboxError(400, "Body is not valid JSON", reason="body") from exc
        if not isinstance(body, dict):
            raise SandboxError(400, "Body must be a JSON object", reason="body")
        return body

    # ---- serialisation ---------------------------------------------------------------------

    def _appointment_row(self, apt: Appointment, *, server_time: str | None = None) -> dict[str, Any]:
        provider = self.providers.get(apt.ProvNum)
        row: dict[str, Any] = {}
        if server_time is not None:
            row["serverDateTime"] = server_time
        row.update(
            {
                "AptNum": apt.AptNum,
                "PatNum": apt.PatNum,
                "AptStatus": apt.AptStatus,
                "Pattern": apt.Pattern,
                "Confirmed": apt.Confirmed,
                "confirmed": CONFIRM_DEFS.get(apt.Confirmed, ""),
                "TimeLocked": wire_bool(apt.TimeLocked),
                "Op": apt.Op,
                "Note": apt.Note,
                "ProvNum": apt.ProvNum,
                "provAbbr": provider.Abbr if provider else "",
                "ProvHyg": apt.ProvHyg,
                "AptDateTime": wire_local(apt.AptDateTime),
                "NextAptNum": apt.NextAptNum,
                "UnschedStatus": apt.UnschedStatus,
                "unschedStatus": "",
                "IsNewPatient": wire_bool(apt.IsNewPatient),
                "ProcDescript": apt.ProcDescript,
                "ClinicNum": apt.ClinicNum,
                "IsHygiene": wire_bool(apt.IsHygiene),
                "DateTStamp": wire_local(self._local(apt.DateTStamp)),
                "DateTimeArrived": wire_local(apt.DateTimeArrived),
                "DateTimeSeated": wire_local(apt.DateTimeSeated),
                "DateTimeDismissed": wire_local(apt.DateTimeDismissed),
                "InsPlan1": apt.InsPlan1,
                "InsPlan2": apt.InsPlan2,
                "DateTimeAskedToArrive": wire_local(apt.DateTimeAskedToArrive),
                "colorOverride": apt.colorOverride,
                "AppointmentTypeNum": apt.AppointmentTypeNum,
                "SecUserNumEntry": apt.SecUserNumEntry,
                "SecDateTEntry": wire_local(self._local(apt.SecDateTEntry)),
                "Priority": apt.Priority,
                "PatternSecondary": apt.PatternSecondary,
                "ItemOrderPlanned": apt.ItemOrderPlanned,
            }
        )
        return row

    def _patient_row(self, patient: Patient, *, server_time: str | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {}
        if server_time is not None:
            row["serverDateTime"] = server_time
        provider = self.providers.get(patient.PriProv)
        row.update(
            {
                "PatNum": patient.PatNum,
                "LName": patient.LName,
                "FName": patient.FName,
                "MiddleI": patient.MiddleI,
                "Preferred": patient.Preferred,
                "PatStatus": patient.PatStatus,
                "Gender": patient.Gender,
                "Position": patient.Position,
                "Birthdate": wire_date(patient.Birthdate),
                "SSN": patient.SSN,
                "Address": patient.Address,
                "Address2": patient.Address2,
                "City": patient.City,
                "State": patient.State,
                "Zip": patient.Zip,
                "HmPhone": patient.HmPhone,
                "WkPhone": patient.WkPhone,
                "WirelessPhone": patient.WirelessPhone,
                "Email": patient.Email,
                "ChartNumber": patient.ChartNumber,
                "Guarantor": patient.Guarantor,
                "PriProv": patient.PriProv,
                "priProvAbbr": provider.Abbr if provider else "",
                "SecProv": patient.SecProv,
                "ClinicNum": patient.ClinicNum,
                "clinicAbbr": "",
                "PreferConfirmMethod": patient.PreferConfirmMethod,
                "PreferContactMethod": patient.PreferContactMethod,
                "PreferRecallMethod": patient.PreferRecallMethod,
                "TxtMsgOk": patient.TxtMsgOk,
                "DateFirstVisit": wire_date(patient.DateFirstVisit),
                "SecDateEntry": wire_date(patient.SecDateEntry),
                "DateTStamp": wire_local(self._local(patient.DateTStamp)),
            }
        )
        return row

    def _patient_search_row(self, patient: Patient, server_time: str) -> dict[str, Any]:
        full = self._patient_row(patient, server_time=server_time)
        return {key: full[key] for key in PATIENT_SEARCH_FIELDS}

    def _provider_row(self, provider: Provider, server_time: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {} if server_time is None else {"serverDateTime": server_time}
        row.update(
            {
                "ProvNum": provider.ProvNum,
                "Abbr": provider.Abbr,
                "LName": provider.LName,
                "FName": provider.FName,
                "IsSecondary": wire_bool(provider.IsSecondary),
                "IsHidden": wire_bool(provider.IsHidden),
                "ProvStatus": provider.ProvStatus,
                "provColor": provider.provColor,
                "DateTStamp": wire_local(self._local(provider.DateTStamp)),
            }
        )
        return row

    def _operatory_row(self, op: Operatory, server_time: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {} if server_time is None else {"serverDateTime": server_time}
        row.update(
            {
                "OperatoryNum": op.OperatoryNum,
                "OpName": op.OpName,
                "Abbrev": op.Abbrev,
                "ItemOrder": op.ItemOrder,
                "IsHidden": wire_bool(op.IsHidden),
                "ProvDentist": op.ProvDentist,
                "ProvHygienist": op.ProvHygienist,
                "IsHygiene": wire_bool(op.IsHygiene),
                "ClinicNum": op.ClinicNum,
                "SetProspective": wire_bool(op.SetProspective),
                "IsWebSched": wire_bool(op.IsWebSched),
                "OperatoryType": op.OperatoryType,
            }
        )
        return row

    def _hist_row(self, hist: HistAppointment, server_time: str) -> dict[str, Any]:
        row = self._appointment_row(hist.appointment, server_time=server_time)
        row.update(
            {
                "HistApptNum": hist.HistApptNum,
                "HistUserNum": hist.HistUserNum,
                "HistDateTStamp": wire_local(self._local(hist.HistDateTStamp)),
                "HistApptAction": hist.HistApptAction,
                "ApptSource": hist.ApptSource,
            }
        )
        return row

    def _subscription_row(self, sub: Subscription) -> dict[str, Any]:
        return {
            "SubscriptionNum": sub.SubscriptionNum,
            "EndPointUrl": sub.EndPointUrl,
            "Workstation": sub.Workstation,
            "CustomerKey": sub.CustomerKey,
            "WatchTable": sub.WatchTable,
            "PollingSeconds": sub.PollingSeconds,
            "UiEventType": sub.UiEventType,
            "DateTimeStart": wire_local(self._local(sub.DateTimeStart) if sub.DateTimeStart else None),
            "DateTimeStop": wire_local(self._local(sub.DateTimeStop) if sub.DateTimeStop else None),
            "Note": sub.Note,
        }

    # ---- shared query helpers --------------------------------------------------------------

    def _page(self, request: Request, query: QueryParams, rows: list[Any]) -> list[Any]:
        limit = query.integer("Limit")
        offset = query.integer("Offset") or 0
        # Values over the hard maximum are capped, not rejected.
        size = MAX_PAGE if limit is None or limit == 0 else min(limit, MAX_PAGE)
        return self.paginate(request, rows, offset, size)

    def _date_stamp_param(self, query: QueryParams) -> datetime | None:
        raw = query.get("DateTStamp")
        if raw is None:
            return None
        if DATE_RE.match(raw):
            # The documented example sends a date alone (DateTStamp=2020-07-30): midnight, office time.
            try:
                return self._local_to_utc(datetime.strptime(raw, DATE_FORMAT))
            except ValueError as exc:
                raise SandboxError(
                    400, "DateTStamp format must be yyyy-MM-dd HH:mm:ss", reason="DateTStamp"
                ) from exc
        if not DATETIME_RE.match(raw):
            raise SandboxError(400, "DateTStamp format must be yyyy-MM-dd HH:mm:ss", reason="DateTStamp")
        try:
            naive = datetime.strptime(raw, DATETIME_FORMAT)
        except ValueError as exc:
            raise SandboxError(
                400, "DateTStamp format must be yyyy-MM-dd HH:mm:ss", reason="DateTStamp"
            ) from exc
        return self._local_to_utc(naive)

    def _date_range(self, query: QueryParams) -> tuple[date | None, date | None]:
        single = query.date("date")
        if single is not None:
            return single, single
        start, end = query.date("dateStart"), query.date("dateEnd")
        if (start is None) != (end is None):
            raise SandboxError(400, "dateStart and dateEnd must be used together", reason="dateStart")
        if start and end and end < start:
            raise SandboxError(400, "dateEnd cannot be before dateStart", reason="dateEnd")
        return start, end

    def _check_clinic(self, clinic: int | None) -> None:
        if clinic not in (None, 0):
            raise SandboxError(400, "Clinic not found", reason="ClinicNum")

    def _cached(self, key: tuple[Any, ...], build: Callable[[], list[Any]]) -> list[Any]:
        """Filtered lists are reused across the pages of one read until the data changes."""
        cached = self._filter_cache.get(key)
        if cached is None:
            cached = build()
            self._filter_cache[key] = cached
            while len(self._filter_cache) > 16:
                self._filter_cache.popitem(last=False)
        return cached

    # ---- appointments -----------------------------------------------------------------------

    def _get_appointment(self, apt_num: str) -> Appointment:
        return _by_number(self.appointments, apt_num, "Appointment", "AptNum")

    def _filter_appointments(self, query: QueryParams) -> list[Appointment]:
        pat_num = query.integer("PatNum")
        status = query.get("AptStatus")
        if status is not None:
            parse_choice("AptStatus", status, APT_STATUSES)
        op = query.integer("Op")
        clinic = query.integer("ClinicNum")
        self._check_clinic(clinic)
        type_num = query.integer("AppointmentTypeNum")
        start, end = self._date_range(query)
        changed_after = self._date_stamp_param(query)
        key = ("apt", pat_num, status, op, type_num, start, end, changed_after)

        def build() -> list[Appointment]:
            result = []
            for apt in self.appointments.values():
                if pat_num is not None and apt.PatNum != pat_num:
                    continue
                if status is not None and apt.AptStatus != status:
                    continue
                if op is not None and apt.Op != op:
                    continue
                if type_num is not None and apt.AppointmentTypeNum != type_num:
                    continue
                if start is not None and end is not None and not start <= apt.AptDateTime.date() <= end:
                    continue
                if changed_after is not None and not apt.DateTStamp > changed_after:
                    continue
                result.append(apt)
            return result

        return self._cached(key, build)

    def _overlapping(
        self, op: int, start: datetime, minutes: int, ignore: int | None = None
    ) -> Appointment | None:
        end = start + timedelta(minutes=minutes)
        for apt in self.appointments.values():
            if apt.Op != op or apt.AptNum == ignore or apt.AptStatus not in OCCUPYING_STATUSES:
                continue
            if apt.AptDateTime < end and start < apt.end:
                return apt
        return None

    def _record_hist(self, apt: Appointment, action: str, source: str) -> None:
        self.hist.append(
            HistAppointment(
                HistApptNum=len(self.hist) + 1,
                HistUserNum=0 if source == "EConnector" else 1,
                HistDateTStamp=self._stamp(),
                HistApptAction=action,
                ApptSource=source,
                appointment=replace(apt),
            )
        )

    def _touch_appointment(self, apt: Appointment, action: str, source: str) -> None:
        apt.DateTStamp = self._stamp()
        self._record_hist(apt, action, source)
        self._changed("Appointment", apt.AptNum)

    def create_appointment(self, body: dict[str, Any], *, source: str) -> Appointment:
        for required in ("PatNum", "Op", "AptDateTime"):
            if required not in body:
                raise SandboxError(400, f"{required} is required", reason=required)
        pat_num = parse_int("PatNum", body["PatNum"], minimum=1)
        if pat_num not in self.patients:
            raise SandboxError(400, "PatNum is invalid", reason="PatNum")
        op = parse_int("Op", body["Op"], minimum=1)
        operatory = self.operatories.get(op)
        if operatory is None:
            raise SandboxError(400, "Op is invalid", reason="Op")
        when = parse_local_datetime("AptDateTime", body["AptDateTime"])
        status = parse_choice("AptStatus", body.get("AptStatus", "Scheduled"), POST_APT_STATUSES)
        type_num = parse_int("AppointmentTypeNum", body.get("AppointmentTypeNum", 0))
        if type_num and type_num not in self.appointment_types:
            raise SandboxError(400, "AppointmentTypeNum is invalid", reason="AppointmentTypeNum")
        default_pattern = self.appointment_types[type_num].Pattern if type_num else "/XX/"
        pattern = self._pattern(body.get("Pattern", default_pattern))
        patient = self.patients[pat_num]
        prov = parse_int("ProvNum", body.get("ProvNum", operatory.ProvDentist or patient.PriProv))
        if prov not in self.providers:
            raise SandboxError(400, "ProvNum is invalid", reason="ProvNum")
        prov_hyg = parse_int("ProvHyg", body.get("ProvHyg", operatory.ProvHygienist))
        if prov_hyg and prov_hyg not in self.providers:
            raise SandboxError(400, "ProvHyg is invalid", reason="ProvHyg")
        confirmed = parse_int("Confirmed", body.get("Confirmed", 19))
        if confirmed not in CONFIRM_DEFS:
            raise SandboxError(400, "Confirmed is invalid", reason="Confirmed")
        self._check_clinic(parse_int("ClinicNum", body.get("ClinicNum", 0)))
        if self.od.reject_overlaps and status in OCCUPYING_STATUSES:
            clash = self._overlapping(op, when, len(pattern) * 5)
            if clash is not None:
                raise SandboxError(
                    400, "Appointment overlaps another appointment in this operatory", reason="Op"
                )
        stamp = self._stamp()
        number = self._allocate("AptNum", self.appointments)
        appointment = Appointment(
            AptNum=number,
            PatNum=pat_num,
            AptStatus=status,
            Pattern=pattern,
            Confirmed=confirmed,
            TimeLocked=False,
            Op=op,
            Note=parse_text("Note", body.get("Note", "")),
            ProvNum=prov,
            ProvHyg=prov_hyg,
            AptDateTime=when,
            NextAptNum=0,
            UnschedStatus=0,
            IsNewPatient=parse_bool("IsNewPatient", body.get("IsNewPatient", "false")),
            ProcDescript=self.appointment_types[type_num].AppointmentTypeName if type_num else "",
            ClinicNum=0,
            IsHygiene=parse_bool("IsHygiene", body.get("IsHygiene", wire_bool(operatory.IsHygiene))),
            DateTStamp=stamp,
            DateTimeArrived=None,
            DateTimeSeated=None,
            DateTimeDismissed=None,
            InsPlan1=0,
            InsPlan2=0,
            DateTimeAskedToArrive=None,
            colorOverride=self._color(body.get("colorOverride", "0,0,0")),
            AppointmentTypeNum=type_num,
            SecUserNumEntry=parse_int("SecUserNumEntry", body.get("SecUserNumEntry", 0)),
            SecDateTEntry=stamp,
            Priority=parse_choice("Priority", body.get("Priority", "Normal"), ("Normal", "ASAP")),
            PatternSecondary=parse_text("PatternSecondary", body.get("PatternSecondary", "")),
            ItemOrderPlanned=0,
        )
        self.appointments[number] = appointment
        self._record_hist(appointment, "Created", source)
        self._changed("Appointment", number)
        return appointment

    def _pattern(self, value: Any) -> str:
        pattern = parse_text("Pattern", value)
        if not pattern or any(ch not in "/Xx" for ch in pattern):
            raise SandboxError(400, "Pattern must contain only / and X characters", reason="Pattern")
        return pattern.upper()[:MAX_PATTERN]

    def _color(self, value: Any) -> str:
        text = parse_text("colorOverride", value)
        parts = text.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() and int(p) <= 255 for p in parts):
            raise SandboxError(400, 'colorOverride must be "R,G,B"', reason="colorOverride")
        return text

    def update_appointment(self, apt: Appointment, body: dict[str, Any], *, source: str) -> Appointment:
        """PUT semantics: fields left out are unchanged; Note overwrites."""
        updated = replace(apt)
        if "PatNum" in body:
            updated.PatNum = parse_int("PatNum", body["PatNum"], minimum=1)
            if updated.PatNum not in self.patients:
                raise SandboxError(400, "PatNum is invalid", reason="PatNum")
        if "AptStatus" in body:
            updated.AptStatus = parse_choice("AptStatus", body["AptStatus"], PUT_APT_STATUSES)
        if "Op" in body:
            updated.Op = parse_int("Op", body["Op"], minimum=1)
            if updated.Op not in self.operatories:
                raise SandboxError(400, "Op is invalid", reason="Op")
        if "AptDateTime" in body:
            updated.AptDateTime = parse_local_datetime("AptDateTime", body["AptDateTime"])
        if "Pattern" in body:
            updated.Pattern = self._pattern(body["Pattern"])
        if "Confirmed" in body:
            updated.Confirmed = parse_int("Confirmed", body["Confirmed"])
            if updated.Confirmed not in CONFIRM_DEFS:
                raise SandboxError(400, "Confirmed is invalid", reason="Confirmed")
        if "Note" in body:
            updated.Note = parse_text("Note", body["Note"])
        for name in ("ProvNum", "ProvHyg"):
            if name in body:
                number = parse_int(name, body[name])
                if number and number not in self.providers:
                    raise SandboxError(400, f"{name} is invalid", reason=name)
                setattr(updated, name, number)
        if "ClinicNum" in body:
            self._check_clinic(parse_int("ClinicNum", body["ClinicNum"]))
        for name in ("IsNewPatient", "IsHygiene", "TimeLocked"):
            if name in body:
                setattr(updated, name, parse_bool(name, body[name]))
        if "Priority" in body:
            updated.Priority = parse_choice("Priority", body["Priority"], ("Normal", "ASAP"))
        if "AppointmentTypeNum" in body:
            updated.AppointmentTypeNum = parse_int("AppointmentTypeNum", body["AppointmentTypeNum"])
            if updated.AppointmentTypeNum and updated.AppointmentTypeNum not in self.appointment_types:
                raise SandboxError(400, "AppointmentTypeNum is invalid", reason="AppointmentTypeNum")
        if "colorOverride" in body:
            updated.colorOverride = self._color(body["colorOverride"])
        if "PatternSecondary" in body:
            updated.PatternSecondary = parse_text("PatternSecondary", body["PatternSecondary"])
        moved = (updated.Op, updated.AptDateTime, updated.Pattern, updated.AptStatus) != (
            apt.Op,
            apt.AptDateTime,
            apt.Pattern,
            apt.AptStatus,
        )
        if self.od.reject_overlaps and moved and updated.AptStatus in OCCUPYING_STATUSES:
            clash = self._overlapping(updated.Op, updated.AptDateTime, updated.minutes, ignore=apt.AptNum)
            if clash is not None:
                raise SandboxError(
                    400, "Appointment overlaps another appointment in this operatory", reason="Op"
                )
        for item in fields(Appointment):
            setattr(apt, item.name, getattr(updated, item.name))
        self._touch_appointment(apt, "Changed", source)
        return apt

    def break_appointment(self, apt: Appointment, body: dict[str, Any], *, source: str) -> Appointment:
        if "sendToUnscheduledList" not in body:
            raise SandboxError(400, "sendToUnscheduledList is required", reason="sendToUnscheduledList")
        to_unscheduled = parse_bool("sendToUnscheduledList", body["sendToUnscheduledList"])
        break_type = body.get("breakType")
        if break_type is not None:
            parse_choice("breakType", break_type, ("Missed", "Cancelled"))
        if apt.AptStatus != "Scheduled":
            raise SandboxError(400, "Only Scheduled appointments can be broken", reason="AptStatus")
        apt.AptStatus = "UnschedList" if to_unscheduled else "Broken"
        if break_type is not None:
            code = BREAK_PROCEDURES[break_type]
            apt.ProcDescript = f"{apt.ProcDescript}, {code}" if apt.ProcDescript else code
        self._touch_appointment(apt, break_type or "Changed", source)
        return apt

    def delete_appointment(self, apt: Appointment, *, source: str) -> None:
        """A hard delete (the front desk can; the API cannot): gone from lists, kept in history."""
        del self.appointments[apt.AptNum]
        apt.DateTStamp = self._stamp()
        self._record_hist(apt, "Deleted", source)
        self._changed("AppointmentDeleted", apt.AptNum, self._appointment_row(apt))

    def _slots(self, query: QueryParams) -> list[dict[str, Any]]:
        today = self._local(self.clock.now()).date()
        start, end = self._date_range(query)
        if start is None or end is None:
            start, end = today, today + timedelta(days=13)
        if start < today:
            raise SandboxError(400, "Dates must be today or later", reason="dateStart")
        length = query.integer("lengthMinutes") or 0
        prov = query.integer("ProvNum")
        if prov is None:
            prov = min(self.providers, default=0)
        if prov not in self.providers:
            raise SandboxError(400, "ProvNum is invalid", reason="ProvNum")
        op_filter = query.integer("OpNum")
        if op_filter is not None and op_filter not in self.operatories:
            raise SandboxError(400, "OpNum is invalid", reason="OpNum")
        ops = [
            o
            for o in self.operatories.values()
            if (o.ProvDentist == prov or o.ProvHygienist == prov)
            and (op_filter is None or o.OperatoryNum == op_filter)
        ]
        now_local = self._local(self.clock.now())
        open_time = datetime.strptime(self.od.office_open, "%H:%M:%S").time()
        close_time = datetime.strptime(self.od.office_close, "%H:%M:%S").time()
        busy: dict[tuple[int, date], list[tuple[datetime, datetime]]] = {}
        op_nums = {o.OperatoryNum for o in ops}
        for apt in self.appointments.values():
            if (
                apt.Op in op_nums
                and apt.AptStatus in OCCUPYING_STATUSES
                and start <= apt.AptDateTime.date() <= end
            ):
                busy.setdefault((apt.Op, apt.AptDateTime.date()), []).append((apt.AptDateTime, apt.end))
        slots = []
        day = start
        while day <= end:
            if day.weekday() < 5:
                for op in ops:
                    cursor = datetime.combine(day, open_time)
                    if day == today and now_local > cursor:
                        # Round the current time up to the 5-minute grid.
                        minute = (now_local.minute // 5 + 1) * 5
                        cursor = now_local.replace(second=0, microsecond=0, minute=0) + timedelta(
                            minutes=minute
                        )
                    closing = datetime.combine(day, close_time)
                    for taken_start, taken_end in sorted(busy.get((op.OperatoryNum, day), [])):
                        if taken_start > cursor and (taken_start - cursor) >= timedelta(minutes=length):
                            slots.append(self._slot_row(cursor, taken_start, prov, op.OperatoryNum))
                        cursor = max(cursor, taken_end)
                    if closing > cursor and (closing - cursor) >= timedelta(minutes=length):
                        slots.append(self._slot_row(cursor, closing, prov, op.OperatoryNum))
            day += timedelta(days=1)
        return slots

    @staticmethod
    def _slot_row(start: datetime, end: datetime, prov: int, op: int) -> dict[str, Any]:
        return {
            "DateTimeStart": wire_local(start),
            "DateTimeEnd": wire_local(end),
            "ProvNum": prov,
            "OpNum": op,
        }

    # ---- patients ---------------------------------------------------------------------------

    def _get_patient(self, pat_num: str) -> Patient:
        return _by_number(self.patients, pat_num, "Patient", "PatNum")

    def _apply_patient_fields(self, patient: Patient, body: dict[str, Any], *, creating: bool) -> None:
        for name in ("LName", "FName"):
            if name in body:
                value = parse_text(name, body[name]).strip()
                if not value:
                    raise SandboxError(400, f"{name} cannot be blank", reason=name)
                setattr(patient, name, value)
        for name in PATIENT_TEXT_FIELDS:
            if name in body:
                setattr(patient, name, parse_text(name, body[name]))
        if "Zip" in body:
            zip_code = parse_text("Zip", body["Zip"])
            if zip_code and not ZIP_RE.match(zip_code):
                raise SandboxError(400, "Zip is invalid", reason="Zip")
            patient.Zip = zip_code
        enum_fields: dict[str, tuple[str, ...]] = {
            "PatStatus": PAT_STATUSES,
            "Gender": GENDERS,
            "Position": POSITIONS,
            "PreferConfirmMethod": CONTACT_METHODS,
            "PreferContactMethod": CONTACT_METHODS,
            "PreferRecallMethod": CONTACT_METHODS,
            "TxtMsgOk": TXT_MSG_OK,
        }
        defaults = {"PatStatus": "Patient", "Gender": "Unknown", "Position": "Single", "TxtMsgOk": "Unknown"}
        for name, choices in enum_fields.items():
            if name in body:
                value = body[name]
                if value == "" and not creating:
                    value = defaults.get(name, "None")
                setattr(patient, name, parse_choice(name, value, choices))
        for name in ("Birthdate", "DateFirstVisit"):
            if name in body:
                value = body[name]
                setattr(patient, name, None if value in ("", NULL_DATE) else parse_date(name, value))
        for name in ("PriProv", "SecProv"):
            if name in body:
                value = body[name]
                number = 0 if value == "" else parse_int(name, value)
                if number and number not in self.providers:
                    raise SandboxError(400, f"{name} is invalid", reason=name)
                setattr(patient, name, number)
        if "ClinicNum" in body:
            self._check_clinic(0 if body["ClinicNum"] == "" else parse_int("ClinicNum", body["ClinicNum"]))
        if "Guarantor" in body:
            guarantor = parse_int("Guarantor", body["Guarantor"])
            if guarantor and guarantor not in self.patients and guarantor != patient.PatNum:
                raise SandboxError(400, "Guarantor is invalid", reason="Guarantor")
            patient.Guarantor = guarantor or patient.PatNum

    def _find_duplicate(self, candidate: Patient) -> Patient | None:
        phones = {p for p in (candidate.HmPhone, candidate.WkPhone, candidate.WirelessPhone) if p}
        for existing in self.patients.values():
            if (
                existing.LName.lower() == candidate.LName.lower()
                and existing.FName.lower() == candidate.FName.lower()
                and existing.Birthdate == candidate.Birthdate
            ):
                existing_phones = {
                    p for p in (existing.HmPhone, existing.WkPhone, existing.WirelessPhone) if p
                }
                same_email = bool(candidate.Email) and candidate.Email.lower() == existing.Email.lower()
                if same_email or phones & existing_phones or (not phones and not candidate.Email):
                    return existing
        return None

    def create_patient(self, body: dict[str, Any], *, source: str) -> tuple[Patient, bool]:
        """Returns (patient, created); an existing patient comes back when duplicates are allowed through."""
        for required in ("LName", "FName"):
            if not body.get(required):
                raise SandboxError(400, f"{required} is required", reason=required)
        stamp = self._stamp()
        patient = Patient(
            PatNum=0,
            LName="",
            FName="",
            MiddleI="",
            Preferred="",
            PatStatus="Patient",
            Gender="Unknown",
            Position="Single",
            Birthdate=None,
            SSN="",
            Address="",
            Address2="",
            City="",
            State="",
            Zip="",
            HmPhone="",
            WkPhone="",
            WirelessPhone="",
            Email="",
            ChartNumber="",
            Guarantor=0,
            PriProv=min(self.providers, default=0),
            SecProv=0,
            ClinicNum=0,
            PreferConfirmMethod="None",
            PreferContactMethod="None",
            PreferRecallMethod="None",
            TxtMsgOk="Unknown",
            DateFirstVisit=None,
            SecDateEntry=self._local(stamp).date(),
            DateTStamp=stamp,
        )
        self._apply_patient_fields(patient, body, creating=True)
        duplicate = self._find_duplicate(patient)
        if duplicate is not None:
            if self.od.duplicate_patient_response == "error":
                raise SandboxError(
                    400, f"Patient already exists: PatNum {duplicate.PatNum}", reason="duplicate"
                )
            return duplicate, False
        patient.PatNum = self._allocate("PatNum", self.patients)
        if not patient.Guarantor:
            patient.Guarantor = patient.PatNum
        self.patients[patient.PatNum] = patient
        self._changed("Patient", patient.PatNum)
        return patient, True

    def update_patient(self, patient: Patient, body: dict[str, Any], *, source: str) -> Patient:
        updated = replace(patient)
        self._apply_patient_fields(updated, body, creating=False)
        for item in fields(Patient):
            setattr(patient, item.name, getattr(updated, item.name))
        patient.DateTStamp = self._stamp()
        self._changed("Patient", patient.PatNum)
        return patient

    def _search_patients(self, query: QueryParams) -> list[Patient]:
        def contains(name: str) -> str | None:
            value = query.get(name)
            return value.lower() if value else None

        lname, fname, address, city, state, email, chart = (
            contains(n) for n in ("LName", "FName", "Address", "City", "State", "Email", "ChartNumber")
        )
        phone_raw = query.get("Phone")
        phone = re.sub(r"\D", "", phone_raw) if phone_raw else None
        birthdate = query.date("Birthdate")
        hide_inactive = (
            parse_bool("hideInactive", query.get("hideInactive")) if query.has("hideInactive") else False
        )
        show_archived = (
            parse_bool("showArchived", query.get("showArchived")) if query.has("showArchived") else False
        )
        result = []
        for p in self.patients.values():
            if lname and lname not in p.LName.lower():
                continue
            if fname and fname not in p.FName.lower() and fname not in p.Preferred.lower():
                continue
            if address and address not in p.Address.lower():
                continue
            if city and city not in p.City.lower():
                continue
            if state and state not in p.State.lower():
                continue
            if email and email not in p.Email.lower():
                continue
            if chart and chart not in p.ChartNumber.lower():
                continue
            if phone and not any(
                phone in re.sub(r"\D", "", x) for x in (p.HmPhone, p.WkPhone, p.WirelessPhone)
            ):
                continue
            if birthdate is not None and p.Birthdate != birthdate:
                continue
            if hide_inactive and p.PatStatus == "Inactive":
                continue
            if not show_archived and p.PatStatus in ("Archived", "Deleted"):
                continue
            result.append(p)
        return result

    def _simple_patients(self, query: QueryParams) -> list[Patient]:
        changed_after = self._date_stamp_param(query)
        lname, fname = query.get("LName"), query.get("FName")
        birthdate = query.date("Birthdate")
        clinic = query.integer("ClinicNum")
        self._check_clinic(clinic)
        status = query.get("PatStatus")
        if status is not None:
            parse_choice("PatStatus", status, PAT_STATUSES)
        gender = query.get("Gender")
        if gender is not None:
            parse_choice("Gender", gender, (*GENDERS, "Other"))
        position = query.get("Position")
        if position is not None:
            parse_choice("Position", position, POSITIONS)
        pri_prov = query.integer("PriProv")
        guarantor = query.integer("Guarantor")
        key = ("pat", changed_after, lname, fname, birthdate, status, gender, position, pri_prov, guarantor)

        def build() -> list[Patient]:
            result = []
            for p in self.patients.values():
                if changed_after is not None and not p.DateTStamp > changed_after:
                    continue
                if lname and lname.lower() not in p.LName.lower():
                    continue
                if fname and fname.lower() not in p.FName.lower():
                    continue
                if birthdate is not None and p.Birthdate != birthdate:
                    continue
                if status is not None and p.PatStatus != status:
                    continue
                if gender is not None and p.Gender != gender:
                    continue
                if position is not None and p.Position != position:
                    continue
                if pri_prov is not None and p.PriProv != pri_prov:
                    continue
                if guarantor is not None and p.Guarantor != guarantor:
                    continue
                result.append(p)
            return result

        return self._cached(key, build)

    # ---- subscriptions and event delivery ---------------------------------------------------

    def _subscription_fields(self, sub: Subscription, body: dict[str, Any], *, creating: bool) -> None:
        if creating and not body.get("EndPointUrl"):
            raise SandboxError(400, "EndPointUrl is required", reason="EndPointUrl")
        if "EndPointUrl" in body:
            url = parse_text("EndPointUrl", body["EndPointUrl"])
            if not url.startswith(("http://", "https://")):
                raise SandboxError(400, "EndPointUrl is invalid", reason="EndPointUrl")
            sub.EndPointUrl = url
        if "Workstation" in body:
            sub.Workstation = parse_text("Workstation", body["Workstation"])
        if creating and "PollingSeconds" not in body and "UiEventType" not in body:
            raise SandboxError(400, "PollingSeconds is required", reason="PollingSeconds")
        if "PollingSeconds" in body:
            sub.PollingSeconds = parse_int("PollingSeconds", body["PollingSeconds"], minimum=1)
        if "WatchTable" in body:
            sub.WatchTable = parse_choice("WatchTable", body["WatchTable"], WATCH_TABLES)
        if "UiEventType" in body:
            sub.UiEventType = parse_text("UiEventType", body["UiEventType"])
        if creating and not sub.WatchTable and not sub.UiEventType:
            raise SandboxError(400, "WatchTable or UiEventType is required", reason="WatchTable")
        for name in ("DateTimeStart", "DateTimeStop"):
            if name in body:
                raw = body[name]
                value = (
                    None
                    if raw in ("", NULL_DATETIME)
                    else self._local_to_utc(parse_local_datetime(name, raw))
                )
                setattr(sub, name, value)
        if "Note" in body:
            sub.Note = parse_text("Note", body["Note"])

    def _pending_events(self, sub: Subscription) -> tuple[list[dict[str, Any]], int]:
        """Rows changed for ``sub`` since its last successful delivery, and the newest change seq."""
        now = self.clock.now()
        floor = now - timedelta(days=self.od.events_resend_days)
        if sub.DateTimeStart is not None:
            floor = max(floor, sub.DateTimeStart)
        latest: dict[int, Change] = {}
        newest_seq = sub.delivered_seq
        for change in self.changes:
            if change.seq <= sub.delivered_seq:
                continue
            newest_seq = max(newest_seq, change.seq)
            if change.table == sub.WatchTable and change.at >= floor:
                latest[change.key] = change
        rows: list[dict[str, Any]] = []
        for key, change in latest.items():
            if change.snapshot is not None:
                rows.append(change.snapshot)
                continue
            record = self._current_row(sub.WatchTable, key)
            if record is not None:
                rows.append(record)
        return rows, newest_seq

    def _current_row(self, table: str, key: int) -> dict[str, Any] | None:
        if table == "Appointment" and key in self.appointments:
            return self._appointment_row(self.appointments[key])
        if table == "Patient" and key in self.patients:
            return self._patient_row(self.patients[key])
        if table == "Provider" and key in self.providers:
            return self._provider_row(self.providers[key], None)
        if table == "Operatory" and key in self.operatories:
            return self._operatory_row(self.operatories[key], None)
        return None

    async def deliver_due_events(self, *, force: bool = False) -> int:
        """Poll every due subscription once; returns the number of batches delivered.

        When it returns, every batch it or a poll already under way posted has been answered.
        """
        async with self._delivery_lock:
            return await self._deliver_due_events(force=force)

    async def _deliver_due_events(self, *, force: bool) -> int:
        delivered = 0
        now_monotonic = time.monotonic()
        now = self.clock.now()
        for sub in list(self.subscriptions.values()):
            if not sub.WatchTable or (not force and now_monotonic < sub.next_poll):
                continue
            if sub.DateTimeStop is not None and now > sub.DateTimeStop:
                continue
            sub.next_poll = now_monotonic + sub.PollingSeconds * self.od.events_polling_scale
            rows, newest_seq = self._pending_events(sub)
            if not rows:
                sub.delivered_seq = newest_seq
                continue
            ok = True
            size = self.od.events_batch_size
            for start in range(0, len(rows), size):
                batch = rows[start : start + size]
                ok = await self._post_batch(sub, batch)
                if not ok:
                    break
                delivered += 1
            if ok:
                sub.delivered_seq = newest_seq
        return delivered

    async def _post_batch(self, sub: Subscription, batch: list[dict[str, Any]]) -> bool:
        headers = {
            "Authorization": sub.CustomerKey,
            "Workstation": sub.Workstation or self.od.workstation,
            "Event-Type": f"WatchTable: {sub.WatchTable}",
            "Content-Type": "application/json",
        }
        record: dict[str, Any] = {
            "SubscriptionNum": sub.SubscriptionNum,
            "url": sub.EndPointUrl,
            "rows": len(batch),
            "at": self.clock.now().isoformat(),
        }
        try:
            response = await self._webhook_client.post(
                sub.EndPointUrl, content=json.dumps(batch), headers=headers
            )
            record["status"] = response.status_code
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError as exc:
            record["error"] = type(exc).__name__
            ok = False
        sub.last_result = "ok" if ok else "failed"
        self.deliveries.append(record)
        del self.deliveries[:-500]
        return ok

    async def _event_loop(self) -> None:
        while not self.shutdown_event.is_set():
            if self.od.events_enabled and self.subscriptions:
                try:
                    await self.deliver_due_events()
                except Exception as exc:  # a delivery bug must not end event processing for good
                    self.deliveries.append({"error": repr(exc), "at": self.clock.now().isoformat()})
            await asyncio.sleep(0.02)

    # ---- routes -------------------------------------------------------------------------------

    def add_routes(self, router: APIRouter) -> None:
        @router.get("/appointments")
        async def list_appointments(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            server_time = self._server_datetime()
            rows = self._page(request, query, self._filter_appointments(query))
            return JSONResponse([self._appointment_row(a, server_time=server_time) for a in rows])

        @router.get("/appointments/ASAP")
        async def asap_appointments(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            self._check_clinic(query.integer("ClinicNum"))
            prov = query.integer("ProvNum")
            server_time = self._server_datetime()
            matches = [
                a
                for a in self.appointments.values()
                if a.Priority == "ASAP" and (prov is None or a.ProvNum == prov)
            ]
            rows = self._page(request, query, matches)
            return JSONResponse([self._appointment_row(a, server_time=server_time) for a in rows])

        @router.get("/appointments/Slots")
        async def slots(request: Request) -> Response:
            await self._gate(request)
            return JSONResponse(self._slots(QueryParams(request)))

        @router.get("/appointments/{apt_num}")
        async def get_appointment(request: Request, apt_num: str) -> Response:
            await self._gate(request)
            appointment = self._get_appointment(apt_num)
            return JSONResponse(self._appointment_row(appointment, server_time=self._server_datetime()))

        @router.post("/appointments")
        async def post_appointment(request: Request) -> Response:
            await self._gate(request, write=True)
            appointment = self.create_appointment(await self._body(request), source="EConnector")
            location = f"{self.base_url or ''}/appointments/{appointment.AptNum}"
            return JSONResponse(self._appointment_row(appointment), 201, headers={"Location": location})

        @router.put("/appointments/{apt_num}/Break")
        async def break_appointment(request: Request, apt_num: str) -> Response:
            await self._gate(request, write=True)
            appointment = self._get_appointment(apt_num)
            self.break_appointment(appointment, await self._body(request), source="EConnector")
            return Response(status_code=200)

        @router.put("/appointments/{apt_num}/Note")
        async def append_note(request: Request, apt_num: str) -> Response:
            await self._gate(request, write=True)
            appointment = self._get_appointment(apt_num)
            body = await self._body(request)
            if "Note" not in body:
                raise SandboxError(400, "Note is required", reason="Note")
            note = parse_text("Note", body["Note"])
            appointment.Note = f"{appointment.Note}\r\n{note}" if appointment.Note else note
            self._touch_appointment(appointment, "Changed", "EConnector")
            return Response(status_code=200)

        @router.put("/appointments/{apt_num}/Confirm")
        async def confirm(request: Request, apt_num: str) -> Response:
            await self._gate(request, write=True)
            appointment = self._get_appointment(apt_num)
            body = await self._body(request)
            if "confirmVal" in body:
                value = parse_choice("confirmVal", body["confirmVal"], CONFIRM_VALS)
                appointment.Confirmed = CONFIRM_VALS[value]
            elif "defNum" in body:
                def_num = parse_int("defNum", body["defNum"])
                if def_num not in CONFIRM_DEFS:
                    raise SandboxError(400, "defNum is invalid", reason="defNum")
                appointment.Confirmed = def_num
            else:
                raise SandboxError(400, "confirmVal or defNum is required", reason="confirmVal")
            self._touch_appointment(appointment, "Changed", "EConnector")
            return Response(status_code=200)

        @router.put("/appointments/{apt_num}")
        async def put_appointment(request: Request, apt_num: str) -> Response:
            await self._gate(request, write=True)
            appointment = self._get_appointment(apt_num)
            self.update_appointment(appointment, await self._body(request), source="EConnector")
            return JSONResponse(self._appointment_row(appointment))

        @router.delete("/appointments/{apt_num}")
        async def no_delete_appointment(request: Request, apt_num: str) -> Response:
            await self._gate(request, write=True)
            raise SandboxError(
                400, "Appointments cannot be deleted through the API; use Break", reason="method"
            )

        @router.get("/histappointments")
        async def hist_appointments(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            action = query.get("HistApptAction")
            if action is not None:
                parse_choice("HistApptAction", action, HIST_ACTIONS)
            status = query.get("AptStatus")
            if status is not None:
                parse_choice("AptStatus", status, APT_STATUSES)
            apt_num, pat_num = query.integer("AptNum"), query.integer("PatNum")
            self._check_clinic(query.integer("ClinicNum"))
            start, end = self._date_range(query)
            matches = []
            for hist in self.hist:
                if action is not None and hist.HistApptAction != action:
                    continue
                if apt_num is not None and hist.appointment.AptNum != apt_num:
                    continue
                if pat_num is not None and hist.appointment.PatNum != pat_num:
                    continue
                if status is not None and hist.appointment.AptStatus != status:
                    continue
                if start and end and not start <= self._local(hist.HistDateTStamp).date() <= end:
                    continue
                matches.append(hist)
            server_time = self._server_datetime()
            return JSONResponse([self._hist_row(h, server_time) for h in self._page(request, query, matches)])

        @router.get("/patients")
        async def search_patients(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            server_time = self._server_datetime()
            rows = self._page(request, query, self._search_patients(query))
            return JSONResponse([self._patient_search_row(p, server_time) for p in rows])

        @router.get("/patients/Simple")
        async def simple_patients(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            server_time = self._server_datetime()
            rows = self._page(request, query, self._simple_patients(query))
            return JSONResponse([self._patient_row(p, server_time=server_time) for p in rows])

        @router.get("/patients/{pat_num}")
        async def get_patient(request: Request, pat_num: str) -> Response:
            await self._gate(request)
            patient = self._get_patient(pat_num)
            return JSONResponse(self._patient_row(patient, server_time=self._server_datetime()))

        @router.post("/patients")
        async def post_patient(request: Request) -> Response:
            await self._gate(request, write=True)
            patient, created = self.create_patient(await self._body(request), source="EConnector")
            location = f"{self.base_url or ''}/patients/{patient.PatNum}"
            return JSONResponse(
                self._patient_row(patient), 201 if created else 200, headers={"Location": location}
            )

        @router.put("/patients/{pat_num}")
        async def put_patient(request: Request, pat_num: str) -> Response:
            await self._gate(request, write=True)
            patient = self._get_patient(pat_num)
            self.update_patient(patient, await self._body(request), source="EConnector")
            return JSONResponse(self._patient_row(patient))

        @router.delete("/patients/{pat_num}")
        async def no_delete_patient(request: Request, pat_num: str) -> Response:
            await self._gate(request, write=True)
            raise SandboxError(400, "Patients cannot be deleted through the API", reason="method")

        @router.get("/providers")
        async def list_providers(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            if query.has("ClinicNum") and query.has("DateTStamp"):
                raise SandboxError(400, "Use either ClinicNum or DateTStamp, not both", reason="ClinicNum")
            clinic = query.integer("ClinicNum")
            self._check_clinic(clinic)
            changed_after = self._date_stamp_param(query)
            # Rows filtered by ClinicNum carry no serverDateTime, as documented.
            server_time = None if clinic is not None else self._server_datetime()
            matches = [
                p for p in self.providers.values() if changed_after is None or p.DateTStamp > changed_after
            ]
            return JSONResponse(
                [self._provider_row(p, server_time) for p in self._page(request, query, matches)]
            )

        @router.get("/providers/{prov_num}")
        async def get_provider(request: Request, prov_num: str) -> Response:
            await self._gate(request)
            provider = _by_number(self.providers, prov_num, "Provider", "ProvNum")
            return JSONResponse(self._provider_row(provider, self._server_datetime()))

        @router.get("/operatories")
        async def list_operatories(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            self._check_clinic(query.integer("ClinicNum"))
            server_time = self._server_datetime()
            rows = self._page(request, query, list(self.operatories.values()))
            return JSONResponse([self._operatory_row(o, server_time) for o in rows])

        @router.get("/operatories/{op_num}")
        async def get_operatory(request: Request, op_num: str) -> Response:
            await self._gate(request)
            operatory = _by_number(self.operatories, op_num, "Operatory", "OperatoryNum")
            return JSONResponse(self._operatory_row(operatory, self._server_datetime()))

        @router.get("/schedules")
        async def list_schedules(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            start, end = self._date_range(query)
            if start is None or end is None:
                start = end = self._local(self.clock.now()).date()
            sched_type = query.get("SchedType")
            if sched_type is not None:
                parse_choice(
                    "SchedType", sched_type, ("Practice", "Provider", "Blockout", "Employee", "WebSchedASAP")
                )
            prov = query.integer("ProvNum")
            rows = [] if sched_type not in (None, "Provider") else self._schedule_rows(start, end, prov)
            server_time = self._server_datetime()
            page = self._page(request, query, rows)
            return JSONResponse([{"serverDateTime": server_time, **row} for row in page])

        @router.get("/appointmenttypes")
        async def list_appointment_types(request: Request) -> Response:
            await self._gate(request)
            query = QueryParams(request)
            server_time = self._server_datetime()
            rows = [
                {
                    "serverDateTime": server_time,
                    "AppointmentTypeNum": t.AppointmentTypeNum,
                    "AppointmentTypeName": t.AppointmentTypeName,
                    "appointmentTypeColor": t.appointmentTypeColor,
                    "IsHidden": wire_bool(t.IsHidden),
                    "Pattern": t.Pattern,
                    "CodeStr": t.CodeStr,
                    "CodeStrRequired": "",
                    "RequiredProcCodesNeeded": "None",
                    "BlockoutTypes": "",
                }
                for t in self.appointment_types.values()
            ]
            return JSONResponse(self._page(request, query, rows))

        @router.get("/subscriptions")
        async def list_subscriptions(request: Request) -> Response:
            customer = await self._gate(request)
            return JSONResponse(
                [self._subscription_row(s) for s in self.subscriptions.values() if s.CustomerKey == customer]
            )

        @router.post("/subscriptions")
        async def post_subscription(request: Request) -> Response:
            customer = await self._gate(request, write=True)
            subscription = Subscription(
                SubscriptionNum=0,
                EndPointUrl="",
                Workstation="",
                PollingSeconds=0,
                WatchTable="",
                UiEventType="",
                DateTimeStart=None,
                DateTimeStop=None,
                Note="",
                CustomerKey=customer,
            )
            self._subscription_fields(subscription, await self._body(request), creating=True)
            if subscription.DateTimeStart is None:
                subscription.DateTimeStart = self._stamp()
            # Changes already made before the start are never sent.
            subscription.delivered_seq = max(
                (c.seq for c in self.changes if c.at < subscription.DateTimeStart), default=0
            )
            subscription.SubscriptionNum = self._allocate("SubscriptionNum", self.subscriptions)
            self.subscriptions[subscription.SubscriptionNum] = subscription
            location = f"{self.base_url or ''}/subscriptions/{subscription.SubscriptionNum}"
            return JSONResponse(self._subscription_row(subscription), 201, headers={"Location": location})

        @router.put("/subscriptions/{sub_num}")
        async def put_subscription(request: Request, sub_num: str) -> Response:
            customer = await self._gate(request, write=True)
            subscription = self._get_subscription(sub_num, customer)
            self._subscription_fields(subscription, await self._body(request), creating=False)
            return JSONResponse(self._subscription_row(subscription))

        @router.delete("/subscriptions/{sub_num}")
        async def delete_subscription(request: Request, sub_num: str) -> Response:
            customer = await self._gate(request, write=True)
            subscription = self._get_subscription(sub_num, customer)
            del self.subscriptions[subscription.SubscriptionNum]
            return Response(status_code=200)

    def _get_subscription(self, sub_num: str, customer: str) -> Subscription:
        subscription = _by_number(self.subscriptions, sub_num, "Subscription", "SubscriptionNum")
        if subscription.CustomerKey != customer:
            # Another customer's subscription is answered exactly like a missing one.
            raise SandboxError(404, "Subscription not found", reason="SubscriptionNum")
        return subscription

    def _schedule_rows(self, start: date, end: date, prov: int | None) -> list[dict[str, Any]]:
        rows = []
        stamp = wire_local(
            self._local(min((p.DateTStamp for p in self.providers.values()), default=self._stamp()))
        )
        day = start
        while day <= end:
            if day.weekday() < 5:
                for provider in self.providers.values():
                    if prov is not None and provider.ProvNum != prov:
                        continue
                    ops = [
                        str(o.OperatoryNum)
                        for o in self.operatories.values()
                        if provider.ProvNum in (o.ProvDentist, o.ProvHygienist)
                    ]
                    number = day.toordinal() * 1000 + provider.ProvNum
                    rows.append(
                        {
                            "ScheduleNum": str(number),
                            "SchedDate": wire_date(day),
                            "StartTime": self.od.office_open,
                            "StopTime": self.od.office_close,
                            "SchedType": "Provider",
                            "ProvNum": str(provider.ProvNum),
                            "BlockoutType": "0",
                            "blockoutType": "",
                            "Note": "",
                            "operatories": ",".join(ops),
                            "EmployeeNum": "0",
                            "DateTStamp": stamp,
                        }
                    )
            day += timedelta(days=1)
        return rows

    # ---- front-desk actions -------------------------------------------------------------------

    def actions(self) -> dict[str, ActionHandler]:
        async def reschedule(body: dict[str, Any]) -> dict[str, Any]:
            """Move an appointment: {"AptNum", "AptDateTime", optional "Op", "Pattern"}."""
            appointment = self._get_appointment(str(body.get("AptNum", "")))
            changes: dict[str, Any] = {k: body[k] for k in ("AptDateTime", "Op", "Pattern") if k in body}
            if "AptDateTime" not in changes:
                raise SandboxError(422, "AptDateTime is required", reason="AptDateTime")
            if appointment.AptStatus in ("Broken", "UnschedList"):
                changes["AptStatus"] = "Scheduled"
            return self._appointment_row(self.update_appointment(appointment, changes, source="None"))

        async def break_(body: dict[str, Any]) -> dict[str, Any]:
            """Break an appointment: {"AptNum", "breakType" (Missed/Cancelled), "sendToUnscheduledList"}."""
            appointment = self._get_appointment(str(body.get("AptNum", "")))
            request = {"sendToUnscheduledList": "false", **body}
            return self._appointment_row(self.break_appointment(appointment, request, source="None"))

        async def cancel(body: dict[str, Any]) -> dict[str, Any]:
            """Cancel (break as Cancelled): {"AptNum", optional "sendToUnscheduledList"}."""
            return await break_({"sendToUnscheduledList": "true", **body, "breakType": "Cancelled"})

        async def delete(body: dict[str, Any]) -> dict[str, Any]:
            """Hard-delete an appointment: {"AptNum"} (only histappointments and events show it)."""
            appointment = self._get_appointment(str(body.get("AptNum", "")))
            self.delete_appointment(appointment, source="None")
            return {"deleted": appointment.AptNum}

        async def new_appointment(body: dict[str, Any]) -> dict[str, Any]:
            """Book at the desk: POST /appointments fields."""
            return self._appointment_row(self.create_appointment(body, source="None"))

        async def complete(body: dict[str, Any]) -> dict[str, Any]:
            """Set an appointment Complete: {"AptNum"}."""
            appointment = self._get_appointment(str(body.get("AptNum", "")))
            return self._appointment_row(
                self.update_appointment(appointment, {"AptStatus": "Complete"}, source="None")
            )

        async def new_patient(body: dict[str, Any]) -> dict[str, Any]:
            """Add a patient at the desk: POST /patients fields (the duplicate check applies)."""
            patient, _created = self.create_patient(body, source="None")
            return self._patient_row(patient)

        async def edit_patient(body: dict[str, Any]) -> dict[str, Any]:
            """Edit a patient: {"PatNum", ...PUT /patients fields}."""
            patient = self._get_patient(str(body.get("PatNum", "")))
            changes = {k: v for k, v in body.items() if k != "PatNum"}
            return self._patient_row(self.update_patient(patient, changes, source="None"))

        async def deliver_events(body: dict[str, Any]) -> dict[str, Any]:
            """Poll every subscription now, ignoring PollingSeconds: {}."""
            return {"batches": await self.deliver_due_events(force=True)}

        return {
            "reschedule": reschedule,
            "break": break_,
            "cancel": cancel,
            "delete_appointment": delete,
            "new_appointment": new_appointment,
            "complete": complete,
            "new_patient": new_patient,
            "edit_patient": edit_patient,
            "deliver_events": deliver_events,
        }


# --------------------------------------------------------------------------- helpers


def _parse_authorization(header: str) -> tuple[str, str] | None:
    if not header.startswith("ODFHIR "):
        return None
    developer, slash, customer = header[len("ODFHIR ") :].strip().partition("/")
    if not slash or not developer or not customer:
        return None
    return developer, customer


def _us_phone(e164: str) -> str:
    """'+12125550123' -> '(212)555-0123', how OpenDental offices typically type numbers."""
    digits = e164.removeprefix("+1")
    if len(digits) != 10:
        return e164
    return f"({digits[:3]}){digits[3:6]}-{digits[6:]}"


__all__ = ["OpenDentalSandbox", "OpenDentalSettings"]
