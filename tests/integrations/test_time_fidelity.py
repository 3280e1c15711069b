"""Times as the real APIs treat them: Cliniko misreads offsets, Google answers in the calendar's zone,
OpenDental takes a date alone as DateTStamp. The engine must send UTC and read any zone back to UTC."""

from __future__ import annotations

import base64
from datetime import timedelta

import httpx
from test_sandbox_cliniko import cliniko, references
from test_sandbox_google_calendar import google, token_server

from clinicsync.integrations.runtime import ProviderCaller
from clinicsync.sandbox import run_sandbox
from clinicsync.sandbox.cliniko import DEFAULT_API_KEY, DEFAULT_USER_AGENT
from clinicsync.sandbox.google_calendar import DEFAULT_TOKEN


async def test_cliniko_misreads_an_offset_so_the_engine_sends_utc() -> None:
    caller = ProviderCaller()
    async with run_sandbox("cliniko", spec={"seed": 5, "patients": 5, "appointments": 5}) as server:
        integration = cliniko(server)
        refs = await references(caller, integration)
        patient_id = (await caller.execute(integration, "list_patients", max_records=1)).records[0]["id"]
        body = {
            "patient_id": patient_id,
            "practitioner_id": refs["practitioner_id"],
            "appointment_type_id": refs["appointment_type_id"],
            "business_id": refs["business_id"],
        }
        auth = "Basic " + base64.b64encode(f"{DEFAULT_API_KEY}:".encode()).decode()
        headers = {"Authorization": auth, "User-Agent": DEFAULT_USER_AGENT, "Accept": "application/json"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as raw:
            # Sent as it is by a client that trusts the offset: stored eleven hours late.
            misread = await raw.post(
                "/individual_appointments", json={**body, "starts_at": "2031-03-04T09:00:00+11:00"}
            )
            assert misread.status_code == 201, misread.text
            assert misread.json()["starts_at"] == "2031-03-04T09:00:00Z"
            # Filters still refuse anything but UTC.
            refused = await raw.get(
                "/individual_appointments", params={"q[]": "starts_at:>2031-03-04T09:00+11:00"}
            )
            assert refused.status_code == 422

        server.request_log.clear()
        created = await caller.execute(
            integration, "create_appointment", {**body, "start": "2031-03-04T09:00:00+11:00"}
        )
        assert created.records[0]["start"] == "2031-03-03T22:00:00Z"
        fetched = await caller.execute(
            integration, "get_appointment", {"appointment_id": created.records[0]["id"]}
        )
        assert fetched.records[0]["start"] == "2031-03-03T22:00:00Z"


WINDOW = {"timeMin": "2031-01-15T00:00:00Z", "timeMax": "2031-01-16T00:00:00Z"}


async def test_google_answers_in_the_calendars_zone_and_the_engine_reads_utc() -> None:
    caller = ProviderCaller()
    async with (
        run_sandbox("google_calendar", timezone="America/Chicago") as server,
        token_server(DEFAULT_TOKEN) as tokens,
    ):
        integration = google(server, tokens)
        created = await caller.execute(
            integration,
            "create_event",
            {
                "event_id": "fidel00001",
                "title": "Checkup",
                "start": "2031-01-15T15:00:00Z",
                "end": "2031-01-15T15:30:00Z",
            },
        )
        assert created.records[0]["start"] == "2031-01-15T15:00:00Z"
        calendar = integration.settings["calendar_id"]
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}
        ) as raw:
            event = (await raw.get(f"/calendars/{calendar}/events/fidel00001")).json()
            assert event["start"]["dateTime"] == "2031-01-15T09:00:00-06:00"
            listed = (
                await raw.get(f"/calendars/{calendar}/events", params={"timeZone": "Asia/Tokyo", **WINDOW})
            ).json()
            ours = next(item for item in listed["items"] if item["id"] == "fidel00001")
            assert ours["start"]["dateTime"] == "2031-01-16T00:00:00+09:00"
        listed_by_engine = await caller.execute(
            integration, "list_events", {"time_min": WINDOW["timeMin"], "time_max": WINDOW["timeMax"]}
        )
        ours_by_engine = next(row for row in listed_by_engine.records if row["id"] == "fidel00001")
        assert (
            ours_by_engine["start"] == "2031-01-15T15:00:00Z"
            and ours_by_engine["end"] == "2031-01-15T15:30:00Z"
        )


async def test_opendental_takes_a_date_alone_as_date_t_stamp() -> None:
    async with run_sandbox("opendental", spec={"patients": 20, "appointments": 60}) as server:
        writer = next(key for key, access in server.od.customer_keys.items() if access == "readwrite")
        headers = {"Authorization": f"ODFHIR {server.od.developer_key}/{writer}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as raw:
            day = (server.clock.now() - timedelta(days=20)).date().isoformat()
            by_date = await raw.get("/appointments", params={"DateTStamp": day})
            by_midnight = await raw.get("/appointments", params={"DateTStamp": f"{day} 00:00:00"})
            everything = await raw.get("/appointments")
            assert by_date.status_code == 200, by_date.text
            changed = [row["AptNum"] for row in by_date.json()]
            assert changed == [row["AptNum"] for row in by_midnight.json()]
            assert 0 < len(changed) < len(everything.json())
            bad = await raw.get("/appointments", params={"DateTStamp": "30/07/2020"})
            assert bad.status_code == 400 and "yyyy-MM-dd HH:mm:ss" in bad.text
