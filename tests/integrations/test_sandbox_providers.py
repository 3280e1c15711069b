"""Shipped definitions against the sandbox simulators over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import pytest

from clinicsync.integrations.definitions import PROVIDERS_DIR, RateLimitSpec, RetrySpec, load_definition_file
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.runtime import ProviderCaller, ResolvedIntegration
from clinicsync.sandbox import FaultSettings, run_sandbox

FAST_RETRY = RetrySpec(attempts=6, base_delay=0.05, max_delay=0.4, max_retry_after=5)


def opendental(server: Any, rate_limit: RateLimitSpec | None = None) -> ResolvedIntegration:
    definition = load_definition_file(PROVIDERS_DIR / "opendental.yaml").model_copy(
        update={"rate_limit": rate_limit, "retry": FAST_RETRY, "timeout_seconds": 2}
    )
    writer = next(key for key, access in server.od.customer_keys.items() if access == "readwrite")
    return ResolvedIntegration(
        key=uuid.uuid4().hex,
        revision="1",
        definition=definition,
        settings={"timezone": "America/Chicago"},
        secrets={"developer_key": server.od.developer_key, "customer_key": writer},
        base_url=server.base_url,
    )


async def test_opendental_functions_round_trip() -> None:
    caller = ProviderCaller()
    async with run_sandbox("opendental") as server:
        integration = opendental(server)
        providers = (await caller.execute(integration, "list_providers")).records
        operatories = (await caller.execute(integration, "list_operatories")).records
        patients = await caller.execute(integration, "list_patients")
        assert providers and operatories and patients.pages >= 2 and len(patients.records) > 100
        created = await caller.execute(
            integration,
            "create_appointment",
            {
                "patient_id": patients.records[0]["id"],
                "operatory_id": operatories[0]["id"],
                "practitioner_id": providers[0]["id"],
                "start": "2030-03-04T15:00:00Z",
                "duration_minutes": 40,
                "notes": "first visit",
            },
        )
        appointment = created.records[0]
        # 15:00 UTC is 09:00 in Chicago (CST); read back as the same instant.
        assert appointment["start"] == "2030-03-04T15:00:00Z"
        assert appointment["duration_minutes"] == 40 and appointment["status"] == "booked"
        fetched = await caller.execute(integration, "get_appointment", {"appointment_id": appointment["id"]})
        assert fetched.records[0]["notes"] == "first visit"
        moved = await caller.execute(
            integration,
            "update_appointment",
            {"appointment_id": appointment["id"], "start": "2030-03-05T16:00:00Z"},
        )
        assert moved.records[0]["start"] == "2030-03-05T16:00:00Z"
        await caller.execute(
            integration, "break_appointment", {"appointment_id": appointment["id"], "reason": "cancelled"}
        )
        broken = await caller.execute(integration, "get_appointment", {"appointment_id": appointment["id"]})
        assert broken.records[0]["status"] == "cancelled"
        with pytest.raises(IntegrationError) as missing:
            await caller.execute(integration, "get_appointment", {"appointment_id": 999999})
        assert missing.value.code == "not_found"


@pytest.mark.parametrize(
    "faults",
    [
        {"error_rate": 1.0, "error_statuses": [500]},
        {"rate_limit_next": 2, "retry_after_seconds": 1},
        {"reset_rate": 1.0},
        {"hang_rate": 1.0, "hang_seconds": 30},
    ],
    ids=["500", "429-retry-after", "reset", "timeout"],
)
async def test_reads_succeed_once_faults_clear(faults: dict[str, Any]) -> None:
    caller = ProviderCaller()
    async with run_sandbox("opendental") as server:
        integration = opendental(server)
        integration.definition = integration.definition.model_copy(update={"timeout_seconds": 0.5})
        server.faults = FaultSettings(**faults, match_path="/api/v1/providers")

        async def clear_soon() -> None:
            await asyncio.sleep(0.1)
            if "rate_limit_next" not in faults:  # 429s run out on their own
                server.faults = FaultSettings()

        clearing = asyncio.create_task(clear_soon())
        result = await caller.execute(integration, "list_providers")
        await clearing
        assert result.records
        faulted = [entry for entry in server.request_log if entry.faults]
        assert faulted


async def test_provider_validation_error_is_not_retried_and_carries_its_message() -> None:
    caller = ProviderCaller()
    async with run_sandbox("opendental") as server:
        integration = opendental(server)
        before = len(server.request_log)
        with pytest.raises(IntegrationError) as error:
            await caller.execute(
                integration,
                "create_appointment",
                {"patient_id": 1, "operatory_id": 987654, "start": "2030-01-01T10:00:00Z"},
            )
        assert error.value.code in ("validation_failed", "not_found")
        assert error.value.provider_message
        assert len(server.request_log) - before == 1


async def test_rate_limit_holds_across_twenty_concurrent_callers() -> None:
    caller = ProviderCaller()
    limit, window = 10, 0.5
    async with run_sandbox("opendental") as server:
        integration = opendental(server, RateLimitSpec(requests=limit, per_seconds=window))
        server.request_log.clear()
        await asyncio.gather(*(caller.execute(integration, "list_operatories") for _ in range(20)))
        times = sorted(datetime.fromisoformat(entry.time).timestamp() for entry in server.request_log)
        assert len(times) == 20
        for i, start in enumerate(times):
            assert len([t for t in times[i:] if t < start + window]) <= limit + 1
        assert times[-1] - times[0] >= window
