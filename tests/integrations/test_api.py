"""The HTTP API end to end: a provider clinicsync has never seen, added and used through the API alone."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from integration_servers import serve
from sqlalchemy import text

SECRET = "pk_live_9f8e7d6c5b4a3210"


def never_seen_pms() -> tuple[FastAPI, list[dict[str, Any]]]:
    """A PMS with its own auth header, paths, field names and cursor paging."""
    app = FastAPI()
    bookings: list[dict[str, Any]] = []

    def authorised(request: Request) -> bool:
        return request.headers.get("x-clinic-key") == SECRET

    @app.get("/v2/chairs/{chair}/bookings")
    async def list_bookings(request: Request, chair: str, after: int = 0) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"fault": "bad key"}, status_code=401)
        page = [b for b in bookings if b["chair"] == chair][after : after + 2]
        more = after + 2 < len([b for b in bookings if b["chair"] == chair])
        return JSONResponse({"result": {"rows": page}, "paging": {"cursor": after + 2 if more else None}})

    @app.post("/v2/chairs/{chair}/bookings")
    async def book(request: Request, chair: str) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"fault": "bad key"}, status_code=401)
        body = await request.json()
        if "WhenLocal" not in body:
            return JSONResponse({"fault": "WhenLocal missing"}, status_code=400)
        booking = {"Ref": f"B{len(bookings) + 1}", "chair": chair, **body}
        bookings.append(booking)
        return JSONResponse({"result": booking}, status_code=201)

    @app.get("/v2/ping")
    async def ping(request: Request) -> JSONResponse:
        return JSONResponse(
            {"ok": True} if authorised(request) else {"fault": "bad key"}, 200 if authorised(request) else 401
        )

    return app, bookings


async def test_new_provider_through_the_admin_api_then_book(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory(time_zone="Europe/Berlin")
    h = tenant.headers
    app, bookings = never_seen_pms()
    async with serve(app) as base_url:
        created = await client.post(
            "/api/admin/integrations",
            headers=h,
            json={
                "provider_key": "chairside",
                "display_name": "Chairside PMS",
                "base_url": base_url + "/v2",
                "auth": {"type": "api_key", "in": "header", "name": "X-Clinic-Key", "key_field": "key"},
                "pagination": {
                    "style": "cursor",
                    "cursor_param": "after",
                    "cursor_path": "paging.cursor",
                    "per_page_param": None,
                },
                "rate_limit": {"requests": 50, "per_seconds": 1},
                "settings": {"chair": "c1"},
                "test_function": None,
            },
        )
        assert created.status_code == 201, created.text
        integration_id = created.json()["id"]
        book = await client.post(
            f"/api/admin/integrations/{integration_id}/endpoints",
            headers=h,
            json={
                "function_name": "create_appointment",
                "method": "POST",
                "path": "/chairs/{settings.chair}/bookings",
                "params": [
                    {"name": "patient_id", "in": "body", "required": True},
                    {"name": "start", "in": "body", "required": True},
                ],
                "response": {"records": "result", "single": True, "fields": {"external_id": "Ref"}},
            },
        )
        assert book.status_code == 201, book.text
        listing = await client.post(
            f"/api/admin/integrations/{integration_id}/endpoints",
            headers=h,
            json={
                "function_name": "list_appointments",
                "path": "/chairs/{settings.chair}/bookings",
                "response": {
                    "records": "result.rows",
                    "fields": {"external_id": "Ref"},
                },
            },
        )
        assert listing.status_code == 201, listing.text
        ping = await client.post(
            f"/api/admin/integrations/{integration_id}/endpoints",
            headers=h,
            json={"function_name": "ping", "path": "/ping", "response": {"single": True}},
        )
        assert ping.status_code == 201
        endpoint_id = book.json()["id"]
        for mapping in (
            {"endpoint_id": endpoint_id, "internal_name": "patient_id", "external_name": "Patient.Ref"},
            {
                "endpoint_id": endpoint_id,
                "internal_name": "start",
                "external_name": "WhenLocal",
                "transform": "format_datetime",
                "transform_args": {"format": "%d.%m.%Y %H:%M", "timezone": "{settings.timezone}"},
            },
            {"direction": "out", "internal_name": "patient_id", "external_name": "Patient.Ref"},
        ):
            made = await client.post(
                f"/api/admin/integrations/{integration_id}/parameter-maps", headers=h, json=mapping
            )
            assert made.status_code == 201, made.text
        patched = await client.patch(
            f"/api/admin/integrations/{integration_id}", headers=h, json={"test_function": "ping"}
        )
        assert patched.status_code == 200, patched.text
        credential = await client.post(
            "/api/admin/api-credentials",
            headers=h,
            json={"provider_key": "chairside", "label": "front desk", "secrets": {"key": SECRET}},
        )
        assert credential.status_code == 201, credential.text
        assert credential.json()["secrets"] == {"key": "••••3210"}
        assert SECRET not in credential.text

        tested = await client.post(f"/api/admin/api-credentials/{credential.json()['id']}/test", headers=h)
        assert tested.status_code == 200 and tested.json()["success"] is True, tested.text
        assert tested.json()["latency_ms"] >= 0

        for hour in (9, 10, 11):
            booked = await client.post(
                "/api/integrations/chairside",
                headers=h,
                json={
                    "function": "create_appointment",
                    "params": {"patient_id": f"P{hour}", "start": f"2026-07-01T{hour - 2:02d}:00:00Z"},
                },
            )
            assert booked.status_code == 200, booked.text
            assert booked.json()["records"][0]["external_id"] == f"B{hour - 8}"
        # 07:00 UTC is 09:00 in Berlin in summer; the provider got its own names and format.
        assert bookings[0]["WhenLocal"] == "01.07.2026 09:00"
        assert bookings[0]["Patient"] == {"Ref": "P9"}

        listed = await client.post(
            "/api/integrations/chairside", headers=h, json={"function": "list_appointments"}
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["count"] == 3 and listed.json()["pages"] == 2
        assert [r["patient_id"] for r in listed.json()["records"]] == ["P9", "P10", "P11"]

        state = await client.get("/api/integrations/chairside", headers=h)
        assert state.status_code == 200
        body = state.json()
        assert body["configured"] and body["credential_present"] and body["credential_valid"]
        assert body["rate_limit"]["limit"] == 50 and body["recent_calls"] >= 4 and body["last_call_at"]

        # Bad input: each refused with a 4xx naming the problem.
        unknown = await client.post("/api/integrations/chairside", headers=h, json={"function": "nope"})
        assert unknown.status_code == 422 and "nope" in unknown.json()["error"]["message"]
        missing = await client.post(
            "/api/integrations/chairside",
            headers=h,
            json={"function": "create_appointment", "params": {"patient_id": "P1"}},
        )
        assert missing.status_code == 422 and missing.json()["error"]["details"][0]["field"] == "params.start"
        unparsable = await client.post(
            "/api/integrations/chairside",
            headers=h,
            json={"function": "create_appointment", "params": {"patient_id": "P1", "start": "soon"}},
        )
        assert unparsable.status_code == 422 and "params.start" in unparsable.json()["error"]["message"]
        assert len(bookings) == 3


async def test_bad_admin_payloads_store_nothing(client: httpx.AsyncClient, tenant_factory: Any) -> None:
    tenant = await tenant_factory()
    h = tenant.headers
    created = await client.post(
        "/api/admin/integrations", headers=h, json={"provider_key": "mypms", "base_url": "http://127.0.0.1:9"}
    )
    integration_id = created.json()["id"]
    undeclared = await client.post(
        f"/api/admin/integrations/{integration_id}/endpoints",
        headers=h,
        json={"function_name": "get_thing", "path": "/things/{ThingId}"},
    )
    assert undeclared.status_code == 422 and "ThingId" in undeclared.json()["error"]["message"]
    bad_transform = await client.post(
        f"/api/admin/integrations/{integration_id}/parameter-maps",
        headers=h,
        json={"internal_name": "x", "external_name": "X", "transform": "rot13"},
    )
    assert bad_transform.status_code == 422 and "rot13" in bad_transform.json()["error"]["message"]
    bad_test_function = await client.patch(
        f"/api/admin/integrations/{integration_id}", headers=h, json={"test_function": "missing"}
    )
    assert (
        bad_test_function.status_code == 422
        and "test_function" in bad_test_function.json()["error"]["message"]
    )
    bad_yaml = await client.post(
        "/api/admin/integrations/definitions", headers=h, content="key: x\n  bad: [", params={}
    )
    assert bad_yaml.status_code == 422 and "YAML" in bad_yaml.json()["error"]["message"]
    assert (await client.get(f"/api/admin/integrations/{integration_id}/endpoints", headers=h)).json() == []
    assert (
        await client.get(f"/api/admin/integrations/{integration_id}/parameter-maps", headers=h)
    ).json() == []
    current = await client.get(f"/api/admin/integrations/{integration_id}", headers=h)
    assert "test_function" not in current.json()["options"]


async def test_yaml_upload_is_usable_at_once_and_catalogue_is_read_only(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    h = tenant.headers
    app, _bookings = never_seen_pms()
    async with serve(app) as base_url:
        document = f"""
key: chairside
display_name: Chairside
base_url: {base_url}/v2
auth: {{type: api_key, name: X-Clinic-Key, key_field: key}}
functions:
  ping: {{path: /ping, response: {{single: true}}}}
"""
        uploaded = await client.post(
            "/api/admin/integrations/definitions",
            headers={**h, "Content-Type": "application/yaml"},
            content=document,
        )
        assert uploaded.status_code == 201, uploaded.text
        await client.post(
            "/api/admin/api-credentials",
            headers=h,
            json={"provider_key": "chairside", "secrets": {"key": SECRET}},
        )
        ran = await client.post("/api/integrations/chairside", headers=h, json={"function": "ping"})
        assert ran.status_code == 200 and ran.json()["records"] == [{"ok": True}], ran.text
    listing = (await client.get("/api/admin/integrations", headers=h)).json()
    catalogue = [row for row in listing if row["is_catalogue"]]
    assert {"opendental", "cliniko", "google_calendar", "dentrix_ascend", "vet_pims", "twilio", "openai"} <= {
        row["provider_key"] for row in catalogue
    }
    od = next(row for row in catalogue if row["provider_key"] == "opendental")
    refused = await client.patch(
        f"/api/admin/integrations/{od['id']}", headers=h, json={"display_name": "Mine"}
    )
    assert refused.status_code == 403


async def test_no_plaintext_secret_in_database_or_responses(
    client: httpx.AsyncClient, tenant_factory: Any, sessionmaker: Any, capfd: Any
) -> None:
    tenant = await tenant_factory()
    h = tenant.headers
    secret = "sk-test-Zq81VbX3mN0pLk77"
    # The test call goes to a loopback stand-in that refuses every key, never to the internet.
    refusing = FastAPI()

    @refusing.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(
            {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}}, 401
        )

    async with serve(refusing) as base_url:
        # Pointed there first: a secret is bound to the host it is entered for.
        pointed = await client.post(
            "/api/admin/integrations",
            headers=h,
            json={"provider_key": "openai", "base_url": base_url + "/v1"},
        )
        assert pointed.status_code == 201, pointed.text
        made = await client.post(
            "/api/admin/api-credentials",
            headers=h,
            json={"provider_key": "openai", "secrets": {"api_key": secret}},
        )
        assert made.status_code == 201
        responses = [made.text]
        responses.append((await client.get("/api/admin/api-credentials", headers=h)).text)
        responses.append(
            (await client.get(f"/api/admin/api-credentials/{made.json()['id']}", headers=h)).text
        )
        tested = await client.post(f"/api/admin/api-credentials/{made.json()['id']}/test", headers=h)
    responses.append(tested.text)
    assert tested.status_code == 200 and tested.json()["success"] is False
    assert tested.json()["code"] == "auth_failed"
    for text_ in responses:
        assert secret not in text_ and secret[-8:] not in text_
    async with sessionmaker() as session:
        rows = (await session.execute(text("SELECT * FROM api_credentials"))).all()
    assert rows
    for row in rows:
        raw = " ".join(str(value) for value in row)
        assert secret not in raw and base64.b64encode(secret.encode()).decode() not in raw
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err
    staff = await tenant_factory(
        organization_id=tenant.organization_id,
        role=__import__("clinicsync.tenancy.models", fromlist=["Role"]).Role.STAFF,
    )
    forbidden = await client.get("/api/admin/api-credentials", headers=staff.headers)
    assert forbidden.status_code == 403
