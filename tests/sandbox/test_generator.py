"""The deterministic clinic generator: shape, determinism, no overlaps, volume and speed."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from pydantic import ValidationError

from clinicsync.sandbox import ClinicSpec, generate_clinic


def test_same_spec_same_clinic() -> None:
    first = generate_clinic(seed=3, patients=50, appointments=200, today=date(2030, 6, 3))
    second = generate_clinic(seed=3, patients=50, appointments=200, today=date(2030, 6, 3))
    other = generate_clinic(seed=4, patients=50, appointments=200, today=date(2030, 6, 3))
    assert first.as_dict() == second.as_dict()
    assert first.as_dict() != other.as_dict()


def test_records_look_like_a_clinic() -> None:
    clinic = generate_clinic(seed=8, patients=300, appointments=1500, practitioners=3, hygienists=1, rooms=4)
    assert clinic.summary()["patients"] == 300 and clinic.summary()["appointments"] == 1500
    assert [p.is_hygienist for p in clinic.practitioners] == [False, False, False, True]
    assert {room.practitioner_id for room in clinic.rooms} <= {p.id for p in clinic.practitioners}
    assert any(room.is_hygiene for room in clinic.rooms)
    for patient in clinic.patients:
        assert patient.first_name and patient.last_name
        assert patient.gender in ("Male", "Female")
        assert date(1900, 1, 1) < patient.birth_date < clinic.today
        assert phonenumbers.is_valid_number(phonenumbers.parse(patient.mobile_phone))
        assert patient.email == "" or patient.email.split("@")[1].startswith("example.")
    names = {(p.first_name, p.last_name) for p in clinic.patients}
    assert len(names) > 200  # realistic variety, not one name repeated
    statuses = {a.status for a in clinic.appointments}
    assert statuses == {"booked", "fulfilled", "cancelled", "noshow"}
    now = datetime.combine(clinic.today, datetime.min.time(), tzinfo=ZoneInfo(clinic.timezone))
    assert all(a.status in ("fulfilled", "cancelled", "noshow") for a in clinic.appointments if a.end < now)


def test_appointments_fit_office_hours_without_overlap() -> None:
    clinic = generate_clinic(seed=2, patients=100, appointments=3000, rooms=3, timezone="Europe/London")
    zone = ZoneInfo("Europe/London")
    by_room: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    room_owner = {room.id: room.practitioner_id for room in clinic.rooms}
    for apt in clinic.appointments:
        local_start, local_end = apt.start.astimezone(zone), apt.end.astimezone(zone)
        assert local_start.weekday() < 5
        assert local_start.hour >= 8 and (local_end.hour, local_end.minute) <= (17, 0)
        assert apt.duration_minutes % 5 == 0 and apt.duration_minutes >= 15
        assert apt.practitioner_id == room_owner[apt.room_id]
        by_room[apt.room_id].append((apt.start, apt.end))
    for intervals in by_room.values():
        intervals.sort()
        for (_, previous_end), (next_start, _) in itertools.pairwise(intervals):
            assert previous_end <= next_start


def test_window_widens_when_volume_does_not_fit() -> None:
    clinic = generate_clinic(seed=1, patients=20, appointments=2000, rooms=1, days_before=1, days_after=1)
    assert len(clinic.appointments) == 2000
    last = max(a.start for a in clinic.appointments)
    assert last - datetime.combine(clinic.today, datetime.min.time()).astimezone(last.tzinfo) > timedelta(
        days=100
    )


@pytest.mark.slow
def test_a_clinic_of_ten_thousand_patients_and_fifty_thousand_appointments() -> None:
    clinic = generate_clinic(seed=42, patients=10_000, appointments=50_000, rooms=12, practitioners=8)
    assert len(clinic.patients) == 10_000
    assert len(clinic.appointments) == 50_000


def test_bad_specs_name_the_field() -> None:
    with pytest.raises(ValidationError, match="patients"):
        ClinicSpec(patients=-1)
    with pytest.raises(ValidationError, match="unknown_field"):
        ClinicSpec.model_validate({"unknown_field": 1})
    with pytest.raises(ValueError, match="Atlantis/Nowhere"):
        generate_clinic(timezone="Atlantis/Nowhere")
    with pytest.raises(ValueError, match="close_hour"):
        generate_clinic(open_hour=10, close_hour=9)
    with pytest.raises(ValueError, match="at least one patient"):
        generate_clinic(patients=0, appointments=5)


@pytest.mark.parametrize("utc_offset_hours", range(-12, 15, 2))
def test_a_clinic_generated_for_today_changed_nothing_in_the_last_hour(utc_offset_hours: int) -> None:
    # Across these zones it is before noon in some of them at any hour of the day; a record stamped
    # later than now would come back from every "changed since" read a test or a pull makes.
    sign = "-" if utc_offset_hours > 0 else "+"  # Etc/GMT signs are inverted
    zone = f"Etc/GMT{sign}{abs(utc_offset_hours)}" if utc_offset_hours else "UTC"
    clinic = generate_clinic(seed=5, patients=20, appointments=60, timezone=zone)
    generated_at = datetime.now(ZoneInfo("UTC"))
    assert max(a.updated_at for a in clinic.appointments) <= generated_at - timedelta(hours=1)
    assert all(a.created_at <= a.updated_at for a in clinic.appointments)
