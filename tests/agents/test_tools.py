"""The tool layer through POST /api/v1/agents/tools/{name}: what an agent hears back, and what it changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx

from clinicsync.booking.models import BookingSource
from tests.agents.conftest import AgentClinic, call


async def register(client: httpx.AsyncClient, clinic: AgentClinic, **extra: Any) -> str:
    fields = {
        "first_name": "Ava",
        "last_name": "Stone",
        "phone": "+61 2 9999 9999",
        "date_of_birth": "1984-07-21",
    }
    answer = await call(client, clinic, "register_patient", **{**fields, **extra})
    assert answer["ok"], answer
    return str(answer["data"]["patient_id"])


async def test_the_catalogue_offers_every_tool_in_openai_and_anthropic_shapes(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    response = await client.get("/api/v1/agents/tools", headers=agent_clinic.service.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    names = [tool["function"]["name"] for tool in body["openai"]]
    assert names == [
        "list_practitioners",
        "find_slots",
        "find_patient",
        "register_patient",
        "book",
        "lookup_booking",
        "reschedule",
        "cancel",
    ]
    assert [tool["name"] for tool in body["anthropic"]] == names
    book = next(tool for tool in body["anthropic"] if tool["name"] == "book")
    assert book["input_schema"]["required"] == ["patient_id", "start"]
    assert body["openai"][0]["type"] == "function"
    assert (await client.get("/api/v1/agents/tools")).status_code == 401
    unknown = await client.post(
        "/api/v1/agents/tools/drop_tables", json={}, headers=agent_clinic.service.headers
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


async def test_spoken_and_typed_numbers_find_the_same_stored_patient(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    patient_id = await register(
        client, agent_clinic, phone="oh two, double nine nine nine, nine nine nine nine"
    )
    patient = await client.get(f"/api/v1/patients/{patient_id}", headers=agent_clinic.owner.headers)
    assert patient.json()["phone"] == "+61299999999"
    for heard in ("+61 2 9999 9999", "(02) 9999 9999", "zero two nine nine nine nine nine nine nine nine"):
        answer = await call(client, agent_clinic, "find_patient", phone=heard)
        assert answer["data"]["patient_id"] == patient_id, heard
        assert answer["text"] == f"Found Ava Stone (patient_id {patient_id})."
    again = await call(
        client, agent_clinic, "register_patient", first_name="Ava", last_name="Stone", phone="02 9999 9999"
    )
    assert again["data"] == {
        "created": False,
        "patient_id": patient_id,
        "first_name": "Ava",
        "last_name": "Stone",
    }
    garbled = await call(client, agent_clinic, "find_patient", phone="nine nine")
    assert garbled == {
        "ok": False,
        "text": "That phone number doesn't look complete; could you repeat it?",
        "data": {},
    }


async def test_a_us_clinic_reads_a_number_spoken_in_groups(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    from tests.agents.conftest import make_agent_clinic

    clinic = await make_agent_clinic(client, tenant_factory)
    patch = await client.patch(
        "/api/v1/agents/settings", json={"phone_region": "us"}, headers=clinic.owner.headers
    )
    assert patch.status_code == 200 and patch.json()["phone_region"] == "US"
    patient_id = await register(client, clinic, phone="(619) 555-1234")
    answer = await call(
        client, clinic, "find_patient", phone="six one nine, five five five, one two three four"
    )
    assert answer["data"]["patient_id"] == patient_id


async def test_an_ambiguous_name_asks_for_the_date_of_birth(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    first = await register(client, agent_clinic, first_name="John", last_name="Smith", phone="0412 345 678")
    second = await register(
        client,
        agent_clinic,
        first_name="John",
        last_name="Smith",
        phone="0498 765 432",
        date_of_birth="1990-01-02",
    )
    asked = await call(client, agent_clinic, "find_patient", name="John Smith")
    assert asked["text"] == "There is more than one patient named John Smith; what is their date of birth?"
    assert asked["data"] == {"needs": "date_of_birth", "matches": 2}
    found = await call(
        client, agent_clinic, "find_patient", name="john smith", date_of_birth="2 January 1990"
    )
    assert found["data"]["patient_id"] == second
    found = await call(client, agent_clinic, "find_patient", name="John Smith", date_of_birth="1984-07-21")
    assert found["data"]["patient_id"] == first
    nobody = await call(client, agent_clinic, "find_patient", name="Jane Doe")
    assert nobody["text"] == "I couldn't find that patient; shall I register them as new?"


async def test_slots_are_a_spoken_handful_in_the_clinic_zone(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    day = agent_clinic.day(7)
    answer = await call(
        client,
        agent_clinic,
        "find_slots",
        practitioner="Dr Lee",
        date=day.isoformat(),
        part_of_day="afternoon",
    )
    slots = answer["data"]["slots"]
    assert len(slots) == 2  # a handful spread over days: at most two on one day
    assert [slot["start"] for slot in slots] == [f"{day} 12:00", f"{day} 12:15"]
    spoken_day = f"{day:%A} {day.day} {day:%B}"
    assert answer["text"] == (
        f"I can offer {spoken_day} at 12 pm with Dr Mia Lee (start {day} 12:00) or "
        f"{spoken_day} at 12:15 pm with Dr Mia Lee (start {day} 12:15)."
    )
    two_days = await call(
        client, agent_clinic, "find_slots", date=str(day), date_to=str(day + timedelta(days=1))
    )
    assert {slot["start"][:10] for slot in two_days["data"]["slots"]} == {
        str(day),
        str(day + timedelta(days=1)),
    }
    ranged = await call(client, agent_clinic, "find_slots", duration_minutes=60, part_of_day="morning")
    assert len(ranged["data"]["slots"]) == 5 and {slot["minutes"] for slot in ranged["data"]["slots"]} == {60}
    unknown = await call(client, agent_clinic, "find_slots", practitioner="Dr Who")
    assert unknown["text"] == "There is no practitioner called Dr Who taking bookings here."


async def test_book_move_and_cancel_with_proof(client: httpx.AsyncClient, agent_clinic: AgentClinic) -> None:
    patient_id = await register(client, agent_clinic)
    day = agent_clinic.day(5)
    booked = await call(
        client,
        agent_clinic,
        "book",
        patient_id=patient_id,
        start=f"{day} 10:30",
        practitioner="Mia Lee",
        reason="Check-up",
    )
    assert booked["ok"], booked
    reference = booked["data"]["booking_reference"]
    assert booked["text"] == (
        f"Booked Ava Stone for {day:%A} {day.day} {day:%B} at 10:30 am with Dr Mia Lee; "
        f"the booking reference is {reference}."
    )
    appointment = await client.get(
        f"/api/v1/appointments/{booked['data']['appointment_id']}", headers=agent_clinic.owner.headers
    )
    assert appointment.json()["booking_source"] == "ai_voice"
    local = datetime.combine(day, time(10, 30), tzinfo=agent_clinic.zone)
    assert appointment.json()["start"] == local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    taken = await call(
        client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 10:30", practitioner="Dr Lee"
    )
    assert not taken["ok"]
    assert taken["text"].startswith("That time is not available; the nearest free times are ")
    assert [offer["start"] for offer in taken["data"]["alternatives"]] == [
        f"{day} 09:45",
        f"{day} 10:00",
        f"{day} 11:00",
    ]

    stranger = await call(
        client, agent_clinic, "lookup_booking", booking_reference=reference, phone="0400 000 000"
    )
    assert stranger == {
        "ok": False,
        "text": "I can't find a booking with that reference and those details.",
        "data": {},
    }
    looked = await call(
        client,
        agent_clinic,
        "lookup_booking",
        booking_reference=reference.lower(),
        date_of_birth="21 July 1984",
    )
    assert (
        looked["text"] == f"Booking {reference} is {day:%A} {day.day} {day:%B} at 10:30 am with Dr Mia Lee."
    )

    moved = await call(
        client,
        agent_clinic,
        "reschedule",
        booking_reference=reference,
        phone="02 9999 9999",
        new_start=f"{day} 14:00",
    )
    assert (
        moved["text"] == f"Moved booking {reference} to {day:%A} {day.day} {day:%B} at 2 pm with Dr Mia Lee."
    )
    cancelled = await call(client, agent_clinic, "cancel", booking_reference=reference, phone="+61299999999")
    assert cancelled["text"] == f"Cancelled booking {reference} for {day:%A} {day.day} {day:%B} at 2 pm."
    status = await client.get(
        f"/api/v1/appointments/{booked['data']['appointment_id']}", headers=agent_clinic.owner.headers
    )
    assert status.json()["status"] == "cancelled"
    trail = await client.get("/api/v1/agents/bookings", headers=agent_clinic.owner.headers)
    assert [(item["action"], item["surface"], item["booking_source"]) for item in trail.json()] == [
        ("cancelled", "functions", "ai_voice"),
        ("rescheduled", "functions", "ai_voice"),
        ("booked", "functions", "ai_voice"),
    ]


async def test_a_taken_slot_offers_the_nearest_free_times(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    patient_id = await register(client, agent_clinic)
    day = agent_clinic.day(3)
    first = await call(
        client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 11:00", practitioner="Dr Ng"
    )
    assert first["ok"]
    clash = await call(
        client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 11:00", practitioner="Dr Ng"
    )
    offers = clash["data"]["alternatives"]
    assert [offer["start"] for offer in offers] == [f"{day} 10:15", f"{day} 10:30", f"{day} 11:30"]
    assert all(offer["practitioner"] == "Dr Sam Ng" for offer in offers)
    anyone = await call(client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 11:00")
    assert anyone["ok"] and anyone["data"]["practitioner"] == "Dr Mia Lee"


async def test_a_clinic_can_switch_agent_booking_off_or_limit_it(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    patient_id = await register(client, agent_clinic)
    day = agent_clinic.day(4)
    only_ng = {"practitioner_ids": [str(agent_clinic.practitioners["Dr Sam Ng"])]}
    assert (
        await client.patch("/api/v1/agents/settings", json=only_ng, headers=agent_clinic.owner.headers)
    ).status_code == 200
    people = await call(client, agent_clinic, "list_practitioners")
    assert [p["name"] for p in people["data"]["practitioners"]] == ["Dr Sam Ng"]
    refused = await call(
        client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 10:00", practitioner="Dr Lee"
    )
    assert refused["text"] == "There is no practitioner called Dr Lee taking bookings here."
    offered = await call(client, agent_clinic, "find_slots", date=str(day))
    assert {slot["practitioner"] for slot in offered["data"]["slots"]} == {"Dr Sam Ng"}

    off = await client.patch(
        "/api/v1/agents/settings", json={"booking_enabled": False}, headers=agent_clinic.owner.headers
    )
    assert off.json()["booking_enabled"] is False
    closed = await call(client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 10:00")
    assert closed["text"] == "This clinic doesn't take bookings by assistant; please call the front desk."
    not_admin = await client.patch(
        "/api/v1/agents/settings", json={"booking_enabled": True}, headers=agent_clinic.service.headers
    )
    assert not_admin.status_code == 403
    bad = await client.patch(
        "/api/v1/agents/settings",
        json={"practitioner_ids": ["not-an-id"]},
        headers=agent_clinic.owner.headers,
    )
    assert bad.status_code == 422 and "practitioner_ids" in bad.json()["error"]["message"]


async def test_bad_arguments_come_back_as_one_sentence(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    missing = await call(client, agent_clinic, "book", start="tomorrow")
    assert missing == {"ok": False, "text": "I still need the patient id.", "data": {}}
    unreadable = await call(client, agent_clinic, "find_slots", date="the day after the party")
    assert (
        unreadable["text"]
        == "I could not read the date the day after the party; please give it like 2026-03-03."
    )
    ghost = await call(client, agent_clinic, "book", patient_id="3f2c", start="2030-01-01 10:00")
    assert ghost["text"] == "I couldn't find that patient; please look them up again."
    wrong_source = await client.post(
        "/api/v1/agents/tools/list_practitioners",
        json={},
        headers={**agent_clinic.service.headers, "X-Booking-Source": "pms_sync"},
    )
    assert wrong_source.status_code == 422
    assert wrong_source.json()["error"]["message"] == "X-Booking-Source: must be chatbot or ai_voice"


async def test_another_organization_sees_nothing_of_this_one(
    client: httpx.AsyncClient, agent_clinic: AgentClinic, tenant_factory: Any
) -> None:
    from tests.agents.conftest import make_agent_clinic

    patient_id = await register(client, agent_clinic)
    day = agent_clinic.day(6)
    booked = await call(
        client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 09:00", practitioner="Dr Lee"
    )
    reference = booked["data"]["booking_reference"]
    other = await make_agent_clinic(client, tenant_factory, names=("Dr Zed Quinn",))
    people = await call(client, other, "list_practitioners")
    assert [p["name"] for p in people["data"]["practitioners"]] == ["Dr Zed Quinn"]
    slots = await call(client, other, "find_slots", practitioner="Dr Mia Lee", date=str(day))
    assert slots["text"] == "There is no practitioner called Dr Mia Lee taking bookings here."
    assert {
        s["practitioner"] for s in (await call(client, other, "find_slots", date=str(day)))["data"]["slots"]
    } == {"Dr Zed Quinn"}
    assert (await call(client, other, "find_patient", phone="+61 2 9999 9999"))["data"] == {"found": False}
    assert (await call(client, other, "find_patient", name="Ava Stone", date_of_birth="1984-07-21"))[
        "data"
    ] == {"found": False}
    for tool, extra in (
        ("lookup_booking", {}),
        ("cancel", {}),
        ("reschedule", {"new_start": f"{day} 10:00"}),
    ):
        answer = await call(
            client, other, tool, booking_reference=reference, phone="+61 2 9999 9999", **extra
        )
        assert answer["text"] == "I can't find a booking with that reference and those details.", tool
    foreign = await call(client, other, "book", patient_id=patient_id, start=f"{day} 09:00")
    assert foreign["text"] == "I couldn't find that patient; please look them up again."
    assert (await client.get("/api/v1/agents/bookings", headers=other.owner.headers)).json() == []
    still = await call(
        client, agent_clinic, "lookup_booking", booking_reference=reference, phone="+61 2 9999 9999"
    )
    assert still["data"]["status"] == "pending"


async def test_a_chatbot_caller_books_as_chatbot(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    patient_id = await register(client, agent_clinic)
    headers = agent_clinic.service_headers(BookingSource.CHATBOT, **{"X-Conversation-Id": "conv-42"})
    booked = await call(
        client, agent_clinic, "book", headers, patient_id=patient_id, start=f"{agent_clinic.day(2)} 15:00"
    )
    appointment = await client.get(
        f"/api/v1/appointments/{booked['data']['appointment_id']}", headers=agent_clinic.owner.headers
    )
    assert appointment.json()["booking_source"] == "chatbot"
    assert "conv-42" in appointment.json()["notes"]
    trail = (await client.get("/api/v1/agents/bookings", headers=agent_clinic.owner.headers)).json()
    assert trail[0]["call_id"] == "conv-42" and trail[0]["booking_source"] == "chatbot"
