"""External-only: the PMS is the source of truth, written synchronously; its failures are the caller's."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from clinicsync.sync.external_only import reference_for_key
from clinicsync.tenancy.models import Role
from tests.factories import TenantFactory, booking, future_day
from tests.sync.conftest import EXTERNAL_ONLY, Connected, configure


async def test_booking_goes_to_opendental_first_and_keeps_only_a_reference(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    await configure(client, od, **EXTERNAL_ONLY, sync_on_delete=True)
    start = od.clinic.local(future_day(), 10)
    created = await client.post("/api/v1/appointments", json=booking(od.clinic, start), headers=od.headers)
    assert created.status_code == 201, created.text
    body = created.json()
    ref = body["external_refs"][0]
    assert ref["sync_state"] == "accepted" and ref["external_id"]
    in_pms = (await od.pms.get(f"/appointments/{ref['external_id']}")).json()
    assert body["booking_reference"] in in_pms["Note"]
    # No local appointment row: the list is empty, but the booking can be read (from its reference).
    listed = await client.get("/api/v1/appointments", headers=od.headers)
    assert listed.json()["total"] == 0
    read = await client.get(f"/api/v1/appointments/{body['id']}", headers=od.headers)
    assert read.status_code == 200 and read.json()["booking_reference"] == body["booking_reference"]
    cancelled = await client.post(f"/api/v1/appointments/{body['id']}/cancel", headers=od.headers, json={})
    assert cancelled.status_code == 200, cancelled.text
    assert (await od.pms.get(f"/appointments/{ref['external_id']}")).json()["AptStatus"] == "Broken"


async def test_pms_down_is_a_clear_503_and_nothing_is_half_written(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    await configure(client, od, **EXTERNAL_ONLY)
    # The PMS is down: every API request is answered 503 and nothing is applied there.
    down = await od.pms.put(
        od.sandbox.root_url + "/_sandbox/faults",  # type: ignore[operator]
        json={"error_rate": 1.0, "error_statuses": [503]},
    )
    assert down.status_code == 200, down.text
    start = od.clinic.local(future_day(), 10)
    refused = await client.post("/api/v1/appointments", json=booking(od.clinic, start), headers=od.headers)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "pms_unavailable" and "OpenDental" in error["message"]
    patients_before = (await client.get("/api/v1/patients", headers=od.headers)).json()
    new_patient = await client.post(
        "/api/v1/patients",
        headers=od.headers,
        json={
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "date_of_birth": "1990-12-10",
        },
    )
    assert new_patient.status_code == 503
    assert (await client.get("/api/v1/patients", headers=od.headers)).json() == patients_before
    assert (await client.get("/api/v1/appointments", headers=od.headers)).json()["total"] == 0
    assert (await client.get("/api/admin/sync/outbox", headers=od.headers)).json()["total"] == 0
    assert patients_before[0]["external_refs"] == []


async def test_pms_refusal_is_a_502_with_the_pms_message(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    await configure(client, od, **EXTERNAL_ONLY)
    # An operatory OpenDental does not have: it refuses the appointment with its own explanation.
    changed = await client.patch(
        f"/api/admin/integrations/{od.integration_id}",
        headers=od.headers,
        json={"settings": {"operatory_id": 987654}},
    )
    assert changed.status_code == 200, changed.text
    start = od.clinic.local(future_day(), 10)
    refused = await client.post("/api/v1/appointments", json=booking(od.clinic, start), headers=od.headers)
    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert error["code"] == "pms_refused" and error["details"]["provider_message"]
    assert (await client.get("/api/v1/appointments", headers=od.headers)).json()["total"] == 0


async def test_slot_search_asks_the_pms_what_is_taken(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    await configure(client, od, **EXTERNAL_ONLY)
    day = future_day()
    ours = await client.post(
        "/api/v1/appointments", json=booking(od.clinic, od.clinic.local(day, 10)), headers=od.headers
    )
    assert ours.status_code == 201, ours.text
    # The front desk books 12:00 straight into OpenDental; clinicsync has no row for it.
    in_pms = (await od.pms.get(f"/appointments/{ours.json()['external_refs'][0]['external_id']}")).json()
    front_desk = await od.pms.post(
        "/appointments",
        json={
            "PatNum": in_pms["PatNum"],
            "Op": in_pms["Op"],
            "ProvNum": in_pms["ProvNum"],
            "AptDateTime": f"{day.isoformat()} 12:00:00",
            "Pattern": "XXXXXX",
        },
    )
    assert front_desk.status_code == 201, front_desk.text
    slots = await client.get(
        "/api/v1/slots",
        headers=od.headers,
        params={
            "from": day.isoformat(),
            "to": day.isoformat(),
            "duration_minutes": 30,
        },
    )
    assert slots.status_code == 200, slots.text
    starts = {slot["start"][11:16] for slot in slots.json()["slots"]}
    assert "09:30" in starts and "11:00" in starts
    assert "10:00" not in starts and "12:00" not in starts


async def _pms_bookings(od: Connected, reference: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await od.pms.get("/appointments")).json()
    return [row for row in rows if reference in (row.get("Note") or "")]


async def test_a_retry_with_the_same_idempotency_key_replays_and_books_the_pms_once(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    await configure(client, od, **EXTERNAL_ONLY)
    day = future_day()
    body = booking(od.clinic, od.clinic.local(day, 9))
    keyed = {**od.headers, "Idempotency-Key": "front-desk-retry-1"}
    first = await client.post("/api/v1/appointments", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    again = await client.post("/api/v1/appointments", json=body, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["booking_reference"] == first.json()["booking_reference"]
    assert len(await _pms_bookings(od, first.json()["booking_reference"])) == 1

    # Two copies of one request at the same moment (a double tap, a client retrying early).
    twin = booking(od.clinic, od.clinic.local(day, 11))
    twin_headers = {**od.headers, "Idempotency-Key": "voice-agent-call-7"}
    one, other = await asyncio.gather(
        client.post("/api/v1/appointments", json=twin, headers=twin_headers),
        client.post("/api/v1/appointments", json=twin, headers=twin_headers),
    )
    assert (one.status_code, other.status_code) == (201, 201), (one.text, other.text)
    assert one.json()["id"] == other.json()["id"]
    assert len(await _pms_bookings(od, one.json()["booking_reference"])) == 1

    reused = await client.post(
        "/api/v1/appointments", json=booking(od.clinic, od.clinic.local(day, 13)), headers=keyed
    )
    assert reused.status_code == 422, reused.text
    assert reused.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    assert len((await od.pms.get("/appointments")).json()) == 2


async def test_a_retry_finds_what_an_earlier_attempt_left_in_the_pms_and_books_nothing_more(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    """Every attempt under one key sends the same booking reference. When an earlier attempt reached
    the PMS but the caller never heard (its connection dropped, or our commit failed after the PMS
    took it), the PMS holds a booking with that reference: the retry adopts it."""
    od = opendental
    await configure(client, od, **EXTERNAL_ONLY)
    day = future_day()
    warm = await client.post(
        "/api/v1/appointments", json=booking(od.clinic, od.clinic.local(day, 8)), headers=od.headers
    )
    assert warm.status_code == 201, warm.text
    earlier = (await od.pms.get("/appointments")).json()[0]
    key = "chatbot-session-42"
    reference = reference_for_key(od.clinic.tenant.organization_id, key)
    left = await od.pms.post(
        "/appointments",
        json={
            "PatNum": earlier["PatNum"],
            "ProvNum": earlier["ProvNum"],
            "Op": earlier["Op"],
            "AptDateTime": od.clinic.local(day, 10).strftime("%Y-%m-%d %H:%M:%S"),
            "Pattern": "//////",
            "Note": reference,
        },
    )
    assert left.status_code == 201, left.text
    retried = await client.post(
        "/api/v1/appointments",
        json=booking(od.clinic, od.clinic.local(day, 10)),
        headers={**od.headers, "Idempotency-Key": key},
    )
    assert retried.status_code == 201, retried.text
    assert retried.json()["booking_reference"] == reference
    assert retried.json()["external_refs"][0]["external_id"] == str(left.json()["AptNum"])
    assert len((await od.pms.get("/appointments")).json()) == 2


async def test_changes_to_pms_only_bookings_reach_as_far_as_the_callers_role(
    client: httpx.AsyncClient, opendental: Connected, tenant_factory: TenantFactory
) -> None:
    """A practitioner changes only their own diary, a chatbot only what it booked (or what the
    patient proves is theirs), exactly as for bookings kept locally; others are told 404."""
    od = opendental
    await client.patch(
        f"/api/v1/patients/{od.clinic.patient_id}", json={"date_of_birth": "1980-02-03"}, headers=od.headers
    )
    await configure(client, od, **EXTERNAL_ONLY, sync_on_delete=True)
    # A second dentist with a login, named as OpenDental knows them.
    provider = (await od.pms.get("/providers")).json()[1]
    created = await client.post(
        "/api/v1/practitioners",
        json={
            "name": f"{provider['FName']} {provider['LName']}",
            "email": "second-dentist@example.com",
            "password": "long enough secret",
        },
        headers=od.headers,
    )
    assert created.status_code == 201, created.text
    week = [{"day_of_week": day, "start_time": "00:00", "end_time": "23:59"} for day in range(7)]
    hours = await client.put(
        f"/api/v1/practitioners/{created.json()['id']}/availability",
        json={"intervals": week},
        headers=od.headers,
    )
    assert hours.status_code == 200, hours.text
    login = await client.post(
        "/api/v1/auth/login", json={"email": "second-dentist@example.com", "password": "long enough secret"}
    )
    dentist = {"Authorization": f"Bearer {login.json()['token']}"}
    chatbot = (
        await tenant_factory(role=Role.SERVICE, organization_id=od.clinic.tenant.organization_id)
    ).headers

    day = future_day()

    async def book(hour: int, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
        response = await client.post(
            "/api/v1/appointments",
            json=booking(od.clinic, od.clinic.local(day, hour), **extra),
            headers=headers,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    theirs = await book(9, od.headers)  # the clinic's first dentist
    own = await book(10, od.headers, practitioner_id=created.json()["id"])
    by_chatbot = await book(11, chatbot)

    def path(body: dict[str, Any], action: str = "") -> str:
        return f"/api/v1/appointments/{body['id']}{action}"

    # The second dentist: their own booking, yes; a colleague's, no such booking.
    assert (await client.get(path(theirs), headers=dentist)).status_code == 404
    assert (await client.patch(path(theirs), json={"notes": "x"}, headers=dentist)).status_code == 404
    assert (await client.post(path(theirs, "/cancel"), json={}, headers=dentist)).status_code == 404
    assert (await client.get(path(own), headers=dentist)).status_code == 200
    noted = await client.patch(path(own), json={"notes": "bring x-rays"}, headers=dentist)
    assert noted.status_code == 200, noted.text

    # The chatbot: what it booked, yes; the front desk's booking only with the patient's proof.
    assert (await client.post(path(theirs, "/cancel"), json={}, headers=chatbot)).status_code == 404
    wrong = {"reference": theirs["booking_reference"], "date_of_birth": "1999-01-01"}
    assert (
        await client.post(path(theirs, "/cancel"), json={"proof": wrong}, headers=chatbot)
    ).status_code == 404
    assert (await client.post(path(by_chatbot, "/cancel"), json={}, headers=chatbot)).status_code == 200
    proof = {"reference": theirs["booking_reference"], "date_of_birth": "1980-02-03"}
    proven = await client.post(path(theirs, "/cancel"), json={"proof": proof}, headers=chatbot)
    assert proven.status_code == 200, proven.text

    # What the refusals left alone in the PMS: the colleague's booking stood until the proven cancel.
    def pms(body: dict[str, Any]) -> str:
        return f"/appointments/{body['external_refs'][0]['external_id']}"

    assert (await od.pms.get(pms(own))).json()["AptStatus"] == "Scheduled"
    assert (await od.pms.get(pms(by_chatbot))).json()["AptStatus"] == "Broken"
    assert (await od.pms.get(pms(theirs))).json()["AptStatus"] == "Broken"
