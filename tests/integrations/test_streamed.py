"""POST /api/integrations/{integration} streams a long read: records reach the caller a provider
page at a time, while later pages are still being fetched."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from integration_servers import serve

TOTAL = 450  # five pages of 100, the last one short
PAGE = 100


def paged_pms(last_page: asyncio.Event, failing_offset: int | None = None) -> tuple[FastAPI, list[int]]:
    """A PMS listing TOTAL records by offset; its last page waits for `last_page` to be set."""
    app = FastAPI()
    asked: list[int] = []

    @app.get("/records")
    async def records(offset: int = 0, limit: int = PAGE) -> JSONResponse:
        asked.append(offset)
        if offset == failing_offset:
            return JSONResponse({"message": "no such page"}, status_code=404)
        if offset + limit >= TOTAL:
            await asyncio.wait_for(last_page.wait(), timeout=20)
        rows = [{"Ref": f"R{n}", "Note": "x" * 200} for n in range(offset, min(offset + limit, TOTAL))]
        return JSONResponse({"rows": rows})

    return app, asked


async def _connect(client: httpx.AsyncClient, headers: dict[str, str], base_url: str) -> None:
    created = await client.post(
        "/api/admin/integrations",
        headers=headers,
        json={
            "provider_key": "longlist",
            "base_url": base_url,
            "pagination": {"style": "offset", "page_size": PAGE},
            "test_function": None,
        },
    )
    assert created.status_code == 201, created.text
    listing = await client.post(
        f"/api/admin/integrations/{created.json()['id']}/endpoints",
        headers=headers,
        json={
            "function_name": "list_records",
            "path": "/records",
            "response": {"records": "rows", "fields": {"external_id": "Ref"}},
        },
    )
    assert listing.status_code == 201, listing.text


async def test_records_reach_the_caller_before_the_last_page_is_fetched(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    last_page = asyncio.Event()
    app, asked = paged_pms(last_page)
    async with serve(app) as base_url:
        await _connect(client, tenant.headers, base_url)
        body = bytearray()
        async with client.stream(
            "POST", "/api/integrations/longlist", headers=tenant.headers, json={"function": "list_records"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            chunks = response.aiter_bytes()
            # The first pages arrive while the provider still holds back its last one.
            while b'"R399"' not in body:
                body += await asyncio.wait_for(anext(chunks), timeout=10)
            assert b'"count"' not in body
            for _ in range(200):  # the last page is then asked for, and held back
                if asked[-1] == 400:
                    break
                await asyncio.sleep(0.05)
            assert asked == [0, 100, 200, 300, 400]
            last_page.set()
            async for chunk in chunks:
                body += chunk
    answer = json.loads(body)
    assert answer["count"] == TOTAL and answer["pages"] == 5 and "error" not in answer
    assert [record["external_id"] for record in answer["records"]] == [f"R{n}" for n in range(TOTAL)]
    assert answer["provider"] == "longlist" and answer["function"] == "list_records"


async def test_a_page_failing_mid_stream_closes_the_records_with_the_error(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    last_page = asyncio.Event()
    last_page.set()
    app, _ = paged_pms(last_page, failing_offset=200)
    async with serve(app) as base_url:
        await _connect(client, tenant.headers, base_url)
        answer = await client.post(
            "/api/integrations/longlist", headers=tenant.headers, json={"function": "list_records"}
        )
        # Two pages were already sent when the third failed: the status stays 200 and the body
        # says what came and why it stopped.
        assert answer.status_code == 200
        body = answer.json()
        assert body["count"] == 200 and len(body["records"]) == 200 and body["pages"] == 2
        assert body["error"]["code"] == "not_found" and "no such page" in body["error"]["message"]

    app, _ = paged_pms(last_page, failing_offset=0)
    async with serve(app) as other_url:
        patched = await client.get("/api/admin/integrations", headers=tenant.headers)
        integration_id = next(row["id"] for row in patched.json() if row["provider_key"] == "longlist")
        moved = await client.patch(
            f"/api/admin/integrations/{integration_id}", headers=tenant.headers, json={"base_url": other_url}
        )
        assert moved.status_code == 200, moved.text
        # A first page that fails is answered with its own status, as a read that never started.
        refused = await client.post(
            "/api/integrations/longlist", headers=tenant.headers, json={"function": "list_records"}
        )
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"


async def test_max_records_stops_the_stream_without_asking_for_more_pages(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    last_page = asyncio.Event()
    app, asked = paged_pms(last_page)
    async with serve(app) as base_url:
        await _connect(client, tenant.headers, base_url)
        answer = await client.post(
            "/api/integrations/longlist",
            headers=tenant.headers,
            json={"function": "list_records", "max_records": 150},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["count"] == 150 and body["pages"] == 2 and asked == [0, 100]
        assert body["records"][-1]["external_id"] == "R149"
