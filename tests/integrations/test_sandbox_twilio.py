"""The shipped Twilio definition, through the admin API, against a loopback stand-in for Twilio.

The clinic's integration overrides the catalogue's base URL, which is how a test (or a Twilio-
compatible gateway) points the shipped definition elsewhere. The stand-in checks what Twilio
checks: HTTP Basic with the Account SID and Auth Token, the account in the path, form fields.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from integration_servers import serve

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "f00dfeedcafe0123456789abcdef0123"


def twilio_stand_in() -> tuple[FastAPI, list[dict[str, str]]]:
    app = FastAPI()
    messages: list[dict[str, str]] = []

    def authorised(request: Request, account_sid: str) -> bool:
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        return account_sid == ACCOUNT_SID and request.headers.get("authorization") == f"Basic {expected}"

    def refused() -> JSONResponse:
        body = {"code": 20003, "message": "Authenticate", "status": 401}
        return JSONResponse(body, 401, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})

    @app.get("/2010-04-01/Accounts/{account_sid}.json")
    async def account(request: Request, account_sid: str) -> JSONResponse:
        if not authorised(request, account_sid):
            return refused()
        return JSONResponse({"sid": ACCOUNT_SID, "friendly_name": "Main Street Clinic", "status": "active"})

    @app.post("/2010-04-01/Accounts/{account_sid}/Messages.json")
    async def send(request: Request, account_sid: str) -> JSONResponse:
        if not authorised(request, account_sid):
            return refused()
        form = dict(parse_qsl((await request.body()).decode()))
        messages.append(form)
        sid = f"SM{len(messages):032d}"
        return JSONResponse(
            {"sid": sid, "status": "queued", "to": form.get("To"), "body": form.get("Body")}, 201
        )

    return app, messages


async def test_credential_test_and_sms_through_the_shipped_definition(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    h = tenant.headers
    app, messages = twilio_stand_in()
    async with serve(app) as root:
        created = await client.post(
            "/api/admin/integrations",
            headers=h,
            json={
                "provider_key": "twilio",
                "base_url": root + "/2010-04-01",
                "settings": {"account_sid": ACCOUNT_SID},
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["catalogue_id"] is not None  # the shipped definition, not a copy

        good = await client.post(
            "/api/admin/api-credentials",
            headers=h,
            json={
                "provider_key": "twilio",
                "secrets": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
            },
        )
        assert good.status_code == 201, good.text
        tested = await client.post(f"/api/admin/api-credentials/{good.json()['id']}/test", headers=h)
        assert tested.status_code == 200, tested.text
        assert tested.json()["success"] is True and tested.json()["function"] == "get_account"
        stored = (await client.get(f"/api/admin/api-credentials/{good.json()['id']}", headers=h)).json()
        assert stored["last_test_ok"] is True and stored["last_test_latency_ms"] is not None

        sent = await client.post(
            "/api/integrations/twilio",
            headers=h,
            json={
                "function": "send_sms",
                "params": {"to": "(415) 555-0123", "from": "+1 503 555 0199", "body": "See you at 9"},
            },
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["records"] == [{"id": f"SM{1:032d}", "status": "queued"}]
        assert messages == [{"To": "+14155550123", "From": "+15035550199", "Body": "See you at 9"}]

        await client.delete(f"/api/admin/api-credentials/{good.json()['id']}", headers=h)
        wrong = await client.post(
            "/api/admin/api-credentials",
            headers=h,
            json={"provider_key": "twilio", "secrets": {"account_sid": ACCOUNT_SID, "auth_token": "0" * 32}},
        )
        failed = await client.post(f"/api/admin/api-credentials/{wrong.json()['id']}/test", headers=h)
        assert failed.status_code == 200
        assert failed.json()["success"] is False and failed.json()["code"] == "auth_failed"
        assert "Authenticate" in failed.json()["error"]
        assert AUTH_TOKEN not in failed.text
