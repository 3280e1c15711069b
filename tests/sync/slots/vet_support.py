"""A clinic connected to the veterinary PIMS sandbox, whose diary is 15-minute slots of two visits.

The PIMS is read the way its web front end is: log in through the form, then its JSON routes
with the session cookie, over real HTTP on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from clinicsync.sandbox import SandboxServer
from tests.factories import Clinic, Tenant, open_clinic
from tests.sync.conftest import FAST_HTTP

ZONE = "America/Chicago"
# Open every day so that any test day has slots; no visits seeded, so every count is ours.
VET_SPEC = {"seed": 7, "patients": 6, "appointments": 0, "days_before": 1, "days_after": 20, "timezone": ZONE}
EVERY_DAY_OPEN = {
    day: ("09:00", "17:00")
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}


@dataclass
class VetClinic:
    clinic: Clinic
    sandbox: SandboxServer
    integration_id: str
    pims: httpx.AsyncClient  # logged in to the PIMS's own web app
    vet_name: str

    @property
    def headers(self) -> dict[str, str]:
        return self.clinic.headers

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(ZONE)


async def start_vet_pims(sandboxes: Any, **settings: Any) -> SandboxServer:
    sandbox: SandboxServer = await sandboxes("vet_pims", spec=VET_SPEC)
    async with httpx.AsyncClient(base_url=sandbox.root_url or "", timeout=10) as control:
        changed = await control.put(
            "/_sandbox/settings", json={"business_hours": EVERY_DAY_OPEN, "capacity_per_slot": 2, **settings}
        )
        assert changed.status_code == 200, changed.text
    return sandbox


async def login(sandbox: SandboxServer) -> httpx.AsyncClient:
    info = sandbox.credentials()
    pims = httpx.AsyncClient(base_url=sandbox.root_url or "", timeout=10)
    answer = await pims.post("/login", data={"username": info["username"], "password": info["password"]})
    assert answer.status_code in (302, 303), answer.text
    return pims


async def connect_vet(client: httpx.AsyncClient, tenant: Tenant, sandbox: SandboxServer) -> VetClinic:
    """The integration, its login, and a local vet with the name of the PIMS's first vet."""
    pims = await login(sandbox)
    view = (await pims.get("/appointments/getAppointmentView")).json()
    created = await client.post(
        "/api/admin/integrations",
        headers=tenant.headers,
        json={
            "provider_key": "vet_pims",
            "base_url": sandbox.root_url,
            "settings": {"appointment_type_id": view["appointment_types"][0]["id"], "timezone": ZONE},
            **FAST_HTTP,
        },
    )
    assert created.status_code == 201, created.text
    integration_id = created.json()["id"]
    info = sandbox.credentials()
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
    vet_name = view["providers"][0]["name"]
    clinic = await open_clinic(client, tenant, name=vet_name, start="00:00", end="23:59")
    return VetClinic(clinic, sandbox, integration_id, pims, vet_name)


async def read_schedule(
    pims: httpx.AsyncClient, first_day: date, last_day: date
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The PIMS's schedule configuration and its visits of the window, instants made aware."""
    schedule = (await pims.get("/schedule/getScheduleConfigs")).json()
    zone = ZoneInfo(schedule["timezone"])
    events = (
        await pims.get(
            "/appointments/getCalendarEventData",
            params={"start": str(first_day), "end": str(last_day + timedelta(days=1))},
        )
    ).json()
    statuses = {"booked": "pending", "arrived": "confirmed", "no_show": "no_show"}
    visits = [
        {
            "id": str(event["id"]),
            "starts_at": datetime.fromisoformat(event["start"]).replace(tzinfo=zone),
            "ends_at": datetime.fromisoformat(event["end"]).replace(tzinfo=zone),
            "status": statuses.get(event["extendedProps"]["status"], event["extendedProps"]["status"]),
        }
        for event in events
    ]
    return schedule, visits


async def book_in_pims(pims: httpx.AsyncClient, start: datetime, minutes: int = 15) -> httpx.Response:
    """A visit booked at the PIMS's own front desk (someone else's booking, as far as we know)."""
    view = (await pims.get("/appointments/getAppointmentView")).json()
    animal = (await pims.get("/search/patients")).json()["results"][0]
    local = start.astimezone(ZoneInfo(ZONE))
    return await pims.post(
        "/appointments/create",
        data={
            "patient_id": str(animal["id"]),
            "type_id": str(view["appointment_types"][0]["id"]),
            "appointment_date": str(local.date()),
            "time": local.strftime("%H:%M"),
            "time_end": (local + timedelta(minutes=minutes)).strftime("%H:%M"),
        },
    )
