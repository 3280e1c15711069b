"""Contract tests for the Google Calendar simulator, over real HTTP through the sandbox runner."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.google_calendar import DEFAULT_CALENDAR_ID, DEFAULT_TOKEN, GoogleCalendarSandbox
from clinicsync.sandbox.runner import ControlClientFactory, SandboxFactory

EVENTS = "/calendars/primary/events"
FULL_SYNC_BODY = {
    "error": {
        "errors": [
            {
                "domain": "calendar",
                "reason": "fullSyncRequired",
                "message": "Sync token is no longer valid, a full sync is required.",
                "locationType": "parameter",
                "location": "syncToken",
            }
        ],
        "code": 410,
        "message": "Sync token is no longer valid, a full sync is required.",
    }
}


def client_for(server: SandboxServer, token: str = DEFAULT_TOKEN) -> httpx.AsyncClient:
    assert server.base_url is not None
    return httpx.AsyncClient(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


@pytest.fixture
async def gcal(sandbox_factory: SandboxFactory) -> SandboxServer:
    return await sandbox_factory("google_calendar", spec={"seed": 5, "patients": 30, "appointments": 60})


@pytest.fixture
async def api(gcal: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(gcal) as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == response.status_code
    return dict(body["error"]["errors"][0])


def appointment_event(event_id: str | None = None, hour: int = 10, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "summary": "Exam: Ann Example",
        "description": "first visit",
        "start": {"dateTime": f"2031-01-06T{hour:02d}:00:00-05:00"},
        "end": {"dateTime": f"2031-01-06T{hour:02d}:30:00-05:00"},
        "extendedProperties": {"private": {"booking_id": f"b{hour}"}},
    }
    if event_id is not None:
        body["id"] = event_id
    return body | extra


async def read_all(
    api: httpx.AsyncClient, params: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of a list; returns (items, page bodies without items)."""
    query = dict(params or {})
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    while True:
        response = await api.get(EVENTS, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body.pop("items"))
        pages.append(body)
        if "nextPageToken" not in body:
            return items, pages
        query["pageToken"] = body["nextPageToken"]


# ------------------------------------------------------------------------- auth, errors


async def test_bearer_token_is_checked(gcal: SandboxServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {DEFAULT_TOKEN}"}):
        async with httpx.AsyncClient(base_url=gcal.base_url or "", headers=headers) as client:
            response = await client.get(EVENTS)
            assert response.status_code == 401
            assert error_of(response) == {
                "domain": "global",
                "reason": "authError",
                "message": "Invalid Credentials",
                "locationType": "header",
                "location": "Authorization",
            }


async def test_token_expiry_hook_answers_401(
    gcal: SandboxServer, api: httpx.AsyncClient, control: ControlClientFactory
) -> None:
    ctl = await control(gcal)
    await ctl.put("/faults", json={"token_expire_next": 1})
    assert (await api.get(EVENTS)).status_code == 401
    assert (await api.get(EVENTS)).status_code == 200


@pytest.mark.parametrize(
    ("style", "status", "reason"),
    [
        ("userRateLimitExceeded", 403, "userRateLimitExceeded"),
        ("rateLimitExceeded", 403, "rateLimitExceeded"),
        ("429", 429, "rateLimitExceeded"),
    ],
)
async def test_rate_limit_errors(
    sandbox_factory: SandboxFactory, style: str, status: int, reason: str
) -> None:
    server = await sandbox_factory(
        "google_calendar",
        spec={"patients": 2, "appointments": 2},
        settings={"user_rate_limit_per_minute": 2, "rate_limit_response": style},
    )
    async with client_for(server) as api:
        assert [(await api.get(EVENTS)).status_code for _ in range(2)] == [200, 200]
        limited = await api.get(EVENTS)
        assert limited.status_code == status
        detail = error_of(limited)
        assert detail["domain"] == "usageLimits" and detail["reason"] == reason


async def test_injected_faults_use_googles_envelope(
    gcal: SandboxServer, api: httpx.AsyncClient, control: ControlClientFactory
) -> None:
    ctl = await control(gcal)
    await ctl.put("/faults", json={"rate_limit_next": 1, "retry_after_seconds": 2})
    limited = await api.get(EVENTS)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert error_of(limited)["reason"] == "rateLimitExceeded"
    await ctl.put("/faults", json={"error_rate": 1.0, "error_statuses": [500]})
    failed = await api.get(EVENTS)
    assert failed.status_code == 500 and error_of(failed)["reason"] == "backendError"


async def test_unknown_calendar_and_event_are_404(api: httpx.AsyncClient) -> None:
    assert error_of(await api.get("/calendars/nobody@example.com/events"))["reason"] == "notFound"
    assert error_of(await api.get(f"{EVENTS}/doesnotexist"))["reason"] == "notFound"


# ------------------------------------------------------------------------- writes


async def test_client_supplied_ids_and_duplicate_insert(api: httpx.AsyncClient) -> None:
    created = await api.post(EVENTS, json=appointment_event("booking00042"))
    assert created.status_code == 200
    event = created.json()
    assert event["id"] == "booking00042" and event["status"] == "confirmed"
    assert event["kind"] == "calendar#event" and event["etag"].startswith('"')
    assert event["iCalUID"] == "booking00042@google.com"
    assert event["extendedProperties"] == {"private": {"booking_id": "b10"}}

    again = await api.post(EVENTS, json=appointment_event("booking00042"))
    assert again.status_code == 409
    assert error_of(again) == {
        "domain": "global",
        "reason": "duplicate",
        "message": "The requested identifier already exists.",
    }
    for bad_id in ("abc", "UPPERCASE1", "has-dash-1", "wxyz12345"):
        refused = await api.post(EVENTS, json=appointment_event(bad_id))
        assert refused.status_code == 400, bad_id
        assert error_of(refused)["message"] == "Invalid resource id value."

    generated = (await api.post(EVENTS, json=appointment_event())).json()
    assert len(generated["id"]) >= 5 and set(generated["id"]) <= set("0123456789abcdefghijklmnopqrstuv")


async def test_insert_validation(api: httpx.AsyncClient) -> None:
    no_end = await api.post(EVENTS, json={"summary": "x", "start": {"dateTime": "2031-01-01T10:00:00Z"}})
    assert no_end.status_code == 400 and error_of(no_end) == {
        "domain": "global",
        "reason": "required",
        "message": "Missing end time.",
    }
    backwards = await api.post(
        EVENTS,
        json={"start": {"dateTime": "2031-01-01T10:00:00Z"}, "end": {"dateTime": "2031-01-01T09:00:00Z"}},
    )
    assert error_of(backwards)["reason"] == "timeRangeEmpty"
    no_zone = await api.post(
        EVENTS,
        json={"start": {"dateTime": "2031-01-01T10:00:00"}, "end": {"dateTime": "2031-01-01T11:00:00"}},
    )
    assert no_zone.status_code == 400
    zoned = await api.post(
        EVENTS,
        json={
            "start": {"dateTime": "2031-01-01T10:00:00", "timeZone": "America/New_York"},
            "end": {"dateTime": "2031-01-01T11:00:00", "timeZone": "America/New_York"},
        },
    )
    assert zoned.status_code == 200
    all_day = await api.post(EVENTS, json={"start": {"date": "2031-01-02"}, "end": {"date": "2031-01-03"}})
    assert all_day.status_code == 200 and all_day.json()["start"] == {"date": "2031-01-02"}


async def test_etags_if_match_and_conditional_get(api: httpx.AsyncClient) -> None:
    event = (await api.post(EVENTS, json=appointment_event("etagcheck1"))).json()
    url = f"{EVENTS}/etagcheck1"
    fetched = await api.get(url)
    assert fetched.json()["etag"] == event["etag"] == fetched.headers["ETag"]
    assert (await api.get(url, headers={"If-None-Match": event["etag"]})).status_code == 304

    patched = await api.patch(url, json={"summary": "Exam (moved)"}, headers={"If-Match": event["etag"]})
    assert patched.status_code == 200
    new_etag = patched.json()["etag"]
    assert new_etag != event["etag"]

    expected = {
        "domain": "global",
        "reason": "conditionNotMet",
        "message": "Precondition Failed",
        "locationType": "header",
        "location": "If-Match",
    }
    stale_patch = await api.patch(url, json={"summary": "lost"}, headers={"If-Match": event["etag"]})
    assert stale_patch.status_code == 412 and error_of(stale_patch) == expected
    stale_put = await api.put(url, json=appointment_event(), headers={"If-Match": event["etag"]})
    assert stale_put.status_code == 412
    stale_delete = await api.delete(url, headers={"If-Match": event["etag"]})
    assert stale_delete.status_code == 412
    assert (await api.get(url)).json()["summary"] == "Exam (moved)"
    assert (await api.delete(url, headers={"If-Match": new_etag})).status_code == 204


async def test_put_replaces_and_patch_merges(api: httpx.AsyncClient) -> None:
    await api.post(EVENTS, json=appointment_event("mergecheck1"))
    url = f"{EVENTS}/mergecheck1"
    patched = (
        await api.patch(url, json={"extendedProperties": {"private": {"sync": "1"}}, "location": "Room 2"})
    ).json()
    assert patched["extendedProperties"]["private"] == {"booking_id": "b10", "sync": "1"}
    assert patched["description"] == "first visit" and patched["location"] == "Room 2"
    start_sequence = patched["sequence"]

    replaced = (
        await api.put(
            url,
            json={
                "summary": "Replaced",
                "start": {"dateTime": "2031-01-07T10:00:00Z"},
                "end": {"dateTime": "2031-01-07T11:00:00Z"},
            },
        )
    ).json()
    assert replaced["summary"] == "Replaced"
    assert (
        "description" not in replaced and "location" not in replaced and "extendedProperties" not in replaced
    )
    assert replaced["sequence"] == start_sequence + 1


async def test_delete_leaves_a_cancelled_tombstone(api: httpx.AsyncClient) -> None:
    await api.post(EVENTS, json=appointment_event("deleteme01"))
    url = f"{EVENTS}/deleteme01"
    assert (await api.delete(url)).status_code == 204
    tombstone = await api.get(url)
    assert tombstone.status_code == 200 and tombstone.json()["status"] == "cancelled"
    again = await api.delete(url)
    assert again.status_code == 410
    assert error_of(again) == {
        "domain": "global",
        "reason": "deleted",
        "message": "Resource has been deleted",
    }

    visible, _ = await read_all(api)
    assert "deleteme01" not in {item["id"] for item in visible}
    with_deleted, _ = await read_all(api, {"showDeleted": "true"})
    shown = next(item for item in with_deleted if item["id"] == "deleteme01")
    assert shown["status"] == "cancelled"
    # The id is a tombstone now: it cannot be reused.
    assert (await api.post(EVENTS, json=appointment_event("deleteme01"))).status_code == 409


# ------------------------------------------------------------------------- list, sync


async def test_pages_and_sync_token_only_on_the_last_page(api: httpx.AsyncClient) -> None:
    items, pages = await read_all(api, {"maxResults": 7})
    assert len(pages) > 2
    assert all("nextSyncToken" not in page for page in pages[:-1])
    assert "nextSyncToken" in pages[-1] and "nextPageToken" not in pages[-1]
    assert all(page["kind"] == "calendar#events" and page["timeZone"] == "America/New_York" for page in pages)
    assert len({item["id"] for item in items}) == len(items)
    assert all(item["status"] != "cancelled" for item in items)

    changed_params = await api.get(EVENTS, params={"maxResults": 8, "pageToken": pages[0]["nextPageToken"]})
    assert changed_params.status_code == 400 and error_of(changed_params)["location"] == "pageToken"


async def test_short_and_empty_pages_still_read_everything(sandbox_factory: SandboxFactory) -> None:
    server = await sandbox_factory(
        "google_calendar",
        spec={"seed": 8, "patients": 20, "appointments": 80},
        settings={"short_page_rate": 0.5, "empty_page_rate": 0.3, "page_seed": 4},
    )
    async with client_for(server) as api:
        baseline = {
            item["id"] for item in (await api.get(EVENTS, params={"maxResults": 2500})).json()["items"]
        }
        query: dict[str, Any] = {"maxResults": 10}
        page_sizes: list[int] = []
        seen: list[str] = []
        while True:
            body = (await api.get(EVENTS, params=query)).json()
            page_sizes.append(len(body["items"]))
            seen.extend(item["id"] for item in body["items"])
            if "nextPageToken" not in body:
                break
            query["pageToken"] = body["nextPageToken"]
        assert set(seen) == baseline and len(seen) == len(baseline)
        # Some non-final pages came back empty and some short, yet carried a nextPageToken.
        assert 0 in page_sizes[:-1] and any(0 < size < 10 for size in page_sizes[:-1])
    log = [entry for entry in server.request_log if entry.faults]
    fault_names = {fault.split(":")[0] for entry in log for fault in entry.faults}
    assert {"empty_page", "short_page"} <= fault_names


async def test_empty_page_keeps_the_next_page_token(sandbox_factory: SandboxFactory) -> None:
    server = await sandbox_factory(
        "google_calendar", spec={"patients": 5, "appointments": 20}, settings={"empty_page_rate": 1.0}
    )
    async with client_for(server) as api:
        first = (await api.get(EVENTS, params={"maxResults": 5})).json()
        assert first["items"] == [] and "nextPageToken" in first and "nextSyncToken" not in first


async def test_incremental_sync_returns_changes_and_deletions(
    gcal: SandboxServer, api: httpx.AsyncClient, control: ControlClientFactory
) -> None:
    baseline, pages = await read_all(api, {"maxResults": 50})
    token = pages[-1]["nextSyncToken"]
    nothing, empty_pages = await read_all(api, {"syncToken": token})
    assert nothing == [] and "nextSyncToken" in empty_pages[-1]

    ctl = await control(gcal)
    moved, cancelled, purged = baseline[0]["id"], baseline[1]["id"], baseline[2]["id"]
    await ctl.post(
        "/actions/move",
        json={"event_id": moved, "start": "2031-02-02T10:00:00Z", "end": "2031-02-02T11:00:00Z"},
    )
    await ctl.post("/actions/cancel", json={"event_id": cancelled})
    await api.post(EVENTS, json=appointment_event("fresh001"))
    await api.delete(f"{EVENTS}/fresh001")
    await api.post(EVENTS, json=appointment_event("fresh002", hour=11))

    changes, change_pages = await read_all(api, {"syncToken": token, "maxResults": 2})
    by_id = {item["id"]: item for item in changes}
    assert set(by_id) == {moved, cancelled, "fresh001", "fresh002"}
    # Answered in the calendar's zone: the same instant, not the same text.
    moved_start = datetime.fromisoformat(by_id[moved]["start"]["dateTime"])
    assert moved_start == datetime(2031, 2, 2, 10, tzinfo=UTC)
    assert by_id[cancelled] == {
        "kind": "calendar#event",
        "etag": by_id[cancelled]["etag"],
        "id": cancelled,
        "status": "cancelled",
    }
    assert by_id["fresh001"]["status"] == "cancelled"
    assert all("nextSyncToken" not in page for page in change_pages[:-1])
    next_token = change_pages[-1]["nextSyncToken"]

    # A hard delete leaves nothing to report, so tokens from before it must fail.
    await ctl.post("/actions/hard_delete", json={"event_id": purged})
    gone = await api.get(EVENTS, params={"syncToken": next_token})
    assert gone.status_code == 410 and gone.json() == FULL_SYNC_BODY
    assert (await api.get(f"{EVENTS}/{purged}")).status_code == 404


async def test_sync_token_rules_and_invalidation(
    gcal: SandboxServer, api: httpx.AsyncClient, control: ControlClientFactory
) -> None:
    _, pages = await read_all(api, {"maxResults": 2500})
    token = pages[-1]["nextSyncToken"]
    for clash in (
        {"q": "Exam"},
        {"timeMin": "2031-01-01T00:00:00Z"},
        {"orderBy": "updated"},
        {"updatedMin": "2031-01-01T00:00:00Z"},
    ):
        refused = await api.get(EVENTS, params={"syncToken": token} | clash)
        assert refused.status_code == 400, clash
    refused = await api.get(EVENTS, params={"syncToken": token, "showDeleted": "false"})
    assert refused.status_code == 400
    assert (await api.get(EVENTS, params={"syncToken": token, "showDeleted": "true"})).status_code == 200

    garbage = await api.get(EVENTS, params={"syncToken": "not-a-token"})
    assert garbage.status_code == 410 and garbage.json() == FULL_SYNC_BODY

    # A paginated incremental read keeps failing once its token is invalidated mid-way.
    await api.post(EVENTS, json=appointment_event("inflight01"))
    await api.post(EVENTS, json=appointment_event("inflight02", hour=11))
    first = (await api.get(EVENTS, params={"syncToken": token, "maxResults": 1})).json()
    ctl = await control(gcal)
    invalidated = await ctl.post("/actions/invalidate_sync_tokens", json={})
    assert invalidated.json()["generation"] == 1
    follow = await api.get(
        EVENTS, params={"syncToken": token, "maxResults": 1, "pageToken": first["nextPageToken"]}
    )
    assert follow.status_code == 410 and follow.json() == FULL_SYNC_BODY
    # After the 410 the client does a full sync and gets a working token again.
    _, fresh = await read_all(api)
    assert (await api.get(EVENTS, params={"syncToken": fresh[-1]["nextSyncToken"]})).status_code == 200


async def test_updated_min_includes_deletions_and_refuses_old_times(
    gcal: SandboxServer, api: httpx.AsyncClient
) -> None:
    gcal.clock.advance(60)
    since = gcal.clock.now().strftime("%Y-%m-%dT%H:%M:%S.000Z")
    gcal.clock.advance(1)
    await api.post(EVENTS, json=appointment_event("updmin0001"))
    await api.post(EVENTS, json=appointment_event("updmin0002", hour=12))
    await api.delete(f"{EVENTS}/updmin0002")
    items, _ = await read_all(api, {"updatedMin": since})
    assert {item["id"]: item["status"] for item in items} == {
        "updmin0001": "confirmed",
        "updmin0002": "cancelled",
    }

    old = (gcal.clock.now() - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    too_old = await api.get(EVENTS, params={"updatedMin": old})
    assert too_old.status_code == 410
    detail = error_of(too_old)
    assert detail["reason"] == "updatedMinTooLongAgo"
    assert detail["message"] == "The requested minimum modification time lies too far in the past."


async def test_time_window_text_and_extended_property_filters(api: httpx.AsyncClient) -> None:
    await api.post(EVENTS, json=appointment_event("slot00001", hour=9))
    await api.post(EVENTS, json=appointment_event("slot00002", hour=13, summary="Cleaning: Bo Example"))
    # timeMin bounds the end, timeMax the start, both exclusive.
    window = {"timeMin": "2031-01-06T09:30:00-05:00", "timeMax": "2031-01-06T13:00:00-05:00"}
    items, _ = await read_all(api, window)
    assert {item["id"] for item in items} == set()
    wider = {"timeMin": "2031-01-06T09:29:59-05:00", "timeMax": "2031-01-06T13:00:01-05:00"}
    assert {item["id"] for item in (await read_all(api, wider))[0]} == {"slot00001", "slot00002"}

    no_offset = await api.get(EVENTS, params={"timeMin": "2031-01-06T09:30:00"})
    assert no_offset.status_code == 400 and error_of(no_offset)["location"] == "timeMin"

    text, _ = await read_all(api, {"q": "cleaning: bo"})
    assert [item["id"] for item in text] == ["slot00002"]
    tagged, _ = await read_all(api, {"privateExtendedProperty": "booking_id=b13"})
    assert [item["id"] for item in tagged] == ["slot00002"]
    by_uid, _ = await read_all(api, {"iCalUID": "slot00001@google.com"})
    assert [item["id"] for item in by_uid] == ["slot00001"]

    unordered = await api.get(EVENTS, params={"orderBy": "startTime"})
    assert unordered.status_code == 400 and error_of(unordered)["location"] == "orderBy"
    ordered, _ = await read_all(api, {"orderBy": "startTime", "singleEvents": "true"})
    starts = [datetime.fromisoformat(item["start"]["dateTime"]) for item in ordered]
    assert starts == sorted(starts)


# ------------------------------------------------------------------------- watch


class Receiver:
    """A webhook endpoint on a free loopback port that records each notification's headers."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.arrived = asyncio.Event()
        self.url = ""

    async def handle(self, request: Request) -> Response:
        self.received.append(
            {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-goog")}
        )
        self.arrived.set()
        return Response(status_code=200)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sink = Receiver()
    app = Starlette(routes=[Route("/hook", sink.handle, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn exposes readiness only as a flag, so poll it.
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    sink.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    try:
        yield sink
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


async def test_watch_sends_sync_then_exists_with_goog_headers(
    gcal: SandboxServer, api: httpx.AsyncClient, receiver: Receiver, control: ControlClientFactory
) -> None:
    watched = await api.post(
        f"{EVENTS}/watch",
        json={"id": "channel-1", "type": "web_hook", "address": receiver.url, "token": "target=clinic-1"},
    )
    assert watched.status_code == 200
    channel = watched.json()
    assert (
        channel["kind"] == "api#channel"
        and channel["id"] == "channel-1"
        and channel["token"] == "target=clinic-1"
    )
    assert channel["resourceUri"].endswith(f"/calendars/{DEFAULT_CALENDAR_ID}/events?alt=json")
    assert int(channel["expiration"]) > datetime.now(UTC).timestamp() * 1000

    await receiver.wait_for(1)
    sync = receiver.received[0]
    assert sync["x-goog-resource-state"] == "sync" and sync["x-goog-message-number"] == "1"
    assert sync["x-goog-channel-id"] == "channel-1" and sync["x-goog-channel-token"] == "target=clinic-1"
    assert sync["x-goog-resource-id"] == channel["resourceId"]
    assert sync["x-goog-resource-uri"] == channel["resourceUri"]
    assert sync["x-goog-channel-expiration"].endswith("GMT")

    await api.post(EVENTS, json=appointment_event("seen00001"))
    ctl = await control(gcal)
    await ctl.post("/actions/cancel", json={"event_id": "seen00001"})
    await receiver.wait_for(3)
    assert [r["x-goog-resource-state"] for r in receiver.received] == ["sync", "exists", "exists"]
    assert [r["x-goog-message-number"] for r in receiver.received] == ["1", "2", "3"]
    deliveries = (await ctl.post("/actions/deliveries", json={"channel_id": "channel-1"})).json()[
        "deliveries"
    ]
    assert [d["status"] for d in deliveries] == [200, 200, 200]

    duplicate = await api.post(
        f"{EVENTS}/watch", json={"id": "channel-1", "type": "web_hook", "address": receiver.url}
    )
    assert duplicate.status_code == 400 and error_of(duplicate)["reason"] == "channelIdNotUnique"
    bad_type = await api.post(
        f"{EVENTS}/watch", json={"id": "channel-2", "type": "email", "address": receiver.url}
    )
    assert bad_type.status_code == 400

    stopped = await api.post("/channels/stop", json={"id": "channel-1", "resourceId": channel["resourceId"]})
    assert stopped.status_code == 204
    await api.post(EVENTS, json=appointment_event("seen00002", hour=12))
    await asyncio.sleep(0.2)
    assert len(receiver.received) == 3
    unknown = await api.post("/channels/stop", json={"id": "channel-1", "resourceId": channel["resourceId"]})
    assert unknown.status_code == 404


# ------------------------------------------------------------------------- state, volume


async def test_front_desk_create_and_state_round_trip(
    sandbox_factory: SandboxFactory, control: ControlClientFactory, tmp_path: Any
) -> None:
    state_file = tmp_path / "gcal.json"
    server = await sandbox_factory(
        "google_calendar", spec={"patients": 3, "appointments": 5}, state_file=state_file
    )
    ctl = await control(server)
    made = await ctl.post(
        "/actions/create",
        json={
            "id": "deskevent1",
            "summary": "Walk-in",
            "start": "2031-03-03T10:00:00Z",
            "end": "2031-03-03T10:30:00Z",
        },
    )
    assert made.status_code == 200 and made.json()["id"] == "deskevent1"
    duplicate = await ctl.post(
        "/actions/create",
        json={"id": "deskevent1", "start": "2031-03-03T10:00:00Z", "end": "2031-03-03T10:30:00Z"},
    )
    assert duplicate.status_code == 409
    assert (await ctl.post("/actions/move", json={"event_id": "nope1"})).status_code == 404
    assert isinstance(server, GoogleCalendarSandbox)
    server.save_state()
    restored = GoogleCalendarSandbox(state_file=state_file)
    assert restored.dump_state() == server.dump_state()


@pytest.mark.slow
async def test_full_read_of_the_large_clinic_calendar(sandbox_factory: SandboxFactory) -> None:
    server = await sandbox_factory(
        "google_calendar", spec={"seed": 11, "patients": 10_000, "appointments": 50_000}
    )
    async with client_for(server) as api:
        # The clinic maps to one calendar; cancelled appointments are events with status cancelled.
        items, pages = await read_all(api, {"maxResults": 2500, "showDeleted": "true"})
        assert len(items) == 50_000 and len({item["id"] for item in items}) == 50_000
        # Every generated appointment is there, under the event id the simulator derives from it.
        assert {item["id"] for item in items} == {f"appt{number:08d}" for number in range(1, 50_001)}
        assert len(pages) == 20 and "nextSyncToken" in pages[-1]
        await api.post(EVENTS, json=appointment_event("afterbulk1"))
        delta, _ = await read_all(api, {"syncToken": pages[-1]["nextSyncToken"]})
        assert [item["id"] for item in delta] == ["afterbulk1"]
