"""Appointment types: length, buffers on both sides, who offers them and whether chatbots may book them."""

from __future__ import annotations

from datetime import datetime

import httpx

from clinicsync.tenancy.models import Role
from tests.factories import Clinic, TenantFactory, booking, future_day


async def make_type(client: httpx.AsyncClient, clinic: Clinic, **fields: object) -> dict[str, object]:
    body = {"name": "Check-up", "duration_minutes": 30, **fields}
    response = await client.post("/api/v1/appointment-types", json=body, headers=clinic.headers)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def typed(clinic: Clinic, start: datetime, type_id: object) -> dict[str, object]:
    payload = booking(clinic, start)
    payload.pop("end")
    return {**payload, "appointment_type_id": type_id}


async def starts_of(client: httpx.AsyncClient, clinic: Clinic, day: object, **params: object) -> list[str]:
    response = await client.get(
        "/api/v1/slots", params={"from": str(day), "to": str(day), **params}, headers=clinic.headers
    )
    assert response.status_code == 200, response.text
    return [datetime.fromisoformat(s["start"]).strftime("%H:%M") for s in response.json()["slots"]]


async def test_a_type_sets_length_and_colour_and_is_listed(client: httpx.AsyncClient, clinic: Clinic) -> None:
    filling = await make_type(client, clinic, name="Filling", duration_minutes=45, colour="#aa3300")
    assert filling["all_practitioners"] is True
    listed = (await client.get("/api/v1/appointment-types", headers=clinic.headers)).json()
    assert [t["name"] for t in listed] == ["Filling"]
    made = await client.post(
        "/api/v1/appointments",
        json=typed(clinic, clinic.local(future_day(), 9), filling["id"]),
        headers=clinic.headers,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert datetime.fromisoformat(body["end"]) - datetime.fromisoformat(body["start"]) == (
        clinic.local(future_day(), 9, 45) - clinic.local(future_day(), 9)
    )
    assert body["appointment_type_id"] == filling["id"]
    wrong_length = await client.post(
        "/api/v1/appointments",
        json={**booking(clinic, clinic.local(future_day(), 13)), "appointment_type_id": filling["id"]},
        headers=clinic.headers,
    )
    assert wrong_length.status_code == 422
    assert wrong_length.json()["error"]["details"][0]["field"] == "end"


async def test_buffers_of_the_existing_and_the_new_booking_both_count(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    day = future_day()
    surgery = await make_type(
        client,
        clinic,
        name="Extraction",
        duration_minutes=60,
        buffer_before_minutes=15,
        buffer_after_minutes=30,
    )
    made = await client.post(
        "/api/v1/appointments",
        json=typed(clinic, clinic.local(day, 10), surgery["id"]),
        headers=clinic.headers,
    )
    assert made.status_code == 201, made.text
    assert made.json()["buffer_after_minutes"] == 30

    # Untyped half-hours: the extraction keeps 09:45-11:30 clear, so 09:15 (ends 09:45) is the last
    # start before it and 11:30 the first after it.
    plain = await starts_of(client, clinic, day)
    assert "09:15" in plain and "09:30" not in plain
    assert "11:15" not in plain and "11:30" in plain
    inside_buffer = await client.post(
        "/api/v1/appointments", json=booking(clinic, clinic.local(day, 11, 15)), headers=clinic.headers
    )
    assert inside_buffer.status_code == 409
    error = inside_buffer.json()["error"]
    assert error["details"]["reason"] == "buffer"
    assert "30 minutes clear after" in error["message"]

    # A second extraction needs its own 15 minutes before as well as the first one's 30 after.
    typed_starts = await starts_of(client, clinic, day, appointment_type_id=surgery["id"])
    assert "11:30" not in typed_starts and "11:45" in typed_starts
    too_close = await client.post(
        "/api/v1/appointments",
        json=typed(clinic, clinic.local(day, 11, 30), surgery["id"]),
        headers=clinic.headers,
    )
    assert too_close.status_code == 409
    assert "45 minutes clear after" in too_close.json()["error"]["message"]
    after = await client.post(
        "/api/v1/appointments",
        json=typed(clinic, clinic.local(day, 11, 45), surgery["id"]),
        headers=clinic.headers,
    )
    assert after.status_code == 201, after.text


async def test_only_the_practitioners_listed_offer_a_type(client: httpx.AsyncClient, clinic: Clinic) -> None:
    other = (
        await client.post("/api/v1/practitioners", json={"name": "Dr. Other"}, headers=clinic.headers)
    ).json()
    ortho = await make_type(client, clinic, name="Braces fitting", practitioner_ids=[other["id"]])
    assert ortho["practitioner_ids"] == [other["id"]]
    refused = await client.post(
        "/api/v1/appointments",
        json=typed(clinic, clinic.local(future_day(), 10), ortho["id"]),
        headers=clinic.headers,
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "practitioner_id"
    searched = await client.get(
        "/api/v1/slots",
        params={"from": str(future_day()), "to": str(future_day()), "appointment_type_id": ortho["id"]},
        headers=clinic.headers,
    )
    # Dr. Other has no hours yet, and Dr. Byron does not offer it: nothing to offer.
    assert searched.json()["slots"] == []


async def test_a_type_not_bookable_online_is_refused_to_the_chatbot_but_not_the_desk(
    client: httpx.AsyncClient, clinic: Clinic, tenant_factory: TenantFactory
) -> None:
    private = await make_type(client, clinic, name="Root canal", bookable_online=False)
    bot = await tenant_factory(role=Role.SERVICE, organization_id=clinic.tenant.organization_id)
    day = future_day()
    refused = await client.post(
        "/api/v1/appointments", json=typed(clinic, clinic.local(day, 10), private["id"]), headers=bot.headers
    )
    assert refused.status_code == 422
    assert "cannot be booked online" in refused.json()["error"]["message"]
    assert (await client.get("/api/v1/appointment-types", headers=bot.headers)).json() == []
    desk = await client.post(
        "/api/v1/appointments",
        json=typed(clinic, clinic.local(day, 10), private["id"]),
        headers=clinic.headers,
    )
    assert desk.status_code == 201, desk.text
