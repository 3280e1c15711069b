"""The tools over MCP (official SDK): an in-memory session, and streamable HTTP with a service token."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import mcp_types
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.agents.context import AgentContext
from clinicsync.agents.mcp_server import build_server
from clinicsync.booking.models import BookingSource
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.sync.delivery import SyncContext
from clinicsync.sync.manager import SyncManager
from clinicsync.tenancy.models import Role
from tests.agents.conftest import AgentClinic, make_agent_clinic
from tests.conftest import RunningServer


def said(result: mcp_types.CallToolResult) -> str:
    assert len(result.content) == 1 and isinstance(result.content[0], mcp_types.TextContent)
    return result.content[0].text


async def walk_through_a_booking(session: Client, clinic: AgentClinic) -> dict[str, Any]:
    """Find a slot, register, book, reschedule and cancel, asserting what the agent hears at each step."""
    tools = await session.list_tools()
    assert {tool.name for tool in tools.tools} >= {
        "find_slots",
        "register_patient",
        "book",
        "reschedule",
        "cancel",
    }
    day = clinic.day(6)
    slots = await session.call_tool(
        "find_slots", {"practitioner": "Dr Ng", "date": str(day), "part_of_day": "morning"}
    )
    assert not slots.is_error and said(slots).startswith(
        f"I can offer {day:%A} {day.day} {day:%B} at 9 am with Dr Sam Ng"
    )
    first = slots.structured_content["slots"][0]  # type: ignore[index]
    registered = await session.call_tool(
        "register_patient",
        {"first_name": "Lena", "last_name": "Fox", "phone": "0433 111 222", "date_of_birth": "1992-11-30"},
    )
    patient_id = registered.structured_content["patient_id"]  # type: ignore[index]
    assert said(registered) == f"Registered Lena Fox (patient_id {patient_id})."
    booked = await session.call_tool(
        "book",
        {
            "patient_id": patient_id,
            "start": first["start"],
            "practitioner": first["practitioner"],
            "reason": "Clean",
        },
    )
    reference = booked.structured_content["booking_reference"]  # type: ignore[index]
    assert said(booked) == (
        f"Booked Lena Fox for {day:%A} {day.day} {day:%B} at 9 am with Dr Sam Ng; "
        f"the booking reference is {reference}."
    )
    moved = await session.call_tool(
        "reschedule",
        {"booking_reference": reference, "date_of_birth": "1992-11-30", "new_start": f"{day} 16:00"},
    )
    assert said(moved) == f"Moved booking {reference} to {day:%A} {day.day} {day:%B} at 4 pm with Dr Sam Ng."
    refused = await session.call_tool("cancel", {"booking_reference": reference, "phone": "0400 999 888"})
    assert (
        refused.is_error and said(refused) == "I can't find a booking with that reference and those details."
    )
    cancelled = await session.call_tool("cancel", {"booking_reference": reference, "phone": "0433111222"})
    assert said(cancelled) == f"Cancelled booking {reference} for {day:%A} {day.day} {day:%B} at 4 pm."
    return {"reference": reference, "patient_id": patient_id}


async def test_an_in_memory_session_books_moves_and_cancels(
    agent_clinic: AgentClinic,
    sessionmaker: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    server: RunningServer,
) -> None:
    settings = server.settings
    manager = SyncManager(SyncContext(sessionmaker, IntegrationExecutor(sessionmaker, settings), settings))
    agent = AgentContext(agent_clinic.principal(), BookingSource.CHATBOT, "mcp", manager, "conv-memory")
    server = build_server(lambda: sessionmaker, context_of=lambda _ctx: agent)
    async with Client(server) as session:
        done = await walk_through_a_booking(session, agent_clinic)
    trail = (await client.get("/api/v1/agents/bookings", headers=agent_clinic.owner.headers)).json()
    assert [(t["action"], t["surface"], t["booking_source"], t["call_id"]) for t in trail] == [
        ("cancelled", "mcp", "chatbot", "conv-memory"),
        ("rescheduled", "mcp", "chatbot", "conv-memory"),
        ("booked", "mcp", "chatbot", "conv-memory"),
    ]
    assert trail[0]["booking_reference"] == done["reference"]


def http_session(base_url: str, headers: dict[str, str]) -> Client:
    transport = streamable_http_client(
        f"{base_url}/mcp", http_client=httpx2.AsyncClient(headers=headers, timeout=30)
    )
    return Client(transport)


async def test_over_http_a_service_token_books_for_its_own_clinic_only(
    server: RunningServer, client: httpx.AsyncClient, agent_clinic: AgentClinic, tenant_factory: Any
) -> None:
    headers = {
        **agent_clinic.service.headers,
        "X-Booking-Source": "ai_voice",
        "X-Conversation-Id": "voice-88",
    }
    async with http_session(server.base_url, headers) as session:
        done = await walk_through_a_booking(session, agent_clinic)
    appointment = await client.get(
        "/api/v1/appointments", params={"booking_source": "ai_voice"}, headers=agent_clinic.owner.headers
    )
    assert [item["booking_reference"] for item in appointment.json()["items"]] == [done["reference"]]

    other = await make_agent_clinic(client, tenant_factory, names=("Dr Zed Quinn",))
    async with http_session(server.base_url, other.service.headers) as session:
        people = await session.call_tool("list_practitioners", {})
        assert said(people).startswith("Dr Zed Quinn (Dentist), next free ")
        found = await session.call_tool("find_patient", {"phone": "0433 111 222"})
        assert said(found) == "I couldn't find that patient; shall I register them as new?"
        looked = await session.call_tool(
            "lookup_booking", {"booking_reference": done["reference"], "phone": "0433111222"}
        )
        assert (
            looked.is_error
            and said(looked) == "I can't find a booking with that reference and those details."
        )
        slots = await session.call_tool("find_slots", {"practitioner": "Dr Sam Ng"})
        assert said(slots) == "There is no practitioner called Dr Sam Ng taking bookings here."


async def test_http_without_a_valid_token_is_refused(
    server: RunningServer, client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    owner = await tenant_factory()
    practitioner = await tenant_factory(role=Role.PRACTITIONER, organization_id=owner.organization_id)
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    # A practitioner's token is real but lacks agents.tools: refused like no token at all.
    for extra in ({}, {"Authorization": "Bearer cs_not_a_token"}, practitioner.headers):
        response = await client.post("/mcp", json=initialize, headers={**headers, **extra})
        assert response.status_code == 401
    missing = await client.get("/api/v1/no-such-route")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
