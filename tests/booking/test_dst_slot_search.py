"""Slot search and booking across the next DST transitions of New York and Sydney, through the API."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.factories import Clinic, TenantFactory, booking, open_clinic


def next_transition(zone: ZoneInfo, *, fall_back: bool) -> date:
    """The next local date on which the clocks go back (or forward), counted from today."""
    day = datetime.now(zone).date() + timedelta(days=2)
    for _ in range(400):
        before = datetime.combine(day, time(0), tzinfo=zone).utcoffset()
        after = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).utcoffset()
        assert before is not None and after is not None
        if (after < before) == fall_back and after != before:
            return day
        day += timedelta(days=1)
    raise AssertionError(f"{zone.key} has no DST transition within a year")


TRANSITIONS = [
    # zone, fall back?, the labels a 00:00-05:00 day offers in 30-minute steps
    (
        "America/New_York",
        False,
        [
            "00:00 EST",
            "00:30 EST",
            "01:00 EST",
            "01:30 EST",
            "03:00 EDT",
            "03:30 EDT",
            "04:00 EDT",
            "04:30 EDT",
        ],
    ),
    (
        "America/New_York",
        True,
        [
            *["00:00 EDT", "00:30 EDT", "01:00 EDT", "01:30 EDT", "01:00 EST", "01:30 EST"],
            *["02:00 EST", "02:30 EST", "03:00 EST", "03:30 EST", "04:00 EST", "04:30 EST"],
        ],
    ),
    (
        "Australia/Sydney",
        False,
        [
            *["00:00 AEST", "00:30 AEST", "01:00 AEST", "01:30 AEST"],
            *["03:00 AEDT", "03:30 AEDT", "04:00 AEDT", "04:30 AEDT"],
        ],
    ),
    (
        "Australia/Sydney",
        True,
        [
            *["00:00 AEDT", "00:30 AEDT", "01:00 AEDT", "01:30 AEDT", "02:00 AEDT", "02:30 AEDT"],
            *["02:00 AEST", "02:30 AEST", "03:00 AEST", "03:30 AEST", "04:00 AEST", "04:30 AEST"],
        ],
    ),
]


async def night_clinic(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, zone_name: str, *, closes: str = "05:00"
) -> Clinic:
    tenant = await tenant_factory(time_zone=zone_name)
    clinic = await open_clinic(client, tenant, start="00:00", end=closes, name="Night surgery")
    settings = await client.patch(
        "/api/v1/organization",
        json={"slot_interval_minutes": 30, "default_appointment_minutes": 30},
        headers=clinic.headers,
    )
    assert settings.status_code == 200, settings.text
    return clinic


async def search_day(client: httpx.AsyncClient, clinic: Clinic, day: date) -> list[dict[str, str]]:
    response = await client.get(
        "/api/v1/slots", params={"from": day.isoformat(), "to": day.isoformat()}, headers=clinic.headers
    )
    assert response.status_code == 200, response.text
    slots: list[dict[str, str]] = response.json()["slots"]
    return slots


@pytest.mark.parametrize(("zone_name", "fall_back", "expected"), TRANSITIONS)
async def test_a_transition_day_offers_every_real_half_hour_once_labelled_with_its_offset(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    zone_name: str,
    fall_back: bool,
    expected: list[str],
) -> None:
    zone = ZoneInfo(zone_name)
    clinic = await night_clinic(client, tenant_factory, zone_name)
    slots = await search_day(client, clinic, next_transition(zone, fall_back=fall_back))
    starts = [datetime.fromisoformat(slot["start"]) for slot in slots]
    assert [start.astimezone(zone).strftime("%H:%M %Z") for start in starts] == expected
    # The ISO time carries the offset the label shows, so the two 01:30s are told apart.
    for slot, start in zip(slots, starts, strict=True):
        assert slot["label"].endswith(f"({start.isoformat()[-6:]})")
        assert start.utcoffset() == start.astimezone(zone).utcoffset()
    instants = [start.astimezone(UTC) for start in starts]
    assert len(set(instants)) == len(instants)
    for slot in slots:
        length = datetime.fromisoformat(slot["end"]) - datetime.fromisoformat(slot["start"])
        assert length.total_seconds() == 30 * 60


async def test_new_york_fall_back_both_one_oclocks_are_bookable_and_off_grid_times_are_not(
    client: httpx.AsyncClient, tenant_factory: TenantFactory
) -> None:
    zone = ZoneInfo("America/New_York")
    clinic = await night_clinic(client, tenant_factory, zone.key, closes="04:00")
    day = next_transition(zone, fall_back=True)
    offered = await search_day(client, clinic, day)
    # Open 00:00-04:00 on the night the clocks go back: five real hours, ten half-hours.
    assert len(offered) == 10
    one_oclocks = [slot for slot in offered if slot["label"].split()[4] == "01:00"]
    assert [slot["start"][-6:] for slot in one_oclocks] == ["-04:00", "-05:00"]

    for slot in one_oclocks:
        made = await client.post(
            "/api/v1/appointments",
            json=booking(clinic, datetime.fromisoformat(slot["start"])),
            headers=clinic.headers,
        )
        assert made.status_code == 201, made.text
        assert datetime.fromisoformat(made.json()["start"]) == datetime.fromisoformat(slot["start"])
    after = await search_day(client, clinic, day)
    assert {slot["start"] for slot in after} == {slot["start"] for slot in offered} - {
        slot["start"] for slot in one_oclocks
    }

    # What search never offers, booking refuses: a quarter past, in either occurrence.
    for offset in ("-04:00", "-05:00"):
        off_grid = datetime.fromisoformat(f"{day.isoformat()}T01:15:00{offset}")
        refused = await client.post(
            "/api/v1/appointments", json=booking(clinic, off_grid), headers=clinic.headers
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["details"][0]["field"] == "start"
        assert "grid" in refused.json()["error"]["message"]
