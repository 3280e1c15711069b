"""Clinics connected to sandbox PMSs that take PMS data in, and helpers to run and watch runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from clinicsync.sandbox import SandboxServer
from tests.factories import Tenant, TenantFactory
from tests.sync.conftest import FAST_HTTP, connect_google, connect_opendental

ZONE = "America/Chicago"
PULLING = {"sync_enabled": True, "sync_direction": "from_external"}
# A small vet clinic: visits from 10 days back to 10 days ahead, consultations for past visits.
VET_CLINIC = {
    "seed": 11,
    "patients": 30,
    "appointments": 60,
    "days_before": 10,
    "days_after": 10,
    "timezone": ZONE,
}


@dataclass
class Pulling:
    """An organization whose integration with a sandbox PMS takes PMS data in."""

    tenant: Tenant
    sandbox: SandboxServer
    integration_id: str

    @property
    def headers(self) -> dict[str, str]:
        return self.tenant.headers

    @property
    def organization_id(self) -> str:
        return str(self.tenant.organization_id)


async def pull_from(client: httpx.AsyncClient, tenant: Tenant, integration_id: str, **config: Any) -> None:
    response = await client.post(
        "/api/admin/integration-settings",
        headers=tenant.headers,
        json={"integration_id": integration_id, **PULLING, **config},
    )
    assert response.status_code == 201, response.text


async def connect_vet(client: httpx.AsyncClient, tenant: Tenant, pims: SandboxServer, **config: Any) -> str:
    info = pims.credentials()
    created = await client.post(
        "/api/admin/integrations",
        headers=tenant.headers,
        json={
            **FAST_HTTP,
            "provider_key": "vet_pims",
            "base_url": pims.root_url,
            "settings": {"timezone": ZONE, "appointment_type_id": next(iter(pims.store.types))},  # type: ignore[attr-defined]
        },
    )
    assert created.status_code == 201, created.text
    integration_id: str = created.json()["id"]
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=tenant.headers,
        json={
            "provider_key": "vet_pims",
            "integration_id": integration_id,
            "secrets": {"username": info["username"], "password": info["password"]},
        },
    )
    assert credential.status_code == 201, credential.text
    await pull_from(client, tenant, integration_id, **config)
    return integration_id


@pytest.fixture
async def vet(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> Pulling:
    pims = await sandboxes("vet_pims", spec=VET_CLINIC)
    tenant = await tenant_factory(time_zone=ZONE)
    return Pulling(tenant, pims, await connect_vet(client, tenant, pims))


@pytest.fixture
async def opendental_pull(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> AsyncIterator[Pulling]:
    yield await pulling_opendental(
        client,
        tenant_factory,
        sandboxes,
        {"seed": 5, "patients": 20, "appointments": 40, "days_before": 10, "days_after": 10},
    )


async def pulling_opendental(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
    spec: dict[str, int],
) -> Pulling:
    """A clinic reading an OpenDental sandbox generated with this spec."""
    sandbox = await sandboxes("opendental", spec=spec, timezone=ZONE)
    tenant = await tenant_factory(time_zone=ZONE)
    integration_id, pms, _provider = await connect_opendental(client, tenant, sandbox)
    await pms.aclose()
    await pull_from(client, tenant, integration_id)
    return Pulling(tenant, sandbox, integration_id)


@pytest.fixture
async def google_pull(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> Pulling:
    """A clinic whose Google Calendar (the sandbox's) is read into clinicsync."""
    google = await sandboxes(
        "google_calendar",
        spec={"seed": 3, "patients": 10, "appointments": 30, "days_before": 5, "days_after": 5},
    )
    tenant = await tenant_factory(time_zone=ZONE)
    integration_id, api, _calendar_id = await connect_google(client, tenant, google)
    await api.aclose()
    await pull_from(client, tenant, integration_id)
    return Pulling(tenant, google, integration_id)


async def start(client: httpx.AsyncClient, clinic: Pulling, **ask: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/sync/trigger", headers=clinic.headers, json={"integration_id": clinic.integration_id, **ask}
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def finished(
    client: httpx.AsyncClient, clinic: Pulling, sync_id: str, timeout: float = 60.0
) -> dict[str, Any]:
    """Polls the run's progress until it ends, then answers the run's full record."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        progress = await client.get(f"/api/v1/sync/progress/{sync_id}", headers=clinic.headers)
        assert progress.status_code == 200, progress.text
        if progress.json()["status"] not in ("starting", "running"):
            break
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {sync_id} still {progress.json()} after {timeout} s")
        await asyncio.sleep(0.1)
    detail = await client.get(f"/api/v1/sync/runs/{sync_id}", headers=clinic.headers)
    assert detail.status_code == 200, detail.text
    run: dict[str, Any] = detail.json()
    return run


async def run_to_end(client: httpx.AsyncClient, clinic: Pulling, **ask: Any) -> dict[str, Any]:
    started = await start(client, clinic, **ask)
    return await finished(client, clinic, started["sync_id"])


async def cases(client: httpx.AsyncClient, clinic: Pulling, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await client.get(
            "/api/v1/sync/cases", headers=clinic.headers, params={"limit": 500, "offset": offset, **params}
        )
        assert page.status_code == 200, page.text
        rows = page.json()
        found += rows
        if len(rows) < 500:
            return found
        offset += 500
