"""GET /api/v1/events over a real loopback server, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.booking import service as booking_service
from clinicsync.booking.schemas import PatientCreate
from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.realtime import service as realtime_service
from clinicsync.realtime.models import ChangeEvent
from clinicsync.realtime.reader import open_stream
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.principal import Principal
from tests.conftest import RunningServer
from tests.factories import Clinic, Tenant, TenantFactory, booking, future_day, open_clinic


async def book(
    client: httpx.AsyncClient, clinic: Clinic, hour: int, *, headers: dict[str, str] | None = None
) -> str:
    response = await client.post(
        "/api/v1/appointments",
        json=booking(clinic, clinic.local(future_day(), hour)),
        headers=headers or clinic.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def login_for(client: httpx.AsyncClient, clinic: Clinic, email: str) -> str:
    """A token for the clinic's user with this email (issued by the clinic's owner)."""
    users = (await client.get("/api/v1/users", headers=clinic.headers)).json()
    user_id = next(user["id"] for user in users if user["email"] == email)
    issued = await client.post("/api/v1/tokens", json={"user_id": user_id}, headers=clinic.headers)
    assert issued.status_code == 201, issued.text
    return str(issued.json()["token"])


async def test_a_reconnect_with_last_event_id_receives_every_missed_event_in_order(
    server: RunningServer, client: httpx.AsyncClient, clinic: Clinic
) -> None:
    async with open_stream(server.base_url, clinic.tenant.token) as stream:
        first_id = await book(client, clinic, 9)
        seen = await stream.next_event()
        assert seen.json["entity"] == "appointment"
        assert seen.json["entity_id"] == first_id
        assert seen.json["operation"] == "created"

    # While disconnected: three bookings, a cancellation and a change of hours.
    missed = [await book(client, clinic, hour) for hour in (10, 11, 12)]
    cancelled = await client.post(
        f"/api/v1/appointments/{missed[0]}/cancel", json={"reason": "patient called"}, headers=clinic.headers
    )
    assert cancelled.status_code == 200
    hours = await client.put(
        f"/api/v1/practitioners/{clinic.practitioner_id}/availability",
        json={
            "intervals": [
                {"day_of_week": day, "start_time": "08:00", "end_time": "18:00"} for day in range(7)
            ]
        },
        headers=clinic.headers,
    )
    assert hours.status_code == 200

    async with open_stream(server.base_url, clinic.tenant.token, last_event_id=seen.id) as stream:
        replayed = await stream.take(5)
    assert [(m.json["entity"], m.json["entity_id"], m.json["operation"]) for m in replayed] == [
        ("appointment", missed[0], "created"),
        ("appointment", missed[1], "created"),
        ("appointment", missed[2], "created"),
        ("appointment", missed[0], "updated"),
        ("availability", str(clinic.practitioner_id), "updated"),
    ]
    ids = [int(m.id or 0) for m in replayed]
    assert ids == sorted(ids) and ids[0] > int(seen.id or 0)
    assert replayed[3].json["payload"]["status"] == "cancelled"


async def test_a_rolled_back_change_emits_nothing(
    server: RunningServer,
    client: httpx.AsyncClient,
    clinic: Clinic,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    principal = Principal(clinic.tenant.organization_id, clinic.tenant.user_id, Role.OWNER)
    async with open_stream(server.base_url, clinic.tenant.token) as stream:
        try:
            async with session_scope(sessionmaker) as session:
                ghost = await booking_service.create_patient(
                    session, principal, PatientCreate(first_name="Never", last_name="Saved")
                )
                await session.flush()
                raise RuntimeError("the request failed after the write")
        except RuntimeError:
            pass
        after = await book(client, clinic, 14)
        event = await stream.next_event()
    assert event.json["entity_id"] == after
    async with sessionmaker() as session:
        rows = await session.scalars(select(ChangeEvent).where(ChangeEvent.entity_id == ghost.id))
        assert list(rows) == []


async def test_another_organizations_stream_never_carries_our_events(
    server: RunningServer, client: httpx.AsyncClient, clinic: Clinic, tenant_factory: TenantFactory
) -> None:
    other = await open_clinic(client, await tenant_factory())
    async with open_stream(server.base_url, other.tenant.token) as stream:
        await book(client, clinic, 9)
        await client.patch(
            f"/api/v1/patients/{clinic.patient_id}", json={"first_name": "Ann"}, headers=clinic.headers
        )
        theirs = await book(client, other, 9)
        event = await stream.next_event()
    assert event.json["entity_id"] == theirs
    assert event.json["organization_id"] == str(other.tenant.organization_id)


async def test_a_practitioner_receives_only_their_own_appointments(
    server: RunningServer, client: httpx.AsyncClient, clinic: Clinic
) -> None:
    created = await client.post(
        "/api/v1/practitioners", json={"name": "Dr. Lin", "email": "lin@example.com"}, headers=clinic.headers
    )
    assert created.status_code == 201
    lin = Clinic(clinic.tenant, created.json()["id"], clinic.patient_id)
    await client.put(
        f"/api/v1/practitioners/{lin.practitioner_id}/availability",
        json={
            "intervals": [
                {"day_of_week": day, "start_time": "09:00", "end_time": "17:00"} for day in range(7)
            ]
        },
        headers=clinic.headers,
    )
    token = await login_for(client, clinic, "lin@example.com")
    async with open_stream(server.base_url, token) as stream:
        await book(client, clinic, 9)  # Dr. Byron's
        await client.patch(
            f"/api/v1/patients/{clinic.patient_id}", json={"first_name": "Ann"}, headers=clinic.headers
        )
        own = await book(client, lin, 10)
        event = await stream.next_event()
        assert (event.json["entity"], event.json["entity_id"]) == ("appointment", own)
        # Removing Dr. Byron cancels their appointments in one bulk statement: still not Lin's business.
        removed = await client.delete(
            f"/api/v1/practitioners/{clinic.practitioner_id}", headers=clinic.headers
        )
        assert removed.json()["cancelled_appointments"] == 1
        cancel = await client.post(f"/api/v1/appointments/{own}/cancel", json={}, headers=clinic.headers)
        assert cancel.status_code == 200
        event = await stream.next_event()
    assert (event.json["entity_id"], event.json["payload"]["status"]) == (own, "cancelled")


async def test_removing_a_practitioner_streams_the_cancellation_of_each_appointment(
    server: RunningServer, client: httpx.AsyncClient, clinic: Clinic
) -> None:
    booked = [await book(client, clinic, hour) for hour in (9, 10)]
    async with open_stream(server.base_url, clinic.tenant.token) as stream:
        removed = await client.delete(
            f"/api/v1/practitioners/{clinic.practitioner_id}", headers=clinic.headers
        )
        assert removed.status_code == 200
        events = await stream.take(3)
    changes = {(m.json["entity"], m.json["entity_id"], m.json["payload"].get("status")) for m in events}
    assert changes == {
        ("practitioner", str(clinic.practitioner_id), None),
        ("appointment", booked[0], "cancelled"),
        ("appointment", booked[1], "cancelled"),
    }


async def test_a_service_account_receives_only_what_it_booked(
    server: RunningServer, client: httpx.AsyncClient, clinic: Clinic
) -> None:
    created = await client.post(
        "/api/v1/users", json={"email": "bot@example.com", "role": "service"}, headers=clinic.headers
    )
    assert created.status_code == 201, created.text
    bot = Tenant(clinic.tenant.organization_id, created.json()["id"], "", clinic.tenant.time_zone)
    bot = Tenant(
        bot.organization_id, bot.user_id, await login_for(client, clinic, "bot@example.com"), bot.time_zone
    )
    async with open_stream(server.base_url, bot.token) as stream:
        await book(client, clinic, 9)  # booked by the owner
        mine = await book(client, clinic, 10, headers=bot.headers)
        event = await stream.next_event()
        assert event.json["entity_id"] == mine
        # A later change by someone else to the bot's booking still reaches it.
        await client.post(f"/api/v1/appointments/{mine}/cancel", json={}, headers=clinic.headers)
        event = await stream.next_event()
    assert (event.json["entity_id"], event.json["operation"]) == (mine, "updated")


async def test_events_carry_ids_and_display_names_but_no_patient_details(
    server: RunningServer, client: httpx.AsyncClient, clinic: Clinic
) -> None:
    async with open_stream(server.base_url, clinic.tenant.token) as stream:
        await client.patch(
            f"/api/v1/patients/{clinic.patient_id}", json={"phone": "+1 202 555 0199"}, headers=clinic.headers
        )
        patient = await stream.next_event()
        await book(client, clinic, 9)
        appointment = await stream.next_event()
    assert patient.json["payload"] == {"display_name": "Grace H."}
    assert set(appointment.json["payload"]) == {
        "practitioner_id",
        "patient_id",
        "starts_at",
        "ends_at",
        "status",
        "booking_source",
        "booking_reference",
        "version",
    }
    # The phone as typed and as stored; not a short fragment of it, which a random id may hold.
    for text in ("555 0199", "2025550199", "g@example.com", "Hopper"):
        assert text not in patient.data + appointment.data


async def test_an_idle_stream_gets_heartbeats(server: RunningServer, clinic: Clinic) -> None:
    async with open_stream(server.base_url, clinic.tenant.token) as stream:
        block = await stream.next_block(timeout=5)
    assert block.comments == ["heartbeat"] and block.data == ""


async def test_a_client_behind_the_retention_window_is_told_to_reload(
    server: RunningServer,
    client: httpx.AsyncClient,
    clinic: Clinic,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with open_stream(server.base_url, clinic.tenant.token) as stream:
        await book(client, clinic, 9)
        old = await stream.next_event()
    for hour in (10, 11):
        await book(client, clinic, hour)
    async with session_scope(sessionmaker) as session:
        removed = await realtime_service.prune(session, utcnow() + timedelta(seconds=1))
    assert removed > 0
    async with sessionmaker() as session:
        kept = list(await session.scalars(select(ChangeEvent.id)))
    assert len(kept) == 1  # the newest stays, marking where the window begins
    async with open_stream(server.base_url, clinic.tenant.token, last_event_id=old.id) as stream:
        told = await stream.next_event()
    assert told.event == "reload"
    assert told.json == {"reason": "too_far_behind"}


async def test_a_malformed_last_event_id_is_refused_naming_the_header(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    response = await client.get("/api/v1/events", headers={**clinic.headers, "Last-Event-ID": "yesterday"})
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "Last-Event-ID", "reason": "must be the numeric id of an event"}
    ]


async def test_the_stream_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/events")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
