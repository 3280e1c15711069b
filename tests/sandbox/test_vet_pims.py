"""Veterinary PIMS (IDEXX Neo-like) simulator contract tests over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.runner import ControlClientFactory, SandboxFactory
from clinicsync.sandbox.vet_pims import DEFAULT_PASSWORD, DEFAULT_USERNAME

TODAY = date(2026, 3, 4)  # a Wednesday
SPEC = {"patients": 60, "appointments": 400, "today": TODAY.isoformat(), "days_before": 14, "days_after": 14}
# 15:00 in the office (New York, EST): after every generated change, and visits later today are future.
NOW = datetime(2026, 3, 4, 20, 0, tzinfo=UTC)
LOGIN = {"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}


async def start(factory: SandboxFactory, control: ControlClientFactory, **options: Any) -> SandboxServer:
    server = await factory("vet_pims", spec=options.pop("spec", SPEC), **options)
    admin = await control(server)
    await admin.put("/clock", json={"now": NOW.isoformat(), "frozen": True})
    return server


@asynccontextmanager
async def signed_in(server: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client that went through the login form and carries the session cookie."""
    assert server.base_url is not None
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        response = await client.post("/login", data=LOGIN)
        assert response.status_code == 303
        yield client


def week_range(first: date, days: int = 7) -> dict[str, str]:
    return {"start": first.isoformat(), "end": (first + timedelta(days=days)).isoformat()}


async def test_login_form_sets_a_session_cookie(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    assert server.base_url is not None
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        page = await client.get("/login")
        assert page.status_code == 200
        assert 'name="username"' in page.text and 'name="password"' in page.text

        anonymous = await client.get("/appointments/getCalendarEventData", params=week_range(TODAY))
        assert anonymous.status_code == 302
        assert anonymous.headers["location"].startswith("/login?next=%2Fappointments%2FgetCalendarEventData")

        wrong = await client.post("/login", data=LOGIN | {"password": "guess"})
        assert wrong.status_code == 401
        assert "Invalid username or password" in wrong.text
        assert "neo_session" not in wrong.headers.get("set-cookie", "")

        good = await client.post("/login", data=LOGIN | {"next": "/appointments/getAppointmentView"})
        assert good.status_code == 303
        assert good.headers["location"] == "/appointments/getAppointmentView"
        cookie = good.headers["set-cookie"]
        assert cookie.startswith("neo_session=") and "HttpOnly" in cookie
        assert (await client.get("/dashboard")).status_code == 200
        view = (await client.get("/appointments/getAppointmentView")).json()
        assert {row["name"] for row in view["appointment_types"]} >= {"Consultation", "Vaccination", "Dental"}
        assert view["rooms"] and view["providers"]

        await client.post("/logout")
        assert (await client.get("/dashboard")).status_code == 302


async def test_session_expiry_mid_run_by_lifetime_and_control_call(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control, settings={"session_lifetime_seconds": 900})
    admin = await control(server)
    async with signed_in(server) as client:
        assert (
            await client.get("/appointments/getCalendarEventData", params=week_range(TODAY))
        ).status_code == 200
        await admin.put("/clock", json={"advance_seconds": 901})
        expired = await client.get("/appointments/getCalendarEventData", params=week_range(TODAY))
        assert expired.status_code == 302
        assert expired.headers["location"].startswith("/login")

        assert (await client.post("/login", data=LOGIN)).status_code == 303
        assert (await client.get("/clients/search")).status_code == 200
        await admin.post("/tokens/expire")
        await admin.put("/settings", json={"unauthenticated": "json_401"})
        revoked = await client.get("/clients/search")
        assert revoked.status_code == 401
        assert revoked.json() == {
            "success": False,
            "error": {"code": "session_expired", "message": "Your session has expired; sign in again"},
        }
        assert (await client.post("/login", data=LOGIN)).status_code == 303
        await admin.put("/faults", json={"token_expire_next": 1})
        assert (await client.get("/clients/search")).status_code == 401
        assert (await client.get("/clients/search")).status_code == 200


async def test_schedule_config_and_calendar_events(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(
        sandbox_factory, control, settings={"capacity_per_slot": 3, "slot_length_minutes": 20}
    )
    async with signed_in(server) as client:
        config = (await client.get("/schedule/getScheduleConfigs")).json()
        assert config["timezone"] == "America/New_York"
        assert config["slot_length_minutes"] == 20
        assert config["capacity_per_slot"] == 3
        monday = config["business_hours"][0]
        assert monday == {
            "day": "monday",
            "day_of_week": 1,
            "open": "08:00",
            "close": "17:00",
            "closed": False,
        }
        assert config["business_hours"][6]["closed"] is True

        events = (await client.get("/appointments/getCalendarEventData", params=week_range(TODAY))).json()
        assert events, "the seeded week has visits"
        starts = [event["start"] for event in events]
        assert starts == sorted(starts)
        assert all(TODAY.isoformat() <= start < (TODAY + timedelta(days=7)).isoformat() for start in starts)
        # Office-local wall times without an offset, inside business hours.
        assert all(len(start) == 19 and "08:00" <= start[11:16] < "17:00" for start in starts)
        assert all(event["extendedProps"]["status"] != "cancelled" for event in events)
        with_cancelled = await client.get(
            "/appointments/getCalendarEventData", params=week_range(TODAY) | {"include_cancelled": "1"}
        )
        assert len(with_cancelled.json()) >= len(events)

        too_wide = await client.get("/appointments/getCalendarEventData", params=week_range(TODAY, 90))
        assert too_wide.status_code == 400
        assert too_wide.json()["error"]["code"] == "range_too_large"
        bad_date = await client.get(
            "/appointments/getCalendarEventData", params={"start": "soon", "end": "later"}
        )
        assert bad_date.status_code == 400
        assert bad_date.json() == {
            "success": False,
            "error": {
                "code": "invalid_field",
                "message": "start must be a date YYYY-MM-DD",
                "field": "start",
            },
        }


async def test_generated_schedule_never_exceeds_slot_capacity(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    async with signed_in(server) as client:
        events = (
            await client.get(
                "/appointments/getCalendarEventData", params=week_range(TODAY - timedelta(days=14), 29)
            )
        ).json()
        load: dict[str, int] = {}
        for event in events:
            cursor = datetime.fromisoformat(event["start"])
            while cursor < datetime.fromisoformat(event["end"]):
                load[cursor.isoformat()] = load.get(cursor.isoformat(), 0) + 1
                cursor += timedelta(minutes=15)
        assert max(load.values()) <= 2
        assert max(load.values()) == 2  # the seeded clinic is busy enough to fill some slots


async def test_create_refuses_overbooking_and_hours_then_cancel_and_rebook(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control, settings={"capacity_per_slot": 1})
    async with signed_in(server) as client:
        # Find a free 15-minute slot next Monday, then fill it.
        monday = TODAY + timedelta(days=5)
        events = (await client.get("/appointments/getCalendarEventData", params=week_range(monday, 1))).json()
        busy = {event["start"][11:16] for event in events}
        free = next(
            f"{hour:02d}:{minute:02d}"
            for hour in range(8, 17)
            for minute in (0, 15, 30, 45)
            if f"{hour:02d}:{minute:02d}" not in busy
            and not any(e["start"][11:16] < f"{hour:02d}:{minute:02d}" < e["end"][11:16] for e in events)
        )
        booking = {"patient_id": "3", "type_id": "1", "appointment_date": monday.isoformat(), "time": free}
        multipart = {key: (None, value) for key, value in booking.items()}
        created = await client.post("/appointments/create", files=multipart)
        assert created.status_code == 201, created.text
        appointment = created.json()["appointment"]
        assert appointment["status"] == "booked"
        assert appointment["time"] == free and appointment["duration_minutes"] == 15
        assert appointment["patient_id"] == 3 and appointment["species"]

        full = await client.post("/appointments/create", data=booking)
        assert full.status_code == 409
        error = full.json()["error"]
        assert error["code"] == "slot_full"
        assert error["capacity"] == 1 and error["booked"] == 1
        assert error["slot_start"] == f"{monday.isoformat()}T{free}:00"
        assert "is full" in error["message"]

        sunday = TODAY + timedelta(days=4)
        closed = await client.post(
            "/appointments/create", data=booking | {"appointment_date": sunday.isoformat()}
        )
        assert closed.status_code == 422
        assert closed.json()["error"]["code"] == "outside_business_hours"
        late = await client.post("/appointments/create", data=booking | {"time": "16:50"})
        assert late.json()["error"]["code"] == "outside_business_hours"
        unknown = await client.post("/appointments/create", data=booking | {"patient_id": "99999"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "patient_not_found"
        missing = await client.post("/appointments/create", data={"type_id": "1"})
        assert missing.status_code == 400 and missing.json()["error"]["field"] == "patient_id"

        # Reschedule = cancel + create: cancelling frees the slot for the new booking.
        cancel = await client.post(f"/appointments/delete/{appointment['id']}", json={"action": "cancel"})
        assert cancel.json() == {"success": True, "id": appointment["id"], "action": "cancel"}
        again = await client.post(f"/appointments/delete/{appointment['id']}", json={"action": "cancel"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_cancelled"
        fetched = (await client.get("/appointments/getAppointment", params={"id": appointment["id"]})).json()
        assert fetched["appointment"]["status"] == "cancelled"
        assert fetched["appointment"]["cancelled_at"] == "2026-03-04T15:00:00"
        rebooked = await client.post("/appointments/create", data=booking)
        assert rebooked.status_code == 201

        deleted = await client.post(
            f"/appointments/delete/{rebooked.json()['appointment']['id']}", json={"action": "delete"}
        )
        assert deleted.status_code == 200
        gone = await client.get(
            "/appointments/getAppointment", params={"id": rebooked.json()["appointment"]["id"]}
        )
        assert gone.status_code == 404
        bad_action = await client.post(f"/appointments/delete/{appointment['id']}", json={"action": "move"})
        assert bad_action.status_code == 400 and bad_action.json()["error"]["code"] == "invalid_action"


async def test_clients_and_animals(sandbox_factory: SandboxFactory, control: ControlClientFactory) -> None:
    server = await start(sandbox_factory, control)
    async with signed_in(server) as client:
        created = await client.post(
            "/clients/create",
            data={
                "first_name": "Marta",
                "last_name": "Quill",
                "email": "marta@example.com",
                "phone": "+15035550123",
            },
        )
        assert created.status_code == 201
        owner = created.json()["client"]
        duplicate = (
            await client.get("/clients/duplicateCheck", params={"first_name": "marta", "last_name": "QUILL"})
        ).json()
        assert duplicate["has_duplicates"] is True
        assert [row["id"] for row in duplicate["duplicates"]] == [owner["id"]]
        assert (await client.get("/clients/duplicateCheck", params={"email": "nobody@example.com"})).json()[
            "has_duplicates"
        ] is False
        found = (await client.get("/clients/search", params={"q": "quill"})).json()
        assert [row["id"] for row in found["results"]] == [owner["id"]]
        assert (await client.post("/clients/create", data={"first_name": "X"})).json()["error"][
            "field"
        ] == "last_name"

        animal = await client.post(
            "/patients/create",
            data={"client_id": str(owner["id"]), "name": "Pip", "species": "Feline", "breed": "Siamese"},
        )
        assert animal.status_code == 201
        pet = animal.json()["patient"]
        assert pet["client"] == {"id": owner["id"], "name": "Marta Quill"}
        fetched = (await client.get(f"/patients/getPatient/{pet['id']}")).json()["patient"]
        assert fetched["species"] == "Feline" and fetched["breed"] == "Siamese"
        mine = (await client.get("/search/patients", params={"client_id": owner["id"]})).json()
        assert [row["name"] for row in mine["results"]] == ["Pip"]
        assert (await client.get(f"/clients/getClient/{owner['id']}")).json()["client"]["patient_ids"] == [
            pet["id"]
        ]
        orphan = await client.post(
            "/patients/create", data={"client_id": "99999", "name": "Ghost", "species": "Canine"}
        )
        assert orphan.status_code == 404 and orphan.json()["error"]["code"] == "client_not_found"
        assert (await client.get("/patients/getPatient/99999")).status_code == 404


async def test_past_visits_have_consultations_with_soap_and_discharge(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    server = await start(sandbox_factory, control)
    async with signed_in(server) as client:
        first = TODAY - timedelta(days=14)
        past = (await client.get("/appointments/getCalendarEventData", params=week_range(first, 15))).json()
        completed = [event for event in past if event["extendedProps"]["status"] == "completed"]
        assert completed
        detail = (await client.get("/appointments/getAppointment", params={"id": completed[0]["id"]})).json()
        consultation_id = detail["appointment"]["consultation_id"]
        assert consultation_id is not None
        view = (await client.get(f"/consultations/view/{consultation_id}")).json()["consultation"]
        assert view["appointment_id"] == completed[0]["id"]
        assert all(view["soap"][part] for part in ("subjective", "objective", "assessment", "plan"))
        assert detail["appointment"]["patient_name"] in view["discharge_summary"]

        found = (
            await client.get(
                "/consultations/search",
                params={"date_from": first.isoformat(), "date_to": TODAY.isoformat(), "limit": 200},
            )
        ).json()
        assert found["total"] == len(completed)
        assert all("soap" not in row and row["has_discharge_summary"] for row in found["results"])
        future = (
            await client.get(
                "/consultations/search", params={"date_from": (TODAY + timedelta(days=1)).isoformat()}
            )
        ).json()
        assert future["total"] == 0
        assert (await client.get("/consultations/view/99999")).status_code == 404


async def test_front_desk_actions(sandbox_factory: SandboxFactory, control: ControlClientFactory) -> None:
    server = await start(sandbox_factory, control)
    admin = await control(server)
    async with signed_in(server) as client:
        owner = (
            await admin.post("/actions/add_client", json={"first_name": "Noor", "last_name": "Haddad"})
        ).json()
        pet = (
            await admin.post(
                "/actions/add_patient", json={"client_id": owner["id"], "name": "Tofu", "species": "Rabbit"}
            )
        ).json()
        assert (await client.get(f"/patients/getPatient/{pet['id']}")).json()["patient"]["name"] == "Tofu"

        visit = await admin.post(
            "/actions/add_past_consultation",
            json={
                "patient_id": pet["id"],
                "days_ago": 2,
                "time": "11:00",
                "type_id": 2,
                "plan": "Booster in 3 weeks",
            },
        )
        assert visit.status_code == 200
        body = visit.json()
        assert body["appointment"]["status"] == "completed"
        assert body["appointment"]["appointment_date"] == (TODAY - timedelta(days=2)).isoformat()
        assert body["consultation"]["soap"]["plan"] == "Booster in 3 weeks"
        assert "Tofu" in body["consultation"]["discharge_summary"]
        found = (await client.get("/consultations/search", params={"patient_id": pet["id"]})).json()
        assert [row["id"] for row in found["results"]] == [body["consultation"]["id"]]

        future = (
            await client.get(
                "/appointments/getCalendarEventData", params=week_range(TODAY + timedelta(days=1))
            )
        ).json()
        target = future[0]["id"]
        cancelled = await admin.post("/actions/cancel_appointment", json={"id": target})
        assert cancelled.json()["status"] == "cancelled"
        after = (
            await client.get(
                "/appointments/getCalendarEventData", params=week_range(TODAY + timedelta(days=1))
            )
        ).json()
        assert target not in {event["id"] for event in after}
        assert (await admin.post("/actions/cancel_appointment", json={"id": target})).status_code == 409
        assert (
            await admin.post("/actions/add_patient", json={"client_id": 99999, "name": "X", "species": "Y"})
        ).status_code == 404


async def read_pages(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        response = await client.get(path, params={"page": page, "limit": 200})
        assert response.status_code == 200, response.text
        body = response.json()
        rows.extend(body["results"])
        if page >= body["pages"]:
            return rows
        page += 1


@pytest.mark.slow
async def test_full_paginated_read_of_the_large_clinic(
    sandbox_factory: SandboxFactory, control: ControlClientFactory
) -> None:
    # At two visits per 15-minute slot the default 91-day window holds about 3,000 visits, so the
    # window is widened to 2,001 days (about 35 visits each working day) to place all 50,000.
    spec = {
        "seed": 11,
        "patients": 10_000,
        "appointments": 50_000,
        "today": TODAY.isoformat(),
        "days_before": 1000,
        "days_after": 1000,
    }
    server = await start(sandbox_factory, control, spec=spec)
    admin = await control(server)
    summary = (await admin.get("/state")).json()["summary"]
    assert summary["clients"] == 10_000 and summary["appointments"] == 50_000
    async with signed_in(server) as client:
        clients = await read_pages(client, "/clients/search")
        assert len(clients) == len({row["id"] for row in clients}) == 10_000
        animals = await read_pages(client, "/search/patients")
        animal_ids = {row["id"] for row in animals}
        assert len(animals) == len(animal_ids) == summary["patients"]
        # Each animal is listed under exactly one owner.
        owned = [animal for row in clients for animal in row["patient_ids"]]
        assert len(owned) == len(set(owned)) and set(owned) == animal_ids
        events: list[dict[str, Any]] = []
        cursor, last = TODAY - timedelta(days=1000), TODAY + timedelta(days=1001)
        while cursor < last:
            end = min(cursor + timedelta(days=62), last)
            response = await client.get(
                "/appointments/getCalendarEventData",
                params={"start": cursor.isoformat(), "end": end.isoformat(), "include_cancelled": "1"},
            )
            assert response.status_code == 200, response.text
            events.extend(response.json())
            cursor = end
        assert len(events) == len({event["id"] for event in events}) == 50_000
        cancelled = sum(1 for event in events if event["extendedProps"]["status"] == "cancelled")
        assert cancelled == summary["cancelled"]
        consultations = (await client.get("/consultations/search", params={"limit": 1})).json()["total"]
        assert consultations == summary["consultations"] > 0
