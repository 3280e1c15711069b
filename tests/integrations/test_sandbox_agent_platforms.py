"""The shipped Anthropic, Vapi and Retell definitions, through the admin API, against loopback stand-ins.

As with OpenAI and Twilio, no test reaches the internet: the clinic's integration points the
catalogue definition at a stand-in that checks the credential the way the real API does and
answers in its shapes (its list, its error envelope).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from integration_servers import serve

ANTHROPIC_KEY = "sk-ant-test-5b1e9c7d3a2f4e6b"
VAPI_KEY = "vapi-private-2c4e6a8b0d1f3a5c"
RETELL_KEY = "key_retell_9e8d7c6b5a4f3e2d"


def anthropic_stand_in() -> tuple[FastAPI, list[dict[str, Any]]]:
    app = FastAPI()
    messages: list[dict[str, Any]] = []

    def refused(request: Request) -> JSONResponse | None:
        if request.headers.get("anthropic-version") != "2023-06-01":
            error = {"type": "invalid_request_error", "message": "anthropic-version: header is required"}
            return JSONResponse({"type": "error", "error": error}, 400)
        if request.headers.get("x-api-key") != ANTHROPIC_KEY:
            error = {"type": "authentication_error", "message": "invalid x-api-key"}
            return JSONResponse({"type": "error", "error": error}, 401)
        return None

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if (answer := refused(request)) is not None:
            return answer
        data = [
            {
                "type": "model",
                "id": "claude-test-large",
                "display_name": "Claude Test Large",
                "created_at": "2026-01-01T00:00:00Z",
            },
            {
                "type": "model",
                "id": "claude-test-small",
                "display_name": "Claude Test Small",
                "created_at": "2026-01-01T00:00:00Z",
            },
        ]
        return JSONResponse(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[1]["id"]}
        )

    @app.post("/v1/messages")
    async def message(request: Request) -> JSONResponse:
        if (answer := refused(request)) is not None:
            return answer
        body = json.loads(await request.body())
        messages.append(body)
        return JSONResponse(
            {
                "id": f"msg_{len(messages)}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": "Tuesday at 9 am is free with Dr Lee."}],
                "stop_reason": "end_turn",
            }
        )

    return app, messages


def bearer_stand_in(
    key: str, path: str, listing: list[dict[str, Any]], unauthorized: dict[str, Any]
) -> FastAPI:
    app = FastAPI()

    @app.get(path)
    async def listed(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {key}":
            return JSONResponse(unauthorized, 401)
        return JSONResponse(listing)

    return app


async def _credential(
    client: httpx.AsyncClient, headers: dict[str, str], provider: str, key: str
) -> dict[str, Any]:
    made = await client.post(
        "/api/admin/api-credentials",
        headers=headers,
        json={"provider_key": provider, "secrets": {"api_key": key}},
    )
    assert made.status_code == 201, made.text
    tested = await client.post(f"/api/admin/api-credentials/{made.json()['id']}/test", headers=headers)
    assert tested.status_code == 200, tested.text
    body: dict[str, Any] = {"id": made.json()["id"], **tested.json()}
    assert key not in made.text and key not in tested.text
    return body


async def _connect(client: httpx.AsyncClient, headers: dict[str, str], provider: str, base_url: str) -> None:
    created = await client.post(
        "/api/admin/integrations", headers=headers, json={"provider_key": provider, "base_url": base_url}
    )
    assert created.status_code == 201, created.text
    assert created.json()["catalogue_id"] is not None


async def test_anthropic_test_button_and_a_message(client: httpx.AsyncClient, tenant_factory: Any) -> None:
    h = (await tenant_factory()).headers
    app, messages = anthropic_stand_in()
    async with serve(app) as root:
        await _connect(client, h, "anthropic", root + "/v1")
        good = await _credential(client, h, "anthropic", ANTHROPIC_KEY)
        assert good["success"] is True and good["function"] == "list_models"
        listed = await client.post("/api/integrations/anthropic", headers=h, json={"function": "list_models"})
        assert listed.json()["records"] == [
            {"id": "claude-test-large", "name": "Claude Test Large"},
            {"id": "claude-test-small", "name": "Claude Test Small"},
        ]
        said = [{"role": "user", "content": "Is Tuesday morning free?"}]
        answered = await client.post(
            "/api/integrations/anthropic",
            headers=h,
            json={"function": "message", "params": {"model": "claude-test-small", "messages": said}},
        )
        assert answered.status_code == 200, answered.text
        assert answered.json()["records"] == [
            {"id": "msg_1", "text": "Tuesday at 9 am is free with Dr Lee.", "stop_reason": "end_turn"}
        ]
        assert messages == [{"model": "claude-test-small", "max_tokens": 512, "messages": said}]

        await client.delete(f"/api/admin/api-credentials/{good['id']}", headers=h)
        bad = await _credential(client, h, "anthropic", "sk-ant-test-revoked-000000")
        assert bad["success"] is False and bad["code"] == "auth_failed"
        assert "invalid x-api-key" in bad["error"]


async def test_vapi_test_button_lists_assistants(client: httpx.AsyncClient, tenant_factory: Any) -> None:
    h = (await tenant_factory()).headers
    assistants = [
        {"id": "asst-1", "orgId": "org-9", "name": "Front desk", "createdAt": "2026-11-01T00:00:00Z"},
        {"id": "asst-2", "orgId": "org-9", "name": "After hours", "createdAt": "2026-11-02T00:00:00Z"},
    ]
    refusal = {
        "message": "Invalid Key. Hot tip, you may be using the private key instead of the public key.",
        "error": "Unauthorized",
        "statusCode": 401,
    }
    async with serve(bearer_stand_in(VAPI_KEY, "/assistant", assistants, refusal)) as root:
        await _connect(client, h, "vapi", root)
        good = await _credential(client, h, "vapi", VAPI_KEY)
        assert good["success"] is True and good["function"] == "list_assistants"
        listed = await client.post("/api/integrations/vapi", headers=h, json={"function": "list_assistants"})
        assert listed.json()["records"] == [
            {"id": "asst-1", "name": "Front desk"},
            {"id": "asst-2", "name": "After hours"},
        ]
        await client.delete(f"/api/admin/api-credentials/{good['id']}", headers=h)
        bad = await _credential(client, h, "vapi", "vapi-public-key-by-mistake")
        assert bad["success"] is False and bad["code"] == "auth_failed" and "Invalid Key" in bad["error"]


async def test_retell_test_button_lists_agents(client: httpx.AsyncClient, tenant_factory: Any) -> None:
    h = (await tenant_factory()).headers
    agents = [
        {
            "agent_id": "agent_a1",
            "agent_name": "Reception",
            "voice_id": "11labs-Adrian",
            "last_modification_timestamp": 1764633600000,
        },
    ]
    async with serve(
        bearer_stand_in(
            RETELL_KEY, "/list-agents", agents, {"error_message": "Unauthorized: invalid API key"}
        )
    ) as root:
        await _connect(client, h, "retell", root)
        good = await _credential(client, h, "retell", RETELL_KEY)
        assert good["success"] is True and good["function"] == "list_agents"
        listed = await client.post("/api/integrations/retell", headers=h, json={"function": "list_agents"})
        assert listed.json()["records"] == [{"id": "agent_a1", "name": "Reception"}]
        await client.delete(f"/api/admin/api-credentials/{good['id']}", headers=h)
        bad = await _credential(client, h, "retell", "key_retell_wrong_0000")
        assert bad["success"] is False and bad["code"] == "auth_failed"
