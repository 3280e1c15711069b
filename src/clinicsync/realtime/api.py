"""GET /api/v1/events: the caller's change events as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from clinicsync.db.engine import session_scope
from clinicsync.deps import Authorize, authenticate_request, get_sessionmaker
from clinicsync.errors import ValidationFailed
from clinicsync.realtime import service
from clinicsync.realtime.hub import Hub, Subscriber
from clinicsync.realtime.service import Audience, Delivery
from clinicsync.tenancy import permissions
from clinicsync.tenancy.permissions import Capability

router = APIRouter(prefix="/api/v1", tags=["events"])

RECONNECT_MS = 2000


class StreamAuthorize(Authorize):
    """``Requires(Capability.EVENTS_READ)`` for the stream: a bearer token or the pages' session
    cookie (EventSource can't send headers), checked in a short session of its own, because the
    stream lives for minutes and must not hold a pooled connection."""

    async def __call__(self, request: Request) -> Audience:  # type: ignore[override]
        async with session_scope(get_sessionmaker(request), write=False) as session:
            principal = await authenticate_request(request, session)
            permissions.check(principal, self.capability)
            return await service.audience_for(session, principal)


def resume_point(
    last_event_id: Annotated[str | None, Header(description="The id of the last event received")] = None,
    after: Annotated[
        int | None, Query(ge=0, description="Same as Last-Event-ID, for clients that can't set headers")
    ] = None,
) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return after
    try:
        value = int(last_event_id.strip())
    except ValueError:
        raise ValidationFailed("Last-Event-ID", "must be the numeric id of an event") from None
    if value < 0:
        raise ValidationFailed("Last-Event-ID", "must not be negative")
    return value


def _message(event: Delivery) -> ServerSentEvent:
    return ServerSentEvent(id=str(event.id), raw_data=event.data)


async def _replay(request: Request, audience: Audience, after_id: int) -> list[Delivery]:
    async with session_scope(get_sessionmaker(request), write=False) as session:
        return await service.replay(session, audience, after_id)


@router.get(
    "/events",
    response_class=EventSourceResponse,
    summary="Live change events (Server-Sent Events) with Last-Event-ID resume",
)
async def stream_events(
    request: Request,
    audience: Annotated[Audience, Depends(StreamAuthorize(Capability.EVENTS_READ))],
    resume_from: Annotated[int | None, Depends(resume_point)],
) -> AsyncIterator[ServerSentEvent]:
    """Each event's ``id`` is its position; reconnecting with ``Last-Event-ID`` resumes after it.
    A client further behind than the retention window receives an ``event: reload`` and the
    stream ends: it should reload its data and reconnect without an id."""
    hub: Hub = request.app.state.hub
    heartbeat = request.app.state.settings.events_heartbeat_seconds
    subscriber: Subscriber = await hub.subscribe(audience)
    try:
        yield ServerSentEvent(comment="connected", retry=RECONNECT_MS)
        last = subscriber.start_id
        if resume_from is not None:
            async with session_scope(get_sessionmaker(request), write=False) as session:
                behind = await service.too_far_behind(session, resume_from)
            if behind:
                yield ServerSentEvent(event="reload", data={"reason": "too_far_behind"})
                return
            last = resume_from
        caught_up = resume_from is None
        while True:
            if not caught_up or subscriber.overflowed:
                subscriber.overflowed = False
                while not subscriber.queue.empty():
                    subscriber.queue.get_nowait()
                batch = await _replay(request, audience, last)
                for event in batch:
                    yield _message(event)
                    last = event.id
                caught_up = len(batch) < 500
                continue
            try:
                async with asyncio.timeout(heartbeat):
                    event = await subscriber.queue.get()
            except TimeoutError:
                yield ServerSentEvent(comment="heartbeat")
                continue
            if event.id > last:
                yield _message(event)
                last = event.id
    finally:
        hub.unsubscribe(subscriber)
