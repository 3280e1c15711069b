"""OpenDental API Events: subscriptions and webhook delivery, received by a real HTTP sink."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from clinicsync.sandbox import GeneratedClinic, SandboxClock, SandboxServer
from clinicsync.sandbox.opendental import OpenDentalSandbox
from clinicsync.sandbox.runner import ControlClientFactory, SandboxFactory

AUTH = {"Authorization": "ODFHIR sandbox-developer-key/sandbox-customer-key"}
SPEC = {"seed": 5, "patients": 30, "appointments": 80, "rooms": 3, "today": "2030-06-03"}
FAST_EVENTS = {"events_polling_scale": 0.02}


class WebhookSink(SandboxServer):
    """Receives event POSTs; its own fault settings make deliveries fail on demand."""

    name = "webhook_sink"
    api_prefix = "/hooks"

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        self.received: list[dict[str, Any]] = []

    def dump_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        self.received = []

    def add_routes(self, router: APIRouter) -> None:
        @router.post("/od")
        async def receive(request: Request) -> Response:
            self.received.append({"headers": dict(request.headers), "body": json.loads(await request.body())})
            return Response(status_code=200)


async def setup(
    factory: SandboxFactory, **settings: Any
) -> tuple[OpenDentalSandbox, WebhookSink, httpx.AsyncClient]:
    sink = await factory(WebhookSink, spec={"patients": 0, "appointments": 0})
    clock = SandboxClock("America/New_York", start=datetime(2030, 6, 3, 7, 0), frozen=True)
    od = await factory(OpenDentalSandbox, spec=SPEC, clock=clock, settings={**FAST_EVENTS, **settings})
    assert isinstance(od, OpenDentalSandbox) and isinstance(sink, WebhookSink)
    return od, sink, httpx.AsyncClient(base_url=str(od.base_url), headers=AUTH, timeout=10)


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def subscribe(client: httpx.AsyncClient, sink: WebhookSink, table: str, **extra: Any) -> dict[str, Any]:
    body = {
        "EndPointUrl": f"{sink.base_url}/od",
        "Workstation": "FRONTDESK1",
        "WatchTable": table,
        "PollingSeconds": 1,
        **extra,
    }
    response = await client.post("/subscriptions", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_subscription_crud_and_validation(sandbox_factory: SandboxFactory) -> None:
    _od, sink, client = await setup(sandbox_factory)
    async with client:
        created = await subscribe(client, sink, "Appointment")
        assert created["SubscriptionNum"] == 1
        assert created["CustomerKey"] == "sandbox-customer-key"
        assert created["DateTimeStart"] == "2030-06-03 07:00:00"
        assert created["DateTimeStop"] == "0001-01-01 00:00:00"
        listed = (await client.get("/subscriptions")).json()
        assert [s["SubscriptionNum"] for s in listed] == [1]
        updated = await client.put("/subscriptions/1", json={"PollingSeconds": 30})
        assert updated.json()["PollingSeconds"] == 30
        for body, message in [
            ({"WatchTable": "Appointment", "PollingSeconds": 1}, "EndPointUrl is required"),
            (
                {"EndPointUrl": "ftp://x", "WatchTable": "Appointment", "PollingSeconds": 1},
                "EndPointUrl is invalid",
            ),
            (
                {"EndPointUrl": "http://127.0.0.1:9/x", "WatchTable": "Appointment"},
                "PollingSeconds is required",
            ),
            (
                {"EndPointUrl": "http://127.0.0.1:9/x", "WatchTable": "Invoice", "PollingSeconds": 1},
                "WatchTable",
            ),
        ]:
            response = await client.post("/subscriptions", json=body)
            assert response.status_code == 400, body
            assert response.text.startswith(message)
        assert (await client.delete("/subscriptions/1")).status_code == 200
        assert (await client.get("/subscriptions")).json() == []
        assert (await client.delete("/subscriptions/1")).status_code == 404


async def test_database_events_are_delivered_with_headers(sandbox_factory: SandboxFactory) -> None:
    _od, sink, client = await setup(sandbox_factory)
    async with client:
        await subscribe(client, sink, "Appointment")
        apt = (await client.get("/appointments", params={"AptStatus": "Scheduled"})).json()[0]
        await client.put(f"/appointments/{apt['AptNum']}/Note", json={"Note": "ring first"})
        await wait_for(lambda: sink.received)
        event = sink.received[0]
        assert event["headers"]["authorization"] == "sandbox-customer-key"  # no prefix
        assert event["headers"]["workstation"] == "FRONTDESK1"
        assert event["headers"]["event-type"] == "WatchTable: Appointment"
        assert isinstance(event["body"], list)
        assert [row["AptNum"] for row in event["body"]] == [apt["AptNum"]]
        assert event["body"][0]["Note"].endswith("ring first")
        # Nothing new: no further deliveries.
        await asyncio.sleep(0.2)
        assert len(sink.received) == 1


async def test_deleted_appointments_and_patients_have_their_own_tables(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    od, sink, client = await setup(sandbox_factory)
    ctl = await control(od)
    async with client:
        await subscribe(client, sink, "AppointmentDeleted")
        await subscribe(client, sink, "Patient")
        await ctl.post("/actions/delete_appointment", json={"AptNum": 4})
        await client.put("/patients/2", json={"City": "Bend"})
        await wait_for(lambda: len(sink.received) >= 2)
        by_type = {e["headers"]["event-type"]: e["body"] for e in sink.received}
        assert [row["AptNum"] for row in by_type["WatchTable: AppointmentDeleted"]] == [4]
        assert [(row["PatNum"], row["City"]) for row in by_type["WatchTable: Patient"]] == [(2, "Bend")]


async def test_failed_delivery_is_resent_on_next_success(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    od, sink, client = await setup(sandbox_factory)
    sink_ctl = await control(sink)
    async with client:
        await subscribe(client, sink, "Patient")
        await sink_ctl.put("/faults", json={"error_rate": 1.0, "error_statuses": [503]})
        await client.put("/patients/3", json={"City": "Eugene"})
        await wait_for(lambda: any(d.get("status") == 503 for d in od.deliveries))
        await client.put("/patients/6", json={"City": "Medford"})
        await sink_ctl.post("/faults/reset")
        await wait_for(lambda: sink.received)
        rows = sink.received[0]["body"]
        assert sorted(row["PatNum"] for row in rows) == [3, 6]
        log = (await sink_ctl.get("/requests")).json()
        assert any(entry["fault"] == "error:503" for entry in log)


async def test_changes_older_than_the_resend_window_are_dropped(sandbox_factory: SandboxFactory) -> None:
    od, sink, client = await setup(sandbox_factory, events_enabled=False)
    async with client:
        await subscribe(client, sink, "Patient")
        await client.put("/patients/3", json={"City": "Old"})
        od.clock.advance(4 * 86400)  # the API Service was off for four days
        await client.put("/patients/7", json={"City": "New"})
        od.settings = od.od.model_copy(update={"events_enabled": True})
        await wait_for(lambda: sink.received)
        assert [row["PatNum"] for row in sink.received[0]["body"]] == [7]


async def test_batches_hold_at_most_the_batch_size(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    od, sink, client = await setup(sandbox_factory, events_batch_size=2, events_enabled=False)
    ctl = await control(od)
    async with client:
        await subscribe(client, sink, "Patient")
        for pat_num in (1, 2, 3, 4, 5):
            await client.put(f"/patients/{pat_num}", json={"State": "OR"})
        delivered = await ctl.post("/actions/deliver_events", json={})
        assert delivered.json() == {"batches": 3}
        assert [len(e["body"]) for e in sink.received] == [2, 2, 1]


async def test_events_stop_while_disabled(sandbox_factory: SandboxFactory) -> None:
    _od, sink, client = await setup(sandbox_factory, events_enabled=False)
    async with client:
        await subscribe(client, sink, "Patient")
        await client.put("/patients/1", json={"City": "Quiet"})
        await asyncio.sleep(0.3)
        assert sink.received == []


async def test_a_forced_poll_waits_for_one_under_way_and_posts_nothing_twice(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    # Polled rarely, so only the first poll after the service comes back and the forced one run.
    od, sink, client = await setup(sandbox_factory, events_enabled=False, events_polling_scale=100)
    ctl, sink_ctl = await control(od), await control(sink)
    async with client:
        await subscribe(client, sink, "Patient")
        await client.put("/patients/3", json={"City": "Salem"})
        await sink_ctl.put("/faults", json={"latency_ms": 400})  # the receiver is slow to answer
        od.settings = od.od.model_copy(update={"events_enabled": True})
        await asyncio.sleep(0.1)  # the service's own poll (due at once) is posting now
        forced = await ctl.post("/actions/deliver_events", json={})
        assert forced.status_code == 200
        # The forced poll returned only once the poll under way was answered, and sent nothing again.
        assert [[row["PatNum"] for row in event["body"]] for event in sink.received] == [[3]]
        await asyncio.sleep(0.5)
        assert len(sink.received) == 1
