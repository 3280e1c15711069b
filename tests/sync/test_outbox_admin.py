"""What waits for a person: failed pushes (age, error) retried or discarded; sync status and metrics."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import future_day
from tests.sync.conftest import DUAL_WRITE, Connected, configure, eventually, refs_of


async def _stranger(client: httpx.AsyncClient, od: Connected, name: str) -> str:
    created = await client.post("/api/v1/practitioners", json={"name": name}, headers=od.headers)
    week = [{"day_of_week": day, "start_time": "00:00", "end_time": "23:59"} for day in range(7)]
    practitioner_id = str(created.json()["id"])
    await client.put(
        f"/api/v1/practitioners/{practitioner_id}/availability", json={"intervals": week}, headers=od.headers
    )
    return practitioner_id


async def _book_with(
    client: httpx.AsyncClient, od: Connected, practitioner_id: str, hour: int
) -> dict[str, Any]:
    start = od.clinic.local(future_day(), hour)
    response = await client.post(
        "/api/v1/appointments",
        headers=od.headers,
        json={
            "patient_id": str(od.clinic.patient_id),
            "practitioner_id": practitioner_id,
            "start": start.isoformat(),
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _failed(client: httpx.AsyncClient, od: Connected, count: int) -> list[dict[str, Any]] | None:
    page = (
        await client.get("/api/admin/sync/outbox", headers=od.headers, params={"status": "failed"})
    ).json()
    return page["items"] if page["total"] == count else None


async def test_a_refused_push_waits_for_a_person_who_retries_or_discards_it(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    await configure(client, od, **DUAL_WRITE)
    unknown = await _stranger(client, od, "Dr. Nobody Known")
    other = await _stranger(client, od, "Dr. Also Unknown")
    first = await _book_with(client, od, unknown, 9)
    second = await _book_with(client, od, other, 10)
    failed = await eventually(lambda: _failed(client, od, 2))
    assert all("counterpart" in item["last_error"] and item["age_seconds"] >= 0 for item in failed)
    refs = await refs_of(client, od, f"/api/v1/appointments/{first['id']}")
    assert refs[0]["sync_state"] == "failed" and "counterpart" in refs[0]["last_error"]

    status = (await client.get("/api/admin/sync/status", headers=od.headers)).json()
    assert status[0]["failed_count"] == 2 and status[0]["last_sync_status"] == "error"
    metrics = (await client.get("/metrics")).text
    labels = f'integration_id="{od.integration_id}",provider="opendental",status="failed"'
    assert f"clinicsync_sync_outbox_items{{{labels}}} 2.0" in metrics

    # A person links the practitioner to their OpenDental provider and retries the push.
    provider = (await od.pms.get("/providers")).json()[1]
    linked = await client.post(
        "/api/admin/sync/links",
        headers=od.headers,
        json={
            "integration_id": od.integration_id,
            "record_type": "practitioner",
            "record_id": unknown,
            "external_id": str(provider["ProvNum"]),
        },
    )
    assert linked.status_code == 201, linked.text
    item = next(item for item in failed if item["record_id"] == first["id"])
    retried = await client.post(f"/api/admin/sync/outbox/{item['id']}/retry", headers=od.headers)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"

    async def confirmed() -> dict[str, Any] | None:
        refs = await refs_of(client, od, f"/api/v1/appointments/{first['id']}")
        return refs[0] if refs[0]["sync_state"] == "confirmed" else None

    ref = await eventually(confirmed)
    assert (await od.pms.get(f"/appointments/{ref['external_id']}")).json()["ProvNum"] == provider["ProvNum"]

    # The other one is not wanted in the PMS: discarded, with the reason kept.
    other_item = next(item for item in failed if item["record_id"] == second["id"])
    no_reason = await client.post(
        f"/api/admin/sync/outbox/{other_item['id']}/discard", headers=od.headers, json={}
    )
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["error"]["message"]
    discarded = await client.post(
        f"/api/admin/sync/outbox/{other_item['id']}/discard",
        headers=od.headers,
        json={"reason": "booked in error"},
    )
    assert (
        discarded.json()["status"] == "discarded" and discarded.json()["discard_reason"] == "booked in error"
    )
    status = (await client.get("/api/admin/sync/status", headers=od.headers)).json()[0]
    assert status["failed_count"] == 0 and status["outbox_depth"] == 0
    assert status["states"]["confirmed"] >= 2  # the appointment and its patient


async def test_retry_all_and_config_changes_keep_owed_pushes(
    client: httpx.AsyncClient, opendental: Connected
) -> None:
    od = opendental
    config = await configure(client, od, **DUAL_WRITE)
    unknown = await _stranger(client, od, "Dr. Nobody Known")
    booked = await _book_with(client, od, unknown, 9)
    await eventually(lambda: _failed(client, od, 1))
    # Turning sync off keeps what is owed (and says so); it is still there to retry.
    changed = await client.put(
        f"/api/admin/integration-settings/{config['id']}", headers=od.headers, json={"sync_enabled": False}
    )
    assert changed.json()["owed_pushes"]["count"] == 1
    retried = await client.post("/api/admin/sync/outbox/retry-all", headers=od.headers)
    assert retried.json() == {"retried": 1}
    await eventually(lambda: _failed(client, od, 1))
    deleted = await client.delete(
        f"/api/admin/integration-settings/{config['id']}",
        headers=od.headers,
        params={"discard_owed": "true", "reason": "moving to another PMS"},
    )
    assert deleted.json()["discarded"] == 1 and deleted.json()["owed_pushes"]["count"] == 0
    refs = await refs_of(client, od, f"/api/v1/appointments/{booked['id']}")
    assert refs[0]["sync_state"] == "failed" and "moving to another PMS" in (refs[0]["last_error"] or "")
