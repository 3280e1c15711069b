"""Search and booking agree: what slot search would not offer a caller, booking refuses with the
reason; an admin's override is explicit in the request and visible in search."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.tenancy.models import Role
from tests.factories import Clinic, TenantFactory, booking, future_day, open_clinic, started_appointment


async def staff_headers(
    client: httpx.AsyncClient, clinic: Clinic, tenant_factory: TenantFactory
) -> dict[str, str]:
    staff = await tenant_factory(role=Role.STAFF, organization_id=clinic.tenant.organization_id)
    return staff.headers


async def offered(
    client: httpx.AsyncClient, clinic: Clinic, day: object, **params: object
) -> list[dict[str, object]]:
    response = await client.get(
        "/api/v1/slots", params={"from": str(day), "to": str(day), **params}, headers=clinic.headers
    )
    assert response.status_code == 200, response.text
    slots: list[dict[str, object]] = response.json()["slots"]
    return slots


async def test_times_off_the_slot_grid_are_refused_naming_the_grid(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    day = future_day()
    for start in (clinic.local(day, 10, 7), clinic.local(day, 13) + timedelta(seconds=30)):
        response = await client.post(
            "/api/v1/appointments", json=booking(clinic, start), headers=clinic.headers
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["details"][0]["field"] == "start"
        assert "15-minute slot grid" in error["message"]
        assert "override=true" in error["message"]
    starts = {slot["start"] for slot in await offered(client, clinic, day)}
    assert clinic.local(day, 10, 7).isoformat() not in starts
    assert clinic.local(day, 10, 15).isoformat() in starts


async def test_an_admin_override_books_off_the_grid_and_search_shows_such_times_flagged(
    client: httpx.AsyncClient, clinic: Clinic, tenant_factory: TenantFactory
) -> None:
    day = future_day()
    flagged = await offered(client, clinic, day, override="true", interval_minutes=5)
    by_start = {slot["start"]: slot for slot in flagged}
    assert by_start[clinic.local(day, 10, 5).isoformat()]["override"] is True
    assert by_start[clinic.local(day, 10, 15).isoformat()]["override"] is False

    made = await client.post(
        "/api/v1/appointments",
        json=booking(clinic, clinic.local(day, 10, 5), override=True),
        headers=clinic.headers,
    )
    assert made.status_code == 201, made.text

    staff = await staff_headers(client, clinic, tenant_factory)
    refused = await client.post(
        "/api/v1/appointments", json=booking(clinic, clinic.local(day, 14, 5), override=True), headers=staff
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["message"].startswith("override:")
    hidden = await client.get(
        "/api/v1/slots", params={"from": str(day), "to": str(day), "override": "true"}, headers=staff
    )
    assert hidden.status_code == 403
    other_grid = await client.get(
        "/api/v1/slots",
        params={"from": str(day), "to": str(day), "interval_minutes": 5},
        headers=clinic.headers,
    )
    assert other_grid.status_code == 422
    assert other_grid.json()["error"]["details"][0]["field"] == "interval_minutes"


async def test_minimum_notice_binds_admins_too_unless_they_override(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    settings = await client.patch(
        "/api/v1/organization", json={"min_notice_minutes": 3 * 24 * 60}, headers=clinic.headers
    )
    assert settings.status_code == 200
    day = future_day(1)
    inside = clinic.local(day, 10)
    refused = await client.post("/api/v1/appointments", json=booking(clinic, inside), headers=clinic.headers)
    assert refused.status_code == 422
    assert "notice" in refused.json()["error"]["message"]
    assert await offered(client, clinic, day) == []
    shown = await offered(client, clinic, day, override="true")
    assert shown and all(slot["override"] for slot in shown)
    assert inside.isoformat() in {slot["start"] for slot in shown}
    made = await client.post(
        "/api/v1/appointments", json=booking(clinic, inside, override=True), headers=clinic.headers
    )
    assert made.status_code == 201, made.text


async def test_the_booking_horizon_counts_the_clinics_days(client: httpx.AsyncClient, clinic: Clinic) -> None:
    await client.patch("/api/v1/organization", json={"booking_horizon_days": 5}, headers=clinic.headers)
    today = datetime.now(clinic.zone).date()
    assert await offered(client, clinic, today + timedelta(days=5))
    assert await offered(client, clinic, today + timedelta(days=6)) == []
    beyond = await client.post(
        "/api/v1/appointments",
        json=booking(clinic, clinic.local(today + timedelta(days=6), 10)),
        headers=clinic.headers,
    )
    assert beyond.status_code == 422
    assert "5 days ahead" in beyond.json()["error"]["message"]


async def test_completed_and_no_show_only_once_the_appointment_has_started(
    client: httpx.AsyncClient, clinic: Clinic, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    future = (
        await client.post(
            "/api/v1/appointments",
            json=booking(clinic, clinic.local(future_day(), 10), status="confirmed"),
            headers=clinic.headers,
        )
    ).json()
    for status in ("completed", "no_show"):
        early = await client.patch(
            f"/api/v1/appointments/{future['id']}", json={"status": status}, headers=clinic.headers
        )
        assert early.status_code == 422
        assert "only once it has started" in early.json()["error"]["message"]
    started = await started_appointment(sessionmaker, clinic)
    done = await client.patch(
        f"/api/v1/appointments/{started}", json={"status": "no_show"}, headers=clinic.headers
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "no_show"


async def test_an_unknown_patient_is_a_422_naming_the_field(
    client: httpx.AsyncClient, clinic: Clinic, tenant_factory: TenantFactory
) -> None:
    other = await open_clinic(client, await tenant_factory())
    for patient_id in ("00000000-0000-4000-8000-000000000000", str(other.patient_id)):
        payload = {**booking(clinic, clinic.local(future_day(), 10)), "patient_id": patient_id}
        response = await client.post("/api/v1/appointments", json=payload, headers=clinic.headers)
        assert response.status_code == 422
        assert response.json()["error"]["details"][0] == {
            "field": "patient_id",
            "reason": f"patient {patient_id} not found",
        }


async def test_a_malformed_json_body_names_the_body_line_and_column(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    response = await client.post(
        "/api/v1/patients",
        content=b'{"first_name": x}',
        headers={**clinic.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    detail = response.json()["error"]["details"][0]
    assert detail["field"] == "body"
    assert detail["reason"].startswith("invalid JSON at line 1 column 16")
    assert response.json()["error"]["message"].startswith("body: invalid JSON at line 1 column 16")


async def test_a_booking_that_search_offers_is_accepted_at_the_first_offered_time(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    day = future_day(3)
    first = (await offered(client, clinic, day))[0]
    start = datetime.fromisoformat(str(first["start"]))
    assert start.astimezone(UTC) > datetime.now(UTC)
    made = await client.post("/api/v1/appointments", json=booking(clinic, start), headers=clinic.headers)
    assert made.status_code == 201, made.text
