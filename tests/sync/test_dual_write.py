"""Dual-write on OpenDental: committed locally first, pushed through the outbox, read back."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from clinicsync.realtime.reader import open_stream
from tests.conftest import RunningServer
from tests.factories import booking, future_day
from tests.statements import Statements
from tests.sync.conftest import DUAL_WRITE, Connected, configure, eventually, refs_of


async def _state(
    client: httpx.AsyncClient, od: Connected, path: str, wanted: str
) -> list[dict[str, Any]] | None:
    refs = await refs_of(client, od, path)
    return refs if refs and refs[0]["sync_state"] == wanted else None


async def test_a_booking_reaches_opendental_once_and_is_confirmed(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    await configure(client, od, **DUAL_WRITE)
    start = od.clinic.local(future_day(), 10)
    created = await client.post("/api/v1/appointments", json=booking(od.clinic, start), headers=od.headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["external_refs"][0]["sync_state"] == "pending"
    path = f"/api/v1/appointments/{body['id']}"
    refs = await eventually(lambda: _state(client, od, path, "confirmed"))
    apt_num = refs[0]["external_id"]
    in_pms = (await od.pms.get(f"/appointments/{apt_num}")).json()
    assert body["booking_reference"] in in_pms["Note"]
    matching = [
        row
        for row in (await od.pms.get("/appointments", params={"PatNum": in_pms["PatNum"]})).json()
        if body["booking_reference"] in (row.get("Note") or "")
    ]
    assert len(matching) == 1
    patient_refs = await refs_of(client, od, f"/api/v1/patients/{od.clinic.patient_id}")
    assert patient_refs[0]["external_id"] == str(in_pms["PatNum"])


async def test_a_read_back_confirmation_reaches_the_practitioners_event_stream(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    """The portal's PMS badge redraws when a booking is confirmed in the PMS, not at the next reload."""
    od = opendental
    await configure(client, od, **DUAL_WRITE)
    async with open_stream(server.base_url, od.clinic.tenant.token) as stream:
        created = await client.post(
            "/api/v1/appointments",
            json=booking(od.clinic, od.clinic.local(future_day(), 11)),
            headers=od.headers,
        )
        assert created.status_code == 201, created.text
        appointment_id = created.json()["id"]
        for _ in range(50):
            message = await stream.next_event(timeout=20)
            if (
                message.json["entity"] == "external_ref"
                and message.json["payload"]["record_id"] == appointment_id
            ):
                break
        else:
            raise AssertionError("no read-back event for the booking")
    assert message.json["payload"]["sync_state"] == "confirmed"
    assert message.json["practitioner_id"] == str(od.clinic.practitioner_id)
    assert set(message.json["payload"]) == {
        "integration_id",
        "record_type",
        "record_id",
        "sync_state",
        "read_back",
    }


async def test_owing_a_booking_to_the_pms_adds_three_statements_to_the_request(
    client: httpx.AsyncClient, opendental: Connected, backend: str, statements: Statements
) -> None:
    """The push is off the request path: a dual-writing booking adds only the outbox row, its change
    event and the pending reference (no sequence lookup, no read-back of the references it just
    wrote) to what a local-only booking costs."""
    od = opendental

    async def book(hour: int) -> tuple[dict[str, Any], list[str]]:
        request_id = uuid.uuid4().hex
        response = await client.post(
            "/api/v1/appointments",
            json=booking(od.clinic, od.clinic.local(future_day(3), hour)),
            headers={**od.headers, "X-Request-ID": request_id},
        )
        assert response.status_code == 201, response.text
        return response.json(), statements.seen.get(request_id, [])

    await book(8)  # warms the server's caches
    _, local_only = await book(9)
    await configure(client, od, **DUAL_WRITE)
    body, dual_write = await book(10)
    assert len(dual_write) == len(local_only) + 3, "\n".join(dual_write)
    assert body["external_refs"] == [
        {
            "integration_id": od.integration_id,
            "provider_key": "opendental",
            "external_id": None,
            "sync_state": "pending",
            "last_error": None,
            "last_synced_at": None,
            "confirmed_at": None,
            "mismatch": None,
            "snapshot": None,
        }
    ]
    read = await client.get(f"/api/v1/appointments/{body['id']}", headers=od.headers)
    assert read.json()["external_refs"][0]["provider_key"] == "opendental"
