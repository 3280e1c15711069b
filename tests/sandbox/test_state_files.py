"""State files: every simulator's full state survives a JSON round trip, and files written earlier still load.

``state_files/`` holds one state file per provider written by an earlier release of the simulators (small
clinics, with the rarer record kinds present: OpenDental history rows and a subscription, Cliniko working
hours and a cancelled appointment). Loading such a file and dumping it again must give back exactly what is
stored, so a format change can never slip in unnoticed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from clinicsync.sandbox import SandboxServer, get_server_class
from clinicsync.sandbox.cliniko import ClinikoSandbox
from clinicsync.sandbox.opendental import OpenDentalSandbox
from clinicsync.sandbox.state import StateCodec

STATE_FILES = Path(__file__).parent / "state_files"
PROVIDERS = ["opendental", "cliniko", "google_calendar", "dentrix_ascend", "vet_pims"]


def as_json(state: dict[str, Any]) -> Any:
    return json.loads(json.dumps(state))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_generated_state_round_trips_through_json(provider: str) -> None:
    server_class = get_server_class(provider)
    original = server_class(spec={"patients": 30, "appointments": 120, "seed": 11})
    written = json.dumps(original.dump_state())
    restored = server_class(spec={"patients": 0, "appointments": 0})
    restored.load_state(json.loads(written))
    assert as_json(restored.dump_state()) == json.loads(written)
    # Loading straight from the dumped objects (no JSON in between) gives the same records too.
    direct = server_class(spec={"patients": 0, "appointments": 0})
    direct.load_state(original.dump_state())
    assert as_json(direct.dump_state()) == json.loads(written)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_state_file_from_an_earlier_release_loads_unchanged(provider: str, tmp_path: Path) -> None:
    state_file = tmp_path / f"{provider}.json"
    shutil.copy(STATE_FILES / f"{provider}.json", state_file)
    stored = json.loads(state_file.read_text(encoding="utf-8"))
    server: SandboxServer = get_server_class(provider)(state_file=state_file)
    assert as_json(server.dump_state()) == stored["state"]


def test_opendental_keeps_wall_clock_times_naive_and_stamps_aware(tmp_path: Path) -> None:
    state_file = tmp_path / "opendental.json"
    shutil.copy(STATE_FILES / "opendental.json", state_file)
    server = OpenDentalSandbox(state_file=state_file)
    appointment = next(iter(server.appointments.values()))
    assert appointment.AptDateTime.tzinfo is None
    assert appointment.DateTStamp.utcoffset() is not None and appointment.SecDateTEntry.tzinfo is not None
    history = server.hist[0]
    assert history.HistDateTStamp.tzinfo is not None and history.appointment.AptDateTime.tzinfo is None
    subscription = server.subscriptions[1]
    assert subscription.DateTimeStart is not None and subscription.DateTimeStart.tzinfo is not None
    assert subscription.DateTimeStop is None and subscription.next_poll == 12.5
    patient = next(row for row in server.patients.values() if row.Birthdate is not None)
    assert type(patient.Birthdate) is date


def test_cliniko_restores_typed_working_hours_and_utc_stamps(tmp_path: Path) -> None:
    state_file = tmp_path / "cliniko.json"
    shutil.copy(STATE_FILES / "cliniko.json", state_file)
    server = ClinikoSandbox(state_file=state_file)
    practitioner = next(iter(server.store.practitioners.values()))
    assert practitioner.working_hours[0] == [("08:00", "17:00")]
    cancelled = next(row for row in server.store.appointments.values() if row.cancelled_at is not None)
    assert cancelled.cancelled_at is not None and cancelled.cancelled_at.tzinfo is UTC
    assert cancelled.starts_at.tzinfo is UTC


@dataclass
class Visit:
    id: int
    at: datetime
    day: date | None
    windows: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    stamps: tuple[datetime, ...] = ()
    notes: list[str] = field(default_factory=list)


@dataclass
class VisitLog:
    number: int
    visit: Visit
    seen: datetime | None = None


def test_codec_follows_type_hints_both_ways() -> None:
    codec = StateCodec()
    local = datetime(2031, 5, 6, 9, 30)
    aware = datetime(2031, 5, 6, 13, 30, 15, 250000, tzinfo=UTC)
    visit = Visit(3, local, date(1990, 1, 2), {0: [("09:00", "17:00")]}, (aware,), ["a"])
    log = VisitLog(1, visit, aware)
    encoded = codec.encode(log)
    assert encoded == {
        "number": 1,
        "visit": {
            "id": 3,
            "at": "2031-05-06T09:30:00",
            "day": "1990-01-02",
            "windows": {"0": [["09:00", "17:00"]]},
            "stamps": ["2031-05-06T13:30:15.250000+00:00"],
            "notes": ["a"],
        },
        "seen": "2031-05-06T13:30:15.250000+00:00",
    }
    decoded = codec.decode(VisitLog, json.loads(json.dumps(encoded)))
    assert decoded == log
    assert decoded.visit.at.tzinfo is None and decoded.seen is not None and decoded.seen.tzinfo is not None
    assert decoded.visit.windows[0][0] == ("09:00", "17:00")


def test_codec_ignores_unknown_keys_and_defaults_missing_ones() -> None:
    codec = StateCodec()
    visit = codec.decode(Visit, {"id": 1, "at": "2031-01-01T00:00:00", "day": None, "retired_field": 5})
    assert visit == Visit(1, datetime(2031, 1, 1), None)
    table = codec.load_table(Visit, [codec.encode(visit), codec.encode(Visit(9, visit.at, date(2000, 1, 1)))])
    assert list(table) == [1, 9] and table[9].day == date(2000, 1, 1)


def test_codec_uses_the_datetime_format_it_is_given() -> None:
    codec = StateCodec(
        encode_datetime=lambda value: value.strftime("%Y%m%d%H%M"), decode_datetime=parse_compact
    )
    row = codec.encode(VisitLog(2, Visit(1, datetime(2031, 2, 3, 4, 5), None)))
    assert row["visit"]["at"] == "203102030405" and row["seen"] is None
    assert codec.decode(VisitLog, row).visit.at == datetime(2031, 2, 3, 4, 5)


def parse_compact(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M")
