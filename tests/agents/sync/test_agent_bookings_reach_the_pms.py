"""Agents book through the SyncManager: MCP over HTTP against a clinic connected to the OpenDental sandbox."""

from __future__ import annotations

from typing import Any

import httpx
from mcp.client import Client

from clinicsync.tenancy.models import Role
from tests.agents.test_mcp import http_session, said
from tests.conftest import RunningServer
from tests.factories import TenantFactory, future_day
from tests.sync.conftest import DUAL_WRITE, EXTERNAL_ONLY, Connected, configure, eventually, refs_of


async def agent_session(server: RunningServer, od: Connected, tenant_factory: TenantFactory) -> Client:
    service = await tenant_factory(role=Role.SERVICE, organization_id=od.clinic.tenant.organization_id)
    return http_session(
        server.base_url, {**service.headers, "X-Booking-Source": "ai_voice", "X-Conversation-Id": "c-1"}
    )


async def book_by_voice(session: Client) -> dict[str, Any]:
    day = future_day()
    slots = await session.call_tool("find_slots", {"date": str(day), "part_of_day": "afternoon"})
    assert said(slots).startswith(f"I can offer {day:%A} {day.day} {day:%B} at 12 pm with ")
    registered = await session.call_tool(
        "register_patient",
        {
            "first_name": "Rosa",
            "last_name": "Diaz",
            "phone": "three one two, eight six seven, five three oh nine",
        },
    )
    patient_id = registered.structured_content["patient_id"]  # type: ignore[index]
    booked = await session.call_tool(
        "book", {"patient_id": patient_id, "start": f"{day} 14:00", "reason": "Filling"}
    )
    assert not booked.is_error, said(booked)
    return dict(booked.structured_content or {})


async def test_dual_write_pushes_an_agent_booking_to_opendental_through_the_outbox(
    server: RunningServer, client: httpx.AsyncClient, opendental: Connected, tenant_factory: TenantFactory
) -> None:
    od = opendental
    await configure(client, od, **DUAL_WRITE, sync_on_update=True, sync_on_delete=True)
    async with await agent_session(server, od, tenant_factory) as session:
        booked = await book_by_voice(session)
        path = f"/api/v1/appointments/{booked['appointment_id']}"

        async def confirmed() -> list[dict[str, Any]] | None:
            refs = await refs_of(client, od, path)
            return refs if refs and refs[0]["sync_state"] == "confirmed" else None

        refs = await eventually(confirmed)
        row = (await od.pms.get(f"/appointments/{refs[0]['external_id']}")).json()
        assert booked["booking_reference"] in row["Note"] and row["AptDateTime"].endswith("14:00:00")
        patient = (await od.pms.get(f"/patients/{row['PatNum']}")).json()
        assert (patient["FName"], patient["LName"]) == ("Rosa", "Diaz")

        cancelled = await session.call_tool(
            "cancel", {"booking_reference": booked["booking_reference"], "phone": "312-867-5309"}
        )
        assert said(cancelled).startswith(f"Cancelled booking {booked['booking_reference']} for ")

        async def broken() -> bool:
            return bool(
                (await od.pms.get(f"/appointments/{refs[0]['external_id']}")).json()["AptStatus"] == "Broken"
            )

        await eventually(broken)


async def test_external_only_books_straight_into_opendental(
    server: RunningServer, client: httpx.AsyncClient, opendental: Connected, tenant_factory: TenantFactory
) -> None:
    od = opendental
    await configure(client, od, **EXTERNAL_ONLY)
    async with await agent_session(server, od, tenant_factory) as session:
        booked = await book_by_voice(session)
        reference = booked["booking_reference"]
        # Written into the PMS before the agent heard back: no outbox, no waiting.
        in_pms = [
            row for row in (await od.pms.get("/appointments")).json() if reference in (row.get("Note") or "")
        ]
        assert len(in_pms) == 1 and in_pms[0]["AptDateTime"].endswith("14:00:00")
        outbox = (await client.get("/api/admin/sync/outbox", headers=od.headers)).json()
        assert outbox["items"] == []
        looked = await session.call_tool(
            "lookup_booking", {"booking_reference": reference, "phone": "+1 312 867 5309"}
        )
        assert said(looked).startswith(f"Booking {reference} is ")
        trail = (await client.get("/api/v1/agents/bookings", headers=od.headers)).json()
        assert [(t["booking_reference"], t["surface"], t["call_id"]) for t in trail] == [
            (reference, "mcp", "c-1")
        ]

        # Moved and cancelled by the caller: each change is in the PMS by the time the agent answers.
        day = future_day()
        moved = await session.call_tool(
            "reschedule",
            {"booking_reference": reference, "phone": "312 867 5309", "new_start": f"{day} 15:30"},
        )
        assert not moved.is_error, said(moved)
        assert said(moved).startswith(f"Moved booking {reference} to {day:%A} {day.day} {day:%B} at 3:30 pm")

        def live_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rows if reference in (r.get("Note") or "") and r["AptStatus"] != "Broken"]

        after_move = live_rows((await od.pms.get("/appointments")).json())
        assert [row["AptDateTime"][-8:] for row in after_move] == ["15:30:00"]
        cancelled = await session.call_tool("cancel", {"booking_reference": reference, "phone": "3128675309"})
        assert said(cancelled) == f"Cancelled booking {reference} for {day:%A} {day.day} {day:%B} at 3:30 pm."
        assert live_rows((await od.pms.get("/appointments")).json()) == []
        assert (await client.get("/api/admin/sync/outbox", headers=od.headers)).json()["items"] == []
