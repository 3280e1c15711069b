"""Seed 000's directions and operation toggles on OpenDental: what is pushed, and what is not."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from tests.factories import booking, future_day
from tests.sync.conftest import DUAL_WRITE, Connected, configure, eventually, refs_of


async def _book(client: httpx.AsyncClient, od: Connected, hour: int) -> dict[str, Any]:
    start = od.clinic.local(future_day(), hour)
    created = await client.post("/api/v1/appointments", json=booking(od.clinic, start), headers=od.headers)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def _confirmed(client: httpx.AsyncClient, od: Connected, appointment_id: str) -> dict[str, Any] | None:
    refs = await refs_of(client, od, f"/api/v1/appointments/{appointment_id}")
    return refs[0] if refs and refs[0]["sync_state"] == "confirmed" else None


async def _pms_appointments(od: Connected) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await od.pms.get("/appointments", params={"Limit": 100})).json()
    return rows


async def test_local_only_from_external_and_sync_off_push_nothing(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    config = await configure(client, od)
    url = f"/api/admin/integration-settings/{config['id']}"
    before = await _pms_appointments(od)
    for hour, settings in enumerate(
        (
            {"sync_enabled": False, "sync_direction": "to_external"},
            {"sync_enabled": True, "sync_direction": "local_only"},
            {"sync_enabled": True, "sync_direction": "from_external"},
            DUAL_WRITE | {"sync_on_create": False},
        ),
        start=9,
    ):
        assert (await client.put(url, headers=od.headers, json=settings)).status_code == 200
        body = await _book(client, od, hour)
        assert body["external_refs"] == []
    outbox = await client.get("/api/admin/sync/outbox", headers=od.headers)
    assert outbox.json()["total"] == 0
    assert await _pms_appointments(od) == before


async def test_update_and_delete_toggles_on_reschedule_and_cancel(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    config = await configure(client, od, **DUAL_WRITE, sync_on_update=True, sync_on_delete=True)
    url = f"/api/admin/integration-settings/{config['id']}"
    moved = await _book(client, od, 9)
    kept = await _book(client, od, 11)
    cancelled = await _book(client, od, 13)
    refs = {
        item["id"]: await eventually(lambda item=item: _confirmed(client, od, item["id"]))
        for item in (moved, kept, cancelled)
    }

    new_start = od.clinic.local(future_day(), 15)
    patched = await client.patch(
        f"/api/v1/appointments/{moved['id']}", headers=od.headers, json={"start": new_start.isoformat()}
    )
    assert patched.status_code == 200, patched.text

    async def moved_in_pms() -> bool:
        row = (await od.pms.get(f"/appointments/{refs[moved['id']]['external_id']}")).json()
        return bool(row["AptDateTime"].endswith("15:00:00"))

    await eventually(moved_in_pms)
    await eventually(lambda: _confirmed(client, od, moved["id"]))

    gone = await client.post(f"/api/v1/appointments/{cancelled['id']}/cancel", headers=od.headers, json={})
    assert gone.status_code == 200

    async def broken_in_pms() -> bool:
        row = (await od.pms.get(f"/appointments/{refs[cancelled['id']]['external_id']}")).json()
        return bool(row["AptStatus"] == "Broken")  # OpenDental's soft cancel, the record stays

    await eventually(broken_in_pms)

    # With the toggles off, the same changes stay local.
    assert (
        await client.put(url, headers=od.headers, json={"sync_on_update": False, "sync_on_delete": False})
    ).status_code == 200
    later = od.clinic.local(future_day(), 16) + timedelta(minutes=30)
    assert (
        await client.patch(
            f"/api/v1/appointments/{kept['id']}", headers=od.headers, json={"start": later.isoformat()}
        )
    ).status_code == 200
    assert (
        await client.post(f"/api/v1/appointments/{kept['id']}/cancel", headers=od.headers, json={})
    ).status_code == 200
    outbox = (await client.get("/api/admin/sync/outbox", headers=od.headers)).json()
    assert {item["record_id"] for item in outbox["items"]} == {moved["id"], kept["id"], cancelled["id"]}
    assert all(item["record_id"] != kept["id"] or item["operation"] == "create" for item in outbox["items"])
    row = (await od.pms.get(f"/appointments/{refs[kept['id']]['external_id']}")).json()
    assert row["AptStatus"] == "Scheduled" and row["AptDateTime"].endswith("11:00:00")


async def test_bidirectional_pushes_local_writes(client: httpx.AsyncClient, opendental: Connected) -> None:
    od = opendental
    await configure(client, od, sync_enabled=True, sync_direction="bidirectional")
    body = await _book(client, od, 10)
    ref = await eventually(lambda: _confirmed(client, od, body["id"]))
    row = (await od.pms.get(f"/appointments/{ref['external_id']}")).json()
    assert body["booking_reference"] in row["Note"]
