"""Deterministic, provider-neutral clinic data for the simulators.

``generate_clinic(ClinicSpec(seed=7, patients=500, appointments=2000))`` returns a ``GeneratedClinic``:
practitioners, rooms (operatories), appointment types, patients and appointments. The same spec always
yields the same clinic. Each simulator converts these records into its own wire shapes (OpenDental's
PascalCase rows, Cliniko's JSON, ...), so every provider is seeded from one vocabulary:

- instants are aware UTC datetimes; ``GeneratedClinic.timezone`` is the office's IANA zone and
  appointments are laid out in office-local working hours (weekdays ``open_hour``..``close_hour``);
- appointments never overlap within a room, and each room belongs to one practitioner, so a
  practitioner is never double-booked either;
- ``status`` is one of ``booked``, ``fulfilled``, ``cancelled``, ``noshow`` (FHIR-like); past
  appointments are mostly fulfilled, future ones booked, with a few cancellations;
- ids are small positive integers per record kind, starting at 1.

The window spans ``days_before`` .. ``days_after`` around ``today`` (default: today in the office time
zone) and widens forward automatically when the requested volume does not fit. Emails use the
reserved example.* domains and phones the 555-01xx fictional range.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clinicsync.sandbox.clock import load_zone

AppointmentStatus = Literal["booked", "fulfilled", "cancelled", "noshow"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES_FEMALE = _words(
    "Olivia Emma Ava Sophia Isabella Mia Amelia Harper Evelyn Abigail Emily Ella Elizabeth Camila Luna "
    "Sofia Avery Mila Aria Scarlett Penelope Layla Chloe Victoria Madison Eleanor Grace Nora Riley Zoey "
    "Hannah Hazel Lily Ellie Violet Lillian Zoe Stella Aurora Natalie Emilia Everly Leah Aubrey Willow "
    "Priya Mei Fatima Aisha Ingrid Siobhan Keiko Ana Lucia"
)
FIRST_NAMES_MALE = _words(
    "Liam Noah Oliver Elijah James William Benjamin Lucas Henry Theodore Jack Levi Alexander Jackson "
    "Mateo Daniel Michael Mason Sebastian Ethan Logan Owen Samuel Jacob Asher Aiden John Joseph Wyatt "
    "David Leo Luke Julian Hudson Grayson Matthew Ezra Gabriel Carter Isaac Jayden Luca Anthony Dylan "
    "Rahul Wei Omar Kwame Sven Declan Hiroshi Diego Tomas"
)
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker "
    "Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper "
    "Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James "
    "Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster "
    "O'Brien Kowalski Okafor Larsen Nakamura Schmidt Dubois Rossi Novak Haddad"
)
STREET_NAMES = _words(
    "Oak Maple Cedar Pine Elm Washington Lake Hill Park Main Church Spring Ridge Sunset River Meadow "
    "Forest Highland Lincoln Jefferson Walnut Chestnut Willow Birch"
)
STREET_KINDS = ("St", "Ave", "Rd", "Ln", "Dr", "Ct", "Blvd", "Way")
CITIES = (
    ("Springfield", "IL", "627"),
    ("Portland", "OR", "972"),
    ("Madison", "WI", "537"),
    ("Austin", "TX", "787"),
    ("Burlington", "VT", "054"),
    ("Boulder", "CO", "803"),
    ("Raleigh", "NC", "276"),
    ("Ann Arbor", "MI", "481"),
)
AREA_CODES = ("212", "312", "415", "503", "512", "608", "617", "720", "802", "919")
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
PRACTITIONER_COLORS = ("#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1")


class ClinicSpec(BaseModel):
    """What to generate. Validated; bad values raise pydantic ``ValidationError`` naming the field."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 1
    patients: int = Field(200, ge=0, le=1_000_000)
    appointments: int = Field(1000, ge=0, le=5_000_000)
    practitioners: int = Field(4, ge=1, le=200)
    hygienists: int = Field(1, ge=0, le=200)
    rooms: int = Field(5, ge=1, le=500)
    days_before: int = Field(30, ge=0, le=3650)
    days_after: int = Field(60, ge=0, le=3650)
    timezone: str = "America/New_York"
    today: date | None = Field(None, description="Office-local 'today'; defaults to the real current date.")
    open_hour: int = Field(8, ge=0, le=23)
    close_hour: int = Field(17, ge=1, le=24)


@dataclass(slots=True)
class Practitioner:
    id: int
    first_name: str
    last_name: str
    abbreviation: str
    is_hygienist: bool
    color: str
    title: str = "Dr"


@dataclass(slots=True)
class Room:
    id: int
    name: str
    abbreviation: str
    practitioner_id: int
    is_hygiene: bool


@dataclass(slots=True)
class AppointmentType:
    id: int
    name: str
    duration_minutes: int
    color: str
    for_hygiene: bool


@dataclass(slots=True)
class Patient:
    id: int
    first_name: str
    last_name: str
    middle_initial: str
    preferred_name: str
    gender: Literal["Male", "Female"]
    birth_date: date
    email: str
    mobile_phone: str
    home_phone: str
    address: str
    city: str
    state: str
    zip_code: str
    primary_practitioner_id: int
    created_at: datetime


@dataclass(slots=True)
class Appointment:
    id: int
    patient_id: int
    practitioner_id: int
    room_id: int
    appointment_type_id: int
    start: datetime
    duration_minutes: int
    status: AppointmentStatus
    confirmed: bool
    is_new_patient: bool
    note: str
    created_at: datetime
    updated_at: datetime

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.duration_minutes)


@dataclass(slots=True)
class GeneratedClinic:
    spec: ClinicSpec
    timezone: str
    today: date
    practitioners: list[Practitioner] = field(default_factory=list)
    rooms: list[Room] = field(default_factory=list)
    appointment_types: list[AppointmentType] = field(default_factory=list)
    patients: list[Patient] = field(default_factory=list)
    appointments: list[Appointment] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "today": self.today.isoformat(),
            "practitioners": len(self.practitioners),
            "rooms": len(self.rooms),
            "appointment_types": len(self.appointment_types),
            "patients": len(self.patients),
            "appointments": len(self.appointments),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# (name, minutes, hygiene?) - durations are multiples of 5 so every provider's grid can express them.
APPOINTMENT_TYPE_TABLE = (
    ("Exam", 30, False),
    ("Cleaning", 60, True),
    ("Filling", 45, False),
    ("Crown Prep", 90, False),
    ("Emergency", 15, False),
    ("Consultation", 30, False),
    ("Root Canal", 90, False),
    ("Perio Maintenance", 60, True),
)
NOTES = ("", "", "", "Prefers morning", "Anxious patient", "Bring x-rays", "Insurance updated", "Follow-up")


def _working_days(first: date, last: date) -> list[date]:
    days = []
    current = first
    while current <= last:
        if current.weekday() < 5:
            days.append(current)
        current += timedelta(days=1)
    return days


def generate_clinic(spec: ClinicSpec | None = None, **overrides: Any) -> GeneratedClinic:
    """Build a clinic from ``spec`` (or keyword fields of ``ClinicSpec``); same input, same output."""
    if spec is None:
        spec = ClinicSpec(**overrides)
    elif overrides:
        spec = spec.model_copy(update=overrides)
    if spec.close_hour <= spec.open_hour:
        raise ValueError("close_hour must be after open_hour")
    zone = load_zone(spec.timezone)
    rng = random.Random(spec.seed)
    today = spec.today or datetime.now(UTC).astimezone(zone).date()
    clinic = GeneratedClinic(spec=spec, timezone=spec.timezone, today=today)
    created_base = datetime.combine(today - timedelta(days=spec.days_before + 400), time(9), tzinfo=UTC)

    used_abbreviations: set[str] = set()
    for index in range(spec.practitioners + spec.hygienists):
        is_hygienist = index >= spec.practitioners
        gender_names = FIRST_NAMES_FEMALE if rng.random() < 0.5 else FIRST_NAMES_MALE
        first, last = rng.choice(gender_names), rng.choice(LAST_NAMES)
        abbreviation = ("HYG" if is_hygienist else "DOC") + str(index + 1)
        used_abbreviations.add(abbreviation)
        clinic.practitioners.append(
            Practitioner(
                id=index + 1,
                first_name=first,
                last_name=last,
                abbreviation=abbreviation,
                is_hygienist=is_hygienist,
                color=PRACTITIONER_COLORS[index % len(PRACTITIONER_COLORS)],
                title="" if is_hygienist else "Dr",
            )
        )
    dentists = [p for p in clinic.practitioners if not p.is_hygienist]
    hygienists = [p for p in clinic.practitioners if p.is_hygienist]

    for index in range(spec.rooms):
        # Hygiene chairs are the last rooms when hygienists exist; every room has one owner.
        hygiene_room = bool(hygienists) and index >= spec.rooms - max(1, spec.rooms // 4)
        owner = hygienists[index % len(hygienists)] if hygiene_room else dentists[index % len(dentists)]
        clinic.rooms.append(
            Room(
                id=index + 1,
                name=f"{'Hygiene' if hygiene_room else 'Operatory'} {index + 1}",
                abbreviation=f"{'HYG' if hygiene_room else 'OP'}{index + 1}",
                practitioner_id=owner.id,
                is_hygiene=hygiene_room,
            )
        )

    for index, (name, minutes, hygiene) in enumerate(APPOINTMENT_TYPE_TABLE):
        clinic.appointment_types.append(
            AppointmentType(
                id=index + 1,
                name=name,
                duration_minutes=minutes,
                color=PRACTITIONER_COLORS[index % len(PRACTITIONER_COLORS)],
                for_hygiene=hygiene,
            )
        )

    _generate_patients(clinic, rng, created_base)
    _generate_appointments(clinic, rng, zone)
    return clinic


def _generate_patients(clinic: GeneratedClinic, rng: random.Random, created_base: datetime) -> None:
    spec = clinic.spec
    practitioner_ids = [p.id for p in clinic.practitioners if not p.is_hygienist]
    for index in range(spec.patients):
        female = rng.random() < 0.52
        first = rng.choice(FIRST_NAMES_FEMALE if female else FIRST_NAMES_MALE)
        last = rng.choice(LAST_NAMES)
        birth = clinic.today - timedelta(days=rng.randint(2 * 365, 90 * 365))
        city, state, zip_prefix = rng.choice(CITIES)
        mobile = f"+1{rng.choice(AREA_CODES)}55501{rng.randint(0, 99):02d}"
        home = f"+1{rng.choice(AREA_CODES)}55501{rng.randint(0, 99):02d}" if rng.random() < 0.4 else ""
        local_part = f"{first}.{last}".lower().replace("'", "")
        clinic.patients.append(
            Patient(
                id=index + 1,
                first_name=first,
                last_name=last,
                middle_initial=chr(65 + rng.randrange(26)) if rng.random() < 0.3 else "",
                preferred_name="",
                gender="Female" if female else "Male",
                birth_date=birth,
                email=f"{local_part}{index + 1}@{rng.choice(EMAIL_DOMAINS)}" if rng.random() < 0.85 else "",
                mobile_phone=mobile,
                home_phone=home,
                address=f"{rng.randint(1, 9999)} {rng.choice(STREET_NAMES)} {rng.choice(STREET_KINDS)}",
                city=city,
                state=state,
                zip_code=f"{zip_prefix}{rng.randint(0, 99):02d}",
                primary_practitioner_id=rng.choice(practitioner_ids),
                created_at=created_base + timedelta(minutes=index * 7),
            )
        )


def _generate_appointments(clinic: GeneratedClinic, rng: random.Random, zone: Any) -> None:
    spec = clinic.spec
    if spec.appointments == 0:
        return
    if not clinic.patients:
        raise ValueError("appointments need at least one patient")
    day_minutes = (spec.close_hour - spec.open_hour) * 60
    # A room-day holds at most this many appointments of the shortest type; widen the window when the
    # requested volume would not fit instead of overlapping anything.
    per_room_day_cap = max(1, day_minutes // 45)
    first_day = clinic.today - timedelta(days=spec.days_before)
    last_day = clinic.today + timedelta(days=spec.days_after)
    days = _working_days(first_day, last_day)
    while len(days) * len(clinic.rooms) * per_room_day_cap < spec.appointments:
        last_day += timedelta(days=7)
        days = _working_days(first_day, last_day)

    room_days = [(day, room) for day in days for room in clinic.rooms]
    base, extra = divmod(spec.appointments, len(room_days))
    extra_slots = set(rng.sample(range(len(room_days)), extra))
    general_types = [t for t in clinic.appointment_types if not t.for_hygiene]
    hygiene_types = [t for t in clinic.appointment_types if t.for_hygiene] or general_types
    patient_count = len(clinic.patients)
    # The generated history ends before the sandbox starts serving. A fixed day stops at its noon;
    # the real today an hour before the real now: a noon stamp can lie in the future (before the
    # office's noon), and a stamp of "now" shares its second with a client's first edits, so in
    # either case every "changed since" read would keep returning generated rows.
    noon = datetime.combine(clinic.today, time(12), tzinfo=zone).astimezone(UTC)
    history_ends = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    now_utc = noon if spec.today is not None else min(noon, history_ends)
    next_id = 1

    for slot_index, (day, room) in enumerate(room_days):
        count = base + (1 if slot_index in extra_slots else 0)
        if count == 0:
            continue
        types = hygiene_types if room.is_hygiene else general_types
        chosen = [rng.choice(types) for _ in range(count)]
        # Shorten the longest visits until the day fits; 15 minutes is the floor.
        durations = [t.duration_minutes for t in chosen]
        while sum(durations) > day_minutes:
            longest = max(range(count), key=durations.__getitem__)
            durations[longest] = max(15, durations[longest] - 15)
        slack_units = (day_minutes - sum(durations)) // 5
        day_start = datetime.combine(day, time(spec.open_hour), tzinfo=zone)
        cursor = 0
        for position in range(count):
            remaining = count - position
            gap_units = rng.randint(0, slack_units // (remaining + 1)) if slack_units else 0
            slack_units -= gap_units
            cursor += gap_units * 5
            start = (day_start + timedelta(minutes=cursor)).astimezone(UTC)
            cursor += durations[position]
            in_past = start < now_utc
            roll = rng.random()
            status: AppointmentStatus
            if in_past:
                status = "fulfilled" if roll < 0.85 else ("cancelled" if roll < 0.93 else "noshow")
            else:
                status = "booked" if roll < 0.92 else "cancelled"
            created = start - timedelta(days=rng.randint(1, 60), minutes=rng.randint(0, 600))
            updated = min(created + timedelta(hours=rng.randint(0, 48)), now_utc)
            clinic.appointments.append(
                Appointment(
                    id=next_id,
                    patient_id=rng.randrange(patient_count) + 1,
                    practitioner_id=room.practitioner_id,
                    room_id=room.id,
                    appointment_type_id=chosen[position].id,
                    start=start,
                    duration_minutes=durations[position],
                    status=status,
                    confirmed=status == "booked" and rng.random() < 0.6,
                    is_new_patient=rng.random() < 0.05,
                    note=rng.choice(NOTES),
                    created_at=min(created, now_utc),
                    updated_at=max(updated, min(created, now_utc)),
                )
            )
            next_id += 1
