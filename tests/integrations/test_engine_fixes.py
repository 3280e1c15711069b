"""What an integration engineer trips over first: stray parameters, shared maps, cursor page sizes,
the endpoint view and OpenAPI drafts."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from integration_servers import serve
from sandbox_integrations import connect_opendental

from clinicsync.errors import ValidationFailed
from clinicsync.integrations.definitions import parse_definition
from clinicsync.integrations.openapi_import import draft_definition
from clinicsync.integrations.runtime import ProviderCaller, ResolvedIntegration
from clinicsync.sandbox import run_sandbox


async def test_a_parameter_the_function_does_not_declare_is_refused_naming_it(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    async with run_sandbox("opendental") as sandbox:
        integration_id = await connect_opendental(
            client, tenant.headers, sandbox, rate_limit={"requests": 100, "per_seconds": 1}
        )
        sandbox.request_log.clear()
        answer = await client.post(
            f"/api/integrations/{integration_id}",
            headers=tenant.headers,
            json={"function": "list_appointments", "params": {"patient_id": 1, "patinet_id": 2}},
        )
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["details"][0]["field"] == "params.patinet_id"
        assert (
            "is not a parameter of list_appointments" in error["message"] and "patient_id" in error["message"]
        )
        assert not sandbox.request_log  # nothing was sent


def booking_server() -> tuple[FastAPI, list[dict[str, Any]]]:
    """Bookings with local wall-clock times in German notation, listed by cursor with `size`."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []
    bookings: list[dict[str, Any]] = [
        {"Ref": f"B{n}", "WhenLocal": f"0{n}.03.2031 09:00"} for n in range(1, 6)
    ]

    @app.post("/bookings")
    async def book(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append({"body": body})
        booking = {"Ref": f"B{len(bookings) + 1}", **body}
        bookings.append(booking)
        return JSONResponse(booking, status_code=201)

    @app.get("/bookings")
    async def page(request: Request) -> JSONResponse:
        seen.append({"query": dict(request.query_params)})
        size = int(request.query_params.get("size", "1"))  # the provider's own default is tiny
        after = int(request.query_params.get("after", "0"))
        rows = bookings[after : after + size]
        more = after + size < len(bookings)
        return JSONResponse({"rows": rows, "next": after + size if more else None})

    return app, seen


def chairside(base_url: str) -> dict[str, Any]:
    return {
        "key": "chairside",
        "display_name": "Chairside",
        "base_url": base_url,
        "pagination": {
            "style": "cursor",
            "cursor_param": "after",
            "cursor_path": "next",
            "limit_param": "size",
            "page_size": 2,
        },
        "parameter_maps": [
            {
                "internal": "start",
                "external": "WhenLocal",
                "transform": "format_datetime",
                "args": {"format": "%d.%m.%Y %H:%M", "timezone": "Europe/Berlin"},
            },
            {
                "internal": "start",
                "external": "WhenLocal",
                "direction": "out",
                "transform": "parse_datetime",
                "args": {"format": "%d.%m.%Y %H:%M", "timezone": "Europe/Berlin"},
            },
        ],
        "functions": {
            "create_booking": {
                "method": "POST",
                "path": "/bookings",
                "params": [{"name": "start", "in": "body", "required": True}],
                "response": {"single": True, "fields": {"id": "Ref", "start": "WhenLocal"}},
            },
            "list_bookings": {
                "path": "/bookings",
                "response": {"records": "rows", "fields": {"id": "Ref", "start": "WhenLocal"}},
            },
        },
    }


async def test_provider_wide_maps_apply_both_ways_and_cursor_pages_send_limit_param() -> None:
    app, seen = booking_server()
    caller = ProviderCaller()
    async with serve(app) as base_url:
        integration = ResolvedIntegration(
            key=uuid.uuid4().hex, revision="1", definition=parse_definition(chairside(base_url))
        )
        created = await caller.execute(integration, "create_booking", {"start": "2031-03-10T08:30:00Z"})
        # The provider-wide map names `start`: its provider field and its transform, both ways.
        assert seen[-1] == {"body": {"WhenLocal": "10.03.2031 09:30"}}
        assert created.records == [{"id": "B6", "start": "2031-03-10T08:30:00Z"}]

        seen.clear()
        listed = await caller.execute(integration, "list_bookings")
        assert [row["id"] for row in listed.records] == ["B1", "B2", "B3", "B4", "B5", "B6"]
        assert listed.records[0]["start"] == "2031-03-01T08:00:00Z"
        assert [request["query"].get("size") for request in seen] == ["2", "2", "2"]
        assert listed.pages == 3

        with pytest.raises(ValidationFailed) as stray:
            await caller.execute(integration, "list_bookings", {"page_size": 50})
        assert stray.value.field == "params.page_size"


async def test_the_endpoint_view_shows_the_mapping_each_function_runs_with(
    client: httpx.AsyncClient, tenant_factory: Any
) -> None:
    tenant = await tenant_factory()
    definition = chairside("http://127.0.0.1:9")
    uploaded = await client.post(
        "/api/admin/integrations/definitions",
        headers={**tenant.headers, "Content-Type": "application/yaml"},
        content=yaml.safe_dump(definition),
    )
    assert uploaded.status_code == 201, uploaded.text
    integration_id = uploaded.json()["id"]
    endpoints = await client.get(
        f"/api/admin/integrations/{integration_id}/endpoints", headers=tenant.headers
    )
    assert endpoints.status_code == 200, endpoints.text
    views = {view["function_name"]: view for view in endpoints.json()}
    create = views["create_booking"]["mapping"]
    assert create["params"][0]["name"] == "start" and create["params"][0]["external"] == "WhenLocal"
    assert create["params"][0]["transform"][0]["name"] == "format_datetime"
    assert create["response"]["fields"]["start"]["from"] == "WhenLocal"
    assert create["response"]["fields"]["start"]["transform"][0]["name"] == "parse_datetime"
    assert create["retry_safe"] is False
    listing = views["list_bookings"]["mapping"]
    assert listing["pagination"]["style"] == "cursor" and listing["pagination"]["limit_param"] == "size"


PETSTORE: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Vet Cloud", "version": "2.1"},
    "servers": [
        {
            "url": "https://{region}.vetcloud.example/api/{version}",
            "variables": {"region": {"default": "eu1", "enum": ["eu1", "us1"]}, "version": {"default": "v2"}},
        }
    ],
    "components": {
        "schemas": {
            "Pet": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Links": {
                "type": "object",
                "properties": {"self": {"type": "string"}, "next": {"type": "string"}},
            },
        }
    },
    "paths": {
        "/pets": {
            "get": {
                "operationId": "listPets",
                "parameters": [{"name": "page", "in": "query"}, {"name": "per_page", "in": "query"}],
                "responses": {
                    "200": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "pets": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Pet"},
                                        },
                                        "links": {"$ref": "#/components/schemas/Links"},
                                    },
                                }
                            }
                        }
                    }
                },
            }
        },
        "/pets/{petId}": {
            "get": {
                "operationId": "getPet",
                "parameters": [{"name": "petId", "in": "path", "required": True}],
                "responses": {
                    "200": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"data": {"$ref": "#/components/schemas/Pet"}},
                                }
                            }
                        }
                    }
                },
            }
        },
        "/practice": {
            "get": {
                "operationId": "getPractice",
                "responses": {
                    "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}}
                },
            }
        },
    },
}


def test_openapi_draft_reads_envelopes_server_variables_and_next_links() -> None:
    draft = draft_definition(PETSTORE, "vetcloud")
    assert draft["base_url"] == "https://{settings.region}.vetcloud.example/api/{settings.version}"
    assert draft["settings"] == {"region": "eu1", "version": "v2"}
    functions = draft["functions"]
    # One pet wrapped in {"data": ...}: the record is `data`, not the pet's own list of tags.
    assert functions["get_pet"]["response"]["records"] == "data"
    assert functions["get_pet"]["response"]["single"] is True
    # An object with lists of its own, answered bare: the whole body is the one record.
    assert "records" not in functions["get_practice"]["response"]
    assert functions["get_practice"]["response"]["single"] is True
    listing = functions["list_pets"]
    assert listing["response"]["records"] == "pets" and not listing["response"].get("single")
    assert (
        listing["pagination"]["style"] == "page" and listing["pagination"]["next_link_path"] == "links.next"
    )
    parse_definition(draft)  # still a valid definition
