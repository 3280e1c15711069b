"""The shipped Dentrix Ascend definition against the Ascend simulator, over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from clinicsync.integrations.definitions import PROVIDERS_DIR, RetrySpec, load_definition_file
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.runtime import ProviderCaller, ResolvedIntegration
from clinicsync.sandbox import FaultSettings, run_sandbox
from clinicsync.sandbox.dentrix_ascend import TOKEN_PATH, DentrixAscendSandbox

FAST_RETRY = RetrySpec(attempts=5, base_delay=0.05, max_delay=0.4, max_retry_after=5)
# 200 patients are exactly two pages of 100: the total in meta.pagination ends the listing
# without asking for an empty third page.
CLINIC = {"seed": 8, "patients": 200, "appointments": 150, "days_before": 10, "days_after": 20}
SMALL = {"seed": 2, "patients": 5, "appointments": 10}


def ascend(server: DentrixAscendSandbox) -> ResolvedIntegration:
    shipped = load_definition_file(PROVIDERS_DIR / "dentrix_ascend.yaml")
    info = server.credentials()
    # The token endpoint is at the gateway's root, outside the API prefix, as in production.
    definition = shipped.model_copy(
        update={
            "retry": FAST_RETRY,
            "timeout_seconds": 5,
            "auth": shipped.auth.model_copy(update={"token_url": info["token_url"]}),
        }
    )
    return ResolvedIntegration(
        key=uuid.uuid4().hex,
        revision="1",
        definition=definition,
        settings={
            **definition.settings,
            "organization_id": info["organization_id"],
            "timezone": "America/Denver",
        },
        secrets={"client_id": info["client_id"], "client_secret": info["client_secret"]},
        base_url=server.base_url,
    )


@asynccontextmanager
async def gateway(spec: dict[str, Any], **options: Any) -> AsyncIterator[DentrixAscendSandbox]:
    async with run_sandbox(DentrixAscendSandbox, spec=spec, **options) as server:
        assert isinstance(server, DentrixAscendSandbox)
        yield server


def token_requests(server: DentrixAscendSandbox) -> int:
    return sum(1 for entry in server.request_log if entry.path == TOKEN_PATH)


async def test_patients_in_pages_get_and_create() -> None:
    caller = ProviderCaller()
    async with gateway(CLINIC) as server:
        integration = ascend(server)
        listed = await caller.execute(integration, "list_patients")
        assert listed.pages == 2 and len(listed.records) == 200
        assert len({row["id"] for row in listed.records}) == 200
        # responseFields=ALL brings the contact details the default subset leaves out.
        assert all(row["phone"] for row in listed.records) and any(row["email"] for row in listed.records)
        first = listed.records[0]
        fetched = await caller.execute(integration, "get_patient", {"patient_id": first["id"]})
        assert fetched.records == [first]

        created = await caller.execute(
            integration,
            "create_patient",
            {
                "first_name": "Ada",
                "last_name": "Okafor",
                "date_of_birth": "1990-02-03",
                "email": "ada@example.org",
            },
        )
        patient = created.records[0]
        assert patient["date_of_birth"] == "1990-02-03" and patient["email"] == "ada@example.org"
        server.clock.advance(1)
        delta = await caller.execute(integration, "list_patients", {"updated_since": patient["updated_at"]})
        assert [row["id"] for row in delta.records] == [patient["id"]]
        assert token_requests(server) == 1  # one token for all of it

        with pytest.raises(IntegrationError) as missing:
            await caller.execute(integration, "get_patient", {"patient_id": 999})
        assert missing.value.code == "not_found" and "No patient" in (missing.value.provider_message or "")


async def test_appointments_create_move_cancel_and_delta() -> None:
    caller = ProviderCaller()
    async with gateway(CLINIC) as server:
        integration = ascend(server)
        providers = (await caller.execute(integration, "list_providers")).records
        operatories = (await caller.execute(integration, "list_operatories")).records
        patients = (await caller.execute(integration, "list_patients", max_records=1)).records
        assert providers and operatories and patients
        listed = await caller.execute(integration, "list_appointments")
        assert listed.pages == 2 and len(listed.records) == 150
        assert {"booked", "fulfilled", "cancelled"} <= {row["status"] for row in listed.records}
        assert any(row["notes"] for row in listed.records)  # notes come only with responseFields=ALL

        created = await caller.execute(
            integration,
            "create_appointment",
            {
                "patient_id": patients[0]["id"],
                "practitioner_id": providers[0]["id"],
                "operatory_id": operatories[0]["id"],
                # Denver local time with an offset, sent as UTC.
                "start": "2030-03-04T09:00:00-07:00",
                "duration_minutes": "40",
                "title": "Exam",
                "notes": "first visit",
            },
        )
        appointment = created.records[0]
        assert appointment["start"] == "2030-03-04T16:00:00Z" and appointment["duration_minutes"] == 40
        assert appointment["status"] == "pending"  # UNCONFIRMED until the office confirms
        assert appointment["patient_id"] == patients[0]["id"]
        assert appointment["operatory_id"] == operatories[0]["id"]
        fetched = await caller.execute(integration, "get_appointment", {"appointment_id": appointment["id"]})
        assert fetched.records[0]["notes"] == "first visit" and fetched.records[0]["title"] == "Exam"

        moved = await caller.execute(
            integration,
            "update_appointment",
            {"appointment_id": appointment["id"], "start": "2030-03-05T17:30:00Z", "duration_minutes": 60},
        )
        assert (
            moved.records[0]["start"] == "2030-03-05T17:30:00Z" and moved.records[0]["duration_minutes"] == 60
        )
        assert moved.records[0]["notes"] == "first visit"
        since = moved.records[0]["updated_at"]

        server.clock.advance(2)
        cancelled = await caller.execute(
            integration, "cancel_appointment", {"appointment_id": appointment["id"]}
        )
        assert cancelled.records[0]["status"] == "cancelled"
        delta = await caller.execute(integration, "list_appointments", {"updated_since": since})
        assert [(row["id"], row["status"]) for row in delta.records] == [(appointment["id"], "cancelled")]

        with pytest.raises(IntegrationError) as frozen:
            await caller.execute(
                integration, "update_appointment", {"appointment_id": appointment["id"], "notes": "too late"}
            )
        assert frozen.value.code == "validation_failed" and frozen.value.provider_status == 409

        before = len(server.request_log)
        with pytest.raises(IntegrationError) as off_grid:
            await caller.execute(
                integration,
                "create_appointment",
                {
                    "patient_id": patients[0]["id"],
                    "practitioner_id": providers[0]["id"],
                    "operatory_id": operatories[0]["id"],
                    "start": "2030-03-04T09:03:00Z",
                    "duration_minutes": 40,
                },
            )
        assert off_grid.value.code == "validation_failed" and "5-minute" in (
            off_grid.value.provider_message or ""
        )
        assert len(server.request_log) - before == 1  # a refused create is not sent again


async def test_expired_token_is_renewed_and_spike_arrest_is_waited_out() -> None:
    settings = {"endpoint_rate_limits": {"operatories": 2}, "rate_limit_window_seconds": 10}
    async with gateway(SMALL, settings=settings) as server:
        # The gateway counts windows on the sandbox clock: freeze it, and let the caller's waits
        # move it, so the window boundary falls where the test says and nobody really sleeps.
        server.clock.set(datetime(2030, 1, 7, 12, 0, 7, tzinfo=UTC), frozen=True)
        waits: list[float] = []

        async def wait_on_sandbox_clock(seconds: float) -> None:
            waits.append(seconds)
            server.clock.advance(seconds)

        caller = ProviderCaller(sleep=wait_on_sandbox_clock)
        integration = ascend(server)
        assert (await caller.execute(integration, "list_providers")).records
        server.faults = FaultSettings(token_expire_next=1)
        assert (await caller.execute(integration, "list_providers")).records
        assert token_requests(server) == 2 and waits == []  # a renewed token is not a retry

        server.request_log.clear()
        for _ in range(3):
            assert (await caller.execute(integration, "list_operatories")).records
        statuses = [entry.status for entry in server.request_log if entry.path.endswith("/operatories")]
        assert statuses == [200, 200, 429, 200]
        # The third call waited for the Retry-After the gateway named: the rest of the 10 s window.
        assert waits == [3.0]


async def test_quota_exhausted_and_vendor_disabled_fail_without_retrying() -> None:
    caller = ProviderCaller()
    async with gateway(SMALL, settings={"monthly_call_quota": 1}) as server:
        integration = ascend(server)
        assert (await caller.execute(integration, "list_providers")).records
        server.request_log.clear()
        with pytest.raises(IntegrationError) as quota:
            await caller.execute(integration, "list_providers")
        # Retry-After reaches to next month, far beyond what a call may wait.
        assert quota.value.code == "rate_limited" and (quota.value.retry_after or 0) > 5
        assert len(server.request_log) == 1

    async with gateway(SMALL, settings={"vendor_enabled": False}) as server:
        with pytest.raises(IntegrationError) as disabled:
            await caller.execute(ascend(server), "list_providers")
        assert disabled.value.code == "auth_failed" and disabled.value.provider_status == 403
        assert "not enabled" in (disabled.value.provider_message or "")
