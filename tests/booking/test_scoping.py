"""Inside one clinic, each role sees its own share: practitioners their own patients and diary,
a chatbot or voice agent what it registered or booked, or what the patient proves is theirs."""

from __future__ import annotations

import httpx

from clinicsync.tenancy.models import Role
from tests.factories import Clinic, Tenant, TenantFactory, booking, future_day


async def _patient(client: httpx.AsyncClient, headers: dict[str, str], **fields: str) -> str:
    response = await client.post("/api/v1/patients", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _practitioner_login(client: httpx.AsyncClient, clinic: Clinic) -> tuple[str, dict[str, str]]:
    created = await client.post(
        "/api/v1/practitioners",
        json={"name": "Dr. Lin", "email": "lin@example.com", "password": "long enough secret"},
        headers=clinic.headers,
    )
    assert created.status_code == 201, created.text
    week = [{"day_of_week": day, "start_time": "09:00", "end_time": "17:00"} for day in range(7)]
    await client.put(
        f"/api/v1/practitioners/{created.json()['id']}/availability",
        json={"intervals": week},
        headers=clinic.headers,
    )
    login = await client.post(
        "/api/v1/auth/login", json={"email": "lin@example.com", "password": "long enough secret"}
    )
    return created.json()["id"], {"Authorization": f"Bearer {login.json()['token']}"}


async def test_a_practitioner_sees_and_edits_only_their_own_patients(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    lin_id, lin = await _practitioner_login(client, clinic)
    mine = await _patient(client, clinic.headers, first_name="Ada", last_name="Mine", phone="+12025550111")
    slot = clinic.local(future_day(), 10)
    booked = await client.post(
        "/api/v1/appointments",
        json={**booking(clinic, slot), "patient_id": mine, "practitioner_id": lin_id},
        headers=clinic.headers,
    )
    assert booked.status_code == 201, booked.text

    listed = await client.get("/api/v1/patients", headers=lin)
    assert [patient["last_name"] for patient in listed.json()] == ["Mine"]
    assert (await client.get(f"/api/v1/patients/{mine}", headers=lin)).status_code == 200
    other = f"/api/v1/patients/{clinic.patient_id}"
    assert (await client.get(other, headers=lin)).status_code == 404
    assert (await client.patch(other, json={"last_name": "X"}, headers=lin)).status_code == 404
    fixed = await client.patch(f"/api/v1/patients/{mine}", json={"phone": "+12025550112"}, headers=lin)
    assert fixed.status_code == 200
    diary = await client.get("/api/v1/appointments", headers=lin)
    assert [item["patient_id"] for item in diary.json()["items"]] == [mine]


async def test_a_service_account_never_lists_the_register_and_finds_a_patient_only_with_proof(
    client: httpx.AsyncClient, clinic: Clinic, tenant_factory: TenantFactory
) -> None:
    agent = await tenant_factory(role=Role.SERVICE, organization_id=clinic.tenant.organization_id)
    await client.patch(
        f"/api/v1/patients/{clinic.patient_id}", json={"date_of_birth": "1980-02-03"}, headers=clinic.headers
    )

    refused = await client.get("/api/v1/patients", headers=agent.headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["capability"] == "patients.list"
    assert (
        await client.get(f"/api/v1/patients/{clinic.patient_id}", headers=agent.headers)
    ).status_code == 404

    lookup = "/api/v1/patients/lookup"
    no_birth = await client.post(lookup, json={"phone": "+1 202 555 0143"}, headers=agent.headers)
    assert no_birth.status_code == 422
    assert "date_of_birth" in no_birth.json()["error"]["message"]
    wrong = await client.post(
        lookup, json={"phone": "+1 202 555 0143", "date_of_birth": "1980-02-04"}, headers=agent.headers
    )
    assert wrong.json() == []
    found = await client.post(
        lookup, json={"phone": "(202) 555-0143", "date_of_birth": "1980-02-03"}, headers=agent.headers
    )
    assert [patient["id"] for patient in found.json()] == [str(clinic.patient_id)]
    by_name = await client.post(
        lookup, json={"last_name": "hopper", "date_of_birth": "1980-02-03"}, headers=agent.headers
    )
    assert [patient["id"] for patient in by_name.json()] == [str(clinic.patient_id)]

    registered = await _patient(
        client, agent.headers, first_name="New", last_name="Caller", phone="+12025550177"
    )
    assert (await client.get(f"/api/v1/patients/{registered}", headers=agent.headers)).status_code == 200


async def _book(client: httpx.AsyncClient, clinic: Clinic, caller: Tenant, hour: int) -> dict[str, object]:
    response = await client.post(
        "/api/v1/appointments",
        json=booking(clinic, clinic.local(future_day(), hour), booking_source="chatbot"),
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_service_account_changes_only_what_it_booked_or_what_the_patient_proves(
    client: httpx.AsyncClient, clinic: Clinic, tenant_factory: TenantFactory
) -> None:
    agent = await tenant_factory(role=Role.SERVICE, organization_id=clinic.tenant.organization_id)
    other_agent = await tenant_factory(role=Role.SERVICE, organization_id=clinic.tenant.organization_id)
    own = await _book(client, clinic, agent, 9)
    front_desk = await _book(client, clinic, clinic.tenant, 11)
    await _book(client, clinic, other_agent, 13)

    listed = await client.get("/api/v1/appointments", headers=agent.headers)
    assert [item["id"] for item in listed.json()["items"]] == [own["id"]]
    assert (
        await client.get(f"/api/v1/appointments/{front_desk['id']}", headers=agent.headers)
    ).status_code == 404
    # Booking a patient makes them the agent's to read.
    assert (
        await client.get(f"/api/v1/patients/{clinic.patient_id}", headers=agent.headers)
    ).status_code == 200

    cancel = f"/api/v1/appointments/{front_desk['id']}/cancel"
    blind = await client.post(cancel, json={"reason": "caller asked"}, headers=agent.headers)
    assert blind.status_code == 404
    bad_proof = {"reference": front_desk["booking_reference"], "phone": "+1 202 555 0100"}
    guessed = await client.post(cancel, json={"reason": "x", "proof": bad_proof}, headers=agent.headers)
    assert guessed.status_code == 404
    wrong_reference = {"reference": own["booking_reference"], "phone": "+1 202 555 0143"}
    crossed = await client.post(cancel, json={"proof": wrong_reference}, headers=agent.headers)
    assert crossed.status_code == 404
    proof = {"reference": front_desk["booking_reference"], "phone": "+1 202 555 0143"}
    cancelled = await client.post(
        cancel, json={"reason": "caller asked", "proof": proof}, headers=agent.headers
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"

    mine = await client.post(f"/api/v1/appointments/{own['id']}/cancel", json={}, headers=agent.headers)
    assert mine.status_code == 200

    found = await client.post(
        "/api/v1/appointments/lookup",
        json={"reference": str(front_desk["booking_reference"]).lower(), "phone": "+12025550143"},
        headers=agent.headers,
    )
    assert found.status_code == 200
    assert found.json()["id"] == front_desk["id"]
    unproven = await client.post(
        "/api/v1/appointments/lookup",
        json={"reference": front_desk["booking_reference"], "date_of_birth": "1999-01-01"},
        headers=agent.headers,
    )
    assert unproven.status_code == 404
