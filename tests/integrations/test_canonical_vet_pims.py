"""Canonical sync operations against the veterinary PIMS simulator, over HTTP, on both databases."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from canonical_support import connect

from clinicsync.integrations.canonical import SyncOperation as Op
from clinicsync.integrations.canonical import UnsupportedOperation
from clinicsync.sandbox import run_sandbox

ZONE = "America/Chicago"
CLINIC = {"seed": 4, "patients": 20, "appointments": 30, "days_before": 5, "days_after": 10, "timezone": ZONE}


def next_monday(after: date) -> date:
    return after + timedelta(days=(7 - after.weekday()) % 7 or 7)


async def test_visits_round_trip_and_the_front_end_s_limits_are_unsupported(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    async with run_sandbox("vet_pims", spec=CLINIC) as pims:
        tenant = await tenant_factory(time_zone=ZONE)
        info = pims.credentials()
        visit_type = next(iter(pims.store.types))
        pms = await connect(
            client,
            tenant.headers,
            sessionmaker,
            server.settings,
            integration={
                "provider_key": "vet_pims",
                "base_url": pims.root_url,
                "settings": {"appointment_type_id": visit_type},
            },
            secrets={"username": info["username"], "password": info["password"]},
            organization_id=tenant.organization_id,
        )
        vets = (await pms(Op.PRACTITIONER_LIST)).records
        assert vets and all(v["display_name"] for v in vets)
        animal_id = next(iter(pims.store.patients))
        animal = await pms.one(Op.PATIENT_GET, id=str(animal_id))
        assert animal["first_name"] == pims.store.patients[animal_id].name

        # 10:00 on a Monday in Chicago, written as the office's wall clock.
        day = next_monday(date(date.today().year + 1, 3, 1))
        starts = datetime.combine(day, time(10), tzinfo=ZoneInfo(ZONE))
        created = await pms.one(
            Op.APPOINTMENT_CREATE,
            patient_id=animal["id"],
            practitioner_id=vets[0]["id"],
            starts_at=starts,
            ends_at=starts + timedelta(minutes=30),
            note="Limping. Ref BK-VET9",
        )
        assert (created["starts_at"], created["ends_at"]) == (starts, starts + timedelta(minutes=30))
        assert (created["status"], created["patient_id"]) == ("pending", animal["id"])
        assert pims.local(pims.store.appointments[int(created["id"])].start).strftime("%H:%M") == "10:00"
        assert await pms.one(Op.APPOINTMENT_GET, id=created["id"]) == created

        by_reference = await pms(Op.APPOINTMENT_FIND, reference="BK-VET9", starts_at=starts)
        assert [r["id"] for r in by_reference.records] == [created["id"]]
        by_slot = await pms(
            Op.APPOINTMENT_FIND, patient_id=animal["id"], practitioner_id=vets[0]["id"], starts_at=starts
        )
        assert [r["id"] for r in by_slot.records] == [created["id"]]

        window = {"starts_from": starts - timedelta(days=3), "starts_to": starts + timedelta(days=3)}
        pims.clock.advance(5)
        cancelled = await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"])
        assert cancelled["status"] == "cancelled"
        assert (await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"]))["status"] == "cancelled"
        # No change filter at the PIMS: a window is read and the visits' own stamps decide.
        changed = await pms(Op.APPOINTMENT_LIST_CHANGED, updated_since=cancelled["updated_at"], **window)
        assert [(r["id"], r["status"]) for r in changed.records] == [(created["id"], "cancelled")]
        everything = await pms(Op.APPOINTMENT_LIST_CHANGED, **window)
        assert created["id"] in {r["id"] for r in everything.records}
        assert (await pms(Op.APPOINTMENT_GET, id="999999")).records == []

        for operation in (Op.APPOINTMENT_UPDATE, Op.PATIENT_CREATE, Op.PATIENT_FIND, Op.PATIENT_LIST_CHANGED):
            with pytest.raises(UnsupportedOperation):
                await pms(operation)
