"""The shipped veterinary PIMS definition against the PIMS simulator, over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

from clinicsync.integrations.definitions import PROVIDERS_DIR, RetrySpec, load_definition_file
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.runtime import ProviderCaller, ResolvedIntegration
from clinicsync.sandbox import FaultSettings, run_sandbox
from clinicsync.sandbox.vet_pims import VetPimsSandbox

FAST_RETRY = RetrySpec(attempts=5, base_delay=0.05, max_delay=0.4, max_retry_after=5)
ZONE = "America/Chicago"
# 130 clients (one per generated patient) make two pages of 100; animals are more.
CLINIC = {
    "seed": 4,
    "patients": 130,
    "appointments": 200,
    "days_before": 14,
    "days_after": 14,
    "timezone": ZONE,
}
MONDAY = "2030-03-04"  # far beyond the generated visits, so its slots are free


def pims(server: VetPimsSandbox, password: str | None = None) -> ResolvedIntegration:
    definition = load_definition_file(PROVIDERS_DIR / "vet_pims.yaml").model_copy(
        update={"retry": FAST_RETRY, "timeout_seconds": 5}
    )
    info = server.credentials()
    return ResolvedIntegration(
        key=uuid.uuid4().hex,
        revision="1",
        definition=definition,
        settings={**definition.settings, "timezone": ZONE},
        secrets={"username": info["username"], "password": password or info["password"]},
        base_url=server.root_url,
    )


@asynccontextmanager
async def practice(spec: dict[str, Any], **options: Any) -> AsyncIterator[VetPimsSandbox]:
    async with run_sandbox(VetPimsSandbox, spec=spec, **options) as server:
        assert isinstance(server, VetPimsSandbox)
        yield server


def logins(server: VetPimsSandbox) -> int:
    return sum(1 for entry in server.request_log if entry.method == "POST" and entry.path == "/login")


def booking(patient_id: int, type_id: int, start: str, end: str, **extra: Any) -> dict[str, Any]:
    # The form takes the day and the clock times separately; both come from the same instants.
    return {
        "patient_id": patient_id,
        "type_id": type_id,
        "start": start,
        "start_time": start,
        "end": end,
    } | extra


async def test_lookups_calendar_and_paged_searches() -> None:
    caller = ProviderCaller()
    async with practice(CLINIC) as server:
        integration = pims(server)
        types = (await caller.execute(integration, "list_appointment_types")).records
        rooms = (await caller.execute(integration, "list_rooms")).records
        vets = (await caller.execute(integration, "list_providers")).records
        assert types and rooms and vets and all(row["duration_minutes"] > 0 for row in types)
        config = (await caller.execute(integration, "get_schedule_config")).records[0]
        assert config["timezone"] == ZONE and config["capacity_per_slot"] == 2

        today = server.clock.local_now().date()
        start, end = today - timedelta(days=14), today + timedelta(days=15)
        visits = await caller.execute(
            integration, "list_appointments", {"date_start": start.isoformat(), "date_end": end.isoformat()}
        )
        live = [
            row for row in server.store.appointments.values() if not row.deleted and row.status != "cancelled"
        ]
        assert len(visits.records) == len(live) and visits.pages == 1
        # Office-local wall times on the wire, UTC instants in the records.
        first = min(live, key=lambda row: (row.start, row.id))
        assert visits.records[0]["id"] == first.id
        assert visits.records[0]["start"] == first.start.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert all(row["patient_id"] and row["type_id"] for row in visits.records)
        with_cancelled = await caller.execute(
            integration,
            "list_appointments",
            {"date_start": start.isoformat(), "date_end": end.isoformat(), "include_cancelled": True},
        )
        assert len(with_cancelled.records) > len(visits.records)
        assert "cancelled" in {row["status"] for row in with_cancelled.records}

        clients = await caller.execute(integration, "search_clients")
        assert clients.pages == 2 and len(clients.records) == 130
        assert len({row["id"] for row in clients.records}) == 130
        animals = await caller.execute(integration, "search_patients")
        assert len(animals.records) == len(server.store.patients) and animals.pages >= 2
        owned = await caller.execute(integration, "search_patients", {"client_id": clients.records[0]["id"]})
        assert owned.records and {row["client_id"] for row in owned.records} == {clients.records[0]["id"]}
        animal = (
            await caller.execute(integration, "get_patient", {"patient_id": owned.records[0]["id"]})
        ).records
        assert animal == [owned.records[0]]
        assert logins(server) == 1  # one session for everything

        with pytest.raises(IntegrationError) as missing:
            await caller.execute(integration, "get_appointment", {"appointment_id": 999999})
        assert missing.value.code == "not_found"


async def test_book_fill_a_slot_cancel_and_rebook() -> None:
    caller = ProviderCaller()
    async with practice(CLINIC) as server:
        integration = pims(server)
        type_id = (await caller.execute(integration, "list_appointment_types")).records[0]["id"]
        patients = (await caller.execute(integration, "search_patients", max_records=3)).records
        # 10:00-10:30 in Chicago (CST, UTC-6) is 16:00-16:30 UTC.
        created = await caller.execute(
            integration,
            "create_appointment",
            booking(
                patients[0]["id"], type_id, f"{MONDAY}T16:00:00Z", f"{MONDAY}T16:30:00Z", notes="limping"
            ),
        )
        visit = created.records[0]
        assert visit["start"] == f"{MONDAY}T16:00:00Z" and visit["end"] == f"{MONDAY}T16:30:00Z"
        assert visit["status"] == "booked" and visit["patient_id"] == patients[0]["id"]
        stored = server.store.appointments[visit["id"]]
        assert server.local(stored.start).strftime("%H:%M") == "10:00"
        fetched = (
            await caller.execute(integration, "get_appointment", {"appointment_id": visit["id"]})
        ).records
        assert fetched[0]["notes"] == "limping" and fetched[0]["start"] == visit["start"]

        # Two visits per 15-minute slot: a second fits, a third touching 10:15 does not.
        await caller.execute(
            integration,
            "create_appointment",
            booking(patients[1]["id"], type_id, f"{MONDAY}T16:15:00Z", f"{MONDAY}T16:30:00Z"),
        )
        before = len(server.request_log)
        with pytest.raises(IntegrationError) as full:
            await caller.execute(
                integration,
                "create_appointment",
                booking(patients[2]["id"], type_id, f"{MONDAY}T10:15:00-06:00", f"{MONDAY}T10:45:00-06:00"),
            )
        assert full.value.code == "validation_failed" and full.value.provider_status == 409
        assert "full" in (full.value.provider_message or "")
        assert len(server.request_log) - before == 1  # a refused booking is not sent again

        # A reschedule is a cancel and a new booking; the cancelled visit frees its slot.
        cancelled = await caller.execute(integration, "cancel_appointment", {"appointment_id": visit["id"]})
        assert cancelled.records[0]["action"] == "cancel"
        after = (
            await caller.execute(integration, "get_appointment", {"appointment_id": visit["id"]})
        ).records
        assert after[0]["status"] == "cancelled" and after[0]["cancelled_at"]
        rebooked = await caller.execute(
            integration,
            "create_appointment",
            booking(patients[2]["id"], type_id, f"{MONDAY}T10:15:00-06:00", f"{MONDAY}T10:45:00-06:00"),
        )
        assert rebooked.records[0]["start"] == f"{MONDAY}T16:15:00Z"
        day = await caller.execute(
            integration, "list_appointments", {"date_start": MONDAY, "date_end": "2030-03-05"}
        )
        assert sorted(row["patient_id"] for row in day.records) == sorted(
            [patients[1]["id"], patients[2]["id"]]
        )

        with pytest.raises(IntegrationError) as twice:
            await caller.execute(integration, "cancel_appointment", {"appointment_id": visit["id"]})
        assert twice.value.provider_status == 409

        with pytest.raises(IntegrationError) as closed:
            await caller.execute(
                integration,
                "create_appointment",
                booking(patients[0]["id"], type_id, "2030-03-09T16:00:00Z", "2030-03-09T16:30:00Z"),
            )
        assert closed.value.code == "validation_failed" and "business hours" in (
            closed.value.provider_message or ""
        )


@pytest.mark.parametrize("unauthenticated", ["redirect", "json_401"])
async def test_ended_session_logs_in_again(unauthenticated: str) -> None:
    caller = ProviderCaller()
    spec = {"seed": 2, "patients": 5, "appointments": 5, "timezone": ZONE}
    async with practice(spec, settings={"unauthenticated": unauthenticated}) as server:
        integration = pims(server)
        assert (await caller.execute(integration, "list_rooms")).records
        server.faults = FaultSettings(token_expire_next=1)
        assert (await caller.execute(integration, "list_rooms")).records
        server.faults = FaultSettings()
        server.token_epoch += 1  # every session ends, as POST /_sandbox/tokens/expire does
        assert (await caller.execute(integration, "list_rooms")).records
        assert logins(server) == 3
        expected = 302 if unauthenticated == "redirect" else 401
        assert [
            entry.status for entry in server.request_log if entry.path.endswith("getAppointmentView")
        ] == [
            200,
            expected,
            200,
            expected,
            200,
        ]


async def test_wrong_password_is_an_auth_failure() -> None:
    caller = ProviderCaller()
    async with practice({"seed": 2, "patients": 5, "appointments": 5}) as server:
        with pytest.raises(IntegrationError) as refused:
            await caller.execute(pims(server, password="not-it"), "list_rooms")
        assert refused.value.code == "auth_failed" and refused.value.provider_status == 401
        assert not [entry for entry in server.request_log if entry.path != "/login"]
