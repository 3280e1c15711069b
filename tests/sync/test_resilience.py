"""Outages, restarts and lost responses: every owed push reaches the PMS exactly once.

The counts are modest so the suite stays fast; bench/ and CLINICSYNC_SYNC_SCALE run them large.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.sandbox import run_sandbox
from clinicsync.serving import serving
from tests.factories import Clinic, TenantFactory, future_day, open_clinic
from tests.sync.conftest import (
    DUAL_WRITE,
    Connected,
    connect_opendental,
    drain_timeout,
    eventually_or_report,
    sync_settings,
)

SCALE = float(os.environ.get("CLINICSYNC_SYNC_SCALE", "1"))


async def add_patients(client: httpx.AsyncClient, clinic: Clinic, count: int, tag: str) -> list[str]:
    async def one(index: int) -> str:
        response = await client.post(
            "/api/v1/patients",
            headers=clinic.headers,
            json={
                "first_name": f"Pat{tag}{index}",
                "last_name": f"Tester{tag}",
                "email": f"p{tag}{index}@example.com",
                "date_of_birth": f"19{50 + index % 50}-0{1 + index % 9}-1{index % 9}",
            },
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return [await one(index) for index in range(count)]


async def book_many(
    client: httpx.AsyncClient, clinic: Clinic, patients: list[str], count: int
) -> list[dict[str, Any]]:
    """``count`` bookings over the patients, half-hour slots over consecutive days, a few at a time."""
    slots = asyncio.Semaphore(8)

    async def one(index: int) -> dict[str, Any]:
        day, slot = divmod(index, 40)
        start = clinic.local(future_day(3 + day), 2) + timedelta(minutes=30 * slot)
        async with slots:
            response = await client.post(
                "/api/v1/appointments",
                headers=clinic.headers,
                json={
                    "patient_id": patients[index % len(patients)],
                    "practitioner_id": str(clinic.practitioner_id),
                    "start": start.isoformat(),
                    "end": (start + timedelta(minutes=30)).isoformat(),
                },
            )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return list(await asyncio.gather(*(one(index) for index in range(count))))


async def pms_appointments(pms: httpx.AsyncClient) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = (await pms.get("/appointments", params={"Limit": 100, "Offset": len(rows)})).json()
        rows.extend(page)
        if len(page) < 100:
            return rows


async def pms_patients(pms: httpx.AsyncClient) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = (await pms.get("/patients/Simple", params={"Limit": 100, "Offset": len(rows)})).json()
        rows.extend(page)
        if len(page) < 100:
            return rows


async def states(client: httpx.AsyncClient, clinic: Clinic) -> Counter[str]:
    seen: Counter[str] = Counter()
    offset = 0
    while True:
        page = (
            await client.get(
                "/api/v1/appointments", headers=clinic.headers, params={"limit": 500, "offset": offset}
            )
        ).json()
        for item in page["items"]:
            seen[item["external_refs"][0]["sync_state"] if item["external_refs"] else "none"] += 1
        offset += len(page["items"])
        if offset >= page["total"]:
            return seen


def references_in(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(word for row in rows for word in (row.get("Note") or "").split() if word.startswith("CS-"))


@pytest.mark.slow
async def test_outage_then_restart_of_both_delivers_every_booking_once_and_confirms_it(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
    tmp_path: Any,
) -> None:
    count = int(60 * SCALE)
    state_file = tmp_path / "opendental.json"
    settings = sync_settings(database_url, tmp_path / "var")
    async with run_sandbox(
        "opendental", spec={"patients": 3, "appointments": 0}, state_file=state_file
    ) as sandbox:
        port = int(sandbox.root_url.rsplit(":", 1)[1])  # type: ignore[union-attr]
        async with (
            serving(create_app(settings)) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=60) as client,
        ):
            tenant = await tenant_factory(time_zone="America/Chicago")
            integration_id, pms, provider = await connect_opendental(client, tenant, sandbox)
            await pms.aclose()
    # The PMS is down from here on: bookings succeed locally and wait as pending pushes.
    async with (
        serving(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        clinic = await open_clinic(
            client, tenant, name=f"{provider['FName']} {provider['LName']}", start="00:00", end="23:59"
        )
        configured = await client.post(
            "/api/admin/integration-settings",
            headers=tenant.headers,
            json={"integration_id": integration_id, **DUAL_WRITE},
        )
        assert configured.status_code == 201
        patients = await add_patients(client, clinic, 6, "o")
        booked = await book_many(client, clinic, patients, count)
        assert all(item["external_refs"][0]["sync_state"] == "pending" for item in booked)
        await asyncio.sleep(1.5)  # the worker tries, finds nobody home, and backs off
        assert (await states(client, clinic))["pending"] == count
        status = (await client.get("/api/admin/sync/status", headers=tenant.headers)).json()[0]
        assert status["outbox_depth"] >= count and status["last_sync_status"] == "error"
    # clinicsync restarts, then the PMS comes back on its old address with its saved state.
    async with (
        run_sandbox("opendental", state_file=state_file, port=port) as sandbox,
        serving(create_app(settings)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
        pms_client(sandbox) as pms,
    ):
        await eventually_or_report(
            lambda: _all_confirmed(client, clinic, count),
            sessionmaker,
            timeout=drain_timeout(count, at_least=120),
            interval=1 if SCALE > 1 else 0.5,  # each look lists every appointment, on the delivering server
        )
        in_pms = references_in(await pms_appointments(pms))
        assert sorted(in_pms) == sorted(item["booking_reference"] for item in booked)
        assert set(in_pms.values()) == {1}


async def _all_confirmed(client: httpx.AsyncClient, clinic: Clinic, count: int) -> bool:
    return (await states(client, clinic))["confirmed"] == count


def pms_client(sandbox: Any) -> httpx.AsyncClient:
    od: Any = sandbox.od
    writer = next(key for key, access in od.customer_keys.items() if access == "readwrite")
    return httpx.AsyncClient(
        base_url=sandbox.base_url,
        headers={"Authorization": f"ODFHIR {od.developer_key}/{writer}"},
        timeout=10,
    )


@pytest.mark.slow
async def test_lost_responses_never_duplicate_appointments_or_patients(
    client: httpx.AsyncClient, opendental: Connected, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    od = opendental
    bookings, patient_count = int(50 * SCALE), int(30 * SCALE)
    patients_before = len(await pms_patients(od.pms))
    await client.post(
        "/api/admin/integration-settings",
        headers=od.headers,
        json={"integration_id": od.integration_id, **DUAL_WRITE},
    )
    # OpenDental commits 30% of creates and then drops the connection before answering.
    faults = await od.pms.put(
        od.sandbox.root_url + "/_sandbox/faults",  # type: ignore[operator]
        json={"drop_after_commit_rate": 0.3, "match_methods": ["POST"], "seed": 7},
    )
    assert faults.status_code == 200, faults.text
    patients = await add_patients(client, od.clinic, patient_count, "l")
    booked = await book_many(client, od.clinic, patients, bookings)
    await eventually_or_report(
        lambda: _all_confirmed(client, od.clinic, bookings),
        sessionmaker,
        timeout=drain_timeout(bookings + patient_count, at_least=120),
        interval=1 if SCALE > 1 else 0.5,  # each look lists every appointment, on the delivering server
    )
    dropped = [entry for entry in od.sandbox.request_log if "drop_after_commit" in entry.faults]
    assert dropped, "the fault must have struck for the test to mean anything"
    await od.pms.post(od.sandbox.root_url + "/_sandbox/faults/reset")  # type: ignore[operator]
    in_pms = references_in(await pms_appointments(od.pms))
    assert sorted(in_pms) == sorted(item["booking_reference"] for item in booked)
    assert set(in_pms.values()) == {1}
    ours = [row for row in await pms_patients(od.pms) if str(row.get("LName", "")).startswith("Testerl")]
    assert len(ours) == patient_count
    assert len(await pms_patients(od.pms)) == patients_before + patient_count
