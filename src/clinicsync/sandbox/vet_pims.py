"""Veterinary PIMS simulator, shaped like IDEXX Neo's web app as browser-automation clients see it.

Neo has no public API; clients log in through the web form and reuse the session cookie on the
app's internal JSON routes. Every path and field name here is unverified (docs/sandbox.md), so the
behaviours a sync must cope with are what this reproduces:

- ``GET /login`` serves the form; ``POST /login`` (form-encoded ``username``/``password``) answers
  303 to ``/dashboard`` with a session cookie that expires ``session_lifetime_seconds`` later on the
  sandbox clock (``POST /_sandbox/tokens/expire`` ends every session at once). Without a live session
  the JSON routes redirect to the login page (or answer 401 JSON, a setting);
- calendar events by office-local date range, schedule configuration (business hours, slot length,
  capacity per slot), appointment lookups, create (multipart or form) refusing a full slot with 409,
  cancel or delete through ``POST /appointments/delete/{id}`` and no in-place move;
- clients (owners) and patients (animals: species, breed, owner) with search, duplicate check and
  create; consultations with SOAP notes and a discharge summary for past visits.

Times on the wire are office-local wall times without an offset; ``getScheduleConfigs`` names the
zone.
"""

from __future__ import annotations

import bisect
import html
import json
import math
import random
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, ClassVar, Literal, TypeVar, cast
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import Headers

from clinicsync.sandbox.core import ActionHandler, SandboxError, SandboxServer
from clinicsync.sandbox.generator import GeneratedClinic
from clinicsync.sandbox.state import StateCodec

DEFAULT_USERNAME = "frontdesk@example.com"
DEFAULT_PASSWORD = "sandbox-neo-password"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ACTIVE_STATUSES = frozenset({"booked", "confirmed", "arrived", "completed", "no_show"})
CAPACITY_STATUSES = frozenset({"booked", "confirmed", "arrived", "completed"})
# Routes that work without a session: the login flow itself.
PUBLIC_PATHS = frozenset({"/login", "/logout"})

SPECIES_BREEDS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    (
        "Canine",
        ("Labrador Retriever", "German Shepherd", "Beagle", "Border Collie", "Dachshund", "Mixed"),
        0.5,
    ),
    ("Feline", ("Domestic Shorthair", "Maine Coon", "Siamese", "Ragdoll", "Domestic Longhair"), 0.35),
    ("Rabbit", ("Holland Lop", "Netherland Dwarf", "Mixed"), 0.07),
    ("Avian", ("Budgerigar", "Cockatiel", "African Grey"), 0.04),
    ("Reptile", ("Bearded Dragon", "Leopard Gecko"), 0.04),
)
ANIMAL_NAMES = [
    "Bella",
    "Max",
    "Luna",
    "Charlie",
    "Lucy",
    "Cooper",
    "Daisy",
    "Milo",
    "Bailey",
    "Rocky",
    "Sadie",
    "Buddy",
    "Molly",
    "Tucker",
    "Coco",
    "Bear",
    "Lola",
    "Duke",
    "Zoe",
    "Oliver",
    "Ruby",
    "Leo",
    "Rosie",
    "Toby",
    "Ginger",
    "Oscar",
    "Pepper",
    "Simba",
    "Nala",
    "Mochi",
    "Biscuit",
    "Pickles",
]
# (name, minutes): visit kinds a small-animal clinic books.
VISIT_TYPES = (
    ("Consultation", 15),
    ("Vaccination", 15),
    ("Recheck", 15),
    ("Dental", 60),
    ("Surgery Admit", 30),
    ("Nail Trim", 15),
    ("Senior Wellness", 30),
)
# Per visit kind: (subjective, objective, assessment, plan, discharge) with {name}/{species} filled in.
SOAP_TEMPLATES: dict[str, tuple[str, str, str, str, str]] = {
    "Consultation": (
        "Owner reports {name} has been scratching at the left ear for 4 days.",
        "T 38.6 C. Left ear canal erythematous with brown discharge; right ear normal.",
        "Otitis externa, left ear.",
        "Ear cytology; topical otic drops twice daily for 10 days; recheck in 2 weeks.",
        "{name} has an ear infection. Give the ear drops twice a day for 10 days and book a recheck.",
    ),
    "Vaccination": (
        "Annual vaccination visit; no concerns from the owner.",
        "Bright, alert, responsive. Body condition 5/9. Heart and lungs normal.",
        "Healthy {species}, due for vaccines.",
        "Core vaccines given; next due in 12 months.",
        "{name} received the annual vaccines today. Mild tiredness for a day is normal.",
    ),
    "Recheck": (
        "Recheck after treatment; owner reports improvement.",
        "Previously affected area healing well; no discomfort on palpation.",
        "Resolving condition.",
        "Complete current medication; no further recheck unless signs return.",
        "{name} is healing well. Finish the remaining medication.",
    ),
    "Dental": (
        "Admitted for dental cleaning; fasted since last night.",
        "Grade 2 dental disease, tartar on upper premolars. Anaesthesia uneventful.",
        "Periodontal disease, grade 2.",
        "Scale and polish performed; one premolar extracted; pain relief for 3 days.",
        "{name} had a dental cleaning and one extraction. Feed soft food for 3 days and give pain relief.",
    ),
    "Surgery Admit": (
        "Admitted for elective neutering.",
        "Pre-anaesthetic exam normal; bloods within reference ranges.",
        "Healthy {species} for elective surgery.",
        "Neuter performed; skin sutures; cone for 10 days.",
        "{name} was neutered today. Keep the cone on and the wound dry; suture removal in 10 days.",
    ),
    "Nail Trim": (
        "Nail trim requested.",
        "Nails overgrown; otherwise normal.",
        "Overgrown nails.",
        "Nails trimmed.",
        "{name}'s nails were trimmed today.",
    ),
    "Senior Wellness": (
        "Senior check; owner notes drinking more water recently.",
        "Weight down 0.4 kg since last visit; mild dental tartar.",
        "Polydipsia under investigation.",
        "Bloods and urinalysis submitted; results by phone in 2 days.",
        "{name} had a senior health check. We will call you with the blood and urine results.",
    ),
}


class VetPimsSettings(BaseModel):
    """Live-tunable account, session and schedule behaviour (``PUT /_sandbox/settings``)."""

    model_config = ConfigDict(extra="forbid")

    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    session_cookie: str = "neo_session"
    session_lifetime_seconds: int = Field(1800, ge=1, le=86_400 * 7)
    unauthenticated: Literal["redirect", "json_401"] = Field(
        "redirect", description="What a request without a live session gets: the login redirect or 401 JSON."
    )
    slot_length_minutes: int = Field(15, ge=5, le=240)
    capacity_per_slot: int = Field(2, ge=1, le=100)
    business_hours: dict[str, tuple[str, str] | None] | None = Field(
        None, description="weekday name -> (open, close) HH:MM or null when closed; null = the seeded hours."
    )
    max_calendar_range_days: int = Field(62, ge=1, le=3660)
    default_page_limit: int = Field(50, ge=1, le=1000)
    max_page_limit: int = Field(200, ge=1, le=5000)

    @field_validator("business_hours")
    @classmethod
    def _hours_valid(
        cls, value: dict[str, tuple[str, str] | None] | None
    ) -> dict[str, tuple[str, str] | None] | None:
        if value is None:
            return None
        for day, hours in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r}; use {', '.join(WEEKDAYS)}")
            if hours is not None:
                opening, closing = (time.fromisoformat(part) for part in hours)
                if closing <= opening:
                    raise ValueError(f"{day}: close must be after open")
        return value


# ---------------------------------------------------------------------------------------- records


@dataclass(slots=True)
class Client:
    id: int
    first_name: str
    last_name: str
    email: str
    phone: str
    address: str
    city: str
    state: str
    postcode: str
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Animal:
    id: int
    client_id: int
    name: str
    species: str
    breed: str
    sex: str
    date_of_birth: date | None
    weight_kg: float | None
    deceased: bool
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Vet:
    id: int
    name: str
    role: str


@dataclass(slots=True)
class Room:
    id: int
    name: str


@dataclass(slots=True)
class VisitType:
    id: int
    name: str
    duration_minutes: int
    colour: str


@dataclass(slots=True)
class Booking:
    id: int
    patient_id: int
    client_id: int
    type_id: int
    provider_id: int | None
    room_id: int | None
    start: datetime
    end: datetime
    status: str
    notes: str
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None = None
    deleted: bool = False


@dataclass(slots=True)
class Consultation:
    id: int
    appointment_id: int | None
    patient_id: int
    client_id: int
    provider_id: int | None
    started_at: datetime
    status: str
    reason: str
    subjective: str
    objective: str
    assessment: str
    plan: str
    discharge_summary: str
    weight_kg: float | None
    temperature_c: float | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Session:
    username: str
    expires_at: datetime
    epoch: int


LookupT = TypeVar("LookupT")
TABLES: dict[str, type[Any]] = {
    "clients": Client,
    "patients": Animal,
    "vets": Vet,
    "rooms": Room,
    "types": VisitType,
    "appointments": Booking,
    "consultations": Consultation,
}
STATE = StateCodec()


@dataclass
class VetStore:
    clients: dict[int, Client] = field(default_factory=dict)
    patients: dict[int, Animal] = field(default_factory=dict)
    vets: dict[int, Vet] = field(default_factory=dict)
    rooms: dict[int, Room] = field(default_factory=dict)
    types: dict[int, VisitType] = field(default_factory=dict)
    appointments: dict[int, Booking] = field(default_factory=dict)
    consultations: dict[int, Consultation] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    seeded_hours: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    next_ids: dict[str, int] = field(default_factory=dict)

    def new_id(self, table: str) -> int:
        value = self.next_ids.get(table, len(getattr(self, table)) + 1)
        self.next_ids[table] = value + 1
        return value


class NeoError(Exception):
    """A refusal in the app's JSON error shape: ``{"success": false, "error": {code, message, ...}}``."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"success": False, "error": {"code": self.code, "message": self.message, **self.details}},
            self.status,
        )


LOGIN_PAGE = """<!doctype html>
<html><head><title>Sign in</title></head>
<body>
<h1>Sign in</h1>
{error}
<form id="login-form" method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>Username <input name="username" type="text" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
</body></html>
"""


def login_page(next_path: str = "/dashboard", error: str = "") -> str:
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return LOGIN_PAGE.format(error=notice, next=html.escape(next_path, quote=True))


async def form_fields(request: Request) -> dict[str, str]:
    """Fields of a urlencoded or multipart/form-data body (or a JSON object, which some clients send)."""
    content_type = request.headers.get("content-type", "")
    raw = await request.body()
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
        )
        values: dict[str, str] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                payload = part.get_payload(decode=True)
                values[name] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        return values
    if content_type.startswith("application/json"):
        try:
            body = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise NeoError(400, "invalid_json", f"request body is not valid JSON: {exc.msg}")
        if not isinstance(body, dict):
            raise NeoError(400, "invalid_json", "request body must be a JSON object")
        return {key: "" if value is None else str(value) for key, value in body.items()}
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _int_field(values: Mapping[str, str], name: str, *, required: bool = True) -> int | None:
    raw = values.get(name, "").strip()
    if not raw:
        if required:
            raise NeoError(400, "missing_field", f"{name} is required", field=name)
        return None
    try:
        return int(raw)
    except ValueError:
        raise NeoError(400, "invalid_field", f"{name} must be a number", field=name)


def _page_params(request: Request, settings: VetPimsSettings) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", "1"))
        limit = int(request.query_params.get("limit", str(settings.default_page_limit)))
    except ValueError:
        raise NeoError(400, "invalid_paging", "page and limit must be numbers")
    if page < 1 or limit < 1:
        raise NeoError(400, "invalid_paging", "page and limit start at 1")
    return page, min(limit, settings.max_page_limit)


def _local_date(value: str | None, name: str) -> date:
    try:
        return date.fromisoformat((value or "").strip()[:10])
    except ValueError:
        raise NeoError(400, "invalid_field", f"{name} must be a date YYYY-MM-DD", field=name)


# ---------------------------------------------------------------------------------------- server


class VetPimsSandbox(SandboxServer):
    """The veterinary PIMS simulator; the module docstring lists what it reproduces."""

    name: ClassVar[str] = "vet_pims"
    title: ClassVar[str] = "Veterinary PIMS (IDEXX Neo-like)"
    api_prefix: ClassVar[str] = ""
    Settings: ClassVar[type[BaseModel]] = VetPimsSettings

    def __init__(self, **options: Any) -> None:
        self.store = VetStore()
        self._lookups: dict[tuple[Any, ...], tuple[VetStore, int, Any]] = {}
        super().__init__(**options)

    @property
    def account(self) -> VetPimsSettings:
        assert isinstance(self.settings, VetPimsSettings)
        return self.settings

    # ------------------------------------------------------------------ time helpers

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.clock.zone).replace(tzinfo=None)

    def wall(self, instant: datetime) -> str:
        return self.local(instant).isoformat(timespec="seconds")

    def business_hours(self) -> dict[str, tuple[str, str] | None]:
        configured = self.account.business_hours
        hours = dict(self.store.seeded_hours)
        if configured is not None:
            hours.update(configured)
        return {day: hours.get(day) for day in WEEKDAYS}

    # ------------------------------------------------------------------ derived lookups

    def _derived(self, key: tuple[Any, ...], table: str, build: Callable[[VetStore], LookupT]) -> LookupT:
        """A lookup built from ``table``, kept until that table grows or the store is replaced.

        Rows of every table here are only ever added, never removed, and the fields these lookups
        read (owner, appointment, start, names) never change after creation, so the row count tells
        exactly when a lookup is stale. A full read of a 50,000-visit clinic would otherwise scan
        every row for each row it renders.
        """
        store = self.store
        size = len(getattr(store, table))
        cached = self._lookups.get(key)
        if cached is not None and cached[0] is store and cached[1] == size:
            return cast(LookupT, cached[2])
        value = build(store)
        if len(self._lookups) > 32:
            self._lookups.clear()
        self._lookups[key] = (store, size, value)
        return value

    def animal_ids_by_client(self) -> dict[int, list[int]]:
        def build(store: VetStore) -> dict[int, list[int]]:
            owned: dict[int, list[int]] = {}
            for row in store.patients.values():
                owned.setdefault(row.client_id, []).append(row.id)
            return owned

        return self._derived(("animals_by_client",), "patients", build)

    def consultation_by_appointment(self) -> dict[int, int]:
        def build(store: VetStore) -> dict[int, int]:
            first: dict[int, int] = {}
            for row in store.consultations.values():
                if row.appointment_id is not None:
                    first.setdefault(row.appointment_id, row.id)
            return first

        return self._derived(("consultation_by_appointment",), "consultations", build)

    def bookings_by_start(self) -> tuple[list[datetime], list[Booking]]:
        """Every booking, deleted and cancelled too, in (start, id) order, with the starts alongside."""

        def build(store: VetStore) -> tuple[list[datetime], list[Booking]]:
            ordered = sorted(store.appointments.values(), key=lambda row: (row.start, row.id))
            return [row.start for row in ordered], ordered

        return self._derived(("bookings_by_start",), "appointments", build)

    # ------------------------------------------------------------------ framework hooks

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        spec = clinic.spec
        rng = random.Random(spec.seed * 7919 + 13)
        store = VetStore()
        opening, closing = f"{spec.open_hour:02d}:00", f"{min(spec.close_hour, 23):02d}:00"
        if spec.close_hour == 24:
            closing = "23:59"
        store.seeded_hours = {
            day: (opening, closing) if index < 5 else None for index, day in enumerate(WEEKDAYS)
        }
        for practitioner in clinic.practitioners:
            role = "nurse" if practitioner.is_hygienist else "veterinarian"
            prefix = "" if practitioner.is_hygienist else "Dr "
            vet = Vet(practitioner.id, f"{prefix}{practitioner.first_name} {practitioner.last_name}", role)
            store.vets[vet.id] = vet
        for room in clinic.rooms:
            store.rooms[room.id] = Room(room.id, f"Consult Room {room.id}")
        for index, (visit_name, minutes) in enumerate(VISIT_TYPES, start=1):
            colour = ("#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1")[index % 7]
            store.types[index] = VisitType(index, visit_name, minutes, colour)
        for person in clinic.patients:
            store.clients[person.id] = Client(
                id=person.id,
                first_name=person.first_name,
                last_name=person.last_name,
                email=person.email,
                phone=person.mobile_phone,
                address=person.address,
                city=person.city,
                state=person.state,
                postcode=person.zip_code,
                created_at=person.created_at,
                updated_at=person.created_at,
            )
        animal_id = 0
        for client in store.clients.values():
            for _ in range(1 if rng.random() < 0.7 else 2):
                animal_id += 1
                store.patients[animal_id] = self._random_animal(rng, animal_id, client, clinic.today)
        store.next_ids = {name: len(getattr(store, name)) + 1 for name in TABLES}
        self.store = store
        self._generate_visits(clinic, rng)

    @staticmethod
    def _random_animal(rng: random.Random, animal_id: int, client: Client, today: date) -> Animal:
        roll, cumulative = rng.random(), 0.0
        species, breeds = SPECIES_BREEDS[0][0], SPECIES_BREEDS[0][1]
        for candidate, candidate_breeds, share in SPECIES_BREEDS:
            cumulative += share
            if roll < cumulative:
                species, breeds = candidate, candidate_breeds
                break
        return Animal(
            id=animal_id,
            client_id=client.id,
            name=rng.choice(ANIMAL_NAMES),
            species=species,
            breed=rng.choice(breeds),
            sex=rng.choice(("Male Neutered", "Female Spayed", "Male", "Female")),
            date_of_birth=today - timedelta(days=rng.randint(120, 16 * 365)),
            weight_kg=round(
                rng.uniform(0.1, 4.0) if species in ("Avian", "Reptile") else rng.uniform(2, 40), 1
            ),
            deceased=False,
            created_at=client.created_at,
            updated_at=client.created_at,
        )

    def _generate_visits(self, clinic: GeneratedClinic, rng: random.Random) -> None:
        """Lay ``spec.appointments`` visits over the window, never beyond a slot's capacity."""
        store = self.store
        spec = clinic.spec
        if not store.patients or spec.appointments == 0:
            return
        settings = self.account
        slot = timedelta(minutes=settings.slot_length_minutes)
        hours = self.business_hours()
        zone = self.clock.zone
        days = [
            clinic.today + timedelta(days=offset)
            for offset in range(-spec.days_before, spec.days_after + 1)
            if hours[WEEKDAYS[(clinic.today + timedelta(days=offset)).weekday()]] is not None
        ]
        if not days:
            return
        now = datetime.combine(clinic.today, time(12), tzinfo=zone).astimezone(UTC)
        per_day, extra = divmod(spec.appointments, len(days))
        animals = list(store.patients.values())
        vets = [vet.id for vet in store.vets.values()]
        rooms = list(store.rooms)
        types = list(store.types.values())
        booking_id = 0
        for index, day in enumerate(days):
            window = hours[WEEKDAYS[day.weekday()]]
            assert window is not None
            opening = datetime.combine(day, time.fromisoformat(window[0]), tzinfo=zone).astimezone(UTC)
            closing = datetime.combine(day, time.fromisoformat(window[1]), tzinfo=zone).astimezone(UTC)
            slot_count = int((closing - opening) / slot)
            load = [0] * slot_count
            wanted = per_day + (1 if index < extra else 0)
            for _attempt in range(wanted * 4):
                if wanted == 0:
                    break
                visit = rng.choice(types)
                span = max(1, math.ceil(visit.duration_minutes / settings.slot_length_minutes))
                if span > slot_count:
                    continue
                first = rng.randrange(slot_count - span + 1)
                if any(
                    load[position] >= settings.capacity_per_slot for position in range(first, first + span)
                ):
                    continue
                for position in range(first, first + span):
                    load[position] += 1
                wanted -= 1
                booking_id += 1
                start = opening + slot * first
                animal = rng.choice(animals)
                past = start < now
                roll = rng.random()
                if past:
                    status = "completed" if roll < 0.86 else ("cancelled" if roll < 0.94 else "no_show")
                else:
                    status = "confirmed" if roll < 0.5 else ("booked" if roll < 0.93 else "cancelled")
                created = min(start - timedelta(days=rng.randint(1, 40), minutes=rng.randint(0, 600)), now)
                booking = Booking(
                    id=booking_id,
                    patient_id=animal.id,
                    client_id=animal.client_id,
                    type_id=visit.id,
                    provider_id=rng.choice(vets),
                    room_id=rng.choice(rooms),
                    start=start,
                    end=start + timedelta(minutes=visit.duration_minutes),
                    status=status,
                    notes="",
                    created_at=created,
                    updated_at=created,
                    cancelled_at=created + timedelta(hours=rng.randint(1, 24))
                    if status == "cancelled"
                    else None,
                )
                if status == "cancelled":
                    # A cancelled visit gave its place back; the load count only tracks live bookings.
                    for position in range(first, first + span):
                        load[position] -= 1
                    booking.updated_at = booking.cancelled_at or created
                store.appointments[booking.id] = booking
                if status == "completed":
                    self._add_consultation(booking, rng)
        store.next_ids["appointments"] = booking_id + 1

    def _add_consultation(self, booking: Booking, rng: random.Random, **overrides: str) -> Consultation:
        store = self.store
        animal = store.patients[booking.patient_id]
        visit = store.types[booking.type_id]
        template = SOAP_TEMPLATES.get(visit.name, SOAP_TEMPLATES["Consultation"])
        words = {"name": animal.name, "species": animal.species.lower()}
        subjective, objective, assessment, plan, discharge = (part.format(**words) for part in template)
        finished = booking.end + timedelta(minutes=rng.randint(5, 90))
        consultation = Consultation(
            id=store.new_id("consultations"),
            appointment_id=booking.id,
            patient_id=animal.id,
            client_id=animal.client_id,
            provider_id=booking.provider_id,
            started_at=booking.start,
            status="finalised",
            reason=visit.name,
            subjective=overrides.get("subjective", subjective),
            objective=overrides.get("objective", objective),
            assessment=overrides.get("assessment", assessment),
            plan=overrides.get("plan", plan),
            discharge_summary=overrides.get("discharge_summary", discharge),
            weight_kg=animal.weight_kg,
            temperature_c=round(rng.uniform(37.8, 39.2), 1)
            if animal.species in ("Canine", "Feline")
            else None,
            created_at=finished,
            updated_at=finished,
        )
        store.consultations[consultation.id] = consultation
        return consultation

    def dump_state(self) -> dict[str, Any]:
        store = self.store
        state: dict[str, Any] = STATE.dump_tables(store, TABLES)
        state["seeded_hours"] = store.seeded_hours
        state["next_ids"] = store.next_ids
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        store = VetStore()
        STATE.load_tables(store, TABLES, state)
        store.seeded_hours = {
            day: (str(hours[0]), str(hours[1])) if hours else None
            for day, hours in state.get("seeded_hours", {}).items()
        }
        store.next_ids = {key: int(value) for key, value in state.get("next_ids", {}).items()}
        self.store = store

    def state_summary(self) -> dict[str, Any]:
        appointments = [row for row in self.store.appointments.values() if not row.deleted]
        return {
            "clients": len(self.store.clients),
            "patients": len(self.store.patients),
            "appointments": len(appointments),
            "cancelled": sum(1 for row in appointments if row.status == "cancelled"),
            "consultations": len(self.store.consultations),
            "live_sessions": sum(
                1 for session in self.store.sessions.values() if self._session_live(session)
            ),
        }

    def render_error(self, status: int, message: str, *, reason: str | None = None) -> Response:
        return NeoError(status, reason or "error", message).response()

    def identify(self, headers: Headers) -> str | None:
        cookie = headers.get("cookie", "")
        name = self.account.session_cookie + "="
        for part in cookie.split(";"):
            part = part.strip()
            if part.startswith(name):
                session = self.store.sessions.get(part[len(name) :])
                return session.username if session else "unknown-session"
        return None

    def credentials(self) -> dict[str, str]:
        return {
            "login_url": (self.root_url or "") + "/login",
            "username": self.account.username,
            "password": self.account.password,
            "session_cookie": self.account.session_cookie,
            "auth": "POST the login form (form-encoded username/password); reuse the session cookie",
        }

    def actions(self) -> dict[str, ActionHandler]:
        async def cancel_appointment(body: dict[str, Any]) -> dict[str, Any]:
            """Cancel an appointment at the front desk."""
            booking = self._booking(body.get("id"))
            self._cancel(booking)
            return self.appointment_json(booking)

        async def add_client(body: dict[str, Any]) -> dict[str, Any]:
            """Register a new client (owner): first_name, last_name, optional email/phone."""
            return self.client_json(self.create_client({k: str(v) for k, v in body.items()}))

        async def add_patient(body: dict[str, Any]) -> dict[str, Any]:
            """Register a new animal for a client: client_id, name, species, optional breed/sex."""
            return self.patient_json(self.create_patient({k: str(v) for k, v in body.items()}))

        async def add_past_consultation(body: dict[str, Any]) -> dict[str, Any]:
            """Record a finished visit in the past (patient_id, days_ago, time, type_id) with its notes."""
            return self.add_past_visit(body)

        def front_desk(handler: ActionHandler) -> ActionHandler:
            async def run(body: dict[str, Any]) -> dict[str, Any]:
                try:
                    return await handler(body)
                except NeoError as exc:
                    raise SandboxError(
                        exc.status, exc.message, reason=str(exc.details.get("field", exc.code))
                    )

            run.__doc__ = handler.__doc__
            return run

        return {
            "cancel_appointment": front_desk(cancel_appointment),
            "add_client": front_desk(add_client),
            "add_patient": front_desk(add_patient),
            "add_past_consultation": front_desk(add_past_consultation),
        }

    # ------------------------------------------------------------------ sessions

    def _session_live(self, session: Session) -> bool:
        return session.epoch == self.token_epoch and self.clock.now() < session.expires_at

    def session_for(self, request: Request) -> Session | None:
        token = request.cookies.get(self.account.session_cookie)
        session = self.store.sessions.get(token or "")
        if session is None or not self._session_live(session):
            return None
        if self.consume_token_expiry(request):
            return None
        return session

    def unauthenticated(self, request: Request) -> Response:
        if self.account.unauthenticated == "json_401":
            return NeoError(401, "session_expired", "Your session has expired; sign in again").response()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=302)

    # ------------------------------------------------------------------ wire shapes

    def client_json(self, client: Client) -> dict[str, Any]:
        return {
            "id": client.id,
            "first_name": client.first_name,
            "last_name": client.last_name,
            "email": client.email,
            "phone": client.phone,
            "address": client.address,
            "city": client.city,
            "state": client.state,
            "postcode": client.postcode,
            "patient_ids": list(self.animal_ids_by_client().get(client.id, ())),
            "created_at": self.wall(client.created_at),
            "updated_at": self.wall(client.updated_at),
        }

    def patient_json(self, animal: Animal) -> dict[str, Any]:
        owner = self.store.clients.get(animal.client_id)
        return {
            "id": animal.id,
            "name": animal.name,
            "species": animal.species,
            "breed": animal.breed,
            "sex": animal.sex,
            "date_of_birth": animal.date_of_birth.isoformat() if animal.date_of_birth else None,
            "weight_kg": animal.weight_kg,
            "deceased": animal.deceased,
            "client_id": animal.client_id,
            "client": {"id": owner.id, "name": f"{owner.first_name} {owner.last_name}"} if owner else None,
            "created_at": self.wall(animal.created_at),
            "updated_at": self.wall(animal.updated_at),
        }

    def appointment_json(self, booking: Booking) -> dict[str, Any]:
        store = self.store
        animal = store.patients.get(booking.patient_id)
        owner = store.clients.get(booking.client_id)
        visit = store.types.get(booking.type_id)
        vet = store.vets.get(booking.provider_id or 0)
        room = store.rooms.get(booking.room_id or 0)
        start, end = self.local(booking.start), self.local(booking.end)
        consultation = self.consultation_by_appointment().get(booking.id)
        return {
            "id": booking.id,
            "appointment_date": start.date().isoformat(),
            "time": start.strftime("%H:%M"),
            "time_end": end.strftime("%H:%M"),
            "start": start.isoformat(timespec="seconds"),
            "end": end.isoformat(timespec="seconds"),
            "duration_minutes": int((booking.end - booking.start).total_seconds() // 60),
            "status": booking.status,
            "patient_id": booking.patient_id,
            "patient_name": animal.name if animal else None,
            "species": animal.species if animal else None,
            "breed": animal.breed if animal else None,
            "client_id": booking.client_id,
            "client_name": f"{owner.first_name} {owner.last_name}" if owner else None,
            "client_phone": owner.phone if owner else None,
            "type_id": booking.type_id,
            "type_name": visit.name if visit else None,
            "provider_id": booking.provider_id,
            "provider_name": vet.name if vet else None,
            "room": booking.room_id,
            "room_name": room.name if room else None,
            "notes": booking.notes,
            "consultation_id": consultation,
            "created_at": self.wall(booking.created_at),
            "updated_at": self.wall(booking.updated_at),
            "cancelled_at": self.wall(booking.cancelled_at) if booking.cancelled_at else None,
        }

    def event_json(self, booking: Booking) -> dict[str, Any]:
        """The calendar's event shape: FullCalendar-style, with the booking's ids alongside."""
        detail = self.appointment_json(booking)
        return {
            "id": booking.id,
            "title": f"{detail['patient_name']} ({detail['client_name']}) - {detail['type_name']}",
            "start": detail["start"],
            "end": detail["end"],
            "allDay": False,
            "resourceId": booking.room_id,
            "color": self.store.types[booking.type_id].colour
            if booking.type_id in self.store.types
            else None,
            "extendedProps": {
                key: detail[key]
                for key in (
                    "status",
                    "patient_id",
                    "patient_name",
                    "species",
                    "client_id",
                    "client_name",
                    "type_id",
                    "type_name",
                    "provider_id",
                    "provider_name",
                    "room_name",
                    "notes",
                    "updated_at",
                )
            },
        }

    def consultation_summary(self, row: Consultation) -> dict[str, Any]:
        animal = self.store.patients.get(row.patient_id)
        vet = self.store.vets.get(row.provider_id or 0)
        return {
            "id": row.id,
            "appointment_id": row.appointment_id,
            "patient_id": row.patient_id,
            "patient_name": animal.name if animal else None,
            "client_id": row.client_id,
            "provider_id": row.provider_id,
            "provider_name": vet.name if vet else None,
            "date": self.local(row.started_at).date().isoformat(),
            "started_at": self.wall(row.started_at),
            "status": row.status,
            "reason": row.reason,
            "has_discharge_summary": bool(row.discharge_summary),
            "updated_at": self.wall(row.updated_at),
        }

    def consultation_json(self, row: Consultation) -> dict[str, Any]:
        return self.consultation_summary(row) | {
            "soap": {
                "subjective": row.subjective,
                "objective": row.objective,
                "assessment": row.assessment,
                "plan": row.plan,
            },
            "discharge_summary": row.discharge_summary,
            "vitals": {"weight_kg": row.weight_kg, "temperature_c": row.temperature_c},
            "created_at": self.wall(row.created_at),
        }

    # ------------------------------------------------------------------ rules

    def _booking(self, raw_id: Any) -> Booking:
        try:
            booking_id = int(raw_id)
        except (TypeError, ValueError):
            raise NeoError(400, "invalid_field", "id must be an appointment id", field="id")
        booking = self.store.appointments.get(booking_id)
        if booking is None or booking.deleted:
            raise NeoError(404, "not_found", f"Appointment {booking_id} not found")
        return booking

    def _cancel(self, booking: Booking) -> None:
        if booking.status == "cancelled":
            raise NeoError(409, "already_cancelled", f"Appointment {booking.id} is already cancelled")
        now = self.clock.now()
        booking.status = "cancelled"
        booking.cancelled_at = now
        booking.updated_at = now

    def slot_load(self, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
        """(slot start, live bookings in it) for each slot the span [start, end) touches."""
        length = timedelta(minutes=self.account.slot_length_minutes)
        local_start = self.local(start)
        midnight = local_start.replace(hour=0, minute=0, second=0, microsecond=0)
        first = midnight + length * ((local_start - midnight) // length)
        cursor = self.clock.from_local(first)
        live = [
            row
            for row in self.store.appointments.values()
            if not row.deleted and row.status in CAPACITY_STATUSES and row.start < end and start < row.end
        ]
        slots = []
        while cursor < end:
            slot_end = cursor + length
            slots.append((cursor, sum(1 for row in live if row.start < slot_end and cursor < row.end)))
            cursor = slot_end
        return slots

    def create_appointment(self, values: Mapping[str, str]) -> Booking:
        store = self.store
        patient_id = _int_field(values, "patient_id")
        type_id = _int_field(values, "type_id")
        assert patient_id is not None and type_id is not None
        animal = store.patients.get(patient_id)
        if animal is None:
            raise NeoError(404, "patient_not_found", f"Patient {patient_id} not found", field="patient_id")
        visit = store.types.get(type_id)
        if visit is None:
            raise NeoError(400, "invalid_field", f"Unknown appointment type {type_id}", field="type_id")
        day = _local_date(values.get("appointment_date"), "appointment_date")
        try:
            starts = time.fromisoformat(values.get("time", "").strip())
        except ValueError:
            raise NeoError(400, "invalid_field", "time must be HH:MM", field="time")
        local_start = datetime.combine(day, starts)
        if values.get("time_end", "").strip():
            try:
                local_end = datetime.combine(day, time.fromisoformat(values["time_end"].strip()))
            except ValueError:
                raise NeoError(400, "invalid_field", "time_end must be HH:MM", field="time_end")
        else:
            local_end = local_start + timedelta(minutes=visit.duration_minutes)
        if local_end <= local_start:
            raise NeoError(400, "invalid_field", "time_end must be after time", field="time_end")
        room_id = _int_field(values, "room", required=False)
        if room_id is not None and room_id not in store.rooms:
            raise NeoError(400, "invalid_field", f"Unknown room {room_id}", field="room")
        provider_id = _int_field(values, "provider_id", required=False)
        if provider_id is not None and provider_id not in store.vets:
            raise NeoError(400, "invalid_field", f"Unknown provider {provider_id}", field="provider_id")
        hours = self.business_hours()[WEEKDAYS[day.weekday()]]
        if (
            hours is None
            or local_start.time() < time.fromisoformat(hours[0])
            or local_end.time() > time.fromisoformat(hours[1])
            or local_end.date() != day
        ):
            opening = f"{hours[0]}-{hours[1]}" if hours else "closed"
            raise NeoError(
                422,
                "outside_business_hours",
                f"{day.isoformat()} {starts.strftime('%H:%M')} is outside business hours ({opening})",
            )
        start, end = self.clock.from_local(local_start), self.clock.from_local(local_end)
        capacity = self.account.capacity_per_slot
        for slot_start, booked in self.slot_load(start, end):
            if booked >= capacity:
                raise NeoError(
                    409,
                    "slot_full",
                    f"The {self.local(slot_start).strftime('%H:%M')} slot on {day.isoformat()} is full "
                    f"({booked} of {capacity} booked)",
                    slot_start=self.wall(slot_start),
                    capacity=capacity,
                    booked=booked,
                )
        now = self.clock.now()
        booking = Booking(
            id=store.new_id("appointments"),
            patient_id=animal.id,
            client_id=animal.client_id,
            type_id=visit.id,
            provider_id=provider_id,
            room_id=room_id,
            start=start,
            end=end,
            status="booked",
            notes=values.get("notes", ""),
            created_at=now,
            updated_at=now,
        )
        store.appointments[booking.id] = booking
        return booking

    def create_client(self, values: Mapping[str, str]) -> Client:
        for name in ("first_name", "last_name"):
            if not values.get(name, "").strip():
                raise NeoError(400, "missing_field", f"{name} is required", field=name)
        now = self.clock.now()
        client = Client(
            id=self.store.new_id("clients"),
            first_name=values["first_name"].strip(),
            last_name=values["last_name"].strip(),
            email=values.get("email", "").strip(),
            phone=values.get("phone", "").strip(),
            address=values.get("address", "").strip(),
            city=values.get("city", "").strip(),
            state=values.get("state", "").strip(),
            postcode=values.get("postcode", "").strip(),
            created_at=now,
            updated_at=now,
        )
        self.store.clients[client.id] = client
        return client

    def create_patient(self, values: Mapping[str, str]) -> Animal:
        client_id = _int_field(values, "client_id")
        if client_id not in self.store.clients:
            raise NeoError(404, "client_not_found", f"Client {client_id} not found", field="client_id")
        for name in ("name", "species"):
            if not values.get(name, "").strip():
                raise NeoError(400, "missing_field", f"{name} is required", field=name)
        birth = (
            _local_date(values["date_of_birth"], "date_of_birth")
            if values.get("date_of_birth", "").strip()
            else None
        )
        weight: float | None = None
        if values.get("weight_kg", "").strip():
            try:
                weight = float(values["weight_kg"])
            except ValueError:
                raise NeoError(400, "invalid_field", "weight_kg must be a number", field="weight_kg")
        now = self.clock.now()
        assert client_id is not None
        animal = Animal(
            id=self.store.new_id("patients"),
            client_id=client_id,
            name=values["name"].strip(),
            species=values["species"].strip(),
            breed=values.get("breed", "").strip(),
            sex=values.get("sex", "").strip() or "Unknown",
            date_of_birth=birth,
            weight_kg=weight,
            deceased=False,
            created_at=now,
            updated_at=now,
        )
        self.store.patients[animal.id] = animal
        return animal

    def add_past_visit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A finished visit with notes, ``days_ago`` days back; capacity is not checked, it happened."""
        store = self.store
        try:
            animal = store.patients[int(body.get("patient_id"))]  # type: ignore[arg-type]
        except (TypeError, ValueError, KeyError):
            raise SandboxError(404, "patient_id must name an existing patient", reason="patient_id")
        try:
            days_ago = int(body.get("days_ago", 1))
            starts = time.fromisoformat(str(body.get("time", "10:00")))
            type_id = int(body.get("type_id", 1))
        except (TypeError, ValueError) as exc:
            raise SandboxError(422, f"invalid visit fields: {exc}", reason="body")
        if days_ago < 0:
            raise SandboxError(422, "days_ago must be 0 or more", reason="days_ago")
        if type_id not in store.types:
            raise SandboxError(422, f"unknown type_id {type_id}", reason="type_id")
        local_day = self.clock.local_now().date() - timedelta(days=days_ago)
        start = self.clock.from_local(datetime.combine(local_day, starts))
        if start >= self.clock.now():
            raise SandboxError(422, "the visit must start in the past", reason="time")
        visit = store.types[type_id]
        provider_id = body.get("provider_id")
        booking = Booking(
            id=store.new_id("appointments"),
            patient_id=animal.id,
            client_id=animal.client_id,
            type_id=type_id,
            provider_id=int(provider_id) if provider_id is not None else next(iter(store.vets), None),
            room_id=next(iter(store.rooms), None),
            start=start,
            end=start + timedelta(minutes=visit.duration_minutes),
            status="completed",
            notes=str(body.get("notes", "")),
            created_at=start - timedelta(days=1),
            updated_at=self.clock.now(),
        )
        store.appointments[booking.id] = booking
        overrides = {
            key: str(body[key])
            for key in ("subjective", "objective", "assessment", "plan", "discharge_summary")
            if key in body
        }
        consultation = self._add_consultation(booking, random.Random(booking.id), **overrides)
        return {
            "appointment": self.appointment_json(booking),
            "consultation": self.consultation_json(consultation),
        }

    # ------------------------------------------------------------------ routes

    def add_routes(self, router: APIRouter) -> None:
        server = self

        class SessionRoute(APIRoute):
            """Every route but the login flow needs a live session; ``NeoError`` renders as JSON."""

            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()
                public = self.path_format in PUBLIC_PATHS

                async def with_session(request: Request) -> Response:
                    if not public and server.session_for(request) is None:
                        return server.unauthenticated(request)
                    try:
                        return await handler(request)
                    except NeoError as exc:
                        return exc.response()

                return with_session

        router.route_class = SessionRoute
        store = lambda: self.store  # noqa: E731 - the store is replaced on reseed, so look it up each time

        @router.get("/login")
        async def get_login(next: str = "/dashboard") -> Response:
            return HTMLResponse(login_page(next))

        @router.post("/login")
        async def post_login(request: Request) -> Response:
            values = await form_fields(request)
            account = self.account
            next_path = values.get("next") or "/dashboard"
            if not next_path.startswith("/") or next_path.startswith("//"):
                next_path = "/dashboard"
            if values.get("username") != account.username or values.get("password") != account.password:
                return HTMLResponse(login_page(next_path, "Invalid username or password"), status_code=401)
            token = secrets.token_urlsafe(24)
            lifetime = self.token_ttl(account.session_lifetime_seconds)
            store().sessions[token] = Session(
                account.username, self.clock.now() + timedelta(seconds=lifetime), self.token_epoch
            )
            response = RedirectResponse(next_path, status_code=303)
            response.set_cookie(account.session_cookie, token, httponly=True, samesite="lax", path="/")
            return response

        @router.post("/logout")
        async def logout(request: Request) -> Response:
            store().sessions.pop(request.cookies.get(self.account.session_cookie, ""), None)
            response = RedirectResponse("/login", status_code=303)
            response.delete_cookie(self.account.session_cookie, path="/")
            return response

        @router.get("/dashboard")
        async def dashboard() -> Response:
            today = self.clock.local_now().date().isoformat()
            return HTMLResponse(
                f"<!doctype html><html><head><title>Dashboard</title></head><body>"
                f'<h1 id="dashboard">Appointments for {today}</h1></body></html>'
            )

        @router.get("/appointments/getCalendarEventData")
        async def calendar_events(request: Request) -> Response:
            params = request.query_params
            first = _local_date(params.get("start"), "start")
            last = _local_date(params.get("end"), "end")
            if last < first:
                raise NeoError(400, "invalid_range", "end must not be before start")
            if (last - first).days > self.account.max_calendar_range_days:
                raise NeoError(
                    400,
                    "range_too_large",
                    f"A calendar request spans at most {self.account.max_calendar_range_days} days",
                )
            include_cancelled = params.get("include_cancelled") in ("1", "true")
            # ``end`` is exclusive, as FullCalendar sends it.
            window_start = self.clock.from_local(datetime.combine(first, time()))
            window_end = self.clock.from_local(datetime.combine(last, time()))
            starts, ordered = self.bookings_by_start()
            rows = [
                row
                for row in ordered[
                    bisect.bisect_left(starts, window_start) : bisect.bisect_left(starts, window_end)
                ]
                if not row.deleted and (include_cancelled or row.status != "cancelled")
            ]
            return JSONResponse([self.event_json(row) for row in rows])

        @router.get("/schedule/getScheduleConfigs")
        async def schedule_configs() -> Response:
            account = self.account
            hours = self.business_hours()
            return JSONResponse(
                {
                    "timezone": self.clock.timezone,
                    "slot_length_minutes": account.slot_length_minutes,
                    "capacity_per_slot": account.capacity_per_slot,
                    "business_hours": [
                        {
                            "day": day,
                            "day_of_week": (index + 1) % 7,
                            "open": window[0] if window else None,
                            "close": window[1] if window else None,
                            "closed": window is None,
                        }
                        for index, (day, window) in enumerate(hours.items())
                    ],
                    "rooms": [{"id": room.id, "name": room.name} for room in store().rooms.values()],
                }
            )

        @router.get("/appointments/getAppointmentView")
        async def appointment_view() -> Response:
            return JSONResponse(
                {
                    "appointment_types": [
                        {
                            "id": row.id,
                            "name": row.name,
                            "duration_minutes": row.duration_minutes,
                            "colour": row.colour,
                        }
                        for row in store().types.values()
                    ],
                    "rooms": [{"id": row.id, "name": row.name} for row in store().rooms.values()],
                    "providers": [
                        {"id": row.id, "name": row.name, "role": row.role} for row in store().vets.values()
                    ],
                    "statuses": ["booked", "confirmed", "arrived", "completed", "no_show", "cancelled"],
                }
            )

        @router.get("/appointments/getAppointment")
        async def get_appointment(request: Request) -> Response:
            booking = self._booking(request.query_params.get("id"))
            return JSONResponse({"success": True, "appointment": self.appointment_json(booking)})

        @router.post("/appointments/create")
        async def create_appointment(request: Request) -> Response:
            booking = self.create_appointment(await form_fields(request))
            return JSONResponse({"success": True, "appointment": self.appointment_json(booking)}, 201)

        @router.post("/appointments/delete/{appointment_id}")
        async def delete_appointment(appointment_id: str, request: Request) -> Response:
            action = (await form_fields(request)).get("action", "")
            booking = self._booking(appointment_id)
            if action == "cancel":
                self._cancel(booking)
            elif action == "delete":
                booking.deleted = True
            else:
                raise NeoError(400, "invalid_action", "action must be 'cancel' or 'delete'", field="action")
            return JSONResponse({"success": True, "id": booking.id, "action": action})

        def page_of(request: Request, rows: list[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
            page, limit = _page_params(request, self.account)
            visible = self.paginate(request, rows, (page - 1) * limit, limit)
            return JSONResponse(
                {
                    "results": [render(row) for row in visible],
                    "total": len(rows),
                    "page": page,
                    "limit": limit,
                    "pages": math.ceil(len(rows) / limit) if rows else 0,
                }
            )

        @router.get("/clients/search")
        async def search_clients(request: Request) -> Response:
            query = request.query_params.get("q", "").strip().lower()

            def matching(table: VetStore) -> list[Client]:
                rows = [
                    row
                    for row in table.clients.values()
                    if not query
                    or query in f"{row.first_name} {row.last_name}".lower()
                    or query in row.email.lower()
                    or query.replace(" ", "") in row.phone
                ]
                return sorted(rows, key=lambda row: row.id)

            # Later pages of the same search reuse the first page's result list.
            rows = self._derived(("clients_search", query), "clients", matching)
            return page_of(request, rows, self.client_json)

        @router.get("/clients/duplicateCheck")
        async def duplicate_check(request: Request) -> Response:
            params = request.query_params
            first, last = (
                params.get("first_name", "").strip().lower(),
                params.get("last_name", "").strip().lower(),
            )
            email, phone = params.get("email", "").strip().lower(), params.get("phone", "").strip()
            matches = [
                row
                for row in store().clients.values()
                if (first and last and row.first_name.lower() == first and row.last_name.lower() == last)
                or (email and row.email.lower() == email)
                or (phone and row.phone == phone)
            ]
            return JSONResponse(
                {"has_duplicates": bool(matches), "duplicates": [self.client_json(row) for row in matches]}
            )

        @router.post("/clients/create")
        async def create_client(request: Request) -> Response:
            client = self.create_client(await form_fields(request))
            return JSONResponse({"success": True, "client": self.client_json(client)}, 201)

        @router.get("/clients/getClient/{client_id}")
        async def get_client(client_id: str) -> Response:
            client = store().clients.get(int(client_id)) if client_id.isdigit() else None
            if client is None:
                raise NeoError(404, "not_found", f"Client {client_id} not found")
            return JSONResponse({"success": True, "client": self.client_json(client)})

        @router.get("/search/patients")
        async def search_patients(request: Request) -> Response:
            params = request.query_params
            query = params.get("q", "").strip().lower()
            client_filter = params.get("client_id")
            species = params.get("species")

            def matching(table: VetStore) -> list[Animal]:
                rows = [
                    row
                    for row in table.patients.values()
                    if (not query or query in row.name.lower())
                    and (not client_filter or str(row.client_id) == client_filter)
                    and (not species or row.species.lower() == species.lower())
                ]
                return sorted(rows, key=lambda row: row.id)

            rows = self._derived(("patients_search", query, client_filter, species), "patients", matching)
            return page_of(request, rows, self.patient_json)

        @router.post("/patients/create")
        async def create_patient(request: Request) -> Response:
            animal = self.create_patient(await form_fields(request))
            return JSONResponse({"success": True, "patient": self.patient_json(animal)}, 201)

        @router.get("/patients/getPatient/{patient_id}")
        async def get_patient(patient_id: str) -> Response:
            animal = store().patients.get(int(patient_id)) if patient_id.isdigit() else None
            if animal is None:
                raise NeoError(404, "not_found", f"Patient {patient_id} not found")
            return JSONResponse({"success": True, "patient": self.patient_json(animal)})

        @router.get("/consultations/search")
        async def search_consultations(request: Request) -> Response:
            params = request.query_params
            first = _local_date(params["date_from"], "date_from") if params.get("date_from") else None
            last = _local_date(params["date_to"], "date_to") if params.get("date_to") else None
            wanted: dict[str, int] = {}
            for name in ("patient_id", "appointment_id", "client_id"):
                if params.get(name):
                    value = _int_field(params, name)
                    assert value is not None
                    wanted[name] = value
            rows = []
            for row in store().consultations.values():
                day = self.local(row.started_at).date()
                if (first and day < first) or (last and day > last):
                    continue
                if any(getattr(row, name) != value for name, value in wanted.items()):
                    continue
                rows.append(row)
            rows.sort(key=lambda row: (row.started_at, row.id))
            return page_of(request, rows, self.consultation_summary)

        @router.get("/consultations/view/{consultation_id}")
        async def view_consultation(consultation_id: str) -> Response:
            row = store().consultations.get(int(consultation_id)) if consultation_id.isdigit() else None
            if row is None:
                raise NeoError(404, "not_found", f"Consultation {consultation_id} not found")
            return JSONResponse({"success": True, "consultation": self.consultation_json(row)})
