"""The shipped Cliniko definition against the Cliniko simulator, over real HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from clinicsync.integrations.definitions import PROVIDERS_DIR, RetrySpec, load_definition_file
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.runtime import ProviderCaller, ResolvedIntegration
from clinicsync.sandbox import FaultSettings, SandboxServer, run_sandbox

FAST_RETRY = RetrySpec(attempts=5, base_delay=0.05, max_delay=0.4, max_retry_after=5)
# 130 patients make two pages of the definition's 100; a few appointments are cancelled by the generator.
CLINIC = {"seed": 11, "patients": 130, "appointments": 160, "days_before": 10, "days_after": 20}


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def cliniko(server: SandboxServer) -> ResolvedIntegration:
    # The shipped rate limit (200/min) is left out: these tests send a few dozen requests at once.
    definition = load_definition_file(PROVIDERS_DIR / "cliniko.yaml").model_copy(
        update={"rate_limit": None, "retry": FAST_RETRY, "timeout_seconds": 5}
    )
    info = server.credentials()
    return ResolvedIntegration(
        key=uuid.uuid4().hex,
        revision="1",
        definition=definition,
        settings={**definition.settings, "shard": info["shard"], "timezone": "Australia/Sydney"},
        secrets={"api_key": info["api_key"]},
        base_url=server.base_url,
    )


async def references(caller: ProviderCaller, integration: ResolvedIntegration) -> dict[str, str]:
    businesses = (await caller.execute(integration, "list_businesses")).records
    practitioners = (await caller.execute(integration, "list_practitioners")).records
    types = (await caller.execute(integration, "list_appointment_types")).records
    assert businesses and practitioners and types
    assert all(isinstance(row["duration_minutes"], int) for row in types)
    return {
        "business_id": businesses[0]["id"],
        "practitioner_id": practitioners[0]["id"],
        "appointment_type_id": types[0]["id"],
        "duration": str(types[0]["duration_minutes"]),
    }


async def test_patients_list_in_pages_get_and_create() -> None:
    caller = ProviderCaller()
    async with run_sandbox("cliniko", spec=CLINIC) as server:
        integration = cliniko(server)
        listed = await caller.execute(integration, "list_patients")
        assert listed.pages == 2 and len(listed.records) == 130
        ids = [row["id"] for row in listed.records]
        # 64-bit ids stay exact strings (a float would round them).
        assert len(set(ids)) == 130 and all(isinstance(value, str) and int(value) > 2**53 for value in ids)
        assert all(row["phone"] and row["updated_at"].endswith("Z") for row in listed.records)

        first = listed.records[0]
        fetched = (await caller.execute(integration, "get_patient", {"patient_id": first["id"]})).records
        assert fetched == [first]

        created = await caller.execute(
            integration,
            "create_patient",
            {
                "first_name": "Ada",
                "last_name": "Okafor",
                "email": "ada@example.org",
                "date_of_birth": "1990-02-03",
            },
        )
        patient = created.records[0]
        assert patient["date_of_birth"] == "1990-02-03" and patient["email"] == "ada@example.org"
        again = await caller.execute(integration, "get_patient", {"patient_id": patient["id"]})
        assert again.records[0]["last_name"] == "Okafor"

        changed = await caller.execute(integration, "list_patients", {"updated_since": patient["updated_at"]})
        assert changed.records == []  # strictly after: the new patient's own second is not repeated

        with pytest.raises(IntegrationError) as missing:
            await caller.execute(integration, "get_patient", {"patient_id": "1000000000000000999999"})
        assert missing.value.code == "not_found"


async def test_appointments_create_move_cancel_and_deltas_see_the_cancellation() -> None:
    caller = ProviderCaller()
    async with run_sandbox("cliniko", spec=CLINIC) as server:
        integration = cliniko(server)
        refs = await references(caller, integration)
        live = await caller.execute(integration, "list_appointments")
        assert live.pages == 2 and len(live.records) > 100
        assert all(row["cancelled_at"] is None for row in live.records)
        patient_id = live.records[0]["patient_id"]
        assert int(patient_id) > 2**53

        created = await caller.execute(
            integration,
            "create_appointment",
            {
                "patient_id": patient_id,
                "practitioner_id": refs["practitioner_id"],
                "appointment_type_id": refs["appointment_type_id"],
                "business_id": refs["business_id"],
                # Sydney local time with an offset; Cliniko only takes UTC with Z.
                "start": "2030-03-04T09:00:00+11:00",
                "notes": "first visit",
            },
        )
        appointment = created.records[0]
        assert appointment["start"] == "2030-03-03T22:00:00Z"
        assert appointment["patient_id"] == patient_id
        assert appointment["business_id"] == refs["business_id"]
        # No end given: the appointment type's length.
        length = timedelta(minutes=int(refs["duration"]))
        assert utc(appointment["end"]) - utc(appointment["start"]) == length

        fetched = await caller.execute(integration, "get_appointment", {"appointment_id": appointment["id"]})
        assert fetched.records[0]["notes"] == "first visit"

        moved = await caller.execute(
            integration,
            "update_appointment",
            {"appointment_id": appointment["id"], "start": "2030-03-05T01:00:00Z", "notes": "moved"},
        )
        assert moved.records[0]["start"] == "2030-03-05T01:00:00Z" and moved.records[0]["notes"] == "moved"
        # Moving the start keeps the visit's length.
        assert utc(moved.records[0]["end"]) - utc(moved.records[0]["start"]) == length
        since = moved.records[0]["updated_at"]

        server.clock.advance(5)
        cancelled = await caller.execute(
            integration,
            "cancel_appointment",
            {"appointment_id": appointment["id"], "reason": "sick", "notes": "flu"},
        )
        assert cancelled.status_code == 204 and cancelled.records == []
        after = (
            await caller.execute(integration, "get_appointment", {"appointment_id": appointment["id"]})
        ).records
        assert after[0]["cancelled_at"] and after[0]["cancellation_reason"] == 30

        # The default list hides it; the delta still reports it.
        remaining = await caller.execute(integration, "list_appointments")
        assert appointment["id"] not in {row["id"] for row in remaining.records}
        delta = await caller.execute(integration, "list_appointments", {"updated_since": since})
        assert [row["id"] for row in delta.records] == [appointment["id"]]
        assert delta.records[0]["cancelled_at"] == after[0]["cancelled_at"]

        with pytest.raises(IntegrationError) as missing:
            await caller.execute(integration, "get_appointment", {"appointment_id": "1000000000000000999999"})
        assert missing.value.code == "not_found"


async def test_unknown_patient_is_a_validation_error_sent_once() -> None:
    caller = ProviderCaller()
    async with run_sandbox("cliniko", spec={"seed": 2, "patients": 5, "appointments": 5}) as server:
        integration = cliniko(server)
        refs = await references(caller, integration)
        before = len(server.request_log)
        with pytest.raises(IntegrationError) as refused:
            await caller.execute(
                integration,
                "create_appointment",
                {
                    "patient_id": "1000000000000000999999",
                    "practitioner_id": refs["practitioner_id"],
                    "appointment_type_id": refs["appointment_type_id"],
                    "business_id": refs["business_id"],
                    "start": "2030-03-04T09:00:00Z",
                },
            )
        assert refused.value.code == "validation_failed"
        assert refused.value.provider_message and "patient must exist" in refused.value.provider_message
        assert len(server.request_log) - before == 1


async def test_rate_limit_reset_is_waited_out_and_reads_survive_server_errors() -> None:
    caller = ProviderCaller()
    async with run_sandbox("cliniko", spec={"seed": 2, "patients": 5, "appointments": 5}) as server:
        integration = cliniko(server)
        server.faults = FaultSettings(
            rate_limit_next=2, retry_after_seconds=1, match_path="/v1/practitioners"
        )
        result = await caller.execute(integration, "list_practitioners")
        assert result.records
        statuses = [entry.status for entry in server.request_log if entry.path.endswith("/practitioners")]
        assert statuses == [429, 429, 200]

        server.faults = FaultSettings(error_rate=1.0, error_statuses=[503], match_path="/v1/businesses")
        with pytest.raises(IntegrationError) as failing:
            await caller.execute(integration, "list_businesses")
        assert failing.value.code == "unavailable"
        assert len([entry for entry in server.request_log if entry.path.endswith("/businesses")]) == 5
