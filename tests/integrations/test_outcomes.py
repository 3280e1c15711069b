"""Every failed call says whether the provider may have acted on it: not_sent, refused or unknown.

A caller that must never book twice resends only what was not sent, gives up on what was
refused, and looks up what is unknown before sending it again.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_integrations import connect_opendental

from clinicsync.integrations.errors import IntegrationError
from clinicsync.sandbox import FaultSettings, run_sandbox

FAST = {"requests": 100, "per_seconds": 1}


async def first_ids(
    client: httpx.AsyncClient, headers: dict[str, str], integration_id: str
) -> dict[str, Any]:
    async def one(function: str) -> Any:
        answer = await client.post(
            f"/api/integrations/{integration_id}",
            headers=headers,
            json={"function": function, "params": {}, "max_records": 1},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["records"][0]["id"]

    return {
        "patient_id": await one("list_patients"),
        "operatory_id": await one("list_operatories"),
        "practitioner_id": await one("list_providers"),
    }


async def test_a_create_committed_but_answer_dropped_is_outcome_unknown(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("opendental") as server:
        integration_id = await connect_opendental(client, tenant.headers, server, rate_limit=FAST)
        ids = await first_ids(client, tenant.headers, integration_id)
        server.faults = FaultSettings(drop_after_commit_rate=1.0, match_path="/appointments$")
        booked = await client.post(
            f"/api/integrations/{integration_id}",
            headers=tenant.headers,
            json={
                "function": "create_appointment",
                "params": {**ids, "start": "2031-05-06T15:00:00Z", "notes": "ref CS-LOST1"},
            },
        )
        assert booked.status_code == 502, booked.text
        error = booked.json()["error"]
        assert error["code"] == "outcome_unknown"
        assert error["details"]["outcome"] == "unknown"
        assert "look the record up" in error["message"]
        # Sent once (a non-idempotent write is never resent blindly), and the PMS did commit it.
        posts = [entry for entry in server.request_log if entry.method == "POST"]
        assert len(posts) == 1 and "dropped_status:201" in posts[0].faults
        server.faults = FaultSettings()
        found = await client.post(
            f"/api/integrations/{integration_id}",
            headers=tenant.headers,
            json={"function": "list_appointments", "params": {"patient_id": ids["patient_id"]}},
        )
        assert [row["notes"] for row in found.json()["records"]].count("ref CS-LOST1") == 1


async def test_a_refused_write_is_refused_and_a_5xx_write_is_unknown(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("opendental") as server:
        integration_id = await connect_opendental(client, tenant.headers, server, rate_limit=FAST)
        ids = await first_ids(client, tenant.headers, integration_id)
        refused = await client.post(
            f"/api/integrations/{integration_id}",
            headers=tenant.headers,
            json={
                "function": "create_appointment",
                "params": {**ids, "operatory_id": 987654, "start": "2031-05-06T15:00:00Z"},
            },
        )
        assert refused.status_code in (404, 422), refused.text
        assert refused.json()["error"]["details"]["outcome"] == "refused"

        server.faults = FaultSettings(error_rate=1.0, error_statuses=[500], match_path="/appointments$")
        failed = await client.post(
            f"/api/integrations/{integration_id}",
            headers=tenant.headers,
            json={"function": "create_appointment", "params": {**ids, "start": "2031-05-06T16:00:00Z"}},
        )
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"]["code"] == "unavailable"
        assert failed.json()["error"]["details"]["outcome"] == "unknown"


async def test_a_provider_that_is_down_is_not_sent(client: httpx.AsyncClient, tenant_factory: Any) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("opendental") as server:
        integration_id = await connect_opendental(client, tenant.headers, server, rate_limit=FAST)
    # The sandbox has stopped: nothing listens on its port any more.
    down = await client.post(
        f"/api/integrations/{integration_id}",
        headers=tenant.headers,
        json={
            "function": "create_appointment",
            "params": {"patient_id": 1, "operatory_id": 1, "start": "2031-05-06T15:00:00Z"},
        },
    )
    assert down.status_code == 503, down.text
    assert down.json()["error"]["details"]["outcome"] == "not_sent"


@pytest.mark.parametrize(
    ("code", "not_sent", "outcome"),
    [
        ("validation_failed", False, "refused"),
        ("auth_failed", False, "refused"),
        ("rate_limited", True, "not_sent"),
        ("timeout", False, "unknown"),
        ("outcome_unknown", False, "unknown"),
    ],
)
def test_outcome_follows_code_and_whether_it_was_sent(code: Any, not_sent: bool, outcome: str) -> None:
    error = IntegrationError(code, "x", request_not_sent=not_sent)
    assert error.outcome == outcome and error.details["outcome"] == outcome
