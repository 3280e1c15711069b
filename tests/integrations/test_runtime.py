"""The HTTP runtime against small local servers: pagination, auth, retries, errors, rate limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from integration_servers import serve

from clinicsync.errors import ValidationFailed
from clinicsync.integrations.definitions import parse_definition
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.runtime import ProviderCaller, ResolvedIntegration


async def read_form(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode()))


ITEMS = [{"Num": i, "Name": f"item {i}"} for i in range(1, 251)]


def fake_provider() -> tuple[FastAPI, dict[str, Any]]:
    app = FastAPI()
    state: dict[str, Any] = {"tokens": set(), "token_requests": 0, "logins": 0, "fail": {}, "seen": []}

    def fail_first(name: str, status: int, headers: dict[str, str] | None = None) -> Response | None:
        remaining = state["fail"].get(name, 0)
        if remaining:
            state["fail"][name] = remaining - 1
            return JSONResponse({"message": f"{name} failing"}, status_code=status, headers=headers)
        return None

    @app.get("/items")
    async def items(limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        return ITEMS[offset : offset + min(limit, 100)]

    @app.get("/paged")
    async def paged(request: Request, page: int = 1, per_page: int = 50) -> dict[str, Any]:
        chunk = ITEMS[(page - 1) * per_page : page * per_page]
        links = {"self": str(request.url)}
        if page * per_page < len(ITEMS):
            links["next"] = str(request.url.include_query_params(page=page + 1))
        return {"things": chunk, "total_entries": len(ITEMS), "links": links}

    @app.get("/tokens")
    async def tokens(pageToken: str | None = None) -> dict[str, Any]:
        # Page 2 is empty but not the last, as Google's events.list may do.
        pages = {None: (0, 100, "p2"), "p2": (100, 100, "p3"), "p3": (100, 250, None)}
        start, end, following = pages[pageToken]
        body: dict[str, Any] = {"items": ITEMS[start:end]}
        if following:
            body["nextPageToken"] = following
        return body

    @app.get("/cursor")
    async def cursor(cursor: int = 0) -> dict[str, Any]:
        chunk = ITEMS[cursor : cursor + 120]
        more = cursor + 120 < len(ITEMS)
        return {"data": chunk, "meta": {"next": cursor + 120 if more else None, "more": more}}

    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        form = await read_form(request)
        if form.get("client_id") != "cid" or form.get("client_secret") != "csecret":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        state["token_requests"] += 1
        value = uuid.uuid4().hex
        state["tokens"].add(value)
        return JSONResponse({"access_token": value, "expires_in": 3600})

    @app.get("/secure")
    async def secure(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if header.removeprefix("Bearer ") not in state["tokens"]:
            return JSONResponse({"message": "bad token"}, status_code=401)
        return JSONResponse({"ok": True})

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request)
        if form.get("user") != "front-desk" or form.get("pass") != "pw":
            return JSONResponse({"message": "wrong password"}, status_code=403)
        state["logins"] += 1
        response = JSONResponse({"ok": True})
        response.set_cookie("session", f"s{state['logins']}")
        return response

    @app.get("/session-data")
    async def session_data(request: Request) -> Response:
        if request.cookies.get("session") != f"s{state['logins']}":
            return JSONResponse({"message": "login again"}, status_code=401)
        return JSONResponse([{"Num": 1}])

    @app.get("/flaky")
    async def flaky() -> Response:
        return fail_first("flaky", 500) or JSONResponse({"Num": 7})

    @app.get("/throttled")
    async def throttled() -> Response:
        return fail_first("throttled", 429, {"Retry-After": "0.3"}) or JSONResponse({"Num": 8})

    @app.post("/create")
    async def create(request: Request) -> Response:
        body = await request.json()
        state["seen"].append(body)
        failure = fail_first("create500", 500) or fail_first("create429", 429, {"Retry-After": "0"})
        if failure:
            return failure
        if not body.get("LastName"):
            return JSONResponse({"message": "Validation Failed", "errors": {"LastName": "is blank"}}, 422)
        return JSONResponse({**body, "Num": 99}, status_code=201)

    @app.get("/count")
    async def count() -> dict[str, int]:
        state.setdefault("count_times", []).append(time.monotonic())
        return {"Num": len(state["count_times"])}

    return app, state


def definition(base_url: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": "fakepms",
        "display_name": "Fake PMS",
        "base_url": base_url,
        "retry": {"attempts": 4, "base_delay": 0.01, "max_delay": 0.05},
        "functions": {
            "list_offset": {
                "path": "/items",
                "pagination": {"style": "offset", "limit_param": "limit", "offset_param": "offset"},
                "response": {"fields": {"id": "Num", "name": {"from": "Name", "transform": "upper"}}},
            },
            "list_paged": {
                "path": "/paged",
                "pagination": {"style": "page", "page_size": 50, "next_link_path": "links.next"},
                "response": {"records": "things", "fields": {"id": "Num"}},
            },
            "list_tokens": {
                "path": "/tokens",
                "pagination": {"style": "token", "per_page_param": None},
                "response": {"records": "items", "fields": {"id": "Num"}},
            },
            "list_cursor": {
                "path": "/cursor",
                "pagination": {
                    "style": "cursor",
                    "per_page_param": None,
                    "cursor_path": "meta.next",
                    "has_more_path": "meta.more",
                },
                "response": {"records": "data", "fields": {"id": "Num"}},
            },
            "secure": {"path": "/secure", "response": {"single": True}},
            "session_data": {"path": "/session-data"},
            "flaky": {"path": "/flaky", "response": {"single": True, "fields": {"id": "Num"}}},
            "throttled": {"path": "/throttled", "response": {"single": True, "fields": {"id": "Num"}}},
            "count": {"path": "/count", "response": {"single": True, "fields": {"n": "Num"}}},
            "create": {
                "method": "POST",
                "path": "/create",
                "params": [
                    {"name": "last_name", "external": "LastName", "in": "body"},
                    {
                        "name": "phone",
                        "external": "Contact.Phone",
                        "in": "body",
                        "transform": "clean_phone",
                        "args": {"region": "US", "format": "national"},
                    },
                    {
                        "name": "start",
                        "external": "When",
                        "in": "body",
                        "required": True,
                        "transform": "format_datetime",
                        "args": {"format": "%Y-%m-%d %H:%M:%S", "timezone": "{settings.timezone}"},
                    },
                    {
                        "name": "status",
                        "external": "Status",
                        "in": "body",
                        "transform": "value_map",
                        "args": {"map": {"booked": "Scheduled"}},
                    },
                    {"name": "source", "external": "Source", "in": "body", "constant": "clinicsync"},
                ],
                "response": {"single": True, "fields": {"id": "Num", "when": "When"}},
            },
        },
    }
    data.update(overrides)
    return data


def resolved(base_url: str, secrets: dict[str, str] | None = None, **overrides: Any) -> ResolvedIntegration:
    parsed = parse_definition(definition(base_url, **overrides))
    return ResolvedIntegration(
        key=uuid.uuid4().hex,
        revision="1",
        definition=parsed,
        settings={"timezone": "America/New_York"},
        secrets=secrets or {},
    )


@pytest.fixture
async def provider() -> Any:
    app, state = fake_provider()
    async with serve(app) as base_url:
        yield base_url, state


@pytest.mark.parametrize("function", ["list_offset", "list_paged", "list_tokens", "list_cursor"])
async def test_every_pagination_style_reads_all_records(provider: Any, function: str) -> None:
    base_url, _ = provider
    result = await ProviderCaller().execute(resolved(base_url), function)
    assert [r["id"] for r in result.records] == list(range(1, 251))
    assert result.pages >= 3


async def test_iterate_fetches_pages_lazily_and_maps_fields(provider: Any) -> None:
    base_url, _ = provider
    caller = ProviderCaller()
    first = [r async for r in caller.iterate(resolved(base_url), "list_offset", max_records=3)]
    assert first == [{"id": 1, "name": "ITEM 1"}, {"id": 2, "name": "ITEM 2"}, {"id": 3, "name": "ITEM 3"}]


async def test_body_parameters_are_renamed_nested_and_transformed(provider: Any) -> None:
    base_url, state = provider
    result = await ProviderCaller().execute(
        resolved(base_url),
        "create",
        {
            "last_name": "Nguyen",
            "phone": "+1 415 555 0134",
            "start": "2026-03-08T15:30:00Z",
            "status": "booked",
        },
    )
    sent = state["seen"][-1]
    # 15:30 UTC on the day DST starts in New York is 11:30 local (EDT).
    assert sent == {
        "LastName": "Nguyen",
        "Contact": {"Phone": "(415) 555-0134"},
        "When": "2026-03-08 11:30:00",
        "Status": "Scheduled",
        "Source": "clinicsync",
    }
    assert result.records == [{"id": 99, "when": "2026-03-08 11:30:00"}]


async def test_bad_input_names_the_parameter(provider: Any) -> None:
    base_url, state = provider
    caller = ProviderCaller()
    with pytest.raises(ValidationFailed) as missing:
        await caller.execute(resolved(base_url), "create", {"last_name": "X"})
    assert missing.value.field == "params.start"
    with pytest.raises(ValidationFailed) as unparsable:
        await caller.execute(resolved(base_url), "create", {"start": "next tuesday"})
    assert unparsable.value.field == "params.start" and "ISO 8601" in unparsable.value.reason
    with pytest.raises(ValidationFailed) as bad_status:
        await caller.execute(
            resolved(base_url), "create", {"start": "2026-01-01T10:00:00Z", "status": "maybe"}
        )
    assert bad_status.value.field == "params.status"
    with pytest.raises(ValidationFailed) as unknown:
        await caller.execute(resolved(base_url), "delete_everything")
    assert unknown.value.field == "function" and "list_offset" in unknown.value.reason
    assert state["seen"] == []


async def test_provider_validation_error_is_not_retried_and_keeps_its_message(provider: Any) -> None:
    base_url, state = provider
    with pytest.raises(IntegrationError) as error:
        await ProviderCaller().execute(resolved(base_url), "create", {"start": "2026-01-01T10:00:00Z"})
    assert error.value.code == "validation_failed"
    assert error.value.provider_message == "Validation Failed: LastName is blank"
    assert len(state["seen"]) == 1


async def test_transient_get_failures_are_retried(provider: Any) -> None:
    base_url, state = provider
    state["fail"]["flaky"] = 2
    result = await ProviderCaller().execute(resolved(base_url), "flaky")
    assert result.records == [{"id": 7}]


async def test_retry_after_is_honoured(provider: Any) -> None:
    base_url, state = provider
    state["fail"]["throttled"] = 1
    started = time.monotonic()
    result = await ProviderCaller().execute(resolved(base_url), "throttled")
    assert result.records == [{"id": 8}]
    assert time.monotonic() - started >= 0.3


async def test_retries_give_up_with_a_classified_error(provider: Any) -> None:
    base_url, state = provider
    state["fail"]["flaky"] = 10
    with pytest.raises(IntegrationError) as error:
        await ProviderCaller().execute(resolved(base_url), "flaky")
    assert error.value.code == "unavailable" and error.value.provider_status == 500
    assert state["fail"]["flaky"] == 6


async def test_non_idempotent_call_is_not_resent_once_it_may_have_reached_the_provider(
    provider: Any,
) -> None:
    base_url, state = provider
    state["fail"]["create500"] = 1
    with pytest.raises(IntegrationError) as error:
        await ProviderCaller().execute(
            resolved(base_url), "create", {"last_name": "A", "start": "2026-01-01"}
        )
    assert error.value.code == "unavailable"
    assert len(state["seen"]) == 1
    # A 429 means the provider refused without acting, so the same call is sent again.
    state["fail"]["create429"] = 1
    result = await ProviderCaller().execute(
        resolved(base_url), "create", {"last_name": "A", "start": "2026-01-01"}
    )
    assert result.records[0]["id"] == 99
    assert len(state["seen"]) == 3


async def test_connection_refused_is_unavailable(provider: Any) -> None:
    with pytest.raises(IntegrationError) as error:
        await ProviderCaller().execute(resolved("http://127.0.0.1:9"), "flaky")
    assert error.value.code == "unavailable" and error.value.request_not_sent


async def test_oauth2_token_is_cached_and_renewed_once_on_401(provider: Any) -> None:
    base_url, state = provider
    integration = resolved(
        base_url,
        {"client_id": "cid", "client_secret": "csecret"},
        auth={"type": "oauth2_client_credentials", "token_url": "/oauth/token"},
    )
    caller = ProviderCaller()
    for _ in range(3):
        assert (await caller.execute(integration, "secure")).records == [{"ok": True}]
    assert state["token_requests"] == 1
    state["tokens"].clear()  # the provider revokes every token
    await asyncio.gather(*(caller.execute(integration, "secure") for _ in range(5)))
    assert state["token_requests"] == 2


async def test_oauth2_bad_client_is_auth_failed(provider: Any) -> None:
    base_url, _ = provider
    integration = resolved(
        base_url,
        {"client_id": "cid", "client_secret": "wrong"},
        auth={"type": "oauth2_client_credentials", "token_url": "/oauth/token"},
    )
    with pytest.raises(IntegrationError) as error:
        await ProviderCaller().execute(integration, "secure")
    assert error.value.code == "auth_failed" and "invalid_client" in error.value.message


async def test_cookie_login_logs_in_once_and_again_when_the_session_ends(provider: Any) -> None:
    base_url, state = provider
    integration = resolved(
        base_url,
        {"username": "front-desk", "password": "pw"},
        auth={
            "type": "cookie_login",
            "login_url": "/login",
            "login_fields": {"user": "username", "pass": "password"},
        },
    )
    caller = ProviderCaller()
    await caller.execute(integration, "session_data")
    await caller.execute(integration, "session_data")
    assert state["logins"] == 1
    state["logins"] += 1  # the server forgets the session
    assert (await caller.execute(integration, "session_data")).records == [{"Num": 1}]
    assert state["logins"] == 3


async def test_rate_limit_is_shared_by_concurrent_callers(provider: Any) -> None:
    base_url, state = provider
    integration = resolved(base_url, rate_limit={"requests": 10, "per_seconds": 0.5})
    caller = ProviderCaller()
    await asyncio.gather(*(caller.execute(integration, "count") for _ in range(30)))
    times = sorted(state["count_times"])
    assert len(times) == 30
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t < start + 0.5]
        assert len(in_window) <= 10 + 1  # one request of slack for timer granularity
    assert times[-1] - times[0] >= 0.9
