"""A vet clinic whose schedule is its PIMS's slots (two visits each), booked by a voice agent.

The clinic is external-only: each booking goes straight into the PIMS sandbox over HTTP, and
the PIMS refuses a full slot with 409. The agent offers only slots with a place left, answers a
full one with the nearest free times, and the slots' counts follow what was booked.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from clinicsync.db.engine import session_scope
from clinicsync.sync.slots import service as slots
from clinicsync.tenancy.models import Role
from tests.factories import Tenant, TenantFactory
from tests.sync.conftest import DUAL_WRITE, EXTERNAL_ONLY
from tests.sync.slots.vet_support import (
    ZONE,
    VetClinic,
    book_in_pims,
    connect_vet,
    read_schedule,
    start_vet_pims,
)

SLOT_SCHEDULE = {**EXTERNAL_ONLY, "sync_on_update": False, "schedule_source": "pms_slots"}


async def slot_clinic(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Any,
    schedule: dict[str, Any] = SLOT_SCHEDULE,
) -> tuple[Tenant, VetClinic]:
    """A vet clinic connected to its own PIMS sandbox, its schedule taken from the PIMS's slots."""
    owner = await tenant_factory(time_zone=ZONE)
    vet = await connect_vet(client, owner, await start_vet_pims(sandboxes))
    configured = await client.post(
        "/api/admin/integration-settings",
        headers=owner.headers,
        json={"integration_id": vet.integration_id, **schedule},
    )
    assert configured.status_code == 201, configured.text
    assert configured.json()["schedule_source"] == "pms_slots"
    return owner, vet


async def tool(client: httpx.AsyncClient, agent: Tenant, name: str, **arguments: Any) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/agents/tools/{name}",
        json=arguments,
        headers={**agent.headers, "X-Booking-Source": "ai_voice"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert "\n" not in answer["text"]
    return answer


async def read_slots_from_pims(sessionmaker: Any, vet: VetClinic, day: date) -> None:
    """What the sync's forward read does: the PIMS's schedule and visits of the day, stored as slots."""
    schedule, visits = await read_schedule(vet.pims, day, day)
    async with session_scope(sessionmaker) as session:
        await slots.upsert_page(
            session,
            vet.clinic.tenant.organization_id,
            uuid.UUID(vet.integration_id),
            slots.slots_from_schedule(schedule, day, day, visits=visits),
        )


async def pet_owner(client: httpx.AsyncClient, vet: VetClinic, agent: Tenant, name: str, animal: int) -> str:
    """A patient registered by the agent, linked to an animal the PIMS already has."""
    registered = await tool(
        client,
        agent,
        "register_patient",
        first_name=name,
        last_name="Rivera",
        phone=f"+1 312 555 01{animal:02d}",
    )
    assert registered["ok"], registered["text"]
    patient_id: str = registered["data"]["patient_id"]
    link = await client.post(
        "/api/admin/sync/links",
        headers=vet.headers,
        json={
            "integration_id": vet.integration_id,
            "record_type": "patient",
            "record_id": patient_id,
            "external_id": str(animal),
        },
    )
    assert link.status_code == 201, link.text
    return patient_id


def visits_at(vet: VetClinic, local: datetime) -> int:
    return sum(
        1
        for row in vet.sandbox.store.appointments.values()  # type: ignore[attr-defined]
        if row.status != "cancelled" and row.start == local.astimezone(ZoneInfo("UTC"))
    )


async def slot_row(client: httpx.AsyncClient, vet: VetClinic, day: date, clock: str) -> dict[str, Any]:
    listed = await client.get(
        "/api/v1/schedule-slots",
        params={"from": str(day), "to": str(day), "limit": "500"},
        headers=vet.headers,
    )
    assert listed.status_code == 200, listed.text
    wanted = datetime.combine(day, time.fromisoformat(clock), tzinfo=ZoneInfo(ZONE))
    row: dict[str, Any] = next(
        r for r in listed.json()["slots"] if datetime.fromisoformat(r["starts_at"]) == wanted
    )
    return row


async def test_a_slot_for_two_takes_two_bookings_and_the_third_hears_the_nearest_free_times(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    owner, vet = await slot_clinic(client, tenant_factory, sandboxes)
    day = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=2)
    await read_slots_from_pims(sessionmaker, vet, day)
    agent = await tenant_factory(role=Role.SERVICE, organization_id=owner.organization_id)
    animals = sorted(vet.sandbox.store.patients)  # type: ignore[attr-defined]
    patients = [
        await pet_owner(client, vet, agent, name, animals[i]) for i, name in enumerate(("Ana", "Ben", "Cy"))
    ]
    ten = datetime.combine(day, time(10), tzinfo=ZoneInfo(ZONE))

    offered = await tool(
        client, agent, "find_slots", date=str(day), part_of_day="morning", duration_minutes=15
    )
    assert offered["data"]["slots"][0]["start"] == f"{day} 09:00"
    assert offered["data"]["slots"][0]["practitioner"] == vet.vet_name

    for patient_id in patients[:2]:
        booked = await tool(
            client,
            agent,
            "book",
            patient_id=patient_id,
            start=f"{day} 10:00",
            duration_minutes=15,
            reason="Limping",
        )
        assert booked["ok"], booked["text"]
        assert booked["text"].startswith(
            f"Booked {'Ana' if patient_id == patients[0] else 'Ben'} Rivera for "
        )
    assert visits_at(vet, ten) == 2  # both went straight into the PIMS
    full = await slot_row(client, vet, day, "10:00")
    assert (full["capacity"], full["booked_count"], full["remaining"]) == (2, 2, 0)

    third = await tool(
        client,
        agent,
        "book",
        patient_id=patients[2],
        start=f"{day} 10:00",
        duration_minutes=15,
        reason="Itchy",
    )
    assert not third["ok"]
    assert third["text"].startswith("That time is not available; the nearest free times are ")
    assert third["text"].count(".") == 1 and third["text"].endswith(".")
    alternatives = [offer["start"] for offer in third["data"]["alternatives"]]
    assert alternatives == [f"{day} 09:30", f"{day} 09:45", f"{day} 10:15"]
    assert visits_at(vet, ten) == 2

    later = await tool(client, agent, "find_slots", date=str(day), part_of_day="morning", duration_minutes=15)
    assert f"{day} 10:00" not in [slot["start"] for slot in later["data"]["slots"]]

    # The next read of the PIMS counts our two visits once, not again on top of its own count.
    await read_slots_from_pims(sessionmaker, vet, day)
    async with session_scope(sessionmaker) as session:
        await slots.recompute_booked(
            session,
            owner.organization_id,
            uuid.UUID(vet.integration_id),
            datetime.combine(day, time(), tzinfo=ZoneInfo(ZONE)),
            datetime.combine(day + timedelta(days=1), time(), tzinfo=ZoneInfo(ZONE)),
        )
    reread = await slot_row(client, vet, day, "10:00")
    assert (reread["booked_count"], reread["remaining"]) == (2, 0)


async def test_a_slot_the_pims_filled_since_it_was_read_is_refused_by_the_pims_with_other_times(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    owner, vet = await slot_clinic(client, tenant_factory, sandboxes)
    day = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=3)
    await read_slots_from_pims(sessionmaker, vet, day)
    eleven = datetime.combine(day, time(11), tzinfo=ZoneInfo(ZONE))
    for _ in range(2):  # the PIMS's own front desk fills 11:00 after our read
        assert (await book_in_pims(vet.pims, eleven)).status_code == 201
    agent = await tenant_factory(role=Role.SERVICE, organization_id=owner.organization_id)
    patient_id = await pet_owner(client, vet, agent, "Dee", sorted(vet.sandbox.store.patients)[0])  # type: ignore[attr-defined]

    refused = await tool(
        client, agent, "book", patient_id=patient_id, start=f"{day} 11:00", duration_minutes=15
    )
    assert not refused["ok"]
    assert refused["text"].startswith("That time is not available; the nearest free times are ")
    assert [o["start"] for o in refused["data"]["alternatives"]] == [
        f"{day} 10:30",
        f"{day} 10:45",
        f"{day} 11:15",
    ]
    assert visits_at(vet, eleven) == 2


async def test_one_clinic_has_one_slot_schedule(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any
) -> None:
    owner = await tenant_factory(time_zone=ZONE)
    sandbox = await start_vet_pims(sandboxes)
    first = await connect_vet(client, owner, sandbox)
    made = await client.post(
        "/api/admin/integration-settings",
        headers=owner.headers,
        json={"integration_id": first.integration_id, "schedule_source": "pms_slots"},
    )
    assert made.status_code == 201, made.text
    second = await client.post(
        "/api/admin/integrations",
        headers=owner.headers,
        json={"provider_key": "vet_pims", "base_url": sandbox.root_url, "location_label": "Annex"},
    )
    assert second.status_code == 201, second.text
    refused = await client.post(
        "/api/admin/integration-settings",
        headers=owner.headers,
        json={"integration_id": second.json()["id"], "schedule_source": "pms_slots"},
    )
    assert refused.status_code == 422
    assert "schedule_source" in refused.json()["error"]["message"]


async def test_a_dual_write_clinic_moves_a_visit_only_into_a_slot_with_a_place(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    dual_write_slots = {**DUAL_WRITE, "sync_on_update": False, "schedule_source": "pms_slots"}
    owner, vet = await slot_clinic(client, tenant_factory, sandboxes, dual_write_slots)
    day = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=4)
    ten = datetime.combine(day, time(10), tzinfo=ZoneInfo(ZONE))
    for _ in range(2):
        assert (await book_in_pims(vet.pims, ten)).status_code == 201
    await read_slots_from_pims(sessionmaker, vet, day)
    agent = await tenant_factory(role=Role.SERVICE, organization_id=owner.organization_id)
    animal = sorted(vet.sandbox.store.patients)[1]  # type: ignore[attr-defined]
    patient_id = await pet_owner(client, vet, agent, "Eve", animal)

    booked = await tool(
        client, agent, "book", patient_id=patient_id, start=f"{day} 09:00", duration_minutes=15
    )
    assert booked["ok"], booked["text"]
    assert (await slot_row(client, vet, day, "09:00"))["booked_count"] == 1
    proof = {"booking_reference": booked["data"]["booking_reference"], "phone": f"+1 312 555 01{animal:02d}"}

    into_full = await tool(client, agent, "reschedule", new_start=f"{day} 10:00", **proof)
    assert into_full["text"].startswith("That time is not available; the nearest free times are ")
    assert f"{day} 10:00" not in [offer["start"] for offer in into_full["data"]["alternatives"]]

    moved = await tool(client, agent, "reschedule", new_start=f"{day} 10:15", **proof)
    assert moved["ok"], moved["text"]
    assert (await slot_row(client, vet, day, "09:00"))["booked_count"] == 0
    assert (await slot_row(client, vet, day, "10:15"))["booked_count"] == 1


async def test_an_external_only_vet_visit_is_moved_by_booking_the_new_slot_then_cancelling_the_old(
    client: httpx.AsyncClient, tenant_factory: TenantFactory, sandboxes: Any, sessionmaker: Any
) -> None:
    """The PIMS cannot move a visit: the new time is booked first, so a full slot changes nothing."""
    owner, vet = await slot_clinic(client, tenant_factory, sandboxes)
    day = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=5)
    zone = ZoneInfo(ZONE)
    nine, ten, half_past = (
        datetime.combine(day, time(h, m), tzinfo=zone) for h, m in ((9, 0), (10, 0), (10, 30))
    )
    for _ in range(2):
        assert (await book_in_pims(vet.pims, ten)).status_code == 201
    await read_slots_from_pims(sessionmaker, vet, day)
    agent = await tenant_factory(role=Role.SERVICE, organization_id=owner.organization_id)
    animal = sorted(vet.sandbox.store.patients)[2]  # type: ignore[attr-defined]
    patient_id = await pet_owner(client, vet, agent, "Flo", animal)
    booked = await tool(
        client, agent, "book", patient_id=patient_id, start=f"{day} 09:00", duration_minutes=15
    )
    assert booked["ok"], booked["text"]
    reference = booked["data"]["booking_reference"]
    proof = {"booking_reference": reference, "phone": f"+1 312 555 01{animal:02d}"}

    into_full = await tool(client, agent, "reschedule", new_start=f"{day} 10:00", **proof)
    assert into_full["text"].startswith("That time is not available; the nearest free times are ")
    assert (visits_at(vet, nine), visits_at(vet, ten)) == (1, 2)

    moved = await tool(client, agent, "reschedule", new_start=f"{day} 10:30", **proof)
    assert moved["ok"], moved["text"]
    assert moved["text"].startswith(f"Moved booking {reference} to ")
    assert (visits_at(vet, nine), visits_at(vet, half_past)) == (0, 1)
    rebooked = next(
        row
        for row in vet.sandbox.store.appointments.values()  # type: ignore[attr-defined]
        if row.status != "cancelled" and row.start == half_past.astimezone(ZoneInfo("UTC"))
    )
    assert reference in rebooked.notes
    assert (await slot_row(client, vet, day, "09:00"))["booked_count"] == 0
    assert (await slot_row(client, vet, day, "10:30"))["booked_count"] == 1
    looked = await tool(client, agent, "lookup_booking", **proof)
    assert looked["data"]["start"] == f"{day} 10:30"
