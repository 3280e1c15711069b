"""The four scenarios and the toggles on Cliniko, Google Calendar and a provider defined at runtime.

OpenDental has its own files (test_dual_write, test_toggles, test_external_only); here one
scenario walk runs on every other provider, with no provider-specific code in the SyncManager:
what differs is only how each is connected.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.integrations import canonical
from clinicsync.integrations.canonical import SyncOperation
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.sandbox import run_sandbox
from tests.conftest import RunningServer
from tests.factories import Clinic, TenantFactory, future_day, open_clinic
from tests.sync.conftest import DUAL_WRITE, EXTERNAL_ONLY, FAST_HTTP, eventually

# The runtime provider and its test server are shared with the canonical-operation tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))
from integration_servers import serve
from test_canonical_runtime_provider import DEFINITION, TOKEN, bookwell


class Pms:
    """One organization's integration, read back through canonical operations over HTTP."""

    def __init__(self, executor: IntegrationExecutor, clinic: Clinic, integration_id: str) -> None:
        self.executor, self.clinic, self.integration_id = executor, clinic, integration_id

    async def get(self, external_id: str) -> dict[str, Any]:
        result = await canonical.perform(
            self.executor,
            self.clinic.tenant.organization_id,
            uuid.UUID(self.integration_id),
            SyncOperation.APPOINTMENT_GET,
            {"id": external_id},
        )
        assert result.records, f"appointment {external_id} is not in the PMS"
        return result.records[0]


Connector = Callable[[httpx.AsyncClient, Clinic], Awaitable[tuple[str, str | None]]]


async def _integration(
    client: httpx.AsyncClient, clinic: Clinic, body: dict[str, Any], secrets: dict[str, str]
) -> str:
    created = await client.post("/api/admin/integrations", headers=clinic.headers, json={**FAST_HTTP, **body})
    assert created.status_code == 201, created.text
    integration_id = str(created.json()["id"])
    credential = await client.post(
        "/api/admin/api-credentials",
        headers=clinic.headers,
        json={"provider_key": body["provider_key"], "integration_id": integration_id, "secrets": secrets},
    )
    assert credential.status_code == 201, credential.text
    return integration_id


@asynccontextmanager
async def cliniko(
    client: httpx.AsyncClient, clinic: Clinic, server: RunningServer
) -> AsyncIterator[tuple[str, str | None]]:
    async with run_sandbox("cliniko", spec={"patients": 3, "appointments": 0}) as sandbox:
        info = sandbox.credentials()
        settings = {"shard": info["shard"]}
        integration_id = await _integration(
            client,
            clinic,
            {"provider_key": "cliniko", "base_url": sandbox.base_url, "settings": settings},
            {"api_key": info["api_key"]},
        )
        auth = httpx.BasicAuth(info["api_key"], "")
        ua = {
            "User-Agent": info.get("user_agent", "clinicsync tests (dev@example.com)"),
            "Accept": "application/json",
        }
        async with httpx.AsyncClient(base_url=sandbox.base_url, auth=auth, headers=ua) as raw:
            business = (await raw.get("/businesses")).json()["businesses"][0]["id"]
            kind = (await raw.get("/appointment_types")).json()["appointment_types"][0]["id"]
            practitioner = (await raw.get("/practitioners")).json()["practitioners"][0]["id"]
        patched = await client.patch(
            f"/api/admin/integrations/{integration_id}",
            headers=clinic.headers,
            json={"settings": {**settings, "business_id": str(business), "appointment_type_id": str(kind)}},
        )
        assert patched.status_code == 200, patched.text
        yield integration_id, str(practitioner)


@asynccontextmanager
async def google_calendar(
    client: httpx.AsyncClient, clinic: Clinic, server: RunningServer
) -> AsyncIterator[tuple[str, str | None]]:
    async with run_sandbox("google_calendar", spec={"patients": 3, "appointments": 0}) as google:
        info = google.credentials()
        integration_id = await _integration(
            client,
            clinic,
            {
                "provider_key": "google_calendar",
                "base_url": google.base_url,
                "auth": {"type": "bearer"},
                "settings": {"calendar_id": info["calendar_id"]},
            },
            {"token": info["access_token"]},
        )
        yield integration_id, None  # a calendar keeps our own practitioner and patient ids


@asynccontextmanager
async def runtime_provider(
    client: httpx.AsyncClient, clinic: Clinic, server: RunningServer
) -> AsyncIterator[tuple[str, str | None]]:
    app, _visits = bookwell()
    async with serve(app) as base_url:
        uploaded = await client.post(
            "/api/admin/integrations/definitions",
            headers={**clinic.headers, "Content-Type": "application/yaml"},
            content=DEFINITION.format(base_url=base_url),
        )
        assert uploaded.status_code == 201, uploaded.text
        integration_id = str(uploaded.json()["id"])
        credential = await client.post(
            "/api/admin/api-credentials",
            headers=clinic.headers,
            json={"provider_key": "bookwell", "integration_id": integration_id, "secrets": {"token": TOKEN}},
        )
        assert credential.status_code == 201, credential.text
        yield integration_id, "c2"


PROVIDERS = {"cliniko": cliniko, "google_calendar": google_calendar, "runtime": runtime_provider}


async def _book(client: httpx.AsyncClient, clinic: Clinic, hour: int) -> dict[str, Any]:
    start = clinic.local(future_day(), hour)
    created = await client.post(
        "/api/v1/appointments",
        headers=clinic.headers,
        json={
            "patient_id": str(clinic.patient_id),
            "practitioner_id": str(clinic.practitioner_id),
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
        },
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def _ref(
    client: httpx.AsyncClient, clinic: Clinic, appointment_id: str, state: str
) -> dict[str, Any] | None:
    body = (await client.get(f"/api/v1/appointments/{appointment_id}", headers=clinic.headers)).json()
    refs = body["external_refs"]
    return refs[0] if refs and refs[0]["sync_state"] == state else None


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_scenarios_and_toggles(
    provider: str,
    client: httpx.AsyncClient,
    server: RunningServer,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_factory: TenantFactory,
) -> None:
    tenant = await tenant_factory(time_zone="Australia/Sydney")
    clinic = await open_clinic(client, tenant, start="00:00", end="23:59")
    async with PROVIDERS[provider](client, clinic, server) as (integration_id, practitioner_external):
        if practitioner_external is not None:
            linked = await client.post(
                "/api/admin/sync/links",
                headers=clinic.headers,
                json={
                    "integration_id": integration_id,
                    "record_type": "practitioner",
                    "record_id": str(clinic.practitioner_id),
                    "external_id": practitioner_external,
                },
            )
            assert linked.status_code == 201, linked.text
        pms = Pms(IntegrationExecutor(sessionmaker, server.settings), clinic, integration_id)
        created = await client.post(
            "/api/admin/integration-settings", headers=clinic.headers, json={"integration_id": integration_id}
        )
        assert created.status_code == 201, created.text
        url = f"/api/admin/integration-settings/{created.json()['id']}"

        async def settle(**fields: Any) -> None:
            response = await client.put(url, headers=clinic.headers, json=fields)
            assert response.status_code == 200, response.text

        # Scenario 1, local only (and from_external, and sync on with create off): nothing leaves.
        for hour, fields in enumerate(
            (
                {},
                {"sync_enabled": True, "sync_direction": "from_external"},
                {**DUAL_WRITE, "sync_on_create": False},
            ),
            start=6,
        ):
            await settle(**fields)
            assert (await _book(client, clinic, hour))["external_refs"] == []

        # Scenario 2, dual-write, with update and delete toggles on.
        await settle(**DUAL_WRITE, sync_on_create=True, sync_on_update=True, sync_on_delete=True)
        booked = await _book(client, clinic, 10)
        ref = await eventually(lambda: _ref(client, clinic, booked["id"], "confirmed"))
        held = await pms.get(ref["external_id"])
        assert booked["booking_reference"] in (held["note"] or "")
        moved_to = clinic.local(future_day(), 12)
        patched = await client.patch(
            f"/api/v1/appointments/{booked['id']}",
            headers=clinic.headers,
            json={"start": moved_to.isoformat()},
        )
        assert patched.status_code == 200, patched.text

        async def moved() -> bool:
            return bool((await pms.get(ref["external_id"]))["starts_at"] == moved_to)

        await eventually(moved)
        cancelled = await client.post(
            f"/api/v1/appointments/{booked['id']}/cancel", headers=clinic.headers, json={}
        )
        assert cancelled.status_code == 200

        async def gone() -> bool:
            return bool((await pms.get(ref["external_id"]))["status"] == "cancelled")

        await eventually(gone)

        # Update toggle off: a reschedule stays local.
        await settle(sync_on_update=False)
        kept = await _book(client, clinic, 14)
        kept_ref = await eventually(lambda: _ref(client, clinic, kept["id"], "confirmed"))
        later = clinic.local(future_day(), 15)
        await client.patch(
            f"/api/v1/appointments/{kept['id']}", headers=clinic.headers, json={"start": later.isoformat()}
        )
        assert (await pms.get(kept_ref["external_id"]))["starts_at"] == clinic.local(future_day(), 14)

        # Scenario 4, bidirectional: local writes are pushed too.
        await settle(sync_direction="bidirectional", sync_on_update=True)
        both = await _book(client, clinic, 16)
        await eventually(lambda: _ref(client, clinic, both["id"], "confirmed"))

        # Scenario 3, external-only: the PMS is written before the caller hears back.
        await settle(**EXTERNAL_ONLY)
        direct = await _book(client, clinic, 18)
        assert direct["external_refs"][0]["sync_state"] == "accepted"
        in_pms = await pms.get(direct["external_refs"][0]["external_id"])
        assert direct["booking_reference"] in (in_pms["note"] or "")
