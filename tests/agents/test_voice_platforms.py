"""Vapi and Retell reach the tools through channels: retries book once, bad signatures are refused."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from clinicsync.agents.service import retell_signature
from tests.agents.conftest import AgentClinic, call

RETELL_KEY = "key_retell_0d7c1e5a9b3f42e8"


async def channel(
    client: httpx.AsyncClient, clinic: AgentClinic, platform: str, **extra: Any
) -> dict[str, Any]:
    made = await client.post(
        "/api/v1/agents/channels",
        json={"platform": platform, "name": f"{platform} line", **extra},
        headers=clinic.owner.headers,
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def vapi_message(
    call_id: str, *calls: tuple[str, str, dict[str, Any]], as_text: bool = False
) -> dict[str, Any]:
    return {
        "message": {
            "type": "tool-calls",
            "call": {"id": call_id, "orgId": "org-vapi"},
            "toolCallList": [
                {
                    "id": tool_call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments) if as_text else arguments},
                }
                for tool_call_id, name, arguments in calls
            ],
        }
    }


async def patient(client: httpx.AsyncClient, clinic: AgentClinic) -> str:
    answer = await call(
        client,
        clinic,
        "register_patient",
        first_name="Noah",
        last_name="Park",
        phone="0411 222 333",
        date_of_birth="1979-03-09",
    )
    return str(answer["data"]["patient_id"])


async def count_bookings(client: httpx.AsyncClient, clinic: AgentClinic) -> int:
    page = await client.get("/api/v1/appointments", headers=clinic.owner.headers)
    return int(page.json()["total"])


async def test_vapi_replayed_three_times_books_once(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    vapi = await channel(client, agent_clinic, "vapi")
    patient_id = await patient(client, agent_clinic)
    start = f"{agent_clinic.day(3)} 09:30"
    message = vapi_message(
        "call-7f3a", ("tc-1", "book", {"patient_id": patient_id, "start": start, "reason": "Toothache"})
    )
    answers = []
    for _ in range(3):
        response = await client.post(
            "/api/v1/agents/vapi/tool-calls", json=message, headers={"X-Vapi-Secret": vapi["token"]}
        )
        assert response.status_code == 200
        answers.append(response.json())
    assert answers[0] == answers[1] == answers[2]
    result = answers[0]["results"][0]
    assert result["toolCallId"] == "tc-1" and result["result"].startswith("Booked Noah Park for ")
    assert await count_bookings(client, agent_clinic) == 1
    trail = (await client.get("/api/v1/agents/bookings", headers=agent_clinic.owner.headers)).json()
    assert [(t["surface"], t["call_id"], t["booking_source"]) for t in trail] == [
        ("vapi", "call-7f3a", "ai_voice")
    ]


async def test_vapi_always_answers_200_with_one_line_results(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    vapi = await channel(client, agent_clinic, "vapi")
    headers = {"Authorization": f"Bearer {vapi['token']}"}
    message = vapi_message(
        "call-91",
        ("a", "find_slots", {"date": str(agent_clinic.day(2)), "part_of_day": "morning"}),
        ("b", "book", {"start": "tomorrow"}),
        ("c", "launch_rockets", {}),
        ("d", "find_patient", {"phone": "one two"}),
        ("e", "list_practitioners", {}),
        as_text=True,
    )
    response = await client.post("/api/v1/agents/vapi/tool-calls", json=message, headers=headers)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["toolCallId"] for r in results] == ["a", "b", "c", "d", "e"]
    assert results[0]["result"].startswith("I can offer ")
    assert results[1] == {"toolCallId": "b", "error": "I still need the patient id."}
    assert results[2] == {"toolCallId": "c", "error": "There is no tool called launch_rockets."}
    assert results[3] == {
        "toolCallId": "d",
        "error": "That phone number doesn't look complete; could you repeat it?",
    }
    assert results[4]["result"].startswith("Dr Mia Lee (Dentist), next free ")
    for result in results:
        text = result.get("result", result.get("error"))
        assert isinstance(text, str) and "\n" not in text
    garbage = await client.post("/api/v1/agents/vapi/tool-calls", content=b"{not json", headers=headers)
    assert garbage.status_code == 200 and garbage.json() == {
        "results": [],
        "error": "The request was not JSON.",
    }
    empty = await client.post(
        "/api/v1/agents/vapi/tool-calls", json={"message": {"type": "status-update"}}, headers=headers
    )
    assert empty.status_code == 200 and empty.json()["error"] == "No tool calls were found in the request."
    stranger = await client.post(
        "/api/v1/agents/vapi/tool-calls", json=message, headers={"X-Vapi-Secret": "cs_guess"}
    )
    assert stranger.status_code == 401


def signed(body: bytes, key: str = RETELL_KEY, at_ms: int | None = None) -> dict[str, str]:
    return {
        "X-Retell-Signature": retell_signature(body, key, at_ms or int(time.time() * 1000)),
        "Content-Type": "application/json",
    }


async def test_retell_replayed_three_times_books_once(
    client: httpx.AsyncClient, agent_clinic: AgentClinic
) -> None:
    retell = await channel(client, agent_clinic, "retell", signing_secret=RETELL_KEY)
    assert "signing_secret" not in retell and "token" in retell
    patient_id = await patient(client, agent_clinic)
    body = json.dumps(
        {
            "name": "book",
            "call": {"call_id": "retell-call-55", "agent_id": "agent_1"},
            "args": {
                "patient_id": patient_id,
                "start": f"{agent_clinic.day(4)} 13:00",
                "practitioner": "Dr Ng",
            },
        }
    ).encode()
    url = f"/api/v1/agents/retell/book?channel={retell['id']}"
    answers = []
    for _ in range(3):
        response = await client.post(url, content=body, headers=signed(body))
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["result"].startswith("Booked Noah Park for ") and answers[0][
        "booking_reference"
    ].startswith("CS-")
    assert await count_bookings(client, agent_clinic) == 1
    trail = (await client.get("/api/v1/agents/bookings", headers=agent_clinic.owner.headers)).json()
    assert [(t["surface"], t["call_id"]) for t in trail] == [("retell", "retell-call-55")]


async def test_retell_refuses_a_bad_signature(client: httpx.AsyncClient, agent_clinic: AgentClinic) -> None:
    retell = await channel(client, agent_clinic, "retell", signing_secret=RETELL_KEY)
    body = json.dumps({"name": "list_practitioners", "call": {"call_id": "c1"}, "args": {}}).encode()
    url = f"/api/v1/agents/retell/list_practitioners?channel={retell['id']}"
    good = await client.post(url, content=body, headers=signed(body))
    assert good.status_code == 200 and good.json()["result"].startswith("Dr Mia Lee")
    refusals = [
        await client.post(url, content=body, headers=signed(body, key="key_someone_else_123")),
        await client.post(url, content=body + b" ", headers=signed(body)),
        await client.post(url, content=body, headers=signed(body, at_ms=int(time.time() * 1000) - 3_600_000)),
        await client.post(url, content=body),
        await client.post("/api/v1/agents/retell/list_practitioners", content=body, headers=signed(body)),
    ]
    assert [r.status_code for r in refusals] == [401, 401, 401, 401, 401]
    assert all(r.json()["error"]["code"] == "unauthorized" for r in refusals)
    no_key = await client.post(
        "/api/v1/agents/channels", json={"platform": "retell"}, headers=agent_clinic.owner.headers
    )
    assert no_key.status_code == 422 and no_key.json()["error"]["details"][0]["field"] == "signing_secret"


async def test_a_revoked_channel_stops_working(client: httpx.AsyncClient, agent_clinic: AgentClinic) -> None:
    vapi = await channel(client, agent_clinic, "vapi")
    listed = await client.get("/api/v1/agents/channels", headers=agent_clinic.owner.headers)
    assert [c["id"] for c in listed.json()] == [vapi["id"]] and "token" not in listed.json()[0]
    gone = await client.delete(f"/api/v1/agents/channels/{vapi['id']}", headers=agent_clinic.owner.headers)
    assert gone.status_code == 204
    message = vapi_message("call-x", ("a", "list_practitioners", {}))
    refused = await client.post(
        "/api/v1/agents/vapi/tool-calls", json=message, headers={"X-Vapi-Secret": vapi["token"]}
    )
    assert refused.status_code == 401
