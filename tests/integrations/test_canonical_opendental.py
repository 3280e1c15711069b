"""Canonical sync operations against the OpenDental simulator, over HTTP, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from canonical_support import connect

from clinicsync.errors import ValidationFailed
from clinicsync.integrations.canonical import SyncOperation as Op
from clinicsync.sandbox import run_sandbox

ZONE = "America/Chicago"
CLINIC = {"seed": 5, "patients": 40, "appointments": 60, "days_before": 5, "days_after": 10, "timezone": ZONE}


async def opendental(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any, od: Any
) -> Any:
    tenant = await tenant_factory(time_zone=ZONE)
    writer = next(key for key, access in od.od.customer_keys.items() if access == "readwrite")
    return await connect(
        client,
        tenant.headers,
        sessionmaker,
        server.settings,
        integration={"provider_key": "opendental", "base_url": od.base_url, "settings": {"operatory_id": 1}},
        secrets={"developer_key": od.od.developer_key, "customer_key": writer},
        organization_id=tenant.organization_id,
    )


async def test_appointments_round_trip_in_the_office_zone(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    async with run_sandbox("opendental", spec=CLINIC) as od:
        pms = await opendental(client, tenant_factory, sessionmaker, server, od)
        practitioners = (await pms(Op.PRACTITIONER_LIST)).records
        assert practitioners and all(isinstance(p["id"], str) and p["display_name"] for p in practitioners)
        patient = (await pms(Op.PATIENT_LIST_CHANGED)).records[0]
        since = datetime.now(UTC) - timedelta(seconds=2)

        # A July morning in Chicago is CDT (UTC-5): 14:30 UTC is 09:30 on the office's clock.
        day = date(date.today().year + 1, 7, 14)
        starts = datetime.combine(day, time(14, 30), tzinfo=UTC)
        created = await pms.one(
            Op.APPOINTMENT_CREATE,
            patient_id=patient["id"],
            practitioner_id=practitioners[0]["id"],
            starts_at=starts,
            ends_at=starts + timedelta(minutes=40),
            status="pending",
            note="Booked online. Ref BK-7Q2X",
        )
        assert created["starts_at"] == starts and created["ends_at"] == starts + timedelta(minutes=40)
        assert created["status"] == "pending" and created["note"] == "Booked online. Ref BK-7Q2X"
        assert created["patient_id"] == patient["id"] and created["practitioner_id"] == practitioners[0]["id"]
        stored = od.appointments[int(created["id"])]
        assert stored.AptDateTime == datetime(day.year, 7, 14, 9, 30) and stored.Note.endswith("BK-7Q2X")

        assert await pms.one(Op.APPOINTMENT_GET, id=created["id"]) == created
        by_reference = await pms(Op.APPOINTMENT_FIND, reference="BK-7Q2X", starts_at=starts)
        assert [r["id"] for r in by_reference.records] == [created["id"]]
        by_slot = await pms(
            Op.APPOINTMENT_FIND,
            patient_id=patient["id"],
            practitioner_id=practitioners[0]["id"],
            starts_at=starts.isoformat(),
        )
        assert [r["id"] for r in by_slot.records] == [created["id"]]
        elsewhere = await pms(
            Op.APPOINTMENT_FIND, patient_id=patient["id"], starts_at=starts + timedelta(hours=1)
        )
        assert elsewhere.records == []

        # January is CST (UTC-6): 15:00 UTC is 09:00 in the office.
        winter = datetime(day.year + 1, 1, 12, 15, 0, tzinfo=UTC)
        moved = await pms.one(
            Op.APPOINTMENT_UPDATE,
            id=created["id"],
            starts_at=winter,
            ends_at=winter + timedelta(minutes=60),
            status="confirmed",
        )
        assert moved["starts_at"] == winter and moved["ends_at"] == winter + timedelta(minutes=60)
        assert moved["status"] == "confirmed" and moved["note"] == created["note"]
        assert od.appointments[int(created["id"])].AptDateTime == datetime(day.year + 1, 1, 12, 9, 0)
        assert await pms.one(Op.APPOINTMENT_GET, id=created["id"]) == moved

        changed = await pms(Op.APPOINTMENT_LIST_CHANGED, updated_since=since)
        assert created["id"] in {r["id"] for r in changed.records}
        assert all(r["status"] in ("pending", "confirmed", "cancelled", "completed") for r in changed.records)

        cancelled = await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"], reason="patient asked")
        assert cancelled["id"] == created["id"] and cancelled["status"] == "cancelled"
        assert od.appointments[int(created["id"])].AptStatus == "Broken"  # OpenDental's soft cancel
        assert (await pms.one(Op.APPOINTMENT_GET, id=created["id"]))["status"] == "cancelled"
        # A resent cancel (its first answer lost) is refused by OpenDental yet done: it says so.
        assert (await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"]))["status"] == "cancelled"
        assert (await pms(Op.APPOINTMENT_GET, id="987654")).records == []


async def test_patients_round_trip_and_are_found_by_email_or_phone_and_birth_date(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    async with run_sandbox("opendental", spec=CLINIC) as od:
        pms = await opendental(client, tenant_factory, sessionmaker, server, od)
        since = datetime.now(UTC) - timedelta(seconds=2)
        created = await pms.one(
            Op.PATIENT_CREATE,
            first_name="Maren",
            last_name="Quist",
            email="maren.quist@example.com",
            phone="+1 (312) 555-0142",
            date_of_birth=date(1988, 2, 29),
        )
        assert created["phone"] == "+13125550142" and created["date_of_birth"] == date(1988, 2, 29)
        assert od.patients[int(created["id"])].WirelessPhone == "(312) 555-0142"
        fetched = await pms.one(Op.PATIENT_GET, id=created["id"])
        assert {k: fetched[k] for k in ("first_name", "last_name", "email", "phone", "date_of_birth")} == {
            "first_name": "Maren",
            "last_name": "Quist",
            "email": "maren.quist@example.com",
            "phone": "+13125550142",
            "date_of_birth": date(1988, 2, 29),
        }
        assert fetched["updated_at"] is not None

        by_email = await pms(Op.PATIENT_FIND, email="MAREN.QUIST@example.com")
        assert [r["id"] for r in by_email.records] == [created["id"]]
        by_phone = await pms(Op.PATIENT_FIND, phone="312-555-0142", date_of_birth="1988-02-29")
        assert [r["id"] for r in by_phone.records] == [created["id"]]
        other_birthday = await pms(Op.PATIENT_FIND, phone="+13125550142", date_of_birth=date(1988, 3, 1))
        assert other_birthday.records == []
        # An unknown email falls through to phone + date of birth: two searches, one match.
        fallback = await pms(
            Op.PATIENT_FIND, email="old@example.com", phone="+13125550142", date_of_birth=date(1988, 2, 29)
        )
        assert [r["id"] for r in fallback.records] == [created["id"]] and fallback.requests == 2

        updated = await pms.one(Op.PATIENT_UPDATE, id=created["id"], email="m.quist@example.org")
        assert updated["email"] == "m.quist@example.org" and updated["first_name"] == "Maren"
        assert (await pms.one(Op.PATIENT_GET, id=created["id"]))["email"] == "m.quist@example.org"
        changed = await pms(Op.PATIENT_LIST_CHANGED, updated_since=since)
        assert [r["id"] for r in changed.records] == [created["id"]]


async def test_bad_payloads_name_the_field_and_send_nothing(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    async with run_sandbox("opendental", spec=CLINIC) as od:
        pms = await opendental(client, tenant_factory, sessionmaker, server, od)
        before = len(od.request_log)
        cases: list[tuple[Op, dict[str, Any], str]] = [
            (
                Op.APPOINTMENT_CREATE,
                {"starts_at": datetime(2030, 1, 1, 9), "patient_id": "1"},
                "payload.starts_at",
            ),
            (Op.APPOINTMENT_CREATE, {"starts_at": "tomorrow", "patient_id": "1"}, "payload.starts_at"),
            (Op.APPOINTMENT_CREATE, {"chair": "2"}, "payload.chair"),
            (Op.APPOINTMENT_UPDATE, {"note": "x"}, "payload.id"),
            (Op.APPOINTMENT_FIND, {"practitioner_id": "1"}, "payload"),
            (Op.PATIENT_FIND, {"first_name": "Maren"}, "payload"),
            (Op.PATIENT_CREATE, {"first_name": "A", "last_name": "B", "phone": "call me"}, "payload.phone"),
        ]
        for operation, payload, field in cases:
            with pytest.raises(ValidationFailed) as refused:
                await pms(operation, **payload)
            assert refused.value.field == field, (operation, refused.value.message)
        assert len(od.request_log) == before
