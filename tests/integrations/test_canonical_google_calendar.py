"""Canonical sync operations against the Google Calendar simulator, over HTTP, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from canonical_support import connect

from clinicsync.integrations.canonical import SyncOperation as Op
from clinicsync.integrations.canonical import UnsupportedOperation
from clinicsync.sandbox import run_sandbox

CLINIC = {"seed": 3, "patients": 20, "appointments": 30, "days_before": 5, "days_after": 10}


async def test_events_round_trip_as_canonical_appointments(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, server: Any
) -> None:
    async with run_sandbox("google_calendar", spec=CLINIC) as google:
        tenant = await tenant_factory()
        info = google.credentials()
        pms = await connect(
            client,
            tenant.headers,
            sessionmaker,
            server.settings,
            # A static access token, as the simulator hands out; production uses the refresh-token grant.
            integration={
                "provider_key": "google_calendar",
                "base_url": google.base_url,
                "auth": {"type": "bearer"},
                "settings": {"calendar_id": info["calendar_id"]},
            },
            secrets={"token": info["access_token"]},
            organization_id=tenant.organization_id,
        )
        starts = datetime(date.today().year + 1, 5, 6, 13, 15, tzinfo=UTC)
        created = await pms.one(
            Op.APPOINTMENT_CREATE,
            patient_id="p-41",
            practitioner_id="dr-7",
            starts_at=starts,
            ends_at=starts + timedelta(minutes=30),
            status="pending",
            note="Ref BK-G0G1",
        )
        assert created["id"] and created["status"] == "pending"
        assert (created["patient_id"], created["practitioner_id"]) == ("p-41", "dr-7")
        assert (created["starts_at"], created["ends_at"]) == (starts, starts + timedelta(minutes=30))
        event = google.calendars[info["calendar_id"]].events[created["id"]].data
        assert event["summary"] == "Clinic appointment" and event["description"] == "Ref BK-G0G1"
        assert await pms.one(Op.APPOINTMENT_GET, id=created["id"]) == created

        by_reference = await pms(Op.APPOINTMENT_FIND, reference="BK-G0G1")
        assert [r["id"] for r in by_reference.records] == [created["id"]] and by_reference.requests == 1
        by_slot = await pms(Op.APPOINTMENT_FIND, patient_id="p-41", practitioner_id="dr-7", starts_at=starts)
        assert [r["id"] for r in by_slot.records] == [created["id"]]
        assert (
            await pms(Op.APPOINTMENT_FIND, patient_id="p-41", practitioner_id="dr-8", starts_at=starts)
        ).records == []

        google.clock.advance(5)
        later = starts + timedelta(hours=3)
        moved = await pms.one(
            Op.APPOINTMENT_UPDATE,
            id=created["id"],
            starts_at=later,
            ends_at=later + timedelta(minutes=50),
            status="confirmed",
        )
        assert (moved["starts_at"], moved["ends_at"], moved["status"]) == (
            later,
            later + timedelta(minutes=50),
            "confirmed",
        )
        assert moved["note"] == "Ref BK-G0G1" and moved["patient_id"] == "p-41"
        changed = await pms(
            Op.APPOINTMENT_LIST_CHANGED, updated_since=moved["updated_at"] - timedelta(seconds=1)
        )
        assert [r["id"] for r in changed.records] == [created["id"]]

        google.clock.advance(5)
        cancelled = await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"])
        assert cancelled["id"] == created["id"] and cancelled["status"] == "cancelled"
        # Deleting again answers 410 deleted; the event is cancelled, so the cancel is done.
        assert (await pms.one(Op.APPOINTMENT_CANCEL, id=created["id"]))["status"] == "cancelled"
        # Deleted events leave plain lists and come back on a delta, cancelled.
        delta = await pms(Op.APPOINTMENT_LIST_CHANGED, updated_since=moved["updated_at"])
        assert [(r["id"], r["status"]) for r in delta.records] == [(created["id"], "cancelled")]
        assert (await pms(Op.APPOINTMENT_GET, id="nosuchevent00")).records == []

        for unsupported in (Op.PATIENT_CREATE, Op.PATIENT_FIND, Op.PRACTITIONER_LIST):
            with pytest.raises(UnsupportedOperation) as refused:
                await pms(unsupported)
            assert unsupported.value in refused.value.message
