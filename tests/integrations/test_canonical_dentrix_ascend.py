"""Canonical sync operations against the Dentrix Ascend simulator, over HTTP, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from canonical_support import connect

from clinicsync.integrations.canonical import SyncOperation as Op
from clinicsync.integrations.canonical import UnsupportedOperation
from clinicsync.sandbox import run_sandbox

CLINIC = {"seed": 2, "patients": 25, "appointments": 30, "days_before": 5, "days_after": 10}


async def test_appointments_and_patients_round_trip(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    async with run_sandbox("dentrix_ascend", spec=CLINIC) as ascend:
        tenant = await tenant_factory(time_zone="America/Denver")
        info = ascend.credentials()
        operatory = next(iter(ascend.store.operatories))
        pms = await connect(
            client,
            tenant.headers,
            sessionmaker,
            server.settings,
            # The simulator's token endpoint stands in for Apigee's.
            integration={
                "provider_key": "dentrix_ascend",
                "base_url": ascend.base_url,
                "auth": {"type": "oauth2_client_credentials", "token_url": info["token_url"]},
                "settings": {"organization_id": info["organization_id"], "operatory_id": operatory},
            },
            secrets={"client_id": info["client_id"], "client_secret": info["client_secret"]},
            organization_id=tenant.organization_id,
        )
        practitioners = (await pms(Op.PRACTITIONER_LIST)).records
        assert practitioners and all(p["id"] and p["display_name"] for p in practitioners)

        patient = await pms.one(
            Op.PATIENT_CREATE,
            first_name="Tomas",
            last_name="Lindqvist",
            email="tomas.l@example.net",
            phone="+1 720 555 0188",
            date_of_birth=date(2001, 6, 30),
        )
        assert (patient["phone"], patient["date_of_birth"]) == ("+17205550188", date(2001, 6, 30))
        assert await pms.one(Op.PATIENT_GET, id=patient["id"]) == patient
        by_email = await pms(Op.PATIENT_FIND, email="TOMAS.L@example.net")
        assert [r["id"] for r in by_email.records] == [patient["id"]]
        by_phone = await pms(Op.PATIENT_FIND, phone="720-555-0188", date_of_birth="2001-06-30")
        assert [r["id"] for r in by_phone.records] == [patient["id"]]
        assert (await pms(Op.PATIENT_FIND, phone="720-555-0188", date_of_birth="2001-07-01")).records == []
        ascend.clock.advance(1)
        since = patient["updated_at"]
        assert since is not None
        listed = await pms(Op.PATIENT_LIST_CHANGED, updated_since=since)
        assert patient["id"] in {r["id"] for r in listed.records}

        # Ascend takes UTC instants on a 5-minute grid and a length in minutes.
        starts = datetime(date.today().year + 1, 2, 9, 16, 45, tzinfo=UTC)
        created = await pms.one(
            Op.APPOINTMENT_CREATE,
            patient_id=patient["id"],
            practitioner_id=practitioners[0]["id"],
            starts_at=starts,
            ends_at=starts + timedelta(minutes=50),
            status="pending",
            note="Ref BK-DX50",
        )
        assert (created["starts_at"], created["ends_at"]) == (starts, starts + timedelta(minutes=50))
        assert (created["status"], created["note"], created["patient_id"]) == (
            "pending",
            "Ref BK-DX50",
            patient["id"],
        )
        assert ascend.store.appointments[int(created["id"])].duration == 50
        assert await pms.one(Op.APPOINTMENT_GET, id=created["id"]) == created

        by_reference = await pms(Op.APPOINTMENT_FIND, reference="BK-DX50", starts_at=starts)
        assert [r["id"] for r in by_reference.records] == [created["id"]]
        by_slot = await pms(
            Op.APPOINTMENT_FIND,
            patient_id=patient["id"],
            practitioner_id=practitioners[0]["id"],
            starts_at=starts,
        )
        assert [r["id"] for r in by_slot.records] == [created["id"]]
        assert (
            await pms(Op.APPOINTMENT_FIND, patient_id=patient["id"], starts_at=starts + timedelta(days=1))
        ).records == []

        ascend.clock.advance(5)
        later = starts + timedelta(hours=2)
        moved = await pms.one(
            Op.APPOINTMENT_UPDATE,
            id=created["id"],
            starts_at=later,
            ends_at=later + timedelta(minutes=30),
            status="confirmed",
        )
        assert (moved["starts_at"], moved["ends_at"], moved["status"]) == (
            later,
            later + timedelta(minutes=30),
            "confirmed",
        )
        changed = await pms(Op.APPOINTMENT_LIST_CHANGED, updated_since=moved["updated_at"])
        assert [r["id"] for r in changed.records] == [created["id"]]
        window = await pms(Op.APPOINTMENT_LIST_CHANGED, starts_from=later, starts_to=later)
        assert [r["id"] for r in window.records] == [created["id"]]

        ascend.clock.advance(5)
        cancelled = await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"])
        assert cancelled["status"] == "cancelled" and cancelled["id"] == created["id"]
        assert (await pms.one(Op.APPOINTMENT_GET, id=created["id"]))["status"] == "cancelled"
        # Ascend answers a second cancel with 409; the appointment is cancelled, so it is done.
        assert (await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"]))["status"] == "cancelled"
        assert (await pms(Op.APPOINTMENT_GET, id="999999")).records == []

        with pytest.raises(UnsupportedOperation):
            await pms(Op.PATIENT_UPDATE, id=patient["id"], email="new@example.net")
