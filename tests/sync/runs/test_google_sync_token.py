"""Google Calendar pulls by its own sync token: a full read keeps the last page's nextSyncToken, a
pull asks with it alone, and a token Google refuses (410) falls back to the whole window. Real
HTTP against the Google sandbox, both databases."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qs

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.sync.runs.models import SyncCursor
from tests.sync.runs.conftest import Pulling, run_to_end

WINDOWS = {"backward_days": 5, "forward_days": 5}


def _event_lists(calendar: Pulling) -> list[dict[str, list[str]]]:
    """The query of every events.list request the sandbox served, in order."""
    return [
        parse_qs(entry.query)
        for entry in calendar.sandbox.request_log
        if entry.method == "GET" and entry.path.endswith("/events")
    ]


def _desk(calendar: Pulling) -> httpx.AsyncClient:
    assert calendar.sandbox.root_url is not None
    return httpx.AsyncClient(base_url=calendar.sandbox.root_url + "/_sandbox")


async def _upcoming(client: httpx.AsyncClient, calendar: Pulling) -> list[dict[str, object]]:
    listed = await client.get(
        "/api/v1/sync/pms-appointments", headers=calendar.headers, params={"limit": 500}
    )
    assert listed.status_code == 200, listed.text
    rows: list[dict[str, object]] = listed.json()
    return rows


async def test_a_quiet_pull_asks_with_the_sync_token_alone_in_one_request(
    client: httpx.AsyncClient, google_pull: Pulling
) -> None:
    calendar = google_pull
    full = await run_to_end(client, calendar, **WINDOWS)
    assert full["status"] == "completed", full

    calendar.sandbox.request_log.clear()
    quiet = await run_to_end(client, calendar, incremental=True, **WINDOWS)

    assert quiet["status"] == "completed", quiet
    assert quiet["steps"] == ["pull"] and quiet["incremental"] is True
    assert quiet["requests_used"] <= 2
    asked = _event_lists(calendar)
    assert len(asked) == quiet["requests_used"] == 1
    # Google refuses timeMin, timeMax and updatedMin beside a sync token.
    assert "syncToken" in asked[0]
    assert not {"timeMin", "timeMax", "updatedMin"} & set(asked[0])
    assert quiet["phases"]["pull"]["asked_with"] == "provider_token"
    assert quiet["phases"]["pull"]["cursor_kind"] == "provider_token"
    assert "fallback" not in quiet["phases"]["pull"]
    assert all(values["created"] == values["updated"] == 0 for values in quiet["counts"].values())


async def test_an_event_moved_at_the_desk_is_pulled_by_the_next_token_pull(
    client: httpx.AsyncClient, google_pull: Pulling
) -> None:
    calendar = google_pull
    full = await run_to_end(client, calendar, **WINDOWS)
    assert full["status"] == "completed", full
    event = next(row for row in await _upcoming(client, calendar) if row["status"] != "cancelled")
    starts = datetime.fromisoformat(str(event["starts_at"])) + timedelta(minutes=30)
    async with _desk(calendar) as desk:
        moved = await desk.post(
            "/actions/move",
            json={
                "event_id": event["external_id"],
                "start": starts.isoformat(),
                "end": (starts + timedelta(minutes=30)).isoformat(),
            },
        )
        assert moved.status_code == 200, moved.text

    calendar.sandbox.request_log.clear()
    pulled = await run_to_end(client, calendar, incremental=True, **WINDOWS)

    assert pulled["status"] == "completed", pulled
    assert pulled["counts"]["appointments"]["found"] == 1
    assert pulled["counts"]["appointments"]["updated"] == 1
    assert pulled["requests_used"] == len(_event_lists(calendar)) == 1
    shown = {row["external_id"]: row for row in await _upcoming(client, calendar)}
    assert datetime.fromisoformat(str(shown[event["external_id"]]["starts_at"])) == starts

    # The token moved on with it: the same change is not pulled again.
    again = await run_to_end(client, calendar, incremental=True, **WINDOWS)
    assert again["counts"].get("appointments", {}).get("found", 0) == 0


async def test_an_event_deleted_at_the_desk_is_cancelled_by_the_next_token_pull(
    client: httpx.AsyncClient, google_pull: Pulling
) -> None:
    # Google lists a deleted event by its id alone: the pull cancels what it holds for that id.
    calendar = google_pull
    full = await run_to_end(client, calendar, **WINDOWS)
    assert full["status"] == "completed", full
    event = next(row for row in await _upcoming(client, calendar) if row["status"] != "cancelled")
    async with _desk(calendar) as desk:
        deleted = await desk.post("/actions/cancel", json={"event_id": event["external_id"]})
        assert deleted.status_code == 200, deleted.text

    pulled = await run_to_end(client, calendar, incremental=True, **WINDOWS)

    assert pulled["status"] == "completed", pulled
    assert pulled["counts"]["appointments"]["found"] == 1
    assert pulled["counts"]["appointments"]["updated"] == 1
    assert pulled["requests_used"] == 1
    shown = {row["external_id"]: row for row in await _upcoming(client, calendar)}
    assert shown[event["external_id"]]["status"] == "cancelled"
    assert shown[event["external_id"]]["starts_at"] == event["starts_at"]


async def test_an_invalidated_token_falls_back_to_the_full_window_and_says_so(
    client: httpx.AsyncClient, google_pull: Pulling
) -> None:
    calendar = google_pull
    full = await run_to_end(client, calendar, **WINDOWS)
    assert full["status"] == "completed", full
    upcoming = full["counts"]["appointments"]["found"]
    past = full["phases"]["backward"]["counts"]["cases"]["found"]  # reconciliation reads some again
    async with _desk(calendar) as desk:
        invalidated = await desk.post("/actions/invalidate_sync_tokens", json={})
        assert invalidated.status_code == 200, invalidated.text

    calendar.sandbox.request_log.clear()
    run = await run_to_end(client, calendar, incremental=True, **WINDOWS)

    assert run["status"] == "completed", run
    pull = run["phases"]["pull"]
    assert pull["fallback"] == "full_window"
    assert any("410" in note and "full window" in note for note in run["notes"])
    statuses = [entry.status for entry in calendar.sandbox.request_log if entry.path.endswith("/events")]
    assert statuses[0] == 410 and all(status == 200 for status in statuses[1:])
    asked = _event_lists(calendar)
    assert "syncToken" in asked[0] and all("syncToken" not in query for query in asked[1:])
    assert run["requests_used"] == len(asked)
    # Everything in the window read again, nothing new: exact counts.
    assert run["counts"]["appointments"]["found"] == upcoming
    assert run["counts"]["appointments"]["unchanged"] == upcoming
    assert run["counts"]["cases"]["found"] == past
    assert run["counts"]["cases"]["unchanged"] == past
    assert pull["cursor_kind"] == "provider_token"

    # The note is in the run's progress and in the history.
    progress = await client.get(f"/api/v1/sync/progress/{run['id']}", headers=calendar.headers)
    assert progress.json()["notes"] == run["notes"]
    history = await client.get(f"/api/v1/sync/history/{calendar.organization_id}", headers=calendar.headers)
    assert history.status_code == 200, history.text
    recent = {row["sync_id"]: row for row in history.json()["recent_syncs"]}
    assert recent[run["id"]]["metadata"]["notes"] == run["notes"]

    # The fallback kept Google's new token: the next pull is quiet again.
    calendar.sandbox.request_log.clear()
    quiet = await run_to_end(client, calendar, incremental=True, **WINDOWS)
    assert quiet["status"] == "completed" and "fallback" not in quiet["phases"]["pull"], quiet
    assert quiet["requests_used"] == 1


async def test_an_updated_min_google_no_longer_keeps_falls_back_too(
    client: httpx.AsyncClient, google_pull: Pulling, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    calendar = google_pull
    full = await run_to_end(client, calendar, **WINDOWS)
    upcoming = full["counts"]["appointments"]["found"]
    # A stamp cursor that has aged past what Google keeps (updatedMin older than 28 days: 410).
    async with sessionmaker() as session, session.begin():
        await session.execute(update(SyncCursor).values(value="2020-01-01T00:00:00+00:00", kind="run_start"))

    run = await run_to_end(client, calendar, incremental=True, **WINDOWS)

    assert run["status"] == "completed", run
    assert run["phases"]["pull"]["fallback"] == "full_window"
    assert any("410" in note and "full window" in note for note in run["notes"])
    assert run["counts"]["appointments"]["found"] == upcoming
    assert run["counts"]["appointments"]["unchanged"] == upcoming
    assert run["phases"]["pull"]["cursor_kind"] == "provider_token"
