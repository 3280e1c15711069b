"""An admin opens the PMS's deliveries from clinicsync: OpenDental's API Event subscriptions and
Google's watch channel, made over HTTP as the definitions say, then used end to end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx

from clinicsync.sandbox import SandboxServer
from clinicsync.tenancy.models import Role
from tests.conftest import RunningServer
from tests.factories import TenantFactory, booking, future_day, open_clinic
from tests.sync.conftest import Connected, connect_google, eventually
from tests.sync.inbound_support import (
    front_desk,
    inbound_settled,
    instant,
    linked_booking,
    local_appointment,
    od_time,
    opendental,
    setup_bidirectional,
)

__all__ = ["opendental"]  # the fixture, in the clinic's time zone


def _path(integration_id: str) -> str:
    return f"/api/admin/sync/webhooks/{integration_id}/subscribe"


async def test_an_admin_opens_opendental_api_events_and_they_move_the_booking(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected, tenant_factory: TenantFactory
) -> None:
    od = opendental
    await setup_bidirectional(client, od, "external_wins")
    day = future_day()
    body, apt_num = await linked_booking(client, od, od.clinic.local(day, 10))

    staff = await tenant_factory(role=Role.STAFF, organization_id=od.clinic.tenant.organization_id)
    refused = await client.post(
        _path(od.integration_id), json={"public_url": server.base_url}, headers=staff.headers
    )
    assert refused.status_code == 403 and refused.json()["error"]["details"]["capability"] == "sync.manage"
    bad = await client.post(_path(od.integration_id), json={"public_url": "not a url"}, headers=od.headers)
    assert bad.status_code == 422 and "public_url" in bad.text
    assert (await od.pms.get("/subscriptions")).json() == []

    opened = await client.post(
        _path(od.integration_id), json={"public_url": server.base_url}, headers=od.headers
    )
    assert opened.status_code == 201, opened.text
    url = f"{server.base_url}/api/webhooks/opendental/{od.integration_id}"
    assert opened.json()["url"] == url and opened.json()["scheme"] == "shared_key"
    assert "CustomerKey" not in opened.text  # the PMS echoes the key; it is not shown
    subscriptions = (await od.pms.get("/subscriptions")).json()
    assert sorted((s["WatchTable"], s["EndPointUrl"]) for s in subscriptions) == [
        ("Appointment", url),
        ("Patient", url),
    ]

    await front_desk(od, "deliver_events")
    await inbound_settled(server, od)
    moved_to = od.clinic.local(day, 15, 30)
    await front_desk(od, "reschedule", AptNum=int(apt_num), AptDateTime=od_time(moved_to))
    await front_desk(od, "deliver_events")

    async def moved() -> bool:
        return instant((await local_appointment(client, od, body["id"]))["start"]) == moved_to

    await eventually(moved)


async def test_an_admin_opens_a_google_watch_channel_and_its_notices_move_the_booking(
    client: httpx.AsyncClient,
    server: RunningServer,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> None:
    google = await sandboxes("google_calendar", spec={"patients": 2, "appointments": 0})
    tenant = await tenant_factory()
    clinic = await open_clinic(client, tenant, start="00:00", end="23:59")
    integration_id, api, _calendar_id = await connect_google(client, tenant, google)
    control = httpx.AsyncClient(base_url=f"{google.root_url}/_sandbox", timeout=10)
    async with api, control:
        day = future_day()
        start = clinic.local(day, 9)
        local = await client.post("/api/v1/appointments", json=booking(clinic, start), headers=tenant.headers)
        assert local.status_code == 201, local.text
        event = await control.post(
            "/actions/create",
            json={"start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat()},
        )
        assert event.status_code == 200, event.text
        for path, payload in (
            (
                "/api/admin/sync/links",
                {
                    "integration_id": integration_id,
                    "record_type": "appointment",
                    "record_id": local.json()["id"],
                    "external_id": event.json()["id"],
                },
            ),
            (
                "/api/admin/integration-settings",
                {"integration_id": integration_id, "sync_enabled": True, "sync_direction": "from_external"},
            ),
        ):
            response = await client.post(path, headers=tenant.headers, json=payload)
            assert response.status_code == 201, response.text

        opened = await client.post(
            _path(integration_id), json={"public_url": server.base_url}, headers=tenant.headers
        )
        assert opened.status_code == 201, opened.text
        assert opened.json()["scheme"] == "channel_token"
        [channel] = opened.json()["opened"]
        assert channel["function"] == "watch_events" and "token" not in channel["answer"]
        shown = await client.get(f"/api/admin/sync/webhooks/{integration_id}", headers=tenant.headers)
        assert shown.json()["has_secret"] is True and shown.json()["secret"] is None

        moved_to = clinic.local(day, 11, 15)
        moved = await control.post(
            "/actions/move",
            json={
                "event_id": event.json()["id"],
                "start": moved_to.isoformat(),
                "end": (moved_to + timedelta(minutes=45)).isoformat(),
            },
        )
        assert moved.status_code == 200, moved.text

        async def moved_locally() -> bool:
            found = (
                await client.get(f"/api/v1/appointments/{local.json()['id']}", headers=tenant.headers)
            ).json()
            return bool(instant(found["start"]) == moved_to)

        await eventually(moved_locally)
        deliveries = (await control.post("/actions/deliveries", json={})).json()["deliveries"]
        # Google's notices carried the token clinicsync issued, and were accepted.
        assert ("sync", 200) in [(d["resource_state"], d["status"]) for d in deliveries]
        assert any(d["status"] == 202 for d in deliveries)
