"""Sync fixtures: the app with fast retry settings, and clinics connected to sandbox PMSs.

Delivery runs the way it does in production for each backend: in the server's process on
SQLite; on PostgreSQL through Procrastinate (a worker embedded in the test server, the same
task functions `clinicsync worker` runs).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.sandbox import SandboxServer, run_sandbox
from clinicsync.serving import serving
from tests.conftest import RunningServer
from tests.factories import Clinic, Tenant, TenantFactory, open_clinic

SYNC_SETTINGS: dict[str, Any] = {
    "sync_retry_base_seconds": 0.2,
    "sync_retry_max_seconds": 1.0,
    "sync_sweep_interval_seconds": 1.0,
    "sync_read_back_delay_seconds": 0.0,
    "sync_lease_seconds": 10.0,
    "sync_embedded_worker": True,
    "sync_worker_concurrency": 8,
}


def sync_settings(database_url: str, var_dir: Any, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        migrate_on_start=False,
        environment="test",
        var_dir=var_dir,
        secret_key="test-secret-key-for-encryption-only",
        **(SYNC_SETTINGS | overrides),
    )


@pytest.fixture
async def server(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Any
) -> AsyncIterator[RunningServer]:
    settings = sync_settings(database_url, tmp_path / "var")
    async with serving(create_app(settings)) as base_url:
        yield RunningServer(base_url, settings)


@pytest.fixture
async def sandboxes() -> AsyncIterator[Callable[..., Awaitable[SandboxServer]]]:
    async with AsyncExitStack() as stack:

        async def start(provider: str, **options: Any) -> SandboxServer:
            return await stack.enter_async_context(run_sandbox(provider, **options))

        yield start


@dataclass
class Connected:
    """A clinic whose organization has an integration with a sandbox PMS."""

    clinic: Clinic
    sandbox: SandboxServer
    integration_id: str
    pms: httpx.AsyncClient  # straight to the sandbox's API, as the PMS's own staff would see it

    @property
    def headers(self) -> dict[str, str]:
        return self.clinic.headers


FAST_HTTP = {
    "rate_limit": {"requests": 2000, "per_seconds": 1},
    "retry": {"attempts": 2, "base_delay": 0.05, "max_delay": 0.2, "max_retry_after": 2},
    "timeout_seconds": 2,
}


async def connect_opendental(
    client: httpx.AsyncClient, tenant: Tenant, sandbox: SandboxServer, **integration: Any
) -> tuple[str, httpx.AsyncClient, dict[str, Any]]:
    od: Any = sandbox.od  # type: ignore[attr-defined]
    writer = next(key for key, access in od.customer_keys.items() if access == "readwrite")
    pms = httpx.AsyncClient(
        base_url=sandbox.base_url,
        headers={"Authorization": f"ODFHIR {od.developer_key}/{writer}", "Content-Type": "application/json"},
        timeout=10,
    )
    operatories = (await pms.get("/operatories")).json()
    providers = (await pms.get("/providers")).json()
    created = await client.post(
        "/api/admin/integrations",
        headers=tenant.headers,
        json={
            "provider_key": "opendental",
            "base_url": sandbox.base_url,
            "settings": {"operatory_id": operatories[0]["OperatoryNum"], "timezone": tenant.time_zone},
            **(FAST_HTTP | integration),
        },
    )
    assert created.status_code == 201, created.text
    integration_id = created.json()["id"]
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=tenant.headers,
        json={
            "provider_key": "opendental",
            "integration_id": integration_id,
            "secrets": {"developer_key": od.developer_key, "customer_key": writer},
        },
    )
    assert credential.status_code == 201, credential.text
    return integration_id, pms, providers[0]


@pytest.fixture
async def opendental(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> AsyncIterator[Connected]:
    """A clinic connected to a fresh OpenDental sandbox; its practitioner has a provider's name there."""
    sandbox = await sandboxes("opendental", spec={"patients": 3, "appointments": 0})
    tenant = await tenant_factory(time_zone="America/Chicago")
    integration_id, pms, provider = await connect_opendental(client, tenant, sandbox)
    clinic = await open_clinic(
        client, tenant, name=f"{provider['FName']} {provider['LName']}", start="00:00", end="23:59"
    )
    try:
        yield Connected(clinic, sandbox, integration_id, pms)
    finally:
        await pms.aclose()


async def configure(client: httpx.AsyncClient, connected: Connected, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/admin/integration-settings",
        headers=connected.headers,
        json={"integration_id": connected.integration_id, **fields},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


DUAL_WRITE = {"sync_enabled": True, "sync_direction": "to_external", "always_keep_local_copy": True}
EXTERNAL_ONLY = {"sync_enabled": True, "sync_direction": "to_external", "always_keep_local_copy": False}


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.1
) -> Any:
    """Polls until ``check`` returns something truthy (delivery is asynchronous by design)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last result: {result!r}")
        await asyncio.sleep(interval)


async def refs_of(client: httpx.AsyncClient, connected: Connected, path: str) -> list[dict[str, Any]]:
    response = await client.get(path, headers=connected.headers)
    assert response.status_code == 200, response.text
    refs: list[dict[str, Any]] = response.json()["external_refs"]
    return refs


def new_id() -> str:
    return str(uuid.uuid4())
