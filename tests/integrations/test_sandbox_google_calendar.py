"""The shipped Google Calendar definition against the Google Calendar simulator, over real HTTP.

The simulator takes static bearer tokens and has no token endpoint, so each test runs a small
loopback OAuth server that hands out the sandbox's token for the refresh-token grant: the
definition's own auth (refresh token -> access token, renewed on a 401) is exercised end to end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from integration_servers import serve

from clinicsync.errors import ValidationFailed
from clinicsync.integrations.definitions import PROVIDERS_DIR, RetrySpec, load_definition_file
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.runtime import ProviderCaller, ResolvedIntegration
from clinicsync.sandbox import FaultSettings, SandboxServer, run_sandbox
from clinicsync.sandbox.google_calendar import GoogleCalendarSandbox

FAST_RETRY = RetrySpec(attempts=5, base_delay=0.05, max_delay=0.4, max_retry_after=5)
CLIENT_ID = "1234-clinic.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-sandbox-secret"
REFRESH_TOKEN = "1//sandbox-refresh-token"


@dataclass
class TokenServer:
    url: str
    grants: list[dict[str, str]] = field(default_factory=list)


@asynccontextmanager
async def token_server(access_token: str) -> AsyncIterator[TokenServer]:
    """Google's token endpoint for the refresh-token grant, handing out the sandbox's token."""
    app = FastAPI()
    state = TokenServer(url="")

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode()))
        state.grants.append(form)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return JSONResponse({"error": "invalid_client", "error_description": "Unauthorized"}, 401)
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != REFRESH_TOKEN:
            return JSONResponse({"error": "invalid_grant", "error_description": "Bad Request"}, 400)
        return JSONResponse({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"})

    async with serve(app) as base_url:
        state.url = base_url + "/token"
        yield state


def google(server: SandboxServer, tokens: TokenServer) -> ResolvedIntegration:
    shipped = load_definition_file(PROVIDERS_DIR / "google_calendar.yaml")
    definition = shipped.model_copy(
        update={
            "rate_limit": None,
            "retry": FAST_RETRY,
            "timeout_seconds": 5,
            "auth": shipped.auth.model_copy(update={"token_url": tokens.url}),
        }
    )
    return ResolvedIntegration(
        key=uuid.uuid4().hex,
        revision="1",
        definition=definition,
        settings={**definition.settings, "timezone": "America/New_York"},
        secrets={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN},
        base_url=server.base_url,
    )


@asynccontextmanager
async def calendar(
    **options: Any,
) -> AsyncIterator[tuple[GoogleCalendarSandbox, TokenServer, ResolvedIntegration]]:
    async with (
        run_sandbox(GoogleCalendarSandbox, **options) as server,
        token_server(server.credentials()["access_token"]) as tokens,
    ):
        assert isinstance(server, GoogleCalendarSandbox)
        yield server, tokens, google(server, tokens)


def event_id() -> str:
    # base32hex: hex digits are a subset.
    return "cs" + uuid.uuid4().hex


async def test_list_reads_every_event_once_through_short_and_empty_pages() -> None:
    spec = {"seed": 5, "patients": 40, "appointments": 600, "days_before": 10, "days_after": 30}
    settings = {"short_page_rate": 0.5, "empty_page_rate": 0.3, "page_seed": 4}
    caller = ProviderCaller()
    async with calendar(spec=spec, settings=settings) as (server, tokens, integration):
        listed = await caller.execute(integration, "list_events")
        ids = [row["id"] for row in listed.records]
        cancelled = sum(
            1 for event in server.calendars[server.config_primary()].events.values() if event.cancelled
        )
        # Cancelled events are left out of a plain list; every other event comes exactly once.
        assert len(ids) == len(set(ids)) == 600 - cancelled
        assert listed.pages >= 3
        faults = [fault for entry in server.request_log for fault in entry.faults]
        assert "empty_page" in faults and any(fault.startswith("short_page") for fault in faults)
        assert {row["status"] for row in listed.records} == {"booked"}
        assert all(row["start"] and row["end"] and row["etag"] for row in listed.records)
        # One token for the whole listing: the access token is cached between pages.
        assert len(tokens.grants) == 1 and tokens.grants[0]["grant_type"] == "refresh_token"

        with_deleted = await caller.execute(integration, "list_events", {"show_deleted": True})
        assert len(with_deleted.records) == 600
        window = await caller.execute(
            integration,
            "list_events",
            {"time_min": listed.records[0]["start"], "time_max": listed.records[0]["end"]},
        )
        assert listed.records[0]["id"] in {row["id"] for row in window.records}


async def test_create_get_move_cancel_and_delta() -> None:
    caller = ProviderCaller()
    async with calendar(spec={"seed": 2, "patients": 5, "appointments": 20}) as (
        server,
        _tokens,
        integration,
    ):
        new_id = event_id()
        created = await caller.execute(
            integration,
            "create_event",
            {
                "event_id": new_id,
                "title": "Checkup: Ada Okafor",
                "notes": "first visit",
                "start": "2030-03-04T09:00:00-05:00",
                "end": "2030-03-04T09:30:00-05:00",
                "booking_id": 4711,
            },
        )
        event = created.records[0]
        assert event["id"] == new_id and event["status"] == "booked"
        assert event["start"] == "2030-03-04T14:00:00Z" and event["end"] == "2030-03-04T14:30:00Z"
        assert event["booking_id"] == "4711"
        fetched = (await caller.execute(integration, "get_event", {"event_id": new_id})).records[0]
        assert fetched["notes"] == "first visit" and fetched["etag"] == event["etag"]

        moved = await caller.execute(
            integration,
            "update_event",
            {
                "event_id": new_id,
                "start": "2030-03-05T15:00:00Z",
                "end": "2030-03-05T15:45:00Z",
                "etag": event["etag"],
            },
        )
        moved_event = moved.records[0]
        assert moved_event["start"] == "2030-03-05T15:00:00Z" and moved_event["end"] == "2030-03-05T15:45:00Z"
        # PATCH merges: what was not sent is kept.
        assert moved_event["title"] == "Checkup: Ada Okafor" and moved_event["booking_id"] == "4711"
        assert moved_event["etag"] != event["etag"]

        with pytest.raises(IntegrationError) as stale:
            await caller.execute(
                integration, "update_event", {"event_id": new_id, "notes": "late", "etag": event["etag"]}
            )
        assert stale.value.code == "validation_failed" and stale.value.provider_status == 412

        since = moved_event["updated_at"]
        server.clock.advance(2)
        cancelled = await caller.execute(
            integration, "cancel_event", {"event_id": new_id, "etag": moved_event["etag"]}
        )
        assert cancelled.status_code == 204
        after = (await caller.execute(integration, "get_event", {"event_id": new_id})).records[0]
        assert after["status"] == "cancelled"
        plain = await caller.execute(integration, "list_events")
        assert new_id not in {row["id"] for row in plain.records}
        delta = await caller.execute(integration, "list_events", {"updated_since": since})
        assert [(row["id"], row["status"]) for row in delta.records] == [(new_id, "cancelled")]

        with pytest.raises(IntegrationError) as missing:
            await caller.execute(integration, "get_event", {"event_id": "nosuchevent0"})
        assert missing.value.code == "not_found"


async def test_create_without_an_event_id_is_refused_before_any_request() -> None:
    caller = ProviderCaller()
    async with calendar(spec={"seed": 2, "patients": 5, "appointments": 5}) as (server, _tokens, integration):
        before = len(server.request_log)
        with pytest.raises(ValidationFailed) as refused:
            await caller.execute(
                integration,
                "create_event",
                {"title": "x", "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:30:00Z"},
            )
        assert refused.value.field == "params.event_id"
        assert len(server.request_log) == before


async def test_retried_create_after_a_lost_answer_makes_no_duplicate() -> None:
    async with calendar(spec={"seed": 2, "patients": 5, "appointments": 5}) as (server, _tokens, integration):

        async def clear_faults_then_wait(seconds: float) -> None:
            # Only the first send loses its answer; the retry goes through.
            server.faults = FaultSettings()
            await asyncio.sleep(seconds)

        caller = ProviderCaller(sleep=clear_faults_then_wait)
        new_id = event_id()
        server.faults = FaultSettings(drop_after_commit_rate=1.0, match_methods=["POST"])
        with pytest.raises(IntegrationError) as repeated:
            await caller.execute(
                integration,
                "create_event",
                {
                    "event_id": new_id,
                    "title": "x",
                    "start": "2030-01-01T10:00:00Z",
                    "end": "2030-01-01T10:30:00Z",
                },
            )
        # The first send was applied and its answer lost; the retry met the id: 409, not a twin.
        assert repeated.value.provider_status == 409 and repeated.value.code == "validation_failed"
        posts = [entry for entry in server.request_log if entry.method == "POST"]
        assert [entry.status for entry in posts] == [None, 409]
        assert "drop_after_commit" in posts[0].faults and "dropped_status:200" in posts[0].faults
        events = server.calendars[server.config_primary()].events
        assert new_id in events and len(events) == 6


async def test_expired_token_is_renewed_and_rate_limits_are_retried() -> None:
    caller = ProviderCaller()
    async with calendar(spec={"seed": 2, "patients": 5, "appointments": 5}) as (server, tokens, integration):
        assert (await caller.execute(integration, "list_events")).records
        server.faults = FaultSettings(token_expire_next=1)
        assert (await caller.execute(integration, "list_events")).records
        assert len(tokens.grants) == 2  # one at the start, one after the 401

        server.faults = FaultSettings(rate_limit_next=2, retry_after_seconds=1)
        server.request_log.clear()
        assert (await caller.execute(integration, "list_events")).records
        assert [entry.status for entry in server.request_log] == [429, 429, 200]

        # Google's 403 rateLimitExceeded is a rate limit, not a refused credential.
        server.faults = FaultSettings()
        server.settings = server.settings.model_copy(
            update={"user_rate_limit_per_minute": 1, "rate_limit_response": "rateLimitExceeded"}
        )
        server.rate_windows.clear()
        await caller.execute(integration, "list_events")
        with pytest.raises(IntegrationError) as limited:
            await caller.execute(integration, "list_events")
        assert limited.value.code == "rate_limited" and limited.value.provider_status == 403


async def test_wrong_client_secret_is_an_auth_failure() -> None:
    caller = ProviderCaller()
    async with calendar(spec={"seed": 2, "patients": 5, "appointments": 5}) as (server, _tokens, integration):
        integration.secrets = {**integration.secrets, "client_secret": "wrong"}
        with pytest.raises(IntegrationError) as refused:
            await caller.execute(integration, "list_events")
        assert refused.value.code == "auth_failed" and refused.value.provider_status == 401
        assert not server.request_log  # nothing reached the calendar without a token
