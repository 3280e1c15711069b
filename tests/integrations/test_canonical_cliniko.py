"""Canonical sync operations against the Cliniko simulator, over HTTP, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from canonical_support import Connected, connect

from clinicsync.integrations.canonical import SyncOperation as Op
from clinicsync.sandbox import SandboxServer, run_sandbox

CLINIC = {"seed": 11, "patients": 30, "appointments": 40, "days_before": 5, "days_after": 10}


async def cliniko(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any, sandbox: SandboxServer
) -> Connected:
    tenant = await tenant_factory(time_zone="Australia/Sydney")
    info = sandbox.credentials()
    settings = {"shard": info["shard"]}
    pms = await connect(
        client,
        tenant.headers,
        sessionmaker,
        server.settings,
        integration={"provider_key": "cliniko", "base_url": sandbox.base_url, "settings": settings},
        secrets={"api_key": info["api_key"]},
        organization_id=tenant.organization_id,
    )
    # Where synced bookings go is the clinic's choice, read from Cliniko itself.
    businesses = await pms.executor.execute(tenant.organization_id, "cliniko", "list_businesses")
    types = await pms.executor.execute(tenant.organization_id, "cliniko", "list_appointment_types")
    chosen = {
        **settings,
        "business_id": businesses[1].records[0]["id"],
        "appointment_type_id": types[1].records[0]["id"],
    }
    patched = await client.patch(
        f"/api/admin/integrations/{pms.integration_id}", headers=tenant.headers, json={"settings": chosen}
    )
    assert patched.status_code == 200, patched.text
    return pms


async def test_appointments_round_trip(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    async with run_sandbox("cliniko", spec=CLINIC) as sandbox:
        pms = await cliniko(client, tenant_factory, sessionmaker, server, sandbox)
        practitioners = (await pms(Op.PRACTITIONER_LIST)).records
        assert practitioners and all(p["id"] and p["display_name"] for p in practitioners)
        patient = (await pms(Op.PATIENT_LIST_CHANGED)).records[0]
        starts = datetime(date.today().year + 1, 3, 4, 22, 0, tzinfo=UTC)
        ends = starts + timedelta(minutes=45)

        created = await pms.one(
            Op.APPOINTMENT_CREATE,
            patient_id=patient["id"],
            practitioner_id=practitioners[0]["id"],
            starts_at=starts,
            ends_at=ends,
            status="confirmed",
            note="Ref BK-C11N",
        )
        assert int(created["id"]) > 2**53  # Cliniko's 64-bit ids stay exact as strings
        assert (created["starts_at"], created["ends_at"], created["status"]) == (starts, ends, "confirmed")
        assert created["patient_id"] == patient["id"] and created["note"] == "Ref BK-C11N"
        assert await pms.one(Op.APPOINTMENT_GET, id=created["id"]) == created

        by_reference = await pms(Op.APPOINTMENT_FIND, reference="BK-C11N", starts_at=starts)
        assert [r["id"] for r in by_reference.records] == [created["id"]]
        by_slot = await pms(
            Op.APPOINTMENT_FIND,
            patient_id=patient["id"],
            practitioner_id=practitioners[0]["id"],
            starts_at=starts,
        )
        assert [r["id"] for r in by_slot.records] == [created["id"]]
        assert (await pms(Op.APPOINTMENT_FIND, patient_id=patient["id"], starts_at=ends)).records == []

        sandbox.clock.advance(5)
        moved_to = starts + timedelta(days=1, hours=2)
        moved = await pms.one(
            Op.APPOINTMENT_UPDATE,
            id=created["id"],
            starts_at=moved_to,
            ends_at=moved_to + timedelta(minutes=30),
        )
        assert (moved["starts_at"], moved["ends_at"]) == (moved_to, moved_to + timedelta(minutes=30))
        assert moved["note"] == created["note"] and moved["updated_at"] > created["updated_at"]
        changed = await pms(Op.APPOINTMENT_LIST_CHANGED, updated_since=created["updated_at"])
        assert [r["id"] for r in changed.records] == [created["id"]]
        window = await pms(Op.APPOINTMENT_LIST_CHANGED, starts_from=moved_to, starts_to=moved_to)
        assert created["id"] in {r["id"] for r in window.records}

        sandbox.clock.advance(5)
        no_show = await pms.one(Op.APPOINTMENT_UPDATE, id=created["id"], status="no_show")
        assert no_show["status"] == "no_show"
        cancelled = await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"], reason="feeling better")
        assert cancelled["status"] == "cancelled" and cancelled["id"] == created["id"]
        assert (await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"]))["status"] == "cancelled"
        # Cancelled visits leave default lists; a delta still reports the cancellation.
        delta = await pms(Op.APPOINTMENT_LIST_CHANGED, updated_since=moved["updated_at"])
        assert [(r["id"], r["status"]) for r in delta.records] == [(created["id"], "cancelled")]
        assert (await pms(Op.APPOINTMENT_GET, id="1000000000000000999999")).records == []


async def test_patients_round_trip_and_are_found(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    async with run_sandbox("cliniko", spec=CLINIC) as sandbox:
        pms = await cliniko(client, tenant_factory, sessionmaker, server, sandbox)
        created = await pms.one(
            Op.PATIENT_CREATE,
            first_name="Ines",
            last_name="Okafor",
            email="ines.okafor@example.com",
            phone="+61 412 555 013",
            date_of_birth="1979-11-02",
        )
        assert created["phone"] == "+61412555013" and created["date_of_birth"] == date(1979, 11, 2)
        assert await pms.one(Op.PATIENT_GET, id=created["id"]) == created

        assert [r["id"] for r in (await pms(Op.PATIENT_FIND, email="Ines.Okafor@example.com")).records] == [
            created["id"]
        ]
        by_phone = await pms(Op.PATIENT_FIND, phone="+61412555013", date_of_birth=date(1979, 11, 2))
        assert [r["id"] for r in by_phone.records] == [created["id"]]
        assert (
            await pms(Op.PATIENT_FIND, phone="+61412555014", date_of_birth=date(1979, 11, 2))
        ).records == []

        sandbox.clock.advance(5)
        updated = await pms.one(
            Op.PATIENT_UPDATE, id=created["id"], last_name="Okafor-Reid", phone="+61412555099"
        )
        assert updated["last_name"] == "Okafor-Reid" and updated["phone"] == "+61412555099"
        assert updated["email"] == created["email"]
        changed = await pms(Op.PATIENT_LIST_CHANGED, updated_since=created["updated_at"])
        assert [r["id"] for r in changed.records] == [created["id"]]
