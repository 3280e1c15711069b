"""What a clinic lets its agents do: which appointment types and practitioners, or nothing at all."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.agents.conftest import AgentClinic, call
from tests.agents.test_tools import register


async def make_type(client: httpx.AsyncClient, clinic: AgentClinic, name: str, minutes: int) -> str:
    made = await client.post(
        "/api/v1/appointment-types",
        json={"name": name, "duration_minutes": minutes},
        headers=clinic.owner.headers,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def settings(client: httpx.AsyncClient, clinic: AgentClinic, **fields: Any) -> httpx.Response:
    return await client.patch("/api/v1/agents/settings", json=fields, headers=clinic.owner.headers)


async def appointment(client: httpx.AsyncClient, clinic: AgentClinic, appointment_id: str) -> dict[str, Any]:
    read = await client.get(f"/api/v1/appointments/{appointment_id}", headers=clinic.owner.headers)
    assert read.status_code == 200, read.text
    body: dict[str, Any] = read.json()
    return body


async def test_agents_book_only_the_appointment_types_the_clinic_allows(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    checkup = await make_type(client, agent_clinic, "Check-up", 30)
    filling = await make_type(client, agent_clinic, "Filling", 60)
    await make_type(client, agent_clinic, "Implant consult", 45)
    limited = await settings(client, agent_clinic, appointment_types=["check-up", filling])
    assert limited.status_code == 200, limited.text
    # Stored by id, whether named or given by id, so renaming a type keeps the rule.
    assert sorted(limited.json()["appointment_types"]) == sorted([checkup, filling])
    patient_id = await register(client, agent_clinic)
    day = agent_clinic.day(5)

    which = await call(client, agent_clinic, "find_slots", date=str(day))
    assert which == {"ok": False, "text": "What kind of visit is it: Check-up or Filling?", "data": {}}
    refused = await call(
        client, agent_clinic, "find_slots", date=str(day), appointment_type="implant consult"
    )
    assert refused["text"] == "The front desk books Implant consult visits here; please call them."
    unknown = await call(client, agent_clinic, "find_slots", date=str(day), appointment_type="whitening")
    assert unknown["text"] == "I can't book whitening here; I can book Check-up or Filling."

    offered = await call(client, agent_clinic, "find_slots", date=str(day), appointment_type="filling")
    assert offered["ok"] and {slot["minutes"] for slot in offered["data"]["slots"]} == {60}

    not_booked = await call(
        client,
        agent_clinic,
        "book",
        patient_id=patient_id,
        start=f"{day} 10:00",
        appointment_type="Implant consult",
    )
    assert not not_booked["ok"]
    untyped = await call(client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 10:00")
    assert untyped["text"] == "What kind of visit is it: Check-up or Filling?"
    listed = await client.get("/api/v1/appointments", headers=agent_clinic.owner.headers)
    assert listed.json()["items"] == []

    booked = await call(
        client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 10:00", appointment_type="Filling"
    )
    assert booked["ok"], booked["text"]
    assert booked["data"]["appointment_type"] == "Filling"
    made = await appointment(client, agent_clinic, booked["data"]["appointment_id"])
    assert made["appointment_type_id"] == filling
    length = datetime.fromisoformat(made["end"]) - datetime.fromisoformat(made["start"])
    assert length.total_seconds() == 60 * 60

    # Once fillings are left to the front desk, an agent can no longer move one either.
    assert (await settings(client, agent_clinic, appointment_types=[checkup])).status_code == 200
    moved = await call(
        client,
        agent_clinic,
        "reschedule",
        booking_reference=booked["data"]["booking_reference"],
        phone="+61 2 9999 9999",
        new_start=f"{day} 14:00",
    )
    assert moved["text"] == "That booking can only be changed by the front desk."

    bad = await settings(client, agent_clinic, appointment_types=["Whitening"])
    assert bad.status_code == 422 and "appointment_types" in bad.json()["error"]["message"]
    lifted = await settings(client, agent_clinic, appointment_types=None)
    assert lifted.json()["appointment_types"] is None
    anything = await call(client, agent_clinic, "find_slots", date=str(day))
    assert anything["ok"]


async def test_agents_never_offer_book_or_move_to_a_practitioner_kept_for_the_front_desk(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    lee, ng = agent_clinic.practitioners["Dr Mia Lee"], agent_clinic.practitioners["Dr Sam Ng"]
    patient_id = await register(client, agent_clinic)
    day = agent_clinic.day(6)
    assert (await settings(client, agent_clinic, practitioner_ids=[str(ng)])).status_code == 200

    # "Anyone" at a time both are free goes to the one agents may book, never to Dr Lee.
    anyone = await call(client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 09:00")
    assert anyone["ok"] and anyone["data"]["practitioner"] == "Dr Sam Ng"
    by_id = await call(
        client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 11:00", practitioner=str(lee)
    )
    assert by_id["text"] == f"There is no practitioner called {lee} taking bookings here."
    slots = await call(client, agent_clinic, "find_slots", date=str(day), practitioner="Dr Lee")
    assert slots["text"] == "There is no practitioner called Dr Lee taking bookings here."
    moved = await call(
        client,
        agent_clinic,
        "reschedule",
        booking_reference=anyone["data"]["booking_reference"],
        phone="+61 2 9999 9999",
        new_start=f"{day} 12:00",
        practitioner="Dr Lee",
    )
    assert moved["text"] == "There is no practitioner called Dr Lee taking bookings here."
    stays = await appointment(client, agent_clinic, anyone["data"]["appointment_id"])
    assert stays["practitioner_id"] == str(ng)
    assert datetime.fromisoformat(stays["start"]).astimezone(agent_clinic.zone).strftime(
        "%Y-%m-%d %H:%M"
    ) == (f"{day} 09:00")


async def test_switched_off_agents_neither_book_nor_move_but_a_patient_may_still_cancel(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    patient_id = await register(client, agent_clinic)
    day = agent_clinic.day(6)
    booked = await call(client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 10:00")
    assert booked["ok"], booked["text"]
    proof = {"booking_reference": booked["data"]["booking_reference"], "phone": "+61 2 9999 9999"}
    assert (await settings(client, agent_clinic, booking_enabled=False)).status_code == 200

    closed = "This clinic doesn't take bookings by assistant; please call the front desk."
    book = await call(client, agent_clinic, "book", patient_id=patient_id, start=f"{day} 11:00")
    assert book["text"] == closed
    move = await call(client, agent_clinic, "reschedule", new_start=f"{day} 12:00", **proof)
    assert move["text"] == closed
    kept = await appointment(client, agent_clinic, booked["data"]["appointment_id"])
    assert (
        kept["status"] == "pending"
        and "T10:00" in datetime.fromisoformat(kept["start"]).astimezone(agent_clinic.zone).isoformat()
    )
    cancelled = await call(client, agent_clinic, "cancel", **proof)
    assert cancelled["ok"] and cancelled["text"].startswith("Cancelled booking ")
