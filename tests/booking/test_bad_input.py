"""Bad input answers 4xx naming the field and the reason, and writes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.booking.models import Appointment, AvailabilityRule, Patient, Practitioner
from tests.factories import Clinic, booking, future_day


async def row_counts(maker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with maker() as session:
        return {
            model.__tablename__: int(await session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Appointment, Patient, Practitioner, AvailabilityRule)
        }


def _appointment(clinic: Clinic, **changes: Any) -> dict[str, Any]:
    payload = booking(clinic, clinic.local(future_day(), 10))
    payload.update(changes)
    return payload


CASES: list[tuple[str, str, Any, str, str]] = [
    # id, path, body (callable of clinic), field named, words in the reason
    (
        "wrong type",
        "/api/v1/appointments",
        lambda c: _appointment(c, start="tomorrow at ten"),
        "start",
        "datetime",
    ),
    (
        "naive time",
        "/api/v1/appointments",
        lambda c: _appointment(c, start="2030-01-01T10:00:00"),
        "start",
        "timezone",
    ),
    (
        "unknown id format",
        "/api/v1/appointments",
        lambda c: _appointment(c, patient_id="42"),
        "patient_id",
        "UUID",
    ),
    (
        "end before start",
        "/api/v1/appointments",
        lambda c: _appointment(
            c,
            start=c.local(future_day(), 11).isoformat(),
            end=c.local(future_day(), 10).isoformat(),
        ),
        "end",
        "after start",
    ),
    (
        "outside availability",
        "/api/v1/appointments",
        lambda c: booking(c, c.local(future_day(), 20)),
        "start",
        "outside the practitioner's available hours",
    ),
    (
        "in the past",
        "/api/v1/appointments",
        lambda c: booking(c, datetime.now(UTC) - timedelta(days=1)),
        "start",
        "in the past",
    ),
    (
        "unknown practitioner",
        "/api/v1/appointments",
        lambda c: _appointment(c, practitioner_id=str(uuid.uuid4())),
        "practitioner_id",
        "not found",
    ),
    (
        "unknown status",
        "/api/v1/appointments",
        lambda c: _appointment(c, status="booked"),
        "status",
        "pending",
    ),
    (
        "malformed phone",
        "/api/v1/patients",
        lambda c: {"first_name": "Ann", "last_name": "Lee", "phone": "555-CALL-NOW"},
        "phone",
        "phone number",
    ),
    (
        "impossible phone",
        "/api/v1/patients",
        lambda c: {"first_name": "Ann", "last_name": "Lee", "phone": "+1 000 000 0000"},
        "phone",
        "not a valid phone number",
    ),
    (
        "birth in the future",
        "/api/v1/patients",
        lambda c: {"first_name": "Ann", "last_name": "Lee", "date_of_birth": "2199-01-01"},
        "date_of_birth",
        "cannot be in the future",
    ),
    ("empty name", "/api/v1/practitioners", lambda c: {"name": ""}, "name", "at least 1 character"),
    (
        "bad email",
        "/api/v1/practitioners",
        lambda c: {"name": "Dr. X", "email": "not-an-email"},
        "email",
        "email",
    ),
]


@pytest.mark.parametrize(("case", "path", "make_body", "field", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_names_the_field_and_writes_nothing(
    client: httpx.AsyncClient,
    clinic: Clinic,
    sessionmaker: async_sessionmaker[AsyncSession],
    case: str,
    path: str,
    make_body: Any,
    field: str,
    reason: str,
) -> None:
    before = await row_counts(sessionmaker)
    response = await client.post(path, json=make_body(clinic), headers=clinic.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert any(detail["field"] == field and reason in detail["reason"] for detail in error["details"]), error
    assert reason in error["message"]
    assert await row_counts(sessionmaker) == before


async def test_weekly_hours_with_end_before_start_leave_the_old_week_in_place(
    client: httpx.AsyncClient, clinic: Clinic, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    url = f"/api/v1/practitioners/{clinic.practitioner_id}/availability"
    bad_week = {
        "intervals": [
            {"day_of_week": 0, "start_time": "09:00", "end_time": "12:00"},
            {"day_of_week": 1, "start_time": "17:00", "end_time": "09:00"},
        ]
    }
    response = await client.put(url, json=bad_week, headers=clinic.headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "intervals.1.end_time"
    assert "must be after start_time" in response.json()["error"]["message"]
    assert len((await client.get(url, headers=clinic.headers)).json()["intervals"]) == 7
    day_eight = await client.put(
        url,
        json={"intervals": [{"day_of_week": 7, "start_time": "09:00", "end_time": "10:00"}]},
        headers=clinic.headers,
    )
    assert day_eight.status_code == 422
    assert day_eight.json()["error"]["details"][0]["field"] == "intervals.0.day_of_week"


async def test_an_unknown_appointment_is_404_and_a_malformed_id_is_422(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    missing = await client.get(f"/api/v1/appointments/{uuid.uuid4()}", headers=clinic.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    malformed = await client.get("/api/v1/appointments/12", headers=clinic.headers)
    assert malformed.status_code == 422
    assert malformed.json()["error"]["details"][0]["field"] == "appointment_id"


async def test_slot_search_refuses_a_reversed_range(client: httpx.AsyncClient, clinic: Clinic) -> None:
    response = await client.get(
        "/api/v1/slots", params={"from": "2030-01-10", "to": "2030-01-01"}, headers=clinic.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "to"
