"""The shipped OpenAI definition, through the admin API, against a loopback stand-in for the API.

No test reaches the internet: the clinic's integration points the catalogue definition at the
stand-in by overriding its base URL. The stand-in checks the Bearer key and answers in the
API's shapes (the model list, a chat completion, the error envelope).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from integration_servers import serve

API_KEY = "sk-test-4f8a1c2b9d7e6f5a3b2c1d0e"


def openai_stand_in() -> tuple[FastAPI, list[dict[str, Any]]]:
    app = FastAPI()
    chats: list[dict[str, Any]] = []

    def refused(request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") == f"Bearer {API_KEY}":
            return None
        error = {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        return JSONResponse({"error": error}, 401)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if (answer := refused(request)) is not None:
            return answer
        data = [
            {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
            {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        if (answer := refused(request)) is not None:
            return answer
        body = json.loads(await request.body())
        chats.append(body)
        reply = {"role": "assistant", "content": "Tuesday at 9:00 is free."}
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(chats)}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
            }
        )

    return app, chats


async def test_credential_test_and_chat_through_the_shipped_definition(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    h = tenant.headers
    app, chats = openai_stand_in()
    async with serve(app) as root:
        created = await client.post(
            "/api/admin/integrations", headers=h, json={"provider_key": "openai", "base_url": root + "/v1"}
        )
        assert created.status_code == 201, created.text
        assert created.json()["catalogue_id"] is not None

        good = await client.post(
            "/api/admin/api-credentials",
            headers=h,
            json={"provider_key": "openai", "secrets": {"api_key": API_KEY}},
        )
        assert good.status_code == 201, good.text
        tested = await client.post(f"/api/admin/api-credentials/{good.json()['id']}/test", headers=h)
        assert tested.status_code == 200, tested.text
        assert tested.json()["success"] is True and tested.json()["function"] == "list_models"

        listed = await client.post("/api/integrations/openai", headers=h, json={"function": "list_models"})
        assert listed.status_code == 200, listed.text
        assert listed.json()["records"] == [
            {"id": "gpt-4o-mini", "owner": "system"},
            {"id": "gpt-4o", "owner": "system"},
        ]

        messages = [{"role": "user", "content": "Is Tuesday morning free?"}]
        answered = await client.post(
            "/api/integrations/openai",
            headers=h,
            json={"function": "chat", "params": {"messages": messages, "max_tokens": 50}},
        )
        assert answered.status_code == 200, answered.text
        assert answered.json()["records"] == [{"id": "chatcmpl-1", "text": "Tuesday at 9:00 is free."}]
        assert chats == [{"model": "gpt-4o-mini", "messages": messages, "max_tokens": 50}]

        await client.delete(f"/api/admin/api-credentials/{good.json()['id']}", headers=h)
        wrong = await client.post(
            "/api/admin/api-credentials",
            headers=h,
            json={"provider_key": "openai", "secrets": {"api_key": "sk-test-revoked-0000000000"}},
        )
        failed = await client.post(f"/api/admin/api-credentials/{wrong.json()['id']}/test", headers=h)
        assert failed.status_code == 200
        assert failed.json()["success"] is False and failed.json()["code"] == "auth_failed"
        assert "Incorrect API key" in failed.json()["error"]
        status = (await client.get("/api/integrations/openai", headers=h)).json()
        assert status["credential_present"] and status["credential_valid"] is False
