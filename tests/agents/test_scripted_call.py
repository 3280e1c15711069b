"""A whole phone call as a Vapi assistant makes it, from greeting to confirmed booking.

The caller: "Hi, I'd like to see Dr Lee next week, in the morning. I haven't been before.
My number is oh four one two, three four five, six seven eight." Each tool call is the one a
voice agent makes at that point of the conversation; each answer is asserted word for word,
since it is what the caller hears.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.agents.conftest import AgentClinic


class VapiCall:
    """One Vapi call: every tool request carries the same call id, as Vapi's do."""

    def __init__(self, client: httpx.AsyncClient, token: str, call_id: str) -> None:
        self.client, self.token, self.call_id, self.turn = client, token, call_id, 0

    async def tool(self, name: str, **arguments: Any) -> str:
        self.turn += 1
        message = {
            "message": {
                "type": "tool-calls",
                "call": {"id": self.call_id},
                "toolCallList": [
                    {
                        "id": f"turn-{self.turn}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(arguments)},
                    }
                ],
            }
        }
        response = await self.client.post(
            "/api/v1/agents/vapi/tool-calls", json=message, headers={"X-Vapi-Secret": self.token}
        )
        assert response.status_code == 200
        (result,) = response.json()["results"]
        assert result["toolCallId"] == f"turn-{self.turn}"
        text: str = result.get("result") or result["error"]
        return text


async def test_a_caller_books_with_dr_lee_from_greeting_to_confirmation(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    made = await client.post(
        "/api/v1/agents/channels",
        json={"platform": "vapi", "name": "front line"},
        headers=agent_clinic.owner.headers,
    )
    call = VapiCall(client, made.json()["token"], "call-2f9c")
    day = agent_clinic.day(7)
    spoken_day = f"{day:%A} {day.day} {day:%B}"

    # Agent: "Thanks for calling. Who would you like to see?" Late in the clinic's day nothing is
    # left today (minimum notice), so the first free day is read from the clinic's own slot search.
    today = agent_clinic.day(0)
    free = await client.get(
        "/api/v1/slots",
        params={
            "from": str(today),
            "to": str(today + timedelta(days=1)),
            "practitioner_id": str(agent_clinic.practitioners["Dr Mia Lee"]),
            "limit": "1",
        },
        headers=agent_clinic.owner.headers,
    )
    first_free = datetime.fromisoformat(free.json()["slots"][0]["start"]).astimezone(agent_clinic.zone).date()
    relative = "today" if first_free == today else "tomorrow"
    next_free = f"{relative}, {first_free:%A} {first_free.day} {first_free:%B}"
    assert (await call.tool("list_practitioners")).startswith(
        f"Dr Mia Lee (Dentist), next free {next_free}; "
    )

    # Caller gives a number; the agent checks whether they are a patient.
    assert (
        await call.tool("find_patient", phone="oh four one two, three four five, six seven eight")
        == "I couldn't find that patient; shall I register them as new?"
    )

    # "Could I have your name and date of birth?" - "Priya Shah, the fifth of May 1988."
    registered = await call.tool(
        "register_patient",
        first_name="Priya",
        last_name="Shah",
        phone="oh four one two, three four five, six seven eight",
        date_of_birth="5 May 1988",
    )
    assert registered.startswith("Registered Priya Shah (patient_id ") and registered.endswith(").")
    patient_id = registered.removeprefix("Registered Priya Shah (patient_id ").removesuffix(").")

    # "Dr Lee, next week, in the morning."
    offered = await call.tool("find_slots", practitioner="Dr Lee", date=str(day), part_of_day="morning")
    assert offered == (
        f"I can offer {spoken_day} at 9 am with Dr Mia Lee (start {day} 09:00) or "
        f"{spoken_day} at 9:15 am with Dr Mia Lee (start {day} 09:15)."
    )

    # "Nine o'clock is good." The platform times out and retries the booking twice.
    booked = [
        await call.tool(
            "book",
            patient_id=patient_id,
            start=f"{day} 09:00",
            practitioner="Dr Mia Lee",
            reason="New patient exam",
        )
        for _ in range(3)
    ]
    assert booked[0] == booked[1] == booked[2]
    assert booked[0].startswith(
        f"Booked Priya Shah for {spoken_day} at 9 am with Dr Mia Lee; the booking reference is CS-"
    )
    reference = booked[0].rsplit(" ", 1)[1].rstrip(".")

    # "Can you read that back to me?"
    assert (
        await call.tool("lookup_booking", booking_reference=reference, date_of_birth="1988-05-05")
        == f"Booking {reference} is {spoken_day} at 9 am with Dr Mia Lee."
    )

    # The front desk sees one ai_voice booking with the call's id.
    listed = await client.get(
        "/api/v1/appointments",
        params={"from": f"{day - timedelta(days=1)}T00:00:00Z", "to": f"{day + timedelta(days=1)}T00:00:00Z"},
        headers=agent_clinic.owner.headers,
    )
    items = listed.json()["items"]
    assert [(item["booking_reference"], item["booking_source"]) for item in items] == [
        (reference, "ai_voice")
    ]
    assert "call call-2f9c" in items[0]["notes"] and items[0]["notes"].startswith("New patient exam")
