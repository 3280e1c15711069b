"""Webhooks over HTTP: OpenDental API Events and Google watch notifications from the sandboxes,
verified as each provider proves them, refused when forged or old, applied once when repeated."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx

from clinicsync.sandbox import SandboxServer
from tests.conftest import RunningServer
from tests.factories import TenantFactory, booking, future_day, open_clinic
from tests.sync.conftest import Connected, configure, connect_google, eventually
from tests.sync.inbound_support import (
    audit_trail,
    front_desk,
    instant,
    linked_booking,
    local_appointment,
    od_time,
    opendental,
    setup_bidirectional,
    subscribe,
    webhook_url,
)

__all__ = ["opendental"]  # the fixture, in the clinic's time zone


def _od_key(od: Connected) -> str:
    sandbox: Any = od.sandbox
    return next(key for key, access in sandbox.od.customer_keys.items() if access == "readwrite")


def _event_headers(key: str) -> dict[str, str]:
    return {
        "Authorization": key,
        "Workstation": "FRONTDESK1",
        "Event-Type": "WatchTable: Appointment",
        "Content-Type": "application/json",
    }


async def _moved_locally(client: httpx.AsyncClient, od: Connected, appointment_id: str, to: datetime) -> bool:
    return instant((await local_appointment(client, od, appointment_id))["start"]) == to


async def test_an_opendental_api_event_moves_the_local_booking(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    await setup_bidirectional(client, od, "external_wins")
    day = future_day()
    body, apt_num = await linked_booking(client, od, od.clinic.local(day, 10))
    await subscribe(server, od)
    moved_to = od.clinic.local(day, 15, 30)
    await front_desk(od, "reschedule", AptNum=int(apt_num), AptDateTime=od_time(moved_to))
    await front_desk(od, "deliver_events")  # OpenDental's next poll, without waiting for it
    await eventually(lambda: _moved_locally(client, od, body["id"], moved_to))
    trail = await audit_trail(client, od, "appointment", body["id"])
    [applied] = [e for e in trail if e["source"] == "webhook"]
    assert instant(applied["changes"]["starts_at"]["after"]) == moved_to
    assert applied["conflict_id"] is None
    endpoint = (await client.get(f"/api/admin/sync/webhooks/{od.integration_id}", headers=od.headers)).json()
    assert endpoint["scheme"] == "shared_key" and endpoint["applied"] >= 1 and endpoint["failed"] == 0
    assert endpoint["url"] == f"/api/webhooks/opendental/{od.integration_id}"


async def test_a_wrong_customer_key_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    await setup_bidirectional(client, od, "external_wins")
    url = webhook_url(server, od)
    forged = await client.post(url, content=b'[{"AptNum": 1}]', headers=_event_headers("not-the-key"))
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "webhook_unverified"
    assert "Authorization" in forged.json()["error"]["message"]
    missing = await client.post(url, content=b"[]", headers={"Content-Type": "application/json"})
    assert missing.status_code == 401
    wrong_place = await client.post(
        f"{server.base_url}/api/webhooks/google_calendar/{od.integration_id}",
        content=b"[]",
        headers=_event_headers(_od_key(od)),
    )
    assert wrong_place.status_code == 404
    unknown = await client.post(
        f"{server.base_url}/api/webhooks/opendental/{uuid.uuid4()}",
        content=b"[]",
        headers=_event_headers("x"),
    )
    assert unknown.status_code == 404
    not_rows = await client.post(url, content=b'{"AptNum": 1}', headers=_event_headers(_od_key(od)))
    assert not_rows.status_code == 422 and not_rows.json()["error"]["details"][0]["field"] == "body"
    endpoint = (await client.get(f"/api/admin/sync/webhooks/{od.integration_id}", headers=od.headers)).json()
    assert (endpoint["received"], endpoint["applied"], endpoint["failed"]) == (0, 0, 0)


async def test_a_replayed_or_redelivered_event_is_applied_once(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    await setup_bidirectional(client, od, "external_wins")
    day = future_day()
    body, apt_num = await linked_booking(client, od, od.clinic.local(day, 10))
    moved_to = od.clinic.local(day, 16)
    await front_desk(od, "reschedule", AptNum=int(apt_num), AptDateTime=od_time(moved_to))
    row = (await od.pms.get(f"/appointments/{apt_num}")).json()
    url, headers = webhook_url(server, od), _event_headers(_od_key(od))
    delivery = json.dumps([row]).encode()
    first = await client.post(url, content=delivery, headers=headers)
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    replay = await client.post(url, content=delivery, headers=headers)
    assert replay.status_code == 200 and replay.json() == {"status": "duplicate", "event_id": None}
    # OpenDental resends everything since a failed delivery: the same row in a larger batch.
    other = (await od.pms.get("/appointments")).json()
    resent = await client.post(url, content=json.dumps([*other, row]).encode(), headers=headers)
    assert resent.status_code == 202
    await eventually(lambda: _moved_locally(client, od, body["id"], moved_to))

    async def both_done() -> bool:
        endpoint = (
            await client.get(f"/api/admin/sync/webhooks/{od.integration_id}", headers=od.headers)
        ).json()
        return bool(endpoint["applied"] == 2 and endpoint["received"] == 0)

    await eventually(both_done)
    trail = await audit_trail(client, od, "appointment", body["id"])
    assert len([e for e in trail if e["source"] == "webhook"]) == 1
    assert (await local_appointment(client, od, body["id"]))["version"] == body["version"] + 1


async def test_inbound_changes_are_ignored_when_the_clinic_only_pushes(
    client: httpx.AsyncClient, server: RunningServer, opendental: Connected
) -> None:
    od = opendental
    await configure(client, od, sync_enabled=True, sync_direction="to_external")
    day = future_day()
    body, apt_num = await linked_booking(client, od, od.clinic.local(day, 10))
    await front_desk(od, "reschedule", AptNum=int(apt_num), AptDateTime=od_time(od.clinic.local(day, 13)))
    row = (await od.pms.get(f"/appointments/{apt_num}")).json()
    sent = await client.post(
        webhook_url(server, od), content=json.dumps([row]).encode(), headers=_event_headers(_od_key(od))
    )
    assert sent.status_code == 202

    async def settled() -> bool:
        endpoint = (
            await client.get(f"/api/admin/sync/webhooks/{od.integration_id}", headers=od.headers)
        ).json()
        return bool(endpoint["received"] == 0)

    await eventually(settled)
    assert instant((await local_appointment(client, od, body["id"]))["start"]) == od.clinic.local(day, 10)


# ---- Google Calendar -------------------------------------------------------------------------------


async def test_a_google_watch_notification_moves_the_local_booking(
    client: httpx.AsyncClient,
    server: RunningServer,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> None:
    google = await sandboxes("google_calendar", spec={"patients": 2, "appointments": 0})
    tenant = await tenant_factory()
    clinic = await open_clinic(client, tenant, start="00:00", end="23:59")
    integration_id, api, calendar_id = await connect_google(client, tenant, google)
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
        linked = await client.post(
            "/api/admin/sync/links",
            headers=tenant.headers,
            json={
                "integration_id": integration_id,
                "record_type": "appointment",
                "record_id": local.json()["id"],
                "external_id": event.json()["id"],
            },
        )
        assert linked.status_code == 201, linked.text
        settings = await client.post(
            "/api/admin/integration-settings",
            headers=tenant.headers,
            json={"integration_id": integration_id, "sync_enabled": True, "sync_direction": "from_external"},
        )
        assert settings.status_code == 201, settings.text
        issued = await client.post(
            f"/api/admin/sync/webhooks/{integration_id}/secret", headers=tenant.headers
        )
        assert issued.status_code == 201, issued.text
        token = issued.json()["secret"]
        assert issued.json()["scheme"] == "channel_token" and token
        shown = await client.get(f"/api/admin/sync/webhooks/{integration_id}", headers=tenant.headers)
        assert shown.json()["secret"] is None and shown.json()["has_secret"] is True
        url = f"{server.base_url}/api/webhooks/google_calendar/{integration_id}"
        channel = await api.post(
            f"/calendars/{calendar_id}/events/watch",
            json={"id": "clinicsync-watch-1", "type": "web_hook", "address": url, "token": token},
        )
        assert channel.status_code == 200, channel.text

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
            shown = (
                await client.get(f"/api/v1/appointments/{local.json()['id']}", headers=tenant.headers)
            ).json()
            return instant(shown["start"]) == moved_to and instant(shown["end"]) == moved_to + timedelta(
                minutes=45
            )

        await eventually(moved_locally)
        deliveries = (await control.post("/actions/deliveries", json={})).json()
        states = [(d["resource_state"], d["status"]) for d in deliveries["deliveries"]]
        assert states[0] == ("sync", 200) and ("exists", 202) in states
        trail = (
            await client.get(
                f"/api/admin/sync/audit/appointment/{local.json()['id']}", headers=tenant.headers
            )
        ).json()
        assert [e["source"] for e in trail if e["side"] == "local"][-1] == "webhook"

        # The same message again (a replay) is acknowledged and dropped.
        last = max(d["message_number"] for d in deliveries["deliveries"])
        headers = {
            "X-Goog-Channel-ID": "clinicsync-watch-1",
            "X-Goog-Channel-Token": token,
            "X-Goog-Resource-State": "exists",
            "X-Goog-Message-Number": str(last),
            "X-Goog-Channel-Expiration": format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True),
        }
        replay = await client.post(url, headers=headers)
        assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
        forged = await client.post(
            url, headers=headers | {"X-Goog-Channel-Token": "guess", "X-Goog-Message-Number": "99"}
        )
        assert forged.status_code == 401 and "X-Goog-Channel-Token" in forged.json()["error"]["message"]
        expired = headers | {
            "X-Goog-Message-Number": "100",
            "X-Goog-Channel-Expiration": format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True),
        }
        old = await client.post(url, headers=expired)
        assert old.status_code == 401 and "expired" in old.json()["error"]["message"]
