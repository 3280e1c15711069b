"""Helpers for inbound tests: bookings linked to OpenDental, the PMS's front desk, API Events to us."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from clinicsync.sandbox import SandboxServer
from tests.conftest import RunningServer
from tests.factories import TenantFactory, booking, open_clinic
from tests.sync.conftest import Connected, configure, connect_opendental, eventually, refs_of

ZONE = "America/Chicago"


@pytest.fixture
async def opendental(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> AsyncIterator[Connected]:
    """A clinic connected to OpenDental in the clinic's own time zone, as a real office runs it:
    its change stamps (DateTStamp) are the office's wall clock, which latest_timestamp_wins reads."""
    sandbox = await sandboxes("opendental", spec={"patients": 3, "appointments": 0}, timezone=ZONE)
    tenant = await tenant_factory(time_zone=ZONE)
    integration_id, pms, provider = await connect_opendental(client, tenant, sandbox)
    clinic = await open_clinic(
        client, tenant, name=f"{provider['FName']} {provider['LName']}", start="00:00", end="23:59"
    )
    try:
        yield Connected(clinic, sandbox, integration_id, pms)
    finally:
        await pms.aclose()


# Local edits stay local until a conflict is decided, so both sides can change one record.
BIDIRECTIONAL_QUIET = {
    "sync_enabled": True,
    "sync_direction": "bidirectional",
    "sync_on_update": False,
}


async def setup_bidirectional(client: httpx.AsyncClient, od: Connected, strategy: str) -> None:
    await configure(client, od, **BIDIRECTIONAL_QUIET, conflict_resolution=strategy)


async def linked_booking(
    client: httpx.AsyncClient, od: Connected, start: datetime
) -> tuple[dict[str, Any], str]:
    """A local booking pushed to OpenDental and read back: its body and its AptNum."""
    created = await client.post("/api/v1/appointments", json=booking(od.clinic, start), headers=od.headers)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    path = f"/api/v1/appointments/{body['id']}"

    async def confirmed() -> list[dict[str, Any]] | None:
        refs = await refs_of(client, od, path)
        return refs if refs and refs[0]["sync_state"] == "confirmed" else None

    refs = await eventually(confirmed)
    return body, str(refs[0]["external_id"])


def webhook_url(server: RunningServer, od: Connected) -> str:
    return f"{server.base_url}/api/webhooks/opendental/{od.integration_id}"


async def subscribe(server: RunningServer, od: Connected, table: str = "Appointment") -> None:
    """What the clinic's OpenDental admin does once: API Events for a table, posted to clinicsync."""
    response = await od.pms.post(
        "/subscriptions",
        # Polled rarely: each test delivers when its story is told ("deliver_events").
        json={"EndPointUrl": webhook_url(server, od), "WatchTable": table, "PollingSeconds": 3600},
    )
    assert response.status_code == 201, response.text
    await front_desk(od, "deliver_events")  # the first poll, so the next waits its PollingSeconds
    # Its events' jobs read the PMS's current record: a front-desk edit made before they ran would
    # arrive with them, ahead of whatever the test does next. Each story starts from a quiet sync.
    await inbound_settled(server, od)


async def inbound_settled(server: RunningServer, od: Connected) -> None:
    """Waits until every webhook event the PMS delivered has been applied by its job."""
    async with httpx.AsyncClient(base_url=server.base_url, headers=od.headers, timeout=10) as admin:

        async def settled() -> bool:
            # The clinic admin's view of its webhook endpoint: nothing stored and not yet applied.
            response = await admin.get(f"/api/admin/sync/webhooks/{od.integration_id}")
            assert response.status_code == 200, response.text
            return bool(response.json()["received"] == 0)

        await eventually(settled)


async def front_desk(od: Connected, action: str, **body: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"{od.sandbox.root_url}/_sandbox", timeout=10) as control:
        response = await control.post(f"/actions/{action}", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json() if response.content else {}
        return result


async def advance_pms_clock(od: Connected, seconds: float) -> None:
    async with httpx.AsyncClient(base_url=f"{od.sandbox.root_url}/_sandbox", timeout=10) as control:
        response = await control.put("/clock", json={"advance_seconds": seconds})
        assert response.status_code == 200, response.text


def od_time(moment: datetime) -> str:
    """OpenDental's wire form: the clinic's wall-clock time."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


async def local_appointment(client: httpx.AsyncClient, od: Connected, appointment_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/appointments/{appointment_id}", headers=od.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def pms_appointment(od: Connected, apt_num: str) -> dict[str, Any]:
    response = await od.pms.get(f"/appointments/{apt_num}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def conflicts(client: httpx.AsyncClient, od: Connected, status: str = "open") -> list[dict[str, Any]]:
    response = await client.get("/api/admin/sync/conflicts", params={"status": status}, headers=od.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def audit_trail(
    client: httpx.AsyncClient, od: Connected, record_type: str, record_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/api/admin/sync/audit/{record_type}/{record_id}", headers=od.headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
