"""A clinic with two locations of one PMS: calls address an integration, never "the provider"."""

from __future__ import annotations

from typing import Any

import httpx
from sandbox_integrations import connect_opendental

from clinicsync.sandbox import run_sandbox

FAST = {"requests": 100, "per_seconds": 1}


async def test_each_location_is_called_by_its_integration_id(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("opendental") as north, run_sandbox("opendental") as south:
        north_id = await connect_opendental(
            client, tenant.headers, north, location_label="North St", rate_limit=FAST
        )
        south_id = await connect_opendental(
            client, tenant.headers, south, location_label="South St", rate_limit=FAST
        )
        north.request_log.clear()
        south.request_log.clear()
        for integration_id, sandbox, other in ((north_id, north, south), (south_id, south, north)):
            ran = await client.post(
                f"/api/integrations/{integration_id}",
                headers=tenant.headers,
                json={"function": "list_providers", "params": {}},
            )
            assert ran.status_code == 200, ran.text
            assert ran.json()["integration_id"] == integration_id and ran.json()["provider"] == "opendental"
            assert ran.json()["count"] > 0
            assert len(sandbox.request_log) == 1 and not other.request_log
            sandbox.request_log.clear()

            status = await client.get(f"/api/integrations/{integration_id}", headers=tenant.headers)
            assert status.status_code == 200, status.text
            assert status.json()["integration_id"] == integration_id

        # The provider key alone is ambiguous now; the answer says how to choose.
        ambiguous = await client.post(
            "/api/integrations/opendental",
            headers=tenant.headers,
            json={"function": "list_providers", "params": {}},
        )
        assert ambiguous.status_code == 422
        error = ambiguous.json()["error"]
        assert error["details"][0]["field"] == "location"
        assert "North St" in error["message"] and "by its id" in error["message"]
        # ...and the existing form with a location still works.
        by_location = await client.post(
            "/api/integrations/opendental",
            headers=tenant.headers,
            json={"function": "list_providers", "params": {}, "location": "South St"},
        )
        assert by_location.status_code == 200 and by_location.json()["integration_id"] == south_id


async def test_another_organizations_integration_id_is_not_found(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    ours, theirs = await tenant_factory(), await tenant_factory()
    async with run_sandbox("opendental") as sandbox:
        integration_id = await connect_opendental(client, ours.headers, sandbox, rate_limit=FAST)
        answer = await client.post(
            f"/api/integrations/{integration_id}",
            headers=theirs.headers,
            json={"function": "list_providers", "params": {}},
        )
        assert answer.status_code == 404
        assert not sandbox.request_log
