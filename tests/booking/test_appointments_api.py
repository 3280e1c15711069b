"""Booking through the HTTP API on both databases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.booking.models import Appointment, IdempotencyRecord, Patient
from tests.factories import Clinic, TenantFactory, booking, future_day, started_appointment


async def count(maker: async_sessionmaker[AsyncSession], model: type) -> int:
    async with maker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_booking_a_free_slot_returns_a_reference_and_the_practitioner(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    start = clinic.local(future_day(), 10)
    response = await client.post(
        "/api/v1/appointments", json=booking(clinic, start, booking_source="chatbot"), headers=clinic.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["booking_reference"].startswith("CS-")
    assert body["practitioner_name"] == "Dr. Ada Byron"
    assert body["booking_source"] == "chatbot"
    assert body["status"] == "pending"
    assert datetime.fromisoformat(body["start"]) == start
    assert response.headers["etag"] == '"1"'

    found = await client.get(
        f"/api/v1/appointments/by-reference/{body['booking_reference']}", headers=clinic.headers
    )
    assert found.json()["id"] == body["id"]


async def test_an_overlapping_booking_is_refused_naming_the_taken_time(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    start = clinic.local(future_day(), 10)
    first = await client.post("/api/v1/appointments", json=booking(clinic, start, 60), headers=clinic.headers)
    assert first.status_code == 201
    clash = await client.post(
        "/api/v1/appointments", json=booking(clinic, start + timedelta(minutes=30)), headers=clinic.headers
    )
    assert clash.status_code == 409
    error = clash.json()["error"]
    assert error["code"] == "slot_taken"
    assert "10:00-11:00" in error["message"]
    back_to_back = await client.post(
        "/api/v1/appointments", json=booking(clinic, start + timedelta(minutes=60)), headers=clinic.headers
    )
    assert back_to_back.status_code == 201


async def test_a_cancelled_appointment_frees_its_time(client: httpx.AsyncClient, clinic: Clinic) -> None:
    start = clinic.local(future_day(), 11)
    first = (
        await client.post("/api/v1/appointments", json=booking(clinic, start), headers=clinic.headers)
    ).json()
    cancelled = await client.post(
        f"/api/v1/appointments/{first['id']}/cancel",
        json={"reason": "patient called"},
        headers=clinic.headers,
    )
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancellation_reason"] == "patient called"
    again = await client.post("/api/v1/appointments", json=booking(clinic, start), headers=clinic.headers)
    assert again.status_code == 201


async def test_idempotency_key_replays_the_first_result_and_creates_nothing_new(
    client: httpx.AsyncClient, clinic: Clinic, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    payload = booking(clinic, clinic.local(future_day(), 12), booking_source="ai_voice")
    headers = {**clinic.headers, "Idempotency-Key": "call-7781-attempt"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/appointments", json=payload, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 4
    assert await count(sessionmaker, Appointment) == 1

    reused = await client.post(
        "/api/v1/appointments",
        json={**payload, "start": clinic.local(future_day(), 14).isoformat(), "end": None},
        headers=headers,
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    assert await count(sessionmaker, Appointment) == 1
    assert await count(sessionmaker, IdempotencyRecord) == 1


async def test_reschedule_with_a_stale_version_is_refused(client: httpx.AsyncClient, clinic: Clinic) -> None:
    day = future_day()
    created = (
        await client.post(
            "/api/v1/appointments", json=booking(clinic, clinic.local(day, 9)), headers=clinic.headers
        )
    ).json()
    moved = await client.patch(
        f"/api/v1/appointments/{created['id']}",
        json={"start": clinic.local(day, 15).isoformat()},
        headers={**clinic.headers, "If-Match": '"1"'},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["version"] == 2
    assert datetime.fromisoformat(moved.json()["end"]) == clinic.local(day, 15, 30)

    stale = await client.patch(
        f"/api/v1/appointments/{created['id']}", json={"notes": "late", "version": 1}, headers=clinic.headers
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_version"
    current = await client.get(f"/api/v1/appointments/{created['id']}", headers=clinic.headers)
    assert current.json()["notes"] == ""
    assert current.headers["etag"] == '"2"'


async def test_status_moves_only_forward(
    client: httpx.AsyncClient, clinic: Clinic, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    appointment_id = await started_appointment(sessionmaker, clinic)
    url = f"/api/v1/appointments/{appointment_id}"
    assert (await client.patch(url, json={"status": "confirmed"}, headers=clinic.headers)).status_code == 200
    assert (await client.patch(url, json={"status": "completed"}, headers=clinic.headers)).status_code == 200
    back = await client.patch(url, json={"status": "pending"}, headers=clinic.headers)
    assert back.status_code == 422
    assert back.json()["error"]["details"][0]["field"] == "status"


async def test_list_filters_by_practitioner_status_and_time(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    day = future_day()
    for hour in (9, 10, 11):
        await client.post(
            "/api/v1/appointments", json=booking(clinic, clinic.local(day, hour)), headers=clinic.headers
        )
    page = await client.get(
        "/api/v1/appointments",
        params={
            "practitioner_id": str(clinic.practitioner_id),
            "status": "pending",
            "from": clinic.local(day, 10).isoformat(),
            "limit": 1,
        },
        headers=clinic.headers,
    )
    body = page.json()
    assert body["total"] == 2
    assert len(body["items"]) == 1
    assert datetime.fromisoformat(body["items"][0]["start"]) == clinic.local(day, 10)


async def test_removing_a_practitioner_cancels_future_bookings_and_their_login(
    client: httpx.AsyncClient, clinic: Clinic, tenant_factory: TenantFactory
) -> None:
    created = await client.post(
        "/api/v1/practitioners",
        json={"name": "Dr. Lin", "email": "lin@example.com", "password": "a-long-password"},
        headers=clinic.headers,
    )
    practitioner = created.json()
    week = [{"day_of_week": d, "start_time": "08:00", "end_time": "12:00"} for d in range(7)]
    await client.put(
        f"/api/v1/practitioners/{practitioner['id']}/availability",
        json={"intervals": week},
        headers=clinic.headers,
    )
    login = await client.post(
        "/api/v1/auth/login", json={"email": "lin@example.com", "password": "a-long-password"}
    )
    assert login.status_code == 200
    practitioner_token = login.json()["token"]
    payload = {**booking(clinic, clinic.local(future_day(), 9)), "practitioner_id": practitioner["id"]}
    appointment = (await client.post("/api/v1/appointments", json=payload, headers=clinic.headers)).json()

    renamed = await client.patch(
        f"/api/v1/practitioners/{practitioner['id']}", json={"name": "Dr. Mei Lin"}, headers=clinic.headers
    )
    assert renamed.status_code == 200
    shown = await client.get(f"/api/v1/appointments/{appointment['id']}", headers=clinic.headers)
    assert shown.json()["practitioner_name"] == "Dr. Mei Lin"

    removed = await client.delete(f"/api/v1/practitioners/{practitioner['id']}", headers=clinic.headers)
    assert removed.json()["cancelled_appointments"] == 1
    after = (await client.get(f"/api/v1/appointments/{appointment['id']}", headers=clinic.headers)).json()
    assert after["status"] == "cancelled"
    assert after["cancellation_reason"] == "practitioner removed from the clinic"
    assert (
        await client.get("/api/v1/me", headers={"Authorization": f"Bearer {practitioner_token}"})
    ).status_code == 401
    relogin = await client.post(
        "/api/v1/auth/login", json={"email": "lin@example.com", "password": "a-long-password"}
    )
    assert relogin.status_code == 401
    listed = await client.get("/api/v1/practitioners", headers=clinic.headers)
    assert practitioner["id"] not in {p["id"] for p in listed.json()}


async def test_patient_phone_is_stored_as_e164(
    client: httpx.AsyncClient, clinic: Clinic, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker() as session:
        patient = await session.get(Patient, clinic.patient_id)
    assert patient is not None
    assert patient.phone == "+12025550143"


async def test_slot_search_leaves_out_booked_times(client: httpx.AsyncClient, clinic: Clinic) -> None:
    day = future_day()
    await client.post(
        "/api/v1/appointments", json=booking(clinic, clinic.local(day, 10)), headers=clinic.headers
    )
    response = await client.get(
        "/api/v1/slots",
        params={
            "from": day.isoformat(),
            "to": day.isoformat(),
            "duration_minutes": 30,
        },
        headers=clinic.headers,
    )
    assert response.status_code == 200
    starts = [datetime.fromisoformat(s["start"]).strftime("%H:%M") for s in response.json()["slots"]]
    assert "10:00" not in starts
    assert starts[:6] == ["09:00", "09:15", "09:30", "10:30", "10:45", "11:00"]
    # 09:00-17:00 on a 15-minute grid holds 31 half-hour starts; 10:00 blocks 09:45, 10:00 and 10:15.
    assert len(starts) == 28


async def test_an_unknown_practitioner_is_named_in_the_error(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    payload = {**booking(clinic, datetime.now(UTC) + timedelta(days=3)), "practitioner_id": str(uuid.uuid4())}
    response = await client.post("/api/v1/appointments", json=payload, headers=clinic.headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "practitioner_id"


async def test_a_practitioner_cannot_take_an_email_another_login_uses(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    await client.post(
        "/api/v1/users", json={"email": "desk@example.com", "role": "staff"}, headers=clinic.headers
    )
    created = await client.post(
        "/api/v1/practitioners", json={"name": "Dr. Ng", "email": "ng@example.com"}, headers=clinic.headers
    )
    clash = await client.patch(
        f"/api/v1/practitioners/{created.json()['id']}",
        json={"email": "desk@example.com"},
        headers=clinic.headers,
    )
    assert clash.status_code == 409
    assert clash.json()["error"]["message"].startswith("email:")
    shown = await client.get(f"/api/v1/practitioners/{created.json()['id']}", headers=clinic.headers)
    assert shown.json()["email"] == "ng@example.com"
