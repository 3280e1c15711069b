"""Slot search across the 2027 DST transitions of New York and Sydney, through the API."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.factories import TenantFactory, open_clinic

TRANSITIONS = [
    # zone, local date, the wall-clock labels a 00:00-05:00 day should offer in 30-minute steps
    (
        "America/New_York",
        date(2027, 3, 14),
        ["00:00", "00:30", "01:00", "01:30", "03:00", "03:30", "04:00", "04:30"],
    ),
    (
        "America/New_York",
        date(2027, 11, 7),
        ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30", "03:00", "03:30", "04:00", "04:30"],
    ),
    (
        "Australia/Sydney",
        date(2027, 10, 3),
        ["00:00", "00:30", "01:00", "01:30", "03:00", "03:30", "04:00", "04:30"],
    ),
    (
        "Australia/Sydney",
        date(2027, 4, 4),
        ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30", "03:00", "03:30", "04:00", "04:30"],
    ),
]


def exists(local: datetime, zone: ZoneInfo) -> bool:
    return local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None)


@pytest.mark.parametrize(("zone_name", "day", "expected"), TRANSITIONS)
async def test_slots_on_a_transition_day_have_no_missing_or_repeated_local_times(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, zone_name: str, day: date, expected: list[str]
) -> None:
    tenant = await tenant_factory(time_zone=zone_name)
    clinic = await open_clinic(client, tenant, start="00:00", end="05:00", name="Night surgery")
    response = await client.get(
        "/api/v1/slots",
        params={
            "from": day.isoformat(),
            "to": day.isoformat(),
            "duration_minutes": 30,
            "interval_minutes": 30,
        },
        headers=clinic.headers,
    )
    assert response.status_code == 200, response.text
    zone = ZoneInfo(zone_name)
    slots = response.json()["slots"]
    local_starts = [datetime.fromisoformat(slot["start"]).astimezone(zone) for slot in slots]
    labels = [local.strftime("%H:%M") for local in local_starts]
    assert labels == expected
    assert len(set(labels)) == len(labels)
    assert all(exists(local.replace(tzinfo=None).replace(tzinfo=zone), zone) for local in local_starts)
    for slot in slots:
        length = datetime.fromisoformat(slot["end"]) - datetime.fromisoformat(slot["start"])
        assert length.total_seconds() == 30 * 60
