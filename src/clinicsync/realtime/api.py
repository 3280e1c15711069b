"""GET /api/v1/events: the caller's change events as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from clinicsync.db.engine import session_scope
from clinicsync.deps import Authorize, authenticate_request, get_sessionmaker
from clinicsync.errors import ValidationFailed
from clinicsync.realtime import service
from clinicsync.realtime.hub import HEARTBEAT, Hub, Subscriber
from clinicsync.realtime.service import Audience, Delivery
from clinicsync.tenancy import permissions
from clinicsync.tenancy.permissions import Capability

router = APIRouter(prefix="/api/v1", tags=["events"])

RECONNECT_MS = 2000
REPLAY_PAGE = 500


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


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


async def _replay(request: Request, audience: Audience, after_id: int) -> list[Delivery]:
    async with session_scope(get_sessionmaker(request), write=False) as session:
        return await service.replay(session, audience, after_id)


async def _frames(request: Request, audience: Audience, resume_from: int | None) -> AsyncIterator[bytes]:
    """The stream's bytes. Events arrive from the hub already encoded, and whatever has queued up
    since the last write goes out in one write, so the work per client per event stays tiny."""
    hub: Hub = request.app.state.hub
    subscriber: Subscriber = await hub.subscribe(audience)
    try:
        yield f": connected\nretry: {RECONNECT_MS}\n\n".encode()
        last = subscriber.start_id
        if resume_from is not None:
            async with session_scope(get_sessionmaker(request), write=False) as session:
                behind = await service.too_far_behind(session, resume_from)
            if behind:
                yield b'event: reload\ndata: {"reason":"too_far_behind"}\n\n'
                return
            last = resume_from
        caught_up = resume_from is None
        queue = subscriber.queue
        while True:
            if not caught_up or subscriber.overflowed:
                subscriber.overflowed = False
                while not queue.empty():
                    queue.get_nowait()
                batch = await _replay(request, subscriber.audience, last)
                if batch:
                    yield b"".join(event.frame for event in batch)
                    last = batch[-1].id
                caught_up = len(batch) < REPLAY_PAGE
                continue
            item = await queue.get()
            chunk: list[bytes] = []
            while True:
                if item is HEARTBEAT:
                    chunk.append(b": heartbeat\n\n")
                elif item.id > last:
                    chunk.append(item.frame)
                    last = item.id
                if queue.empty():
                    break
                item = queue.get_nowait()
            if chunk:
                yield b"".join(chunk)
    finally:
        hub.unsubscribe(subscriber)


@router.get(
    "/events",
    response_class=EventStreamResponse,
    summary="Live change events (Server-Sent Events) with Last-Event-ID resume",
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def stream_events(
    request: Request,
    audience: Annotated[Audience, Depends(StreamAuthorize(Capability.EVENTS_READ))],
    resume_from: Annotated[int | None, Depends(resume_point)],
) -> EventStreamResponse:
    """Each event's ``id`` is its position; reconnecting with ``Last-Event-ID`` resumes after it.
    A client further behind than the retention window receives an ``event: reload`` and the
    stream ends: it should reload its data and reconnect without an id. A comment line
    (``: heartbeat``) keeps an idle stream open."""
    return EventStreamResponse(
        _frames(request, audience, resume_from),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
